"""The accelerator-sized stage 1: configs/default.py with a larger cross-modal encoder.

Sized for one H100: width 384 (6 heads of 64), 4 layers, batches of 512 items, against the
default's 2-core-CPU encoder (width 128, 4 heads, 2 layers, batch 256). Only these four
stage-1 fields change; every other section is the default's (a dataset config that wants this
encoder takes this config's `stage1` and sets its own `stage1.data`). `benchmarks/gpu.sh` runs
`benchmarks/bench_stage1.py` with it.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.stage1.model.width = 384
  config.stage1.model.num_heads = 6
  config.stage1.model.num_layers = 4
  config.stage1.train.batch_size = 512
  return config
