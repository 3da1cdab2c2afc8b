"""Datasets made or fetched rather than shipped: the synthetic generator, MovieLens-100k."""
