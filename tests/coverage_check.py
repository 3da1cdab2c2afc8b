"""CI's check that the quick tier (`pytest -m "not slow"`) reaches every module of the package.

  python -m tests.coverage_check .coverage.json

Reads the JSON report of `pytest --cov=alignrec_jax --cov-report=json:FILE` and exits 1,
naming them, if any module under alignrec_jax/ has no line covered: a module that only the
slow tier touches would break unseen in the quick loop.
"""

import json
import pathlib
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "alignrec_jax"


def uncovered(report: dict) -> list[str]:
  """The package's modules with no covered line (modules coverage never saw included)."""
  seen = {pathlib.Path(name).resolve(): data["summary"] for name, data in report["files"].items()}
  missing = []
  for module in sorted(PACKAGE.rglob("*.py")):
    summary = seen.get(module.resolve())
    # (a folder's __init__.py holding only its docstring has no statement to cover)
    if summary is None or (summary["num_statements"] and not summary["covered_lines"]):
      missing.append(str(module.relative_to(PACKAGE.parent)))
  return missing


def main(path: str) -> int:
  report = json.loads(pathlib.Path(path).read_text())
  missing = uncovered(report)
  total = report["totals"]["percent_covered"]
  if missing:
    print(f"the quick tier covers no line of: {', '.join(missing)}", file=sys.stderr)
    return 1
  modules = sum(1 for _ in PACKAGE.rglob("*.py"))
  print(f"the quick tier reaches all {modules} modules ({total:.0f}% of the package's lines)")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1]))
