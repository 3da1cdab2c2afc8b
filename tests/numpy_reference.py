"""Plain NumPy forms of the spec's formulas, shared by the known-answer tests."""

import numpy as np


def normalize(x):
  """Rows divided by max(norm, 1e-12), as torch.nn.functional.normalize."""
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def info_nce(a, b, tau):
  """mean_k -log(exp(a_k.b_k / t) / sum_j exp(a_k.b_j / t)) over L2-normalised rows."""
  a, b = normalize(a), normalize(b)
  logits = a @ b.T / tau
  return np.mean(-np.log(np.exp(np.diag(logits)) / np.exp(logits).sum(1)))


def sigmoid(x):
  return 1 / (1 + np.exp(-x))
