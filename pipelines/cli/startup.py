"""What every binary does around its main(): help that shows its flags, and a quiet start.

Help. absl's `--help` lists the key flags of the main module only, and the
binaries' flags are defined in `brainview.cli.<name>` while the main module
is `bin/<name>` or a console script. `run` declares the command's flags (and
absl's `--flagfile` and `--verbosity`) key flags of the main module, as
`flags.adopt_module_key_flags` would from there, so `--help` lists them with
their help under the command's name; a run without arguments prints the
same usage and exits 2.

Quiet start. At the default verbosity a command prints its own lines only:

* TensorFlow's C++ log. Loading TensorFlow logs "oneDNN custom operations
  are on" and "Could not find cuda drivers" *twice*, each after "WARNING: All
  log messages before absl::InitializeLog() is called are written to STDERR":
  libtensorflow_framework.so.2 and the profiler's _pywrap_profiler_plugin.so
  each carry their own copy of those static initializers and of Abseil's
  logging, and Abseil writes everything logged before InitializeLog() to
  stderr whatever TF_CPP_MIN_LOG_LEVEL says. Setting the variable earlier
  cannot help; the lines are dropped from file descriptor 2 while
  TensorFlow loads (`_runtime_log_dropped`), everything else written there
  meanwhile is passed on. TF_CPP_MIN_LOG_LEVEL=3 (unless the environment sets
  it) silences the C++ log after loading, e.g. "failed call to cuInit".
* TensorFlow's Python logger: errors only.
* What the libraries print about themselves (TFDS's "Downloading and
  preparing dataset ..." for a generated dataset) is hidden by the binaries
  that call them, with `library_prints_hidden`.

`--verbosity=0` (INFO) or more brings all of it back, unfiltered. Its value
is read from the command line before TensorFlow is imported (the C++ log
level is fixed when TensorFlow loads, and bin/train's flag validators
already import it), with absl's own parser, flag files included.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging as python_logging
import os
import re
import sys
import tempfile
import types
from collections.abc import Callable, Iterator

from absl import app, flags, logging

from brainview.cli import flag_errors

FLAGS = flags.FLAGS
# Key flags of this module that every command's --help shows: absl's --flagfile
# (adopted from absl.flags, which also holds --undefok) and absl.logging's --verbosity.
flags.adopt_module_key_flags(flags)
flags.declare_key_flag("verbosity")
_SHARED_HELP_FLAGS = ("flagfile", "verbosity")

# Exit code of a run without arguments (a usage error, like a bad flag value).
USAGE_EXIT_CODE = 2

# A line of TensorFlow's C++ runtime log below FATAL ("I0000 00:00:1796.5  123 port.cc:153] ..."),
# Abseil's pre-initialization notice, and the continuation line of the CPU-feature notice.
_RUNTIME_LOG_LINE = re.compile(
    rb"^([IWE]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)


def show_flags_in_help(cli_module: types.ModuleType) -> None:
    """Makes `--help` list the command's own flags, `--flagfile` and `--verbosity`.

    absl keys the main module's flags by sys.argv[0] (see absl's module_help),
    so they are registered under that name.
    """
    shared = [
        flag
        for flag in FLAGS.get_key_flags_for_module(sys.modules[__name__])
        if flag.name in _SHARED_HELP_FLAGS
    ]
    for flag in [*FLAGS.get_key_flags_for_module(cli_module), *shared]:
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    # absl's own help says the default becomes INFO after parsing; `run` keeps WARNING.
    FLAGS["verbosity"].help = (
        "How much to log: -1 the command's own warnings and errors; 0 also INFO and "
        "the libraries' own messages (TensorFlow's C++ log, TFDS); 1 debug."
    )
    # absl prints the main module's docstring above the flags: the command's own.
    main = sys.modules["__main__"]
    if main is not cli_module:
        main.__doc__ = cli_module.__doc__


def requested_verbosity(argv: list[str]) -> int:
    """The --verbosity (-v) the command line asks for, flag files included; absl's
    default WARNING when it asks for none or its value does not parse (the real
    parse reports that)."""
    scratch = flags.FlagValues()
    flags.DEFINE_integer("verbosity", logging.WARNING, "", short_name="v", flag_values=scratch)
    try:
        expanded = FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
        scratch([argv[0], *expanded], known_only=True)
    except (flags.Error, OSError):
        return logging.WARNING
    return scratch.verbosity


def is_verbose() -> bool:
    """Whether the parsed --verbosity asks for the libraries' own messages (INFO or more)."""
    return FLAGS["verbosity"].value >= logging.INFO


@contextlib.contextmanager
def _runtime_log_dropped() -> Iterator[None]:
    """Sends file descriptor 2 to a temporary file while the body runs, then writes
    what it received to the real stderr without TensorFlow's runtime log lines.

    At file-descriptor level because the C++ runtime writes there directly. Also
    on exit by an exception (a bad flag's message is printed inside the body).
    """
    sys.stderr.flush()
    real_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(real_stderr, 2)
            os.close(real_stderr)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().splitlines(True)
                if not _RUNTIME_LOG_LINE.match(line)
            ]
            os.write(2, b"".join(kept))


def _quiet_parser(import_tensorflow: bool) -> Callable[[list[str]], list[str]]:
    """flag_errors.parse_flags, and TensorFlow loaded, with the runtime's log dropped."""

    def parse(argv: list[str]) -> list[str]:
        with _runtime_log_dropped():
            remaining = flag_errors.parse_flags(argv)
            if import_tensorflow:
                importlib.import_module("tensorflow")
        return remaining

    return parse


@contextlib.contextmanager
def library_prints_hidden() -> Iterator[None]:
    """Hides what a library prints to stdout about its own work, unless verbose
    (e.g. TFDS's "Downloading and preparing dataset Unknown size" when it
    generates a dataset; the binary prints its own line instead)."""
    if is_verbose():
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def run(
    main: Callable[[list[str]], int | None],
    cli_module: types.ModuleType,
    *,
    imports_tensorflow: bool,
) -> None:
    """app.run(main) as every binary runs it: help with its flags, usage without
    arguments, one-line flag errors, and a quiet start unless --verbosity asks."""
    show_flags_in_help(cli_module)
    if len(sys.argv) == 1:
        app.usage(shorthelp=True, exitcode=USAGE_EXIT_CODE)
    verbose = requested_verbosity(sys.argv) >= logging.INFO
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        python_logging.getLogger("tensorflow").setLevel(python_logging.ERROR)
    logging.set_verbosity(logging.WARNING)  # absl's INFO default, unless --verbosity says
    parser = flag_errors.parse_flags if verbose else _quiet_parser(imports_tensorflow)
    app.run(main, flags_parser=parser)
