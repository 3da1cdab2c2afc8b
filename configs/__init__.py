"""ml_collections configs: `default.py` plus one file per dataset that overrides a few fields."""

import os

# The shared real datasets live in ../shared/data beside the repository.
SHARED_DATA = os.path.normpath(
  os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
)


def shared_dataset(name: str) -> str:
  return os.path.join(SHARED_DATA, name)
