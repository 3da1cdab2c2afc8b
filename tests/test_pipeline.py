"""The pipeline's choice between stage 1's features and the raw inputs, and its config."""

import json
import os

import numpy as np
import pytest

from alignrec_jax.errors import ConfigError
from alignrec_jax.experiments import pipeline, runs
from alignrec_jax.serving import load_run
from alignrec_jax.training import stage1
from configs import test as test_config


def _summary(valid, test=0.5):
  return {"best_epoch": 3, "valid": {"recall@20": valid}, "test": {"recall@20": test}}


def test_the_best_validation_run_is_selected_and_the_margin_is_against_the_runner_up():
  summaries = {"stage1": _summary(0.20), "raw": _summary(0.25), "text": _summary(0.22)}
  result = pipeline.select(summaries, metric="recall@20")
  assert result["selected"] == "raw" and result["runner_up"] == "text"
  assert result["margin"] == pytest.approx(0.03)
  assert result["selected_by"] == "valid recall@20"
  assert result["candidates"]["stage1"]["workdir"] == "stage2"
  assert result["candidates"]["text"]["workdir"] == "stage2_text"
  assert list(result["candidates"]) == ["stage1", "raw", "text"]


def test_a_tie_goes_to_the_earlier_candidate_and_use_overrides_the_scores():
  tie = {"stage1": _summary(0.2), "raw": _summary(0.2)}
  assert pipeline.select(tie, metric="recall@20")["selected"] == "stage1"
  assert pipeline.select(tie, metric="recall@20")["margin"] == 0.0
  forced = pipeline.select({"raw": _summary(0.1)}, metric="recall@20", use="raw")
  assert forced["selected"] == "raw" and forced["margin"] is None
  assert forced["selected_by"] == "config.pipeline.use"
  assert "the only input trained" in pipeline.format_selection(forced)


def test_the_verdict_says_which_and_by_how_much():
  summaries = {"stage1": _summary(0.20, 0.3), "raw": _summary(0.25, 0.31)}
  text = pipeline.format_selection(pipeline.select(summaries, metric="recall@20"))
  assert text.splitlines()[0] == (
    "pipeline: using stage 2 on raw (stage2_raw), selected by valid recall@20: "
    "+0.0500 (+25.0%) against stage1"
  )
  assert text.splitlines()[-1].endswith("<- selected")


@pytest.mark.parametrize(
  "candidates, use, message",
  [
    ((), "best", "config.pipeline.candidates: expected a non-empty tuple"),
    (("raw", "raw"), "best", "expected a non-empty tuple of distinct input names"),
    (("raw", "imag"), "best", "unknown input 'imag'; expected raw, stage1 or one of"),
    (("raw",), "audio", "config.pipeline.use: unknown input 'audio'"),
  ],
)
def test_bad_pipeline_settings_are_refused_before_anything_runs(candidates, use, message):
  config = test_config.get_config()
  config.stage1.data.modalities = (
    ("image", "vector", "image_feat.npy"),
    ("text", "vector", "text_feat.npy"),
  )
  config.pipeline.candidates = candidates
  config.pipeline.use = use
  with pytest.raises(ConfigError, match=message):
    pipeline.check_config(config)


@pytest.mark.slow
def test_use_trains_one_input_only_and_serving_loads_the_selected_run(tmp_path):
  config = test_config.get_config()
  config.train.max_epochs = 2
  config.pipeline.use = "text"  # a single modality: stage 1 is not trained at all
  result = pipeline.run_pipeline(config, str(tmp_path))
  assert result["selected"] == "text" and list(result["candidates"]) == ["text"]
  assert sorted(f for f in os.listdir(tmp_path) if not f.startswith(".")) == [
    "data",
    "pipeline.json",
    "stage2_text",
  ]
  run_config = json.loads((tmp_path / "stage2_text" / "summary.json").read_text())["config"]
  assert [os.path.basename(f) for f in run_config["data"]["features"]] == ["text_feat.npy"]
  run = load_run(str(tmp_path))  # the pipeline's folder: the run it selected
  assert run.workdir == str(tmp_path / "stage2_text")
  assert run.item_embeddings.shape[0] == 80


def test_an_unknown_stage1_output_is_refused():
  config = test_config.get_config()
  config.stage1.model.output = "mean"
  with pytest.raises(
    ConfigError, match="config.stage1.model.output: expected one of cls, anchored"
  ):
    stage1.check_config(config.stage1)


@pytest.mark.slow
def test_stage2_starts_over_only_when_its_features_change(tmp_path):
  features = tmp_path / "f.npy"
  np.save(features, np.random.default_rng(0).normal(size=(80, 4)).astype(np.float32))
  config = test_config.get_config()
  config.train.max_epochs = 1
  config.data.cache_dir = str(tmp_path / "data")
  config.data.features = (str(features),)
  run = tmp_path / "stage2"
  runs.stage2(config, str(run))
  pipeline.start_over_on_other_inputs(config, str(run))  # the same contents: kept
  assert runs.finished(config, str(run)) is not None
  np.save(features, np.random.default_rng(1).normal(size=(80, 4)).astype(np.float32))
  assert runs.finished(config, str(run)) is None  # a run's identity holds its inputs' contents
  pipeline.start_over_on_other_inputs(config, str(run))  # new contents: emptied
  assert not run.exists()
