"""What every benchmark writes beside its numbers: the machine, the load, the versions."""

from __future__ import annotations

import json
import os
import platform
import resource
from importlib import metadata

import jax


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def describe() -> dict[str, object]:
  """Machine, devices, load average and package versions, as a JSON-ready dict."""
  versions = {}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "jraph"):
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return {
    "cpu": _cpu_model(),
    "cpu_count": os.cpu_count(),
    "backend": jax.default_backend(),
    "devices": [d.device_kind for d in jax.devices()],
    "load_average_1m": os.getloadavg()[0],
    "python": platform.python_version(),
    "versions": versions,
  }


def peak_rss_gib() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report(result: dict[str, object], output: str) -> None:
  """Prints a result and, when `output` is set, appends it to that file as one JSON line."""
  print(json.dumps(result, indent=1))
  append_record(result, output)


def append_record(result: dict[str, object], output: str) -> None:
  """Appends `result` to the file `output` as one JSON line (nothing when `output` is empty)."""
  if output:
    with open(output, "a") as f:
      f.write(json.dumps(result) + "\n")
