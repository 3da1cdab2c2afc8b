"""Checkpoints (training/checkpoint.py): a damaged one is moved aside and the one before it
resumed, one of another model's shapes is refused as such, and a full disk loses nothing."""

import errno
import os

import pytest
import run_checks

from alignrec_jax.errors import WorkdirError
from alignrec_jax.training import checkpoint, stage2
from launch import cli


@pytest.mark.slow
def test_a_corrupt_newest_checkpoint_falls_back_quietly(tmp_path, reference):
  """The newest checkpoint damaged: moved aside with a warning, the older one resumed; no
  orbax noise on the console, and the run ends as an uninterrupted one."""
  workdir = tmp_path / "run"
  stage2.train_and_evaluate(
    run_checks.tiny_config(max_epochs=2), str(workdir)
  )  # checkpoints 0 and 1
  damaged = workdir / "checkpoints" / "1" / "state"
  for path in damaged.rglob("*"):
    if path.is_file() and path.stat().st_size > 100:
      path.write_bytes(path.read_bytes()[:20])  # cut short, as a full disk leaves it
  result = run_checks.launch(
    "--config=configs/test.py",
    f"--workdir={workdir}",
    check_code=0,
  )
  assert "the checkpoint of epoch 1" in result.stderr and "cannot be read" in result.stderr
  assert "sys.meta_path" not in result.stderr and "asyncio" not in result.stderr
  assert len(list((workdir / "checkpoints.unreadable").iterdir())) == 1
  run_checks.assert_same_run(str(workdir), reference)


@pytest.mark.slow
def test_a_model_of_another_size_is_refused_not_taken_for_damage(tmp_path):
  workdir = str(tmp_path)
  stage2.train_and_evaluate(run_checks.tiny_config(max_epochs=1), workdir)
  bigger = run_checks.tiny_config(max_epochs=2)
  bigger.model.alignrec.embed_dim = 32
  with pytest.raises(WorkdirError, match="arrays of other shapes"):
    stage2.train_and_evaluate(bigger, workdir, allow_config_change=True)
  assert not os.path.exists(os.path.join(workdir, "checkpoints.unreadable"))


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys, reference):
  workdir = str(tmp_path)
  real = checkpoint.Checkpointer.save

  def full(self, epoch, state, meta):
    if epoch == 1:
      raise OSError(errno.ENOSPC, "No space left on device", self.directory)
    real(self, epoch, state, meta)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", full)
  main = cli.exit_on_user_error(
    lambda argv: stage2.train_and_evaluate(run_checks.tiny_config(), workdir)
  )
  with pytest.raises(SystemExit) as info:
    main([])
  assert info.value.code == cli.DISK_FULL_EXIT
  assert "no space left on device" in capsys.readouterr().err
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real)
  stage2.train_and_evaluate(run_checks.tiny_config(), workdir)
  run_checks.assert_same_run(workdir, reference)
