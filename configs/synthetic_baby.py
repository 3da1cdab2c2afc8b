"""AlignRec on synthetic-baby with `aligned_feat.npy`: the parity check against the authors' code.

Reference settings (embedding 64, 2 LightGCN layers, 1 kNN layer, k 10, batch 2048, lr 1e-3,
cl_weight 0.01, sim_weight 0.1, decay 0.96^(epoch/50)); see ../shared/data/README.md.
"""

from configs import default, shared_dataset


def get_config():
  config = default.get_config()
  config.data.name = "synthetic-baby"
  config.data.path = shared_dataset("synthetic-baby")
  config.data.features = ("aligned_feat.npy",)
  # Its feature file stands in for stage 1's output; there is no raw content for a stage 1.
  config.stage1.data.modalities = ()
  config.pipeline.candidates = ("raw",)
  config.train.max_epochs = 1000
  return config
