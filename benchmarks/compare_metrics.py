r"""Whether two sets of runs computed the same numbers: a refactor's before/after check.

  python -m benchmarks.compare_metrics BEFORE AFTER [--output=FILE]

BEFORE and AFTER are folders holding the same runs (the same sub-folders, e.g. one
`launch.train` workdir each, or a sweep's `runs/`), made by two versions of the code from the
same commands. For every `metrics.jsonl` under BEFORE, the file at the same place under AFTER
must hold the same records once the `*_seconds` fields (timings) are deleted: the same epochs,
loss terms and metrics, bit for bit (JSON floats, so to the last printed digit). Each run's
best epoch and epochs run (`summary.json`) must match too. A run with a summary but no
metrics.jsonl under BEFORE (a vmapped sweep's member, before such members kept their epochs)
is compared by its summary: the same best epoch and epochs run, and the same metrics at the
best epoch. Where anything differs, the largest absolute difference is printed.

A folder named `hlo` beside the runs (XLA's dump, `XLA_FLAGS=--xla_dump_to=DIR/hlo`) is
compared too: the SHA-256 of each `jit_epoch` module before optimisation, with XLA's metadata
(source lines, op names) removed, so that moving code around does not change it. Exits 1 when
anything differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pathlib
import re
import sys

from benchmarks import machine

_METADATA = re.compile(r",? metadata=\{[^}]*\}")


def _records(path: pathlib.Path) -> list[dict]:
  return [
    {k: v for k, v in json.loads(line).items() if not k.endswith("_seconds")}
    for line in path.read_text().splitlines()
    if line.strip()
  ]


def _numbers(record: dict, prefix: str = "") -> dict[str, float]:
  out = {}
  for key, value in record.items():
    if isinstance(value, dict):
      out.update(_numbers(value, f"{prefix}{key}/"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
      out[prefix + key] = float(value)
  return out


def largest_difference(a: list[dict], b: list[dict]) -> float:
  """The largest absolute difference between the same numbers of two record lists."""
  worst = 0.0
  for x, y in zip(a, b, strict=False):
    nx, ny = _numbers(x), _numbers(y)
    for key in set(nx) & set(ny):
      if math.isfinite(nx[key]) and math.isfinite(ny[key]):
        worst = max(worst, abs(nx[key] - ny[key]))
  return worst


def compare_run(before: pathlib.Path, after: pathlib.Path) -> dict[str, object]:
  """One run folder's comparison: {"run", "epochs", "identical", ...}."""
  a, b = _records(before / "metrics.jsonl"), _records(after / "metrics.jsonl")
  row: dict[str, object] = {"epochs": [len(a), len(b)], "identical": a == b}
  if a != b:
    row["largest_difference"] = largest_difference(a, b)
    row["first_different_epoch"] = next(
      (x.get("epoch") for x, y in zip(a, b, strict=False) if x != y), min(len(a), len(b))
    )
  summaries = [p / "summary.json" for p in (before, after)]
  if all(p.exists() for p in summaries):
    best = [
      {k: s.get(k) for k in ("best_epoch", "epochs_run")}
      for s in (json.loads(p.read_text()) for p in summaries)
    ]
    row["best_epoch"] = [s["best_epoch"] for s in best]
    row["identical"] = row["identical"] and best[0] == best[1]
  return row


_SPLITS = ("valid", "test", "valid_short", "test_short")


def compare_summary(before: pathlib.Path, after: pathlib.Path) -> dict[str, object]:
  """One run's comparison by its summary alone."""
  a, b = (json.loads((p / "summary.json").read_text()) for p in (before, after))
  same_epochs = all(a.get(k) == b.get(k) for k in ("best_epoch", "epochs_run"))
  metrics = [{k: s[k] for k in _SPLITS if k in s} for s in (a, b)]
  row: dict[str, object] = {
    "epochs": [a.get("epochs_run"), b.get("epochs_run")],
    "best_epoch": [a.get("best_epoch"), b.get("best_epoch")],
    "identical": same_epochs and metrics[0] == metrics[1],
    "by": "summary",
  }
  if not row["identical"]:
    row["largest_difference"] = largest_difference([metrics[0]], [metrics[1]])
  return row


def hlo_hashes(folder: pathlib.Path) -> list[str]:
  """SHA-256 of each jit_epoch module before optimisation, metadata removed, in dump order."""
  hashes = []
  for path in sorted(folder.glob("*jit_epoch.before_optimizations.txt")):
    text = _METADATA.sub("", path.read_text())
    text = re.sub(r"^HloModule \S+", "HloModule", text, flags=re.M)
    hashes.append(hashlib.sha256(text.encode()).hexdigest())
  return hashes


def compare(before: pathlib.Path, after: pathlib.Path) -> dict[str, object]:
  """Every run under `before` against its twin under `after`, and the dumped HLO."""
  runs = {}
  folders = {p.parent for name in ("metrics.jsonl", "summary.json") for p in before.rglob(name)}
  for folder in sorted(folders):
    twin = after / folder.relative_to(before)
    name = str(folder.relative_to(before))
    if (folder / "metrics.jsonl").exists():
      found = (twin / "metrics.jsonl").exists()
      runs[name] = compare_run(folder, twin) if found else {"identical": False, "missing": True}
    else:
      found = (twin / "summary.json").exists()
      runs[name] = compare_summary(folder, twin) if found else {"identical": False, "missing": True}
  result: dict[str, object] = {"runs": runs}
  if (before / "hlo").is_dir() and (after / "hlo").is_dir():
    hashes = [hlo_hashes(before / "hlo"), hlo_hashes(after / "hlo")]
    result["epoch_hlo"] = {"before": hashes[0], "after": hashes[1], "same": hashes[0] == hashes[1]}
  result["identical"] = bool(runs) and all(r["identical"] for r in runs.values())
  return result


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("before")
  parser.add_argument("after")
  parser.add_argument("--output", default="", help="append the result here as one JSON line")
  args = parser.parse_args(argv)
  result = compare(pathlib.Path(args.before), pathlib.Path(args.after))
  for name, row in result["runs"].items():
    verdict = "identical" if row["identical"] else f"DIFFERENT {row}"
    print(f"{name}: {row.get('epochs')} epochs, best epoch {row.get('best_epoch')}: {verdict}")
  if "epoch_hlo" in result:
    hlo = result["epoch_hlo"]
    print(f"epoch HLO: {'the same' if hlo['same'] else 'changed'} ({hlo})")
  machine.append_record({**result, **machine.describe()}, args.output)
  return 0 if result["identical"] else 1


if __name__ == "__main__":
  sys.exit(main())
