"""A run's record: its identity, its summary, and the pipeline's choice among runs.

A run's **identity** says what it computes: the config fields its stage reads, less the neutral
ones (`schema.field(..., neutral=True)`: a checkpoint cadence, a chunk size), paths by file name
(so a moved workdir or dataset still matches), and the SHA-256 of the input files whose contents
may change under the same name (stage 2's feature files, stage 1's content files). It travels
in every checkpoint's metadata and in the summary.

`WORKDIR/summary.json` is written once, atomically, by the training loop when the run has
finished (stopped early, at its last epoch, or, in a vmapped ensemble, diverged after an
evaluation), in one shape for single, vmapped and stage-1 runs:

  format, stage, identity, config (all of it), epochs_run, vmapped,
  with evaluation: best_epoch, best_checkpoint (or None), valid, test, valid_short, test_short;
  without: final_terms; and what the stage adds (stage 1: output, its feature file).

`finished(workdir, identity)` is the one answer to "has this run finished, with these
settings?": stage 1, stage 2, the pipeline, the sweeps and serving all ask it. A workdir written
by an older version (another `FORMAT_VERSION`) is refused with one line.

`WORKDIR/pipeline.json` (`write_selection`, `selected_run`) names the stage-2 run a pipeline
chose among its candidates.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from alignrec_jax import files, schema
from alignrec_jax.errors import WorkdirError
from alignrec_jax.training.checkpoint import FORMAT_VERSION, Checkpointer

SUMMARY_FILE = "summary.json"
SELECTION_FILE = "pipeline.json"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """A nested dict as {dotted name: value}."""
  if isinstance(tree, Mapping):
    return {
      k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}.").items()
    }
  return {prefix[:-1]: tree}


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
  del size, mtime_ns  # the cache key: a rewritten file is read again
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def file_digest(path: str) -> str:
  """The SHA-256 of a file's bytes (read once per process while the file is unchanged)."""
  stat = os.stat(path)
  return _sha256(os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def _by_name(value: Any) -> Any:
  """A path (or a list of them) by file name."""
  if isinstance(value, list | tuple):
    return [_by_name(v) for v in value]
  return os.path.basename(os.path.normpath(value)) if value else value


def identity(
  config: Any,
  group: schema.Group,
  *,
  stage: str,
  path_fields: Iterable[str] = (),
  inputs: Iterable[str] = (),
  extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """A run's identity (see the module docstring), as plain JSON values.

  Args:
    config: the config (group) the stage reads: a ConfigDict or nested dict.
    group: its schema; only its fields count, less the neutral and the optional ones.
    stage: "stage 1" or "stage 2".
    path_fields: dotted fields holding paths, compared by file name.
    inputs: files whose contents count (their SHA-256, keyed by file name).
    extra: further settings that decide what is computed (e.g. stage 1's seed and dataset).
  """
  as_json = json.loads(config.to_json()) if hasattr(config, "to_json") else config
  flat = flatten(json.loads(json.dumps(as_json)))
  paths = set(path_fields)
  fields = {}
  for name, spec in schema.walk(group, required=True):
    if not spec.neutral and name in flat:
      fields[name] = _by_name(flat[name]) if name in paths else flat[name]
  fields.update(json.loads(json.dumps(dict(extra or {}))))
  return {
    "stage": stage,
    "config": fields,
    "inputs": {os.path.basename(p): file_digest(p) for p in inputs},
  }


def differences(saved: Mapping[str, Any], new: Mapping[str, Any], *, free: Iterable[str] = ()):
  """The fields, as "field: saved -> new", where two identities differ, but for `free` ones
  (fields a resumed run may change, e.g. `train.max_epochs`)."""
  old_flat = {**flatten(saved.get("config", {})), **_inputs(saved)}
  new_flat = {**flatten(new.get("config", {})), **_inputs(new)}
  skip = set(free)
  return [
    f"{name}: {old_flat.get(name, '(absent)')!r} -> {new_flat.get(name, '(absent)')!r}"
    for name in sorted(set(old_flat) | set(new_flat))
    if name not in skip and old_flat.get(name, "(absent)") != new_flat.get(name, "(absent)")
  ]


def _inputs(ident: Mapping[str, Any]) -> dict[str, str]:
  return {f"input {name}": digest[:12] for name, digest in ident.get("inputs", {}).items()}


def _check_format(found: Any, where: str) -> None:
  if found != FORMAT_VERSION:
    raise WorkdirError(
      f"{where} was written in workdir format {found or 1} by an earlier version of "
      f"alignrec_jax; this version reads format {FORMAT_VERSION}: use a new --workdir, or "
      "delete that folder to start over"
    )


def read_summary(workdir: str) -> dict[str, Any] | None:
  """The summary of the finished run in `workdir`, or None while it has none.

  Raises:
    WorkdirError: the summary is of an older format.
  """
  path = os.path.join(workdir, SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  _check_format(summary.get("format"), path)
  return summary


def write_summary(workdir: str, summary: Mapping[str, Any]) -> None:
  """Writes WORKDIR/summary.json atomically (the training loop's, at a run's end)."""
  _check_format(summary.get("format"), "a summary")
  files.atomic_write(os.path.join(workdir, SUMMARY_FILE), json.dumps(summary, indent=1))


def remove_summary(workdir: str) -> None:
  """A run that trains again is no longer finished."""
  path = os.path.join(workdir, SUMMARY_FILE)
  if os.path.exists(path):
    os.remove(path)


def finished(workdir: str, ident: Mapping[str, Any]) -> dict[str, Any] | None:
  """The summary of the run in `workdir` if it finished with this identity, else None."""
  summary = read_summary(workdir)
  if summary is None or summary.get("identity") != json.loads(json.dumps(ident)):
    return None
  return summary


def stored_identity(workdir: str) -> dict[str, Any] | None:
  """The identity of the run in `workdir`: its summary's, else its newest checkpoint's (None:
  no run there)."""
  summary = read_summary(workdir)
  if summary is not None:
    return summary.get("identity")
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return None
  with Checkpointer(directory) as checkpointer:
    epoch = checkpointer.latest_epoch()
    if epoch is None:
      return None
    return checkpointer.read_meta(epoch).get("identity")


def write_selection(workdir: str, selection: Mapping[str, Any]) -> None:
  """Writes WORKDIR/pipeline.json: which candidate run a pipeline chose, and why."""
  files.atomic_write(os.path.join(workdir, SELECTION_FILE), json.dumps(selection, indent=1))


def selected_run(workdir: str) -> str | None:
  """The folder of the stage-2 run a pipeline in `workdir` selected (None: no pipeline.json)."""
  path = os.path.join(workdir, SELECTION_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    selection = json.load(f)
  return os.path.join(workdir, selection["candidates"][selection["selected"]]["workdir"])
