"""Flax modules: the stage-2 recommenders (AlignRec and the baselines) and the stage-1 encoder."""

from alignrec_jax.models.alignrec import AlignRec
from alignrec_jax.models.common import Embeddings, Graphs
from alignrec_jax.models.encoder import CrossModalEncoder
from alignrec_jax.models.lightgcn import LightGCN
from alignrec_jax.models.mf import MatrixFactorization
from alignrec_jax.models.vbpr import VBPR

__all__ = [
  "VBPR",
  "AlignRec",
  "CrossModalEncoder",
  "Embeddings",
  "Graphs",
  "LightGCN",
  "MatrixFactorization",
]
