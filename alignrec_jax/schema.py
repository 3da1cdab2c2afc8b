"""Config fields, each declared once beside the code that reads it: default, meaning and rule.

A config group is a frozen dataclass whose fields are made with `field`; the first line of its
docstring says what the group is for. A Flax module's configurable fields and a model's loss
weights are declared the same way, so a model's config group is generated from its file:

    @dataclasses.dataclass(frozen=True)
    class Train:
      '''How stage 2 trains.'''

      batch_size: int = field(2048, "training interactions per step", POSITIVE_INT)

`group_of(Train)` gives the group's `Group`; `config_dict` turns a `Group` into the
`ml_collections.ConfigDict` of its defaults (what `configs/default.py` returns), `check` checks a
config against it before any data is read (a field nothing reads, a missing one, a value out of
range: one `ConfigError` line naming the field), and `rows` lists every field with its default
and meaning. A field marked `neutral` does not change what a run computes (a checkpoint cadence,
a chunk size): a run's identity leaves it out, so changing it neither stops a run resuming nor
makes a finished one count as another.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ml_collections

from alignrec_jax.errors import ConfigError

_KEY = "alignrec_schema"
_FLAX_FIELDS = ("parent", "name")  # every Flax module's own fields, never config fields


@dataclasses.dataclass(frozen=True)
class Rule:
  """What a field's value must be: `test(value)` true; `expected` says it in words."""

  test: Callable[[Any], bool]
  expected: str

  def holds(self, value: Any) -> bool:
    try:
      return bool(self.test(value))
    except (TypeError, ValueError):  # e.g. "a" > 0
      return False


def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool)


def one_of(*choices: Any) -> Rule:
  return Rule(lambda v: v in choices, f"one of {', '.join(map(str, choices))}")


