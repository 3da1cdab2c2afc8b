"""AlignRec on MovieLens-100k (text + genres), both stages: the README's main job.

Prepared from PyPI on first use into data/ml100k under the repository (`launch.prepare`
documents the recipe). Stage 1 reads the item text (MiniLM token states) and the genre tokens;
`launch.train` with this config runs stage 2 alone on the raw text + genre features.

`launch.pipeline` trains stage 2 on the stage-1 features, the text + genre concatenation and
the text alone (the best raw input in benchmarks/README.md) and keeps the best on validation.
Sized for a 2-core CPU, where the whole job takes about 4 minutes: the default (small) encoder
for 10 epochs, and each stage 2 capped at 40 epochs (about 1.5 s each here), which stops
before early stopping would. `configs/ml100k_gpu.py` is the full-size run for an accelerator.
"""

import os

from configs import default

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config():
  config = default.get_config()
  config.data.name = "ml100k"
  config.data.path = os.path.join(REPO_ROOT, "data", "ml100k")
  config.data.features = ("text_feat.npy", "genre_feat.npy")
  config.stage1.data.modalities = (
    ("text", "sequence", "item_text.tsv"),
    ("genre", "categorical", "genre_tokens.npy"),
  )
  config.stage1.train.epochs = 10
  config.train.max_epochs = 40
  config.pipeline.candidates = ("stage1", "raw", "text")
  return config
