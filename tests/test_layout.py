"""The package's architecture: imports point one way, down the layers, and every folder says
what it is for.

  errors, schema, files, downloads, normalize  <-  text  <-  data  <-  graph, propagation,
  sampling  <-  objectives  <-  models  <-  evaluation  <-  training  <-  serving  <-  experiments
  <-  launch/ (outside the package)

A module may import modules of its own layer or of layers below it, never above; imports inside
functions count too (they are found by walking the whole syntax tree).
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "alignrec_jax"
LAYERS = (
  ("errors", "schema", "files", "downloads", "normalize"),
  ("text",),
  ("data",),
  ("graph", "propagation", "sampling"),
  ("objectives",),
  ("models",),
  ("evaluation",),
  ("training",),
  ("serving",),
  ("experiments",),
)
LAYER = {name: depth for depth, names in enumerate(LAYERS) for name in names}
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
# Top-level projects beside the package that it must never import.
OUTSIDE = ("launch", "configs", "benchmarks", "tests")


def _unit(path: pathlib.Path) -> str:
  """The top-level module or folder of the package a file belongs to ("" for __init__.py)."""
  parts = path.relative_to(PACKAGE).with_suffix("").parts
  return "" if parts == ("__init__",) else parts[0]


def _imported_units(tree: ast.AST) -> list[tuple[int, str]]:
  """(line, top-level unit of alignrec_jax) of every import of the package in `tree`."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      assert node.level == 0, f"line {node.lineno}: relative import"
      if node.module == "alignrec_jax":  # from alignrec_jax import files
        names = [f"alignrec_jax.{alias.name}" for alias in node.names]
      else:
        names = [node.module or ""]
    else:
      continue
    for name in names:
      parts = name.split(".")
      if parts[0] in OUTSIDE:
        found.append((node.lineno, parts[0]))
      elif parts[0] == "alignrec_jax" and len(parts) > 1:
        found.append((node.lineno, parts[1]))
  return found


def test_every_unit_has_a_layer():
  units = {_unit(p) for p in MODULES} - {""}
  assert units == set(LAYER), f"place {sorted(units - set(LAYER))} in LAYERS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
  unit = _unit(path)
  tree = ast.parse(path.read_text(), filename=str(path))
  for line, imported in _imported_units(tree):
    assert imported not in OUTSIDE, f"{path.name}:{line} imports {imported}/"
    if unit:
      assert LAYER[imported] <= LAYER[unit], (
        f"{path.relative_to(PACKAGE)}:{line} imports {imported} (layer {LAYER[imported]}) "
        f"from {unit} (layer {LAYER[unit]}): imports must point down"
      )


@pytest.mark.parametrize(
  "folder",
  sorted(p.parent for p in PACKAGE.rglob("__init__.py")),
  ids=lambda p: str(p.relative_to(PACKAGE.parent)),
)
def test_every_folder_says_what_it_is_for(folder):
  docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
  assert docstring and len(docstring.splitlines()) == 1, (
    f"{folder}/__init__.py needs a one-line docstring saying what the folder holds"
  )


def test_the_check_sees_every_form_of_import():
  tree = ast.parse(
    "def f():\n  from alignrec_jax.training import loop\n"
    "from alignrec_jax import experiments\nimport alignrec_jax.data.content\n"
    "from configs import test\n"
  )
  assert sorted(_imported_units(tree)) == [
    (2, "training"),
    (3, "experiments"),
    (4, "data"),
    (5, "configs"),
  ]


def test_serving_sits_below_the_experiments():
  """Serving loads a run through the run record; the experiments load runs through serving:
  one layer each, so that neither can import the other back."""
  assert LAYER["serving"] < LAYER["experiments"]