POSITIVE_INT = Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1")
NONNEGATIVE_INT = Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0")
POSITIVE = Rule(lambda v: is_number(v) and v > 0, "a number > 0")
NONNEGATIVE = Rule(lambda v: is_number(v) and v >= 0, "a number >= 0")
FRACTION = Rule(lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]")
OPEN_FRACTION = Rule(lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)")
DROPOUT = Rule(lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")
BOOL = Rule(lambda v: isinstance(v, bool), "True or False")
STRING = Rule(lambda v: isinstance(v, str), "a string")


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field.

  Attributes:
    default: its value when no config sets it.
    help: one line: what it means.
    rule: what its value must be (None: anything of the default's kind; checked where read).
    neutral: it does not change what a run computes (left out of a run's identity).
  """

  default: Any
  help: str
  rule: Rule | None = None
  neutral: bool = False


@dataclasses.dataclass(frozen=True)
class Group:
  """A config group: its meaning and its fields, in order (a field may be a group).

  `optional`: fields a config may leave out (e.g. the groups of the models it does not use);
  present, they are checked as the others.
  """

  help: str
  fields: Mapping[str, Field | Group]
  optional: frozenset[str] = frozenset()


def field(
  default: Any, help: str, rule: Rule | None = None, *, neutral: bool = False
) -> Any:  # a dataclasses.Field, typed Any so that it can stand as a default
  """A dataclass field that is a config field (see the module docstring).

  A dataclass type as `default` makes a nested group: its defaults are the group's.
  """
  spec = Field(default, help, rule, neutral)
  if isinstance(default, type) and dataclasses.is_dataclass(default):
    return dataclasses.field(default_factory=default, metadata={_KEY: spec})
  if isinstance(default, list | dict | set):
    raise TypeError(f"{help!r}: a config default must be immutable (a tuple, not a list)")
  return dataclasses.field(default=default, metadata={_KEY: spec})


def first_line(text: str | None) -> str:
  return inspect.cleandoc(text or "").split("\n")[0]


def group_of(cls: type, *, skip: tuple[str, ...] = (), help: str | None = None) -> Group:
  """The `Group` of a dataclass (or Flax module) whose config fields are made with `field`.

  Args:
    cls: the dataclass.
    skip: fields that are not config fields (a module's data sizes; a Flax module's parent and
      name are always skipped).
    help: the group's meaning (default: the first line of the class docstring).

  Raises:
    TypeError: a field that is neither skipped nor declared with `field`.
  """
  fields: dict[str, Field | Group] = {}
  for f in dataclasses.fields(cls):
    spec = f.metadata.get(_KEY)
    if f.name in skip or (spec is None and f.name in _FLAX_FIELDS):
      continue
    if spec is None:
      raise TypeError(f"{cls.__name__}.{f.name}: declare it with schema.field (or skip it)")
    if isinstance(spec.default, type):
      fields[f.name] = group_of(spec.default, help=spec.help)
    else:
      fields[f.name] = spec
  return Group(help or first_line(cls.__doc__), fields)


def config_dict(group: Group) -> ml_collections.ConfigDict:
  """The group's defaults as a ConfigDict (nested groups as nested ConfigDicts)."""
  config = ml_collections.ConfigDict()
  for name, spec in group.fields.items():
    config[name] = config_dict(spec) if isinstance(spec, Group) else spec.default
  return config


def check(
  config: Mapping[str, Any], group: Group, *, path: str, unread: tuple[str, ...] = ()
) -> None:
  """Raises ConfigError unless `config` holds exactly the group's fields with good values.

  Config files build their groups unlocked, so a misspelled field there would otherwise become
  a new field that nothing reads (the command line already refuses unknown fields).

  Args:
    config: a ConfigDict (or any mapping) group.
    group: its schema.
    path: its place in the config, e.g. "config.train", for the message.
    unread: fields of `config` that this reader leaves to others (e.g. stage 2 does not read
      the stage-1 group); they must be present but are not checked here.
  """
  have, want = set(config.keys()), set(group.fields) | set(unread)
  unknown, missing = sorted(have - want), sorted(want - have - group.optional)
  if unknown or missing:
    parts = []
    if unknown:
      parts.append(f"unknown field(s) {', '.join(unknown)}")
    if missing:
      parts.append(f"missing field(s) {', '.join(missing)}")
    raise ConfigError(f"{path}: {'; '.join(parts)} (its fields are {', '.join(sorted(want))})")
  for name, spec in group.fields.items():
    if name not in config:
      continue  # optional
    value = config[name]
    if isinstance(spec, Group):
      if not isinstance(value, Mapping | ml_collections.ConfigDict):
        raise ConfigError(f"{path}.{name}: expected a group of fields, got {value!r}")
      check(value, spec, path=f"{path}.{name}")
    elif spec.rule is not None and not spec.rule.holds(value):
      raise ConfigError(f"{path}.{name}: expected {spec.rule.expected}, got {value!r}")


def require(ok: bool, path: str, message: str) -> None:
  """Raises ConfigError(f"{path}: {message}") unless `ok`: for rules between fields."""
  if not ok:
    raise ConfigError(f"{path}: {message}")


def walk(group: Group, prefix: str = "", *, required: bool = False) -> Iterator[tuple[str, Field]]:
  """(dotted name, field) of every field of the group and its nested groups, in order
  (`required`: leaving out the optional ones)."""
  for name, spec in group.fields.items():
    if required and name in group.optional:
      continue
    if isinstance(spec, Group):
      yield from walk(spec, f"{prefix}{name}.", required=required)
    else:
      yield f"{prefix}{name}", spec


def rows(group: Group, prefix: str = "") -> list[tuple[str, Any, str]]:
  """(dotted name, default, meaning) of every field, for a listing of the config."""
  return [(name, spec.default, spec.help) for name, spec in walk(group, prefix)]


def with_defaults(group: Group, help: str | None = None, **defaults: Any) -> Group:
  """The same fields with other defaults (e.g. stage 1's optimiser group beside stage 2's)."""
  unknown = sorted(set(defaults) - set(group.fields))
  if unknown:
    raise TypeError(f"no such field(s) to set a default for: {', '.join(unknown)}")
  fields = {
    name: dataclasses.replace(spec, default=defaults[name]) if name in defaults else spec
    for name, spec in group.fields.items()
  }
  return Group(help or group.help, fields)
