"""Flax models: one file per stage-2 model, registered by name (registry.py); the encoder."""

# Importing a model's file registers it; the order is the registry's (and the listings').
from alignrec_jax.models import (  # noqa: F401  (imported to register)
  alignrec,
  bm3,
  bpr,
  freedom,
  lightgcn,
  mgcn,
  vbpr,
)
from alignrec_jax.models.common import Batch, Embeddings, Graphs
from alignrec_jax.models.encoder import CrossModalEncoder
from alignrec_jax.models.registry import ModelSpec, build, get, names, register

__all__ = [
  "Batch",
  "CrossModalEncoder",
  "Embeddings",
  "Graphs",
  "ModelSpec",
  "build",
  "get",
  "names",
  "register",
]
