"""configs/ml100k.py at full size, for one accelerator: the larger stage-1 encoder
(configs/stage1_gpu.py: 4 layers of width 384) trained for 40 epochs, and stage 2 to early
stopping (at most 1000 epochs, the reference's budget)."""

from configs import ml100k, stage1_gpu


def get_config():
  config = ml100k.get_config()
  config.stage1 = stage1_gpu.get_config().stage1
  config.stage1.data = ml100k.get_config().stage1.data
  config.stage1.train.epochs = 40
  config.train.max_epochs = 1000
  return config
