"""A new user's first commands: bin/* without activating anything, --help that lists the
command's own flags, usage on a bare command, and a start with no TensorFlow chatter.

Integration tier (the binaries as subprocesses); the classify_dir run with --sort_into
and --score_by_name is slow.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys

import pytest

from brainview.classify import sorting
from tests import classify_helpers
from tests.written_runs import ScanRow, write_scan

pytestmark = pytest.mark.integration

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO_ROOT, ".venv")

# Each command's own flags that --help must list (a sample), with a piece of their help.
OWN_FLAGS = {
    "train": {
        "flagfile": "Insert flag definitions from the given file",
        "datasets": "TFDS datasets to train on",
        "epochs": "Training epochs.",
        "output_dir": "Where runs, models and metrics go.",
        "verbosity": "libraries' own messages",
    },
    "classify_dir": {
        "model": "",
        "cams": "Write Grad-CAMs to this HDF5 file.",
        "sort_into": "DIR/coronal",
        "score_by_name": "accuracy and a confusion table",
        "resume": "Continue an interrupted run",
    },
    "classify_beam": {
        "model": "A model shipped with brainview",
        "cams": "Write Grad-CAMs to this HDF5 file.",
        "runner": "Beam runner",
        "beam_pipeline_options": "Other Beam pipeline options",
        "output_shards": "Shards written in parallel",
    },
    "build_datasets": {"datasets": "Datasets to build", "data_dir": "TFDS data directory"},
    "merge_shards": {"cams": "merge the shards' CAM files"},
    "render_cams": {"csv": "The run's CSV", "review": "review page", "count": ""},
    "release_model": {
        "name": "Name of the shipped model",
        "run_dir": "The release run's directory",
        "holdout": "metrics.json of the holdout run",
        "card_only": "Rewrite MODEL_CARD.md",
    },
}
COMMANDS = sorted(OWN_FLAGS)
ABSL_HELP_EXIT_CODE = 1  # absl's --help prints to stdout and exits 1 (app.HelpFlag)


def environment(**changes: str | None) -> dict[str, str]:
    """This environment without the TensorFlow log variable (the tools must be quiet on
    their own), with `changes` applied (None removes a variable)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(command: list[str], cwd: str = REPO_ROOT, **env: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=classify_helpers.BINARY_TIMEOUT,
        cwd=cwd,
        env=environment(**env),
    )


def bin_tool(name: str) -> str:
    return os.path.join(REPO_ROOT, "bin", name)


def fresh_shell_path() -> str:
    """PATH as a new shell has it: nothing of the project's .venv (not activated)."""
    return os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not os.path.realpath(entry).startswith(os.path.realpath(VENV))
    )


def plain_python3(path: str) -> str:
    """The `python3` a new shell finds, if brainview is not importable there."""
    python = shutil.which("python3", path=path)
    if python is None:
        pytest.skip("no python3 on PATH outside the virtual environment")
    probe = subprocess.run(
        [python, "-c", "import brainview"], capture_output=True, env={"PATH": path}
    )
    if probe.returncode == 0:
        pytest.skip(f"{python} imports brainview itself: cannot stand for a fresh shell")
    return python


# --- bin/* with nothing activated ----------------------------------------------------------------


def test_bin_commands_run_from_any_folder_with_nothing_activated(tmp_path):
    """As after `make demo` in a new shell: PATH without .venv, the first python3 cannot
    import brainview, another working folder. The wrappers run in the checkout's .venv."""
    path = fresh_shell_path()
    plain_python3(path)
    shell = {"PATH": path, "VIRTUAL_ENV": None, "PYTHONPATH": None, "PYTHONHOME": None}
    result = run([bin_tool("train"), "--help"], cwd=str(tmp_path), **shell)
    assert result.returncode == ABSL_HELP_EXIT_CODE, result.stderr
    assert "--epochs" in result.stdout and "--datasets" in result.stdout
    result = run([bin_tool("classify_dir"), "--sort_into=x", "--num_shards=2", "a", "b"],
                 cwd=str(tmp_path), **shell)  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.startswith("error: ") and "--sort_into needs the whole run" in result.stderr
    )


def test_a_checkout_without_its_venv_says_to_run_make_install(tmp_path):
    path = fresh_shell_path()
    python = plain_python3(path)
    checkout_bin = tmp_path / "checkout" / "bin"
    checkout_bin.mkdir(parents=True)
    for name in ("_launch.py", "train"):
        shutil.copy2(bin_tool(name), checkout_bin / name)
    result = run([python, str(checkout_bin / "train"), "--help"], PATH=path, VIRTUAL_ENV=None)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "brainview is not installed" in result.stderr
    assert f"run `make install` in {tmp_path / 'checkout'}" in result.stderr


