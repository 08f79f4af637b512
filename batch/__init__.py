"""Batch report summarization: folders of reports summarized by a resumable map-reduce job,
on one machine or a Ray cluster (``tierflow summarize``)."""
