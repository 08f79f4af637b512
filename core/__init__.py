"""tierflow: an agentic workflow orchestrator with tiered models."""

__version__ = "0.1.0"
__all__ = ["__version__"]
