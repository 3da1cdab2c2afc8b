"""MMRec's MGCN on lfm2k: the first value of each of its lists (cl_loss 0.001, reg_weight 1e-4,
k 10, two user-item layers, one item-item layer), lr 1e-3 with MMRec's MGCN decay (0.96 every
50 epochs), batch 2048; the VGGish audio in MMRec's image slot, the tag text in its text slot,
both raw (MMRec does not normalise them)."""

from configs import freedom_lfm2k


def get_config():
  config = freedom_lfm2k.get_config()
  config.model.name = "mgcn"
  config.optim.lr_decay = 0.96  # MGCN.yaml's learning_rate_scheduler [0.96, 50]
  return config
