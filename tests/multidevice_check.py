"""Run by tests/test_parallel.py in a process of its own with 4 fake CPU devices: both stages
on sub-meshes of 1, 2 and 4 devices, and stage 2 with its in-batch terms in 2 groups on 1 and 2
devices; prints a JSON line of what the test compares."""

import json
import sys

import jax
import numpy as np

from alignrec_jax.data import content as content_lib
from alignrec_jax.serving import load_run
from alignrec_jax.training import stage1, stage2
from alignrec_jax.training.parallel import make_parallel
from configs import test as test_config


def main(root: str) -> None:
  assert jax.device_count() == 4, jax.devices()
  out = {"stage2": {}, "stage1": {}}
  for count in (1, 2, 4):
    config = test_config.get_config()
    config.train.max_epochs = 2
    config.parallel.num_devices = count
    config.data.cache_dir = f"{root}/data"
    summary = stage2.train_and_evaluate(config, f"{root}/stage2_{count}")
    run = load_run(f"{root}/stage2_{count}", "latest")
    np.save(f"{root}/users_{count}.npy", run.user_embeddings)
    out["stage2"][count] = summary["test"]
    folder = stage2.dataset_folder(config.data, f"{root}/stage2_{count}")
    num_items = stage2.load_dataset(config.data, f"{root}/stage2_{count}").num_items
    loaded = content_lib.load_content(
      folder,
      config.stage1.data.modalities,
      num_items=num_items,
      vector_tokens=config.stage1.model.vector_tokens,
    )
    path = stage1.run_stage1(
      config.stage1,
      folder,
      f"{root}/stage1_{count}",
      num_items=num_items,
      seed=0,
      content=loaded,
      parallel=make_parallel(config.parallel),
    )
    np.save(f"{root}/features_{count}.npy", np.load(path))
  # The in-batch terms per device (train.in_batch_groups = 2): on 2 devices each computes its
  # own slice's terms; on 1 device the same slices, one after the other.
  for count in (1, 2):
    config = test_config.get_config()
    config.train.max_epochs = 2
    config.train.in_batch_groups = 2
    config.parallel.num_devices = count
    config.data.cache_dir = f"{root}/data"
    stage2.train_and_evaluate(config, f"{root}/grouped_{count}")
    run = load_run(f"{root}/grouped_{count}", "latest")
    np.save(f"{root}/grouped_users_{count}.npy", run.user_embeddings)
  print(json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1])
