"""tierflow.agents."""
