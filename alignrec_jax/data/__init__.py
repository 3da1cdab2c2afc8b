"""Datasets in MMRec format: the checked loader, item features, stage-1 content, preparation."""

from alignrec_jax.data.dataset import SPLITS, Dataset, Interactions
from alignrec_jax.data.features import combine_features, load_item_array, synthetic_features
from alignrec_jax.data.mmrec import load_mmrec

__all__ = [
  "SPLITS",
  "Dataset",
  "Interactions",
  "combine_features",
  "load_item_array",
  "load_mmrec",
  "synthetic_features",
]
