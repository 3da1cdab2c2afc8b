r"""Plots a run's curves (loss terms, validation and test metrics per epoch) to a PNG.

python -m launch.plot --workdir=runs/default        # writes runs/default/curves.png
"""

from absl import app, flags

from alignrec_jax.training import plotting
from launch import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's workdir.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "PNG path (default WORKDIR/curves.png).")


def main(argv):
  del argv
  print(plotting.plot_run(_WORKDIR.value, _OUTPUT.value))


if __name__ == "__main__":
  app.run(cli.exit_on_user_error(main), flags_parser=cli.parse_flags)
