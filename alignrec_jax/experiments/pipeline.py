"""Both stages in one call, and a stage 2 that never loses to the raw features it could have had.

Stage 1 (WORKDIR/stage1, `training.stage1.run_stage1`) writes item features; stage 2 is then
trained on them and on each other candidate input of `config.pipeline.candidates` (the raw
concatenation, a single modality: `inputs.feature_inputs`), and the run with the best validation
`config.train.select_metric` is the pipeline's result. A small encoder trained from scratch on a
few thousand items can lose information its raw inputs carry; the selection keeps users from
paying for that (`config.pipeline.use` names one input to train and use instead).

Folders: WORKDIR/stage2 is the run on stage 1's features, WORKDIR/stage2_<input> the run on
each other input, each an ordinary `runs.stage2` run; WORKDIR/pipeline.json
(`record.write_selection`) says which was selected, on what and by how much. Everything
resumes from its checkpoints (a finished run is read back), and a stage-2 run starts over
whenever its input features changed (its identity holds their contents).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from typing import Any

import ml_collections

from alignrec_jax import files, schema
from alignrec_jax.data import load_mmrec
from alignrec_jax.experiments import inputs as inputs_lib
from alignrec_jax.experiments import runs
from alignrec_jax.training import record, reporting, stage1, stage2
from alignrec_jax.training.parallel import is_primary, make_parallel
from alignrec_jax.training.stage2_setup import dataset_folder


def _candidates(value: Any) -> bool:
  return (
    isinstance(value, list | tuple)
    and len(value) > 0
    and all(isinstance(c, str) for c in value)
    and len(set(value)) == len(value)
  )


@dataclasses.dataclass(frozen=True)
class Config:
  """What launch.pipeline trains stage 2 on, and which run it keeps."""

  candidates: tuple = schema.field(
    ("stage1", "raw"),
    "the inputs stage 2 is trained on: stage1 (stage 1's features), raw (data.features "
    "combined) or a stage-1 modality's paired raw file alone",
    schema.Rule(
      _candidates,
      "a non-empty tuple of distinct input names (raw, stage1 or a stage-1 modality name)",
    ),
  )
  use: str = schema.field(
    "best",
    "best: keep the candidate with the best validation train.select_metric; an input name: "
    "train and use that one only",
    schema.Rule(lambda v: isinstance(v, str), "'best' or an input name"),
  )


GROUP = schema.group_of(Config)


def stage2_dir(workdir: str, input_name: str) -> str:
  """The folder of stage 2 on `input_name`: WORKDIR/stage2 for stage 1's features."""
  return os.path.join(workdir, "stage2" if input_name == "stage1" else f"stage2_{input_name}")


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a bad `config.pipeline` group (before any data is read)."""
  schema.check(config.pipeline, GROUP, path="config.pipeline")
  candidates, use = config.pipeline.candidates, config.pipeline.use
  inputs_lib.check_input_names(config, candidates, field="config.pipeline.candidates")
  if use != "best":
    inputs_lib.check_input_names(config, [use], field="config.pipeline.use")


def inputs_to_train(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The candidates (`use` = "best"), or the one input `use` names."""
  use = config.pipeline.use
  return tuple(config.pipeline.candidates) if use == "best" else (use,)


def start_over_on_other_inputs(config: ml_collections.ConfigDict, directory: str) -> None:
  """Empties `directory` when its run was trained on other feature files' contents than
  `config` names (stage 1 has written new features since)."""
  stored = record.stored_identity(directory)
  if stored is None:
    return
  if stored.get("inputs") != stage2.run_identity(config, directory)["inputs"]:
    reporting.log(f"stage 2: {directory} was trained on other features; starting it over")
    shutil.rmtree(directory)


