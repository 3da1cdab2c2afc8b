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
compared too: each `jit_epoch` module before optimisation, canonical (source locations, stack
frames and names removed, so that moving code around does not change it): its SHA-256 on each
side, and which computations (the scanned epoch, its step) AFTER keeps unchanged and adds.
The HLO informs; the exit status is 1 when any run's numbers differ.
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


_FRAMES = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")
_NAME = re.compile(r"%[\w.\-]+")
_HEADER = re.compile(r"^((?:ENTRY )?%[\w.\-]+) \(.*\) -> ")


def canonical_hlo(text: str) -> tuple[list[str], list[str]]:
  """(the ENTRY computation's lines, every other computation's lines) of an HLO dump, without
  what moving code changes: source locations, stack frames, and names (each `%name` becomes
  `%vN` in order of appearance; a computation's parameter list is left out)."""
  names: dict[str, str] = {}
  entry, others, skipping, in_entry = [], [], False, False
  for line in text.splitlines()[1:]:  # the HloModule line names the function and its layout
    if line in _FRAMES:
      skipping = True
      continue
    if skipping and not line.startswith(("%", "ENTRY")):
      continue
    skipping = False
    if line.startswith(("%", "ENTRY")):
      in_entry = line.startswith("ENTRY")
    line = _HEADER.sub(lambda m: m.group(1) + " (...) -> ", _METADATA.sub("", line))
    line = _NAME.sub(lambda m: names.setdefault(m.group(0), f"%v{len(names)}"), line)
    (entry if in_entry else others).append(line)
  return entry, others


def _computations(lines: list[str]) -> list[str]:
  return [block.strip() for block in "\n".join(lines).split("\n\n") if block.strip()]


def compare_hlo(before: pathlib.Path, after: pathlib.Path) -> list[dict[str, object]]:
  """Per jit_epoch module dumped before optimisation (in dump order on both sides), its
  canonical computations (`canonical_hlo`) compared: how many of BEFORE's non-entry ones (the
  scanned epoch and its step) AFTER holds unchanged, what AFTER adds, whether the entry
  computation (what the jitted function does around them) is the same, and the SHA-256 of
  each side's whole canonical module."""
  rows = []
  paths = [sorted(p.glob("*jit_epoch.before_optimizations.txt")) for p in (before, after)]
  for a, b in zip(*paths, strict=False):
    (entry_a, others_a), (entry_b, others_b) = (canonical_hlo(p.read_text()) for p in (a, b))
    blocks_a, blocks_b = _computations(others_a), set(_computations(others_b))
    rows.append(
      {
        "computations": len(blocks_a),
        "kept_unchanged": sum(block in blocks_b for block in blocks_a),
        "added": len(blocks_b - set(blocks_a)),
        "same_entry": entry_a == entry_b,
        "sha256": [
          hashlib.sha256("\n".join(others + entry).encode()).hexdigest()
          for others, entry in ((others_a, entry_a), (others_b, entry_b))
        ],
      }
    )
  return rows


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
    result["epoch_hlo"] = compare_hlo(before / "hlo", after / "hlo")
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
  for module in result.get("epoch_hlo", []):
    same = module["sha256"][0] == module["sha256"][1]
    print(
      f"epoch HLO: {'the same' if same else 'changed'}; {module['kept_unchanged']} of "
      f"{module['computations']} computations kept unchanged, {module['added']} added, entry "
      f"{'the same' if module['same_entry'] else 'changed'} (sha256 {module['sha256']})"
    )
  machine.append_record({**result, **machine.describe()}, args.output)
  return 0 if result["identical"] else 1


if __name__ == "__main__":
  sys.exit(main())
