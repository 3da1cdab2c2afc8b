"""Flax modules: the stage-2 recommenders (AlignRec, LightGCN) and the stage-1 encoder."""

from alignrec_jax.models.alignrec import AlignRec
from alignrec_jax.models.common import Embeddings, Graphs
from alignrec_jax.models.encoder import CrossModalEncoder
from alignrec_jax.models.lightgcn import LightGCN

__all__ = ["AlignRec", "CrossModalEncoder", "Embeddings", "Graphs", "LightGCN"]
