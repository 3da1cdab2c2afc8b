"""Shared set-up: XLA's compilation cache and optimisation level, the shared data folder, and an
uninterrupted tiny run (configs/test.py) that interrupted runs must end equal to."""

import os
import pathlib
import tempfile

import jax
import pytest
import run_checks

# XLA's persistent compilation cache, shared by this run's tests and the launchers they start
# as subprocesses: many tests compile the same tiny programs, and compiling dominates their time.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="alignrec-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
  "jax_persistent_cache_min_compile_time_secs",
  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)

# The tests' programs are tiny, so LLVM's optimisation of XLA's CPU code costs more than it saves:
# at level 0 a tiny stage-2 run took 13.5 s instead of 20 s (its epoch compiled in 4.1 s, not
# 7.2). Set before the first computation starts the backend; inherited by launched subprocesses.
os.environ["XLA_FLAGS"] = " ".join(
  [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
).strip()

SHARED_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f"the shared datasets folder {SHARED_DATA} is absent")
  return SHARED_DATA


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> str:
  """An uninterrupted 3-epoch run of the tiny config: every interrupted run must end equal to
  it (`run_checks.assert_same_run`)."""
  from alignrec_jax.training import stage2

  workdir = str(tmp_path_factory.mktemp("reference"))
  stage2.train_and_evaluate(run_checks.tiny_config(), workdir)
  return workdir
