"""MMRec's BM3 on lfm2k: the first value of each of its lists (one LightGCN layer, dropout 0.3,
reg_weight 0.1; cl_weight 2.0), lr 1e-3 without decay, batch 2048, raw features in MMRec's
(image, text) slots: the VGGish audio, the tag text."""

from configs import freedom_lfm2k


def get_config():
  config = freedom_lfm2k.get_config()
  config.model.name = "bm3"
  return config
