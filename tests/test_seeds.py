"""One config over several seeds (experiments/seeds.py): the table of means and deviations."""

import numpy as np

from alignrec_jax.experiments import seeds


def _run(seed, values):
  """A seed's result as run_seeds returns it: 2 epochs, the second the best."""
  epochs = [
    {m: v * scale for m, v in zip(seeds.METRICS, values, strict=True)} for scale in (0.5, 1)
  ]
  splits = {"valid": {}, "test": {}}
  for metric, value in zip(seeds.METRICS, values, strict=True):
    split, name = metric.split("/")
    splits[split][name] = value
  return {"seed": seed, "summary": {"best_epoch": 1, "epochs_run": 2, **splits}, "epochs": epochs}


def test_the_table_gives_each_epoch_and_the_best_beside_the_authors_numbers():
  results = [_run(1, [0.1] * 6), _run(2, [0.3] * 6)]
  lines = seeds.format_table(results, reference="synthetic-baby").splitlines()
  assert lines[0].startswith("mean±std over seeds [1, 2]; in brackets: the authors' number")
  assert [line.split()[0] for line in lines[2:]] == ["1", "2", "best", "best"]
  best = lines[4]
  assert best.count("0.2000±0.1000") == 6  # the population std
  assert "(" not in best  # the authors' numbers of synthetic-baby are per epoch
  first = lines[2]
  want = seeds.REFERENCE["synthetic-baby"][1]["valid/recall@20"]
  assert f"({want:.4f}, {100 * (0.1 / want - 1):+.1f}%)" in first
  assert lines[-1] == "best epochs (from 0): 1 / 2 run, 1 / 2 run"
  assert np.isclose(float(best.split()[1].split("±")[0]), 0.2)
