"""The real Amazon Baby interaction graph with random 768-d features: for speed work."""

from configs import default, shared_dataset


def get_config():
  config = default.get_config()
  config.data.name = "baby-graph"
  config.data.path = shared_dataset("baby-graph")
  config.data.features = ()
  config.data.synthetic_feature_dim = 768
  config.train.max_epochs = 1000
  return config
