"""LangGraph definitions built on the tiering kit: the kit's run context and ``ask``
(``context``), its step builders (``steps``), the graph-level ``run_graph`` (``running``),
the task graph (``task``, ``nodes``, ``runner``), the batch summarization graphs
(``summaries``), answers from documents (``citing``), and examples. Import the public names
from ``tierflow`` itself."""
