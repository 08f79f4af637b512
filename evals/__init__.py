"""tierflow.evals."""