# --- Help and usage ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_the_commands_own_flags_with_their_help(command):
    result = run([sys.executable, bin_tool(command), "--help"])
    assert result.returncode == ABSL_HELP_EXIT_CODE, result.stderr
    help_text = " ".join(result.stdout.split())  # absl wraps the help lines
    for flag, help_piece in OWN_FLAGS[command].items():
        assert f"--{flag}:" in help_text or f"--[no]{flag}:" in help_text, flag
        assert help_piece in help_text, (flag, help_piece)
    for absl_internal in ("--logtostderr", "--only_check_args", "--pdb_post_mortem"):
        assert absl_internal not in help_text  # only under --helpfull
    assert result.stderr == ""


def test_installed_console_commands_show_the_same_help():
    console = os.path.join(os.path.dirname(sys.executable), "brainview-train")
    if not os.path.exists(console):
        pytest.skip("brainview is not installed in this Python (console scripts absent)")
    result = run([console, "--help"])
    assert result.returncode == ABSL_HELP_EXIT_CODE, result.stderr
    assert "--epochs:" in result.stdout and "Trains and evaluates" in result.stdout


def test_every_bin_command_is_an_installed_console_command():
    """bin/NAME says it is the installed `brainview-NAME` command: setup.py must declare
    it, running the same module."""
    try:
        installed = importlib.metadata.distribution("brainview").entry_points
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("brainview is not installed in this Python (console scripts absent)")
    console = {entry.name: entry.value for entry in installed if entry.group == "console_scripts"}
    bin_commands = sorted(
        name for name in os.listdir(os.path.join(REPO_ROOT, "bin")) if not name.startswith("_")
    )
    assert set(COMMANDS) <= set(bin_commands)
    for name in bin_commands:
        script = "brainview-" + name.replace("_", "-")
        assert console.get(script) == f"brainview.cli.{name}:run", script
        with open(bin_tool(name), encoding="utf-8") as wrapper:
            source = wrapper.read()
        assert f"`{script}` command" in source and f'launch("brainview.cli.{name}")' in source


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bare_command_prints_its_usage_and_flags(command):
    result = run([sys.executable, bin_tool(command)])
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert "\nflags:\n" in result.stderr
    for flag in OWN_FLAGS[command]:
        assert f"--{flag}" in result.stderr or f"--[no]{flag}" in result.stderr, flag


# --- Quiet start ---------------------------------------------------------------------------------


def test_train_and_classify_start_without_tensorflow_chatter(tmp_path):
    """Both import TensorFlow (train already while checking its flags) and stop with a
    one-line error: that line is all of stderr, with TF_CPP_MIN_LOG_LEVEL unset."""
    result = run([sys.executable, bin_tool("train"), "--datasets=no_such_dataset",
                  f"--output_dir={tmp_path / 'train'}"])  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: unknown dataset 'no_such_dataset'")

    result = run([sys.executable, bin_tool("classify_dir"), str(tmp_path),
                  str(tmp_path / "out.csv"), f"--model={tmp_path / 'missing.keras'}"])  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: ")


def test_verbosity_brings_the_runtime_log_back(tmp_path):
    result = run([sys.executable, bin_tool("classify_dir"), str(tmp_path),
                  str(tmp_path / "out.csv"), f"--model={tmp_path / 'missing.keras'}",
                  "--verbosity=0"])  # fmt: skip
    assert result.returncode == 2
    assert "absl::InitializeLog()" in result.stderr
    assert "oneDNN custom operations" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


# --- classify_dir --sort_into --score_by_name (slow) ------------------------------------------------


@pytest.mark.slow
def test_classify_sorts_and_scores_with_nothing_on_stderr(classifier_model, tmp_path):
    """The user's one command: a CSV, CAMs, the scans filed by answer and the accuracy on
    scans whose names give their view; stderr empty. Run again, it completes nothing new."""
    scan_dir = str(tmp_path / "scans")
    views = ("coronal", "horizontal", "sagittal")
    for i in range(6):
        name = f"slide_{i // 3}/s{i:02d}_{views[i % 3]}.png"
        write_scan(os.path.join(scan_dir, name), ScanRow(name, views[i % 3], size=(160, 120)))
    out = tmp_path / "run"
    out.mkdir()
    args = [sys.executable, bin_tool("classify_dir"), scan_dir, str(out / "p.csv"),
            f"--model={classifier_model}", f"--cams={out / 'c.h5'}",
            f"--sort_into={out / 'sorted'}", "--score_by_name"]  # fmt: skip
    result = run(args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "scored by name: " in result.stdout and " of 6 right" in result.stdout
    assert "  sorted:   " in result.stdout and "(6 new, 0 already there)" in result.stdout
    filed = {name: sorted(os.listdir(out / "sorted" / name)) for name in sorting.CLASSES}
    assert sum(len(entries) for entries in filed.values()) == 6

    again = run([*args, "--resume"])
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""
    assert "already complete" in again.stdout and "(0 new, 6 already there)" in again.stdout
    assert {name: sorted(os.listdir(out / "sorted" / name)) for name in sorting.CLASSES} == filed
