"""AlignRec at the reference settings, both stages, on the built-in synthetic data (no download).

Every field is declared once, with its default and meaning, beside the code that reads it
(`alignrec_jax/experiments/config_schema.py` says where); this file takes them as they are.
Every dataset config imports this and overrides a few fields. Select with
`--config=configs/NAME.py`; override any field with e.g. `--config.optim.lr=5e-4`.

Groups: `seed`, `data`, `model` (the stage-2 model: `name` picks one of the per-model groups,
each holding that model's fields and its `loss` weights), `optim`, `train`, `eval`, `parallel`,
`pipeline` (what `launch.pipeline` trains stage 2 on), and `stage1` with its own groups for the
pre-training stage. A field that nothing reads is an error.
"""

import ml_collections

from alignrec_jax.experiments import config_schema


def get_config() -> ml_collections.ConfigDict:
  return config_schema.default_config()
