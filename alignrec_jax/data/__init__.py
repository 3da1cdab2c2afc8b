"""Datasets: the MMRec-format loader, item-feature preparation and the built-in synthetic data."""

from alignrec_jax.data.dataset import SPLITS, DataError, Dataset, Interactions
from alignrec_jax.data.features import combine_features, synthetic_features
from alignrec_jax.data.mmrec import load_mmrec
from alignrec_jax.data.synthetic import make_synthetic, prepare_synthetic, write_mmrec

__all__ = [
    "SPLITS",
    "DataError",
    "Dataset",
    "Interactions",
    "combine_features",
    "load_mmrec",
    "make_synthetic",
    "prepare_synthetic",
    "synthetic_features",
    "write_mmrec",
]
