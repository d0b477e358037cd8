"""bin/train end to end: a tiny training run that must beat chance, resume, and clear errors."""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.offline import offline_environment

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


def _start_train(args: list[str], log_path, **popen) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - the child's; closed when it ends
    process = subprocess.Popen([sys.executable, TRAIN, *args], stdout=log, stderr=log, **popen)
    log.close()
    return process


def _kill_when(process: subprocess.Popen, ready, what: str) -> None:
    """SIGKILL `process` (by pid) as soon as `ready()`; fails if it ends first."""
    deadline = time.time() + 900
    while not ready() and time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training ended before it could be interrupted {what}")
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _weights(path) -> list:
    """The classifier's weights from a model file or a Keras weights file."""
    import keras

    from brainview import model as model_lib

    if str(path).endswith(".keras"):
        return keras.models.load_model(path, compile=False).get_weights()
    classifier = model_lib.build_classifier(64, "none", "all")
    classifier.load_weights(path)
    return classifier.get_weights()


@pytest.mark.slow
def test_interrupted_training_resumes_where_it_stopped(phantom_data_dir, tmp_path):
    """Killed mid-training, then again after the last epoch (while evaluating): each
    rerun trains only what is left, and the final model is exactly the backed-up state,
    so no weight was retrained (a resume that restored the epoch count but not the
    weights, or trained from scratch, would give other weights)."""
    output = tmp_path / "run"
    run_dir = output / "holdout"
    args = [*TINY_RUN, "--epochs=3", f"--data_dir={phantom_data_dir}", f"--output_dir={output}"]
    process = _start_train(args, tmp_path / "first.log")
    _kill_when(process, lambda: _completed_epochs(run_dir) >= 1, "mid-training")
    assert not (run_dir / "metrics.json").exists()

    process = _start_train(args, tmp_path / "second.log")
    _kill_when(
        process,
        lambda: _completed_epochs(run_dir) == 3 and not (run_dir / "metrics.json").exists(),
        "after its last epoch",
    )
    assert not (run_dir / "metrics.json").exists(), "killed too late: the run had finished"
    second = (tmp_path / "second.log").read_text(errors="replace")
    assert "holdout: resuming after epoch " in second
    trained = str(tmp_path / "after_epoch_3.weights.h5")
    shutil.copyfile(run_dir / "backup" / "latest.weights.h5", trained)

    result = run_train(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _first_line_with(result.stdout, "resuming after epoch") == (
        "holdout: resuming after epoch 3 of 3"
    )
    with open(run_dir / "history.csv", newline="") as file:
        epochs = [int(row["epoch"]) for row in csv.DictReader(file)]
    assert epochs == [0, 1, 2]  # every epoch exactly once, none repeated or lost
    for final, saved in zip(_weights(run_dir / "model.keras"), _weights(trained), strict=True):
        np.testing.assert_array_equal(final, saved)
    assert (run_dir / "metrics.json").exists()
    assert not (run_dir / "backup").exists()

    # A complete run is not trained again.
    again = run_train(*args)
    assert again.returncode == 0
    assert "resuming" not in again.stdout


# One worker of a two-worker cluster (argv: TF_CONFIG, output dir, record file): builds
# the real MultiWorkerMirroredStrategy (it waits for the other worker), then does what
# bin/train does with files before and around fit(): check and record the flags, set
# up the backup. An audit hook records everything opened for writing, renamed, removed
# or created below the output directory. (fit() itself cannot run here: Keras 3's fit
# fails under MultiWorkerMirroredStrategy, keras-team/keras#20585.)
_WORKER_FILES = """
import json, os, sys
os.environ["TF_CONFIG"] = sys.argv[1]
output, record = os.path.abspath(sys.argv[2]), sys.argv[3]
writes = []

def audit(event, args):
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(
            (flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        paths = [path] if writing else []
    elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate"):
        paths = [args[0], args[1]] if event == "os.rename" else [args[0]]
    else:
        return
    for path in paths:
        if isinstance(path, (str, bytes)) and os.path.abspath(os.fsdecode(path)).startswith(output):
            writes.append(os.path.relpath(os.fsdecode(path), output))

from brainview import devices, training
from brainview.cli import train
strategy = devices.select_strategy()
chief = training.is_chief(strategy)
sys.addaudithook(audit)
train.FLAGS(["train", f"--output_dir={output}", "--epochs=2"])
train._prepare_output_dir(output, chief)
callbacks, scratch = training._callbacks(os.path.join(output, "holdout"), chief)
backups = [c.backup_dir for c in callbacks if hasattr(c, "backup_dir")]
seeded = sorted(os.listdir(backups[0])) if os.path.isdir(backups[0]) else []
json.dump({"chief": chief, "writes": writes, "backups": backups, "seeded": seeded,
           "callbacks": [type(c).__name__ for c in callbacks]}, open(record, "w"))
"""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for probe in sockets:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in sockets]
    for probe in sockets:
        probe.close()
    return ports


@pytest.mark.slow
def test_only_the_chief_writes_under_multi_worker(tmp_path):
    """Every worker of a cluster runs the same command into the same directory; each
    used to write flags.txt, the backup, history, logs and metrics there. With a real
    two-worker MultiWorkerMirroredStrategy: worker 0 (the chief) writes the run's files;
    worker 1 opens nothing there for writing, and backs up into a scratch folder seeded
    with the chief's backup, so both resume from the same epoch."""
    import keras

    output = tmp_path / "run"
    chief_backup = output / "holdout" / "backup"
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(
        np.zeros((4, 2)),
        np.zeros(4),
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(str(chief_backup), delete_checkpoint=False)],
    )
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        log = open(tmp_path / f"worker{index}.log", "wb")  # noqa: SIM115 - the child's
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER_FILES,
                    config,
                    str(output),
                    str(tmp_path / f"{index}.json"),
                ],
                stdout=log,
                stderr=log,
            )
        )
        log.close()
    for index, worker in enumerate(workers):
        try:
            code = worker.wait(timeout=600)
        finally:
            for other in workers:
                if other.poll() is None and other is not worker and worker.returncode:
                    other.kill()
        log = (tmp_path / f"worker{index}.log").read_text(errors="replace")
        assert code == 0, (index, log[-3000:])
    chief, other = (json.loads((tmp_path / f"{index}.json").read_text()) for index in range(2))
    assert chief["chief"] and not other["chief"]
    assert "flags.txt" in chief["writes"] and (output / "flags.txt").exists()
    assert chief["backups"] == [str(chief_backup)]
    assert chief["callbacks"][:2] == ["BackupAndRestore", "EpochRecord"]
    assert other["writes"] == []
    assert other["callbacks"] == ["BackupAndRestore"]
    assert not other["backups"][0].startswith(str(output))
    assert other["seeded"] == ["latest.weights.h5", "training_metadata.json"]


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
    """In an offline environment (no cache, downloads refused): a one-line error saying
    what to pass instead, never a skip because this machine happens to have the weights."""
    result = subprocess.run(
        [
            sys.executable,
            TRAIN,
            "--datasets=brain_phantom/tiny",
            "--weights=imagenet",
            f"--data_dir={phantom_data_dir}",
            f"--output_dir={tmp_path / 'out'}",
            "--image_size=64",
            "--epochs=1",
        ],
        env=offline_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "could not load ImageNet weights" in result.stderr
    assert "--weights=none" in result.stderr
    assert "Traceback" not in result.stderr
