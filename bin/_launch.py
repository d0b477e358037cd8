"""Runs a brainview binary from a checkout, with no environment to activate.

Each bin/<command> calls `launch("brainview.cli.<command>")`. In a Python
where brainview imports (an activated environment, an installed package),
the command runs right there. Otherwise the same command line is re-executed
with the checkout's own .venv/bin/python, which `make install` (and every
make target) creates; without one, the message says to run `make install`.

This file runs in whatever `python3` is first on PATH, so it needs nothing
but the standard library.
"""

import importlib
import os
import sys

CHECKOUT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
VENV = os.path.join(CHECKOUT, ".venv")


def _running_in(venv):
    return os.path.realpath(sys.prefix) == os.path.realpath(venv)


def launch(module_name):
    """Imports `module_name` (a brainview.cli module) and calls its run()."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        python = os.path.join(VENV, "bin", "python")
        if os.path.exists(python) and not _running_in(VENV):
            os.execv(python, [python, sys.argv[0], *sys.argv[1:]])
        sys.exit(
            f"{os.path.basename(sys.argv[0])}: brainview is not installed in {sys.executable} "
            f"({error}); run `make install` in {CHECKOUT}"
        )
    module.run()
