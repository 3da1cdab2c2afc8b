"""MMRec's LightGCN on lfm2k: 2 layers, reg_weight 1e-4 (Frobenius norms), lr 1e-3, no decay."""

from configs import lfm2k


def get_config():
  config = lfm2k.get_config()
  config.model.name = "lightgcn"
  config.optim.lr_decay = 1.0
  return config
