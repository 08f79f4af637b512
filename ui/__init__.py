"""tierflow.ui."""
