"""AlignRec on Last.fm lfm2k, text (MiniLM over tags) + audio (VGGish): "text + audio", no image.

Each modality's rows are L2-normalised before concatenation (VGGish rows have norm ~1,470, text
rows norm 1). `--config.data.normalize_features=False` gives the raw concatenation the authors'
run used. `configs/lightgcn_lfm2k.py` is MMRec's LightGCN on the same data.
"""

from configs import default, shared_dataset


def get_config():
  config = default.get_config()
  config.data.name = "lfm2k"
  config.data.path = shared_dataset("lfm2k")
  config.data.features = ("text_feat.npy", "audio_feat.npy")
  config.train.max_epochs = 1000
  config.stage1.data.modalities = (
    ("text", "sequence", "item_text.tsv"),
    ("audio", "vector", "audio_feat.npy"),
  )
  config.pipeline.candidates = ("stage1", "raw", "text", "audio")
  # The raw text_feat.npy pools 256 MiniLM tokens and 48% of the tag texts are longer than the
  # default 64: stage 1 reads as much of the text as the raw feature it is compared with.
  # (About 23 s an epoch on a 2-core CPU, 10.5 GB peak memory: benchmarks/README.md.)
  config.stage1.data.text_max_tokens = 256
  return config
