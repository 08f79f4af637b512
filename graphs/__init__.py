"""tierflow.graphs."""
