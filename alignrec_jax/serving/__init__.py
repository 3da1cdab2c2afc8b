"""Using a trained run: load it, recommend and score, export embeddings and top-K tables."""

from alignrec_jax.serving.export import export
from alignrec_jax.serving.run import QueryError, TrainedRun, load_run

__all__ = ["QueryError", "TrainedRun", "export", "load_run"]
