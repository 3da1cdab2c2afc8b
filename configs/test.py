"""A tiny configuration for tests: a ~100-user synthetic dataset that trains in seconds.

Both stages at toy sizes (small batches, a 1-layer width-16 encoder, few epochs); tests set
the few fields they exercise on top of it.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.synthetic.num_users = 120
  config.data.synthetic.num_items = 80
  config.data.synthetic.mean_user_interactions = 12
  config.data.synthetic.modality_dims = (("image_feat", 24), ("text_feat", 16))
  config.train.batch_size = 256
  config.train.max_epochs = 3
  config.eval.chunk_size = 64
  config.stage1.model.width = 16
  config.stage1.model.num_heads = 2
  config.stage1.model.num_layers = 1
  config.stage1.model.output_dim = 12
  config.stage1.train.batch_size = 32
  config.stage1.train.encode_batch_size = 64
  config.stage1.train.epochs = 2
  config.stage1.optim.warmup_epochs = 1
  return config