def select(
  summaries: Mapping[str, Mapping[str, Any]], *, metric: str, use: str = "best"
) -> dict[str, Any]:
  """Which input's stage 2 the pipeline keeps, and the numbers behind the choice.

  Args:
    summaries: input name -> its stage-2 summary, in candidate order.
    metric: the validation metric that decides (the runs' `train.select_metric`).
    use: "best", or the input chosen by the user.

  Returns:
    {"selected", "selected_by", "metric", "margin", "runner_up", "candidates"}: "margin" is
    the selected run's validation `metric` minus the best other candidate's (None with one
    candidate); ties go to the earlier candidate. "candidates" holds each run's validation and
    test metrics at its best epoch and its folder's name.
  """
  names = list(summaries)
  valid = {name: summaries[name]["valid"][metric] for name in names}
  if use == "best":
    selected = max(names, key=lambda n: (valid[n], -names.index(n)))
  else:
    selected = use
  others = [n for n in names if n != selected]
  runner_up = max(others, key=lambda n: (valid[n], -names.index(n))) if others else None
  return {
    "selected": selected,
    "selected_by": f"valid {metric}" if use == "best" else "config.pipeline.use",
    "metric": metric,
    "margin": None if runner_up is None else valid[selected] - valid[runner_up],
    "runner_up": runner_up,
    "candidates": {
      name: {
        "workdir": os.path.basename(stage2_dir("", name)),
        "best_epoch": summaries[name].get("best_epoch"),
        "valid": summaries[name]["valid"],
        "test": summaries[name]["test"],
      }
      for name in names
    },
  }


def format_selection(result: Mapping[str, Any]) -> str:
  """The candidates' metrics, one row each, the selected one marked, and the verdict."""
  metric = result["metric"]
  columns = [("valid", metric), ("test", "recall@20"), ("test", "ndcg@20")]
  header = f"  {'input':<12}" + "".join(f"{split + ' ' + m:>18}" for split, m in columns)
  lines = [header]
  for name, row in result["candidates"].items():
    cells = "".join(f"{row[split].get(m, float('nan')):>18.4f}" for split, m in columns)
    mark = "  <- selected" if name == result["selected"] else ""
    lines.append(f"  {name:<12}{cells}{mark}")
  selected = result["candidates"][result["selected"]]
  verdict = f"pipeline: using stage 2 on {result['selected']} ({selected['workdir']}), "
  if result["runner_up"] is None:
    verdict += "the only input trained"
  else:
    other = result["candidates"][result["runner_up"]]["valid"][metric]
    relative = result["margin"] / other if other else float("nan")
    verdict += (
      f"selected by {result['selected_by']}: {result['margin']:+.4f} ({relative:+.1%}) "
      f"against {result['runner_up']}"
    )
  return verdict + "\n" + "\n".join(lines)


def run_pipeline(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  redo_stage1: bool = False,
  allow_config_change: bool = False,
) -> dict[str, Any]:
  """Stage 1, then stage 2 on each input to train; returns what WORKDIR/pipeline.json holds.

  Every config is checked before any data is read (stage 1's only when it is trained); the
  pipeline holds WORKDIR's lock (each run also holds its own folder's).
  """
  stage2.check_config(config)
  check_config(config)
  names = inputs_to_train(config)
  if "stage1" in names:
    stage1.check_config(config.stage1)
  folder = dataset_folder(config.data, workdir)
  with files.WorkdirLock(workdir):
    stage1_features = None
    if "stage1" in names:
      num_items = load_mmrec(folder, inter_file=config.data.inter_file or None).num_items
      stage1_features = stage1.run_stage1(
        config.stage1,
        folder,
        workdir,
        num_items=num_items,
        seed=config.seed,
        redo=redo_stage1,
        allow_config_change=allow_config_change,
        parallel=make_parallel(config.parallel),
      )
    inputs = inputs_lib.feature_inputs(config, workdir, names, stage1_features=stage1_features)
    summaries = {}
    for index, (name, feature_files) in enumerate(inputs.items()):
      directory = stage2_dir(workdir, name)
      if len(inputs) > 1:
        reporting.log(f"pipeline: stage 2 on {name} ({index + 1} of {len(inputs)}): {directory}")
      run = config.copy_and_resolve_references()
      run.data.features = tuple(feature_files)
      start_over_on_other_inputs(run, directory)
      summaries[name] = runs.stage2(run, directory, allow_config_change=allow_config_change)
    result = select(summaries, metric=config.train.select_metric, use=config.pipeline.use)
    if is_primary():
      record.write_selection(workdir, result)
    reporting.log(format_selection(result))
    return result
