"""Example graphs built on the tiering kit; each module has a ``graph`` attribute, so
``tierflow run --graph tierflow.graphs.examples.NAME:graph --input @FILE`` runs it."""
