"""Console filtering of the launchers: our progress at INFO, other libraries' only from WARNING."""

import logging
import os

import pytest

from alignrec_jax import reporting

_PACKAGE = os.path.dirname(os.path.abspath(reporting.__file__))
_CHECKOUT = os.path.dirname(_PACKAGE)


def _record(pathname: str, level: int) -> logging.LogRecord:
  return logging.LogRecord("absl", level, pathname, 1, "message", None, None)


@pytest.mark.parametrize("pathname, level, shown", [
    (os.path.join(_PACKAGE, "reporting.py"), logging.INFO, True),
    (os.path.join(_PACKAGE, "data", "dataset.py"), logging.INFO, True),
    # A virtual environment inside the checkout (the README's set-up): its path contains the
    # checkout's name, which may well be "alignrec_jax", yet it is not this package.
    (os.path.join(_CHECKOUT, ".venv", "lib", "site-packages", "orbax", "checkpoint_manager.py"),
     logging.INFO, False),
    ("/opt/alignrec_jax/.venv/lib/site-packages/orbax/atomicity.py", logging.INFO, False),
    (os.path.join(_PACKAGE + "_extra", "module.py"), logging.INFO, False),
    ("/usr/lib/python3/site-packages/orbax/atomicity.py", logging.WARNING, True),
    ("/usr/lib/python3/site-packages/orbax/atomicity.py", logging.ERROR, True),
])
def test_own_info_only(pathname, level, shown):
  assert reporting.OwnInfoOnly().filter(_record(pathname, level)) is shown
