"""Batch report summarization: folders of reports summarized by a resumable map-reduce job,
on one machine or a Ray cluster (``tierflow summarize``; README, "Batch summarization").

    from tierflow.batch import JobRequest, SummaryOptions, run_job
"""

from tierflow.batch.job import JobRequest, run_job
from tierflow.batch.report import JobReport
from tierflow.batch.worker import SummaryOptions

__all__ = ["JobRequest", "JobReport", "SummaryOptions", "run_job"]
