"""The real Amazon Sports interaction graph with random 768-d features: for speed work."""

from configs import baby_graph, shared_dataset


def get_config():
  config = baby_graph.get_config()
  config.data.name = "sports-graph"
  config.data.path = shared_dataset("sports-graph")
  return config
