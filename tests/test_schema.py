"""Config fields declared once (schema.py): defaults, meanings, rules, and the checks on them."""

import dataclasses

import ml_collections
import pytest

from alignrec_jax import schema
from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import config_schema
from configs import default


@dataclasses.dataclass(frozen=True)
class Inner:
  """An inner group."""

  k: int = schema.field(3, "neighbours", schema.POSITIVE_INT)


@dataclasses.dataclass(frozen=True)
class Outer:
  """An outer group."""

  lr: float = schema.field(1e-3, "the learning rate", schema.POSITIVE)
  every: int = schema.field(1, "checkpoint cadence", schema.POSITIVE_INT, neutral=True)
  inner: Inner = schema.field(Inner, "nested")


GROUP = schema.group_of(Outer)


def test_a_group_gives_its_defaults_meanings_and_neutral_fields():
  config = schema.config_dict(GROUP)
  assert config.to_dict() == {"lr": 1e-3, "every": 1, "inner": {"k": 3}}
  assert GROUP.help == "An outer group." and GROUP.fields["inner"].help == "nested"
  assert schema.rows(GROUP) == [
    ("lr", 1e-3, "the learning rate"),
    ("every", 1, "checkpoint cadence"),
    ("inner.k", 3, "neighbours"),
  ]
  assert [name for name, spec in schema.walk(GROUP) if spec.neutral] == ["every"]


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda c: c.update(lr=-1.0), r"config\.lr: expected a number > 0, got -1\.0"),
    (lambda c: c.inner.update(k=0), r"config\.inner\.k: expected an integer >= 1, got 0"),
    (
      lambda c: c.inner.update(kk=1),
      r"config\.inner: unknown field\(s\) kk \(its fields are k\)",
    ),
  ],
)
def test_a_bad_field_is_one_line_naming_it(change, message):
  config = schema.config_dict(GROUP)
  change(config)
  with pytest.raises(ConfigError, match=message) as info:
    schema.check(config, GROUP, path="config")
  assert "\n" not in str(info.value)


def test_missing_unread_and_optional_fields():
  config = ml_collections.ConfigDict({"lr": 1e-3, "inner": {"k": 3}})
  with pytest.raises(ConfigError, match=r"config: missing field\(s\) every"):
    schema.check(config, GROUP, path="config")
  optional = schema.Group(GROUP.help, GROUP.fields, frozenset({"every"}))
  schema.check(config, optional, path="config")
  config.other = {"anything": 1}  # another reader's group: present, not checked here
  schema.check(config, optional, path="config", unread=("other",))


def test_an_undeclared_field_is_refused_where_the_group_is_made():
  @dataclasses.dataclass(frozen=True)
  class Loose:
    """A group with a plain field."""

    x: int = 1

  with pytest.raises(TypeError, match="Loose.x: declare it with schema.field"):
    schema.group_of(Loose)
  with pytest.raises(TypeError, match="immutable"):
    schema.field([1], "a list")


def test_other_defaults_keep_the_fields():
  stage1_like = schema.with_defaults(GROUP, "another", lr=0.1)
  assert schema.config_dict(stage1_like).lr == 0.1 and stage1_like.help == "another"
  with pytest.raises(TypeError, match="no such field"):
    schema.with_defaults(GROUP, lrate=0.1)


def test_every_field_of_the_experiment_config_is_declared_once_with_a_meaning():
  """configs/default.py is the schema's defaults, nothing repeated; every field says what it
  means in one line, and every default passes its own rule."""
  assert default.get_config().to_dict() == config_schema.default_config().to_dict()
  rows = config_schema.rows()
  assert len(rows) == len({name for name, _, _ in rows}) > 100
  for name, _, help_text in rows:
    assert help_text and "\n" not in help_text and len(help_text) < 200, name
  config_schema.check(default.get_config())
