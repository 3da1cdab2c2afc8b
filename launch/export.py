r"""Exports a trained stage-2 run: user and item embeddings, and every user's top-k items.

  python -m launch.export --workdir=runs/ml100k --k=50
  python -m launch.export --workdir=RUN --checkpoint=latest --exclude_valid --out=/tmp/recs

A pipeline's WORKDIR exports the stage-2 run it selected (WORKDIR/pipeline.json). Writes into
--out (default: the run's folder/export) user_embeddings.npy, item_embeddings.npy, topk.tsv
(and topk.parquet with pyarrow installed) and export.json; see alignrec_jax/serving/export.py.
Ids are the dataset's own where its folder has id-mapping files (u_id_mapping.csv,
i_id_mapping.csv), else the internal ones.
"""

import os

from absl import app, flags

from alignrec_jax.serving import export, load_run
from alignrec_jax.training import reporting
from launch import cli

_WORKDIR = flags.DEFINE_string(
  "workdir", None, "The trained run's folder, or a pipeline's.", required=True
)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint", "best", "best (the best validation epoch), latest, or an epoch."
)
_K = flags.DEFINE_integer("k", 50, "Items per user.")
_OUT = flags.DEFINE_string("out", None, "Output folder (default WORKDIR/export).")
_EXCLUDE_VALID = flags.DEFINE_bool(
  "exclude_valid", False, "Also leave out each user's validation items."
)


def main(argv):
  del argv
  reporting.show_progress()
  checkpoint = _CHECKPOINT.value
  run = load_run(_WORKDIR.value, int(checkpoint) if checkpoint.isdigit() else checkpoint)
  out = _OUT.value or os.path.join(run.workdir, "export")
  record = export(run, out, k=_K.value, exclude_valid=_EXCLUDE_VALID.value)
  print(
    f"exported epoch {record['epoch']}: {record['users']:,} users x top-{record['k']} "
    f"({record['rows']:,} rows) and the embeddings to {out} in {record['seconds']:.1f} s"
  )


if __name__ == "__main__":
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
