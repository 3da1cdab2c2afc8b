"""MMRec's FREEDOM on lfm2k, as the reference run in ../shared/data/README.md was made.

The first value of each of MMRec's FREEDOM lists (edge dropout 0.8, reg_weight 0.0, k 10, image
weight 0.1, one item-graph layer), lr 1e-3 without decay, batch 2048; the image slot holds the
VGGish audio, the text slot the tag text, both raw (MMRec does not normalise them).
"""

from configs import lfm2k


def get_config():
  config = lfm2k.get_config()
  config.model.name = "freedom"
  config.data.features = ("audio_feat.npy", "text_feat.npy")  # MMRec's (image, text) slots
  config.data.normalize_features = False
  config.optim.lr_decay = 1.0
  # Stage 1 reads the modalities in the same order, so that they pair up with the files.
  config.stage1.data.modalities = (
    ("audio", "vector", "audio_feat.npy"),
    ("text", "sequence", "item_text.tsv"),
  )
  return config
