"""bin/train end to end: a tiny training run that must beat chance, resume, and clear errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO_ROOT

# Tier: bin/train as a subprocess (see conftest.py).
pytestmark = pytest.mark.integration

TRAIN = os.path.join(REPO_ROOT, "bin", "train")

# Small and fast: 64 px phantom slices, from scratch, no augmentation, a constant learning
# rate (4 epochs of the tiny phantom are too few for the default cosine decay), every flag
# that shapes the result set here so that changing bin/train's defaults does not move it.
TINY_RUN = [
    "--datasets=brain_phantom/tiny",
    "--weights=none",
    "--trainable_layers=all",
    "--image_size=64",
    "--batch_size=16",
    "--learning_rate=2e-3",
    "--lr_schedule=constant",
    "--preprocessing=section",
    "--augment=none",
    "--tta=false",
    "--balance=view",
    "--seed=1",
]


def run_train(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, TRAIN, *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_tiny_training_beats_chance_on_held_out_specimens(phantom_data_dir, tmp_path):
    output = tmp_path / "run"
    result = run_train(
        *TINY_RUN,
        "--epochs=4",
        "--validation=false",
        f"--data_dir={phantom_data_dir}",
        f"--output_dir={output}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((output / "holdout" / "metrics.json").read_text())
    # fold4 holds one whole phantom specimen never seen in training.
    assert metrics["run"]["test_split"] == "fold4"
    assert metrics["overall"]["count"] > 50
    assert metrics["overall"]["accuracy"] > 0.5, metrics["overall"]
    for name in (
        "model.keras",
        "model.json",
        "confusion_matrix.png",
        "training_curves.png",
        "misclassified.csv",
        "history.csv",
    ):
        assert (output / "holdout" / name).exists(), name
    assert (output / "holdout" / "logs").is_dir()
    assert "--image_size=64" in (output / "flags.txt").read_text()
    summary = json.loads((output / "summary.json").read_text())
    assert summary["runs"]["holdout"]["accuracy"] == metrics["overall"]["accuracy"]


def _completed_epochs(run_dir) -> int:
    from brainview import training

    return training.completed_epochs(str(run_dir))


@pytest.mark.slow
def test_interrupted_training_resumes_where_it_stopped(phantom_data_dir, tmp_path):
    output = tmp_path / "run"
    args = [*TINY_RUN, "--epochs=3", f"--data_dir={phantom_data_dir}", f"--output_dir={output}"]
    process = subprocess.Popen(
        [sys.executable, TRAIN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 900
    while _completed_epochs(output / "holdout") < 1 and time.time() < deadline:
        if process.poll() is not None:
            pytest.fail("training ended before it could be interrupted")
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (output / "holdout" / "metrics.json").exists()

    result = run_train(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_from = _first_line_with(result.stdout, "resuming after epoch")
    assert resumed_from.startswith("holdout: resuming after epoch ")
    with open(output / "holdout" / "history.csv", newline="") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == [0, 1, 2]  # every epoch exactly once, none repeated or lost
    assert (output / "holdout" / "metrics.json").exists()
    assert not (output / "holdout" / "backup").exists()

    # A complete run is not trained again.
    again = run_train(*args)
    assert again.returncode == 0
    assert "resuming" not in again.stdout


def _first_line_with(text: str, needle: str) -> str:
    return next((line for line in text.splitlines() if needle in line), "")


def test_missing_dataset_is_a_one_line_error(tmp_path):
    result = run_train(
        "--datasets=brainmaps",
        f"--data_dir={tmp_path}",
        f"--output_dir={tmp_path / 'out'}",
        "--weights=none",
    )
    assert result.returncode == 2
    assert "dataset brainmaps is not built" in result.stderr
    assert "bin/build_datasets --datasets=brainmaps" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_dataset_and_bad_flags_are_one_line_errors(phantom_data_dir, tmp_path):
    cases = {
        "--datasets=no_such_data": "unknown dataset 'no_such_data'",
        "--augment=robust-wobble": "unknown augmentation(s) ['wobble']",
        "--trainable_layers=some": "--trainable_layers must be 'all' or a number",
        "--experiment=cross": "needs --test_datasets",
    }
    for flag, message in cases.items():
        result = run_train(
            "--datasets=brain_phantom/tiny",
            flag,
            f"--data_dir={phantom_data_dir}",
            f"--output_dir={tmp_path / 'out'}",
            "--weights=none",
        )
        assert result.returncode == 2, (flag, result.stderr[-2000:])
        assert message in result.stderr, (flag, result.stderr[-2000:])
        assert "Traceback" not in result.stderr


def test_testing_on_a_training_origin_is_refused(phantom_data_dir, tmp_path):
    result = run_train(
        *TINY_RUN,
        "--datasets=brain_phantom/tiny",
        "--experiment=cross",
        "--test_datasets=brain_phantom/tiny",
        f"--data_dir={phantom_data_dir}",
        f"--output_dir={tmp_path / 'out'}",
    )
    assert result.returncode == 2
    assert "must not test on a training origin" in result.stderr


def test_empty_split_after_filtering_is_a_one_line_error(tmp_path):
    """A volume that is black everywhere: the dark-image filter leaves nothing to train on."""
    import nrrd
    import numpy as np

    from brainview_tfds import build

    volume = tmp_path / "average_template_200.nrrd"
    nrrd.write(
        str(volume),
        np.zeros((20, 12, 16), np.uint16),
        header={"space directions": np.diag([200.0] * 3)},
    )
    data_dir = str(tmp_path / "tfds")
    build.build(build.request_for_volume_file("allen_ccfv3", str(volume)), data_dir=data_dir)
    result = run_train(
        *[a for a in TINY_RUN if not a.startswith("--datasets")],
        "--datasets=allen_ccfv3/200um",
        f"--data_dir={data_dir}",
        f"--output_dir={tmp_path / 'out'}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no training examples" in result.stderr
    assert "after the dark-image filter" in result.stderr
    assert "Traceback" not in result.stderr


def test_rerun_with_other_flags_is_refused(phantom_data_dir, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "flags.txt").write_text("--epochs=99\n")
    result = run_train(*TINY_RUN, f"--data_dir={phantom_data_dir}", f"--output_dir={output}")
    assert result.returncode == 2
    assert "holds a run with other flags" in result.stderr
    assert "--overwrite" in result.stderr


def test_imagenet_weights_unreachable_is_a_clear_error(phantom_data_dir, tmp_path):
    if os.path.exists(os.path.expanduser("~/.keras/models/efficientnetb0_notop.h5")):
        pytest.skip("ImageNet weights are cached on this machine")
    result = run_train(
        "--datasets=brain_phantom/tiny",
        "--weights=imagenet",
        f"--data_dir={phantom_data_dir}",
        f"--output_dir={tmp_path / 'out'}",
        "--image_size=64",
        "--epochs=1",
    )
    assert result.returncode == 2
    assert "could not load ImageNet weights" in result.stderr
    assert "--weights=none" in result.stderr
