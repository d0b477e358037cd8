"""bin/train's files survive a kill: written atomically, a torn one treated as absent.

metrics.json, flags.txt and Keras' backup metadata were written in place: a kill in
the middle left a file that made every rerun crash (or refuse). These tests tear the
files as such a kill does and run the real code that reads them back: training's
readers, bin/train's output-directory check, and a real Keras fit with the backup
callbacks train_run uses. The two-worker run (only the chief writes) is in
test_train.py.
"""

from __future__ import annotations

import csv
import json
import os

import keras
import numpy as np
import pytest

from brainview import training
from brainview.cli import train as train_cli


def test_a_torn_metrics_file_means_the_run_is_not_complete(tmp_path):
    """A complete run is recognized by its metrics.json; torn, it crashed every rerun
    (json.load in train_run). Now the run is simply redone (resumed from its backup)."""
    assert training.complete_metrics(str(tmp_path)) is None
    training.write_json_atomically(str(tmp_path / "metrics.json"), {"overall": {"accuracy": 1}})
    assert training.complete_metrics(str(tmp_path)) == {"overall": {"accuracy": 1}}
    for torn in (b"", b'{"overall": {"accur', b"\0" * 64):
        (tmp_path / "metrics.json").write_bytes(torn)
        assert training.complete_metrics(str(tmp_path)) is None, torn
    (tmp_path / "epochs_done.json").write_bytes(b'{"epochs_d')
    assert training.completed_epochs(str(tmp_path)) == 0
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


@pytest.fixture
def parsed_train_flags():
    """bin/train's flags parsed in this process (reset afterwards)."""

    def parse(*args: str) -> None:
        train_cli.FLAGS.unparse_flags()
        train_cli.FLAGS(["train", *args])

    yield parse
    train_cli.FLAGS.unparse_flags()


def test_a_torn_flags_file_is_treated_as_absent(tmp_path, parsed_train_flags):
    """flags.txt cut short by a kill made every rerun stop with 'holds a run with other
    flags'. Torn (a prefix of the flags, no final newline, NULs) it is rewritten; a
    complete file with other flags is still refused."""
    output = tmp_path / "run"
    parsed_train_flags(f"--output_dir={output}", "--epochs=3", "--image_size=64")
    train_cli._prepare_output_dir(str(output))
    flags_path = output / "flags.txt"
    complete = flags_path.read_text()
    assert "--epochs=3\n" in complete and complete.endswith("\n")
    lines = complete.splitlines(keepends=True)
    for torn in (
        complete[: len(complete) // 2],  # cut mid-line
        "".join(lines[: len(lines) // 2]),  # cut at a line end
        complete[:40] + "\0" * 80,  # blocks the file system allocated, never written
        "",
    ):
        flags_path.write_text(torn)
        train_cli._prepare_output_dir(str(output))
        assert flags_path.read_text() == complete, torn
    flags_path.write_text(complete.replace("--epochs=3", "--epochs=4"))
    with pytest.raises(train_cli.SetupError, match="holds a run with other flags"):
        train_cli._prepare_output_dir(str(output))
    assert not [name for name in os.listdir(output) if name.endswith(".tmp")]


def test_a_worker_that_is_not_the_chief_writes_no_flags(tmp_path, parsed_train_flags):
    output = tmp_path / "run"
    parsed_train_flags(f"--output_dir={output}")
    train_cli._prepare_output_dir(str(output), chief=False)
    assert not output.exists()


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    return model


def _fit(run_dir: str, epochs: int) -> keras.callbacks.History:
    """A real fit with train_run's callbacks (backup, epoch record, history, logs)."""
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(32, 4)), rng.integers(0, 3, 32)
    callbacks, scratch = training._callbacks(run_dir, chief=True)
    assert scratch is None
    return _tiny_model().fit(
        features, labels, epochs=epochs, batch_size=8, callbacks=callbacks, verbose=0
    )


def _logged_epochs(run_dir: str) -> list[int]:
    with open(os.path.join(run_dir, "history.csv"), newline="") as file:
        return [int(row["epoch"]) for row in csv.DictReader(file)]


def test_a_torn_keras_backup_resumes_from_the_previous_epoch(tmp_path):
    """Keras rewrites training_metadata.json in place after the weights: a kill there
    left an empty file and every later fit() failed to parse it. The previous epoch's
    copy (double_checkpoint) is put back, with the epoch record to match."""
    run_dir = str(tmp_path)
    _fit(run_dir, epochs=3)
    backup = tmp_path / "backup"
    # The state a kill during epoch 3's metadata write leaves: epoch 3's weights
    # written, its metadata truncated, the epoch record and history still at 2.
    (backup / "training_metadata.json").write_bytes(b"")
    training.write_json_atomically(str(tmp_path / "epochs_done.json"), {"epochs_done": 2})
    with open(tmp_path / "history.csv") as file:
        lines = file.readlines()
    (tmp_path / "history.csv").write_text("".join(lines[:-1]))
    with open(backup / "training_metadata.json.bkp") as file:
        assert json.load(file)["epoch"] == 2

    history = _fit(run_dir, epochs=3)
    assert len(history.history["loss"]) == 1  # only epoch 3 again, not from scratch
    assert _logged_epochs(run_dir) == [0, 1, 2]
    assert training.completed_epochs(run_dir) == 3


def test_a_torn_backup_without_a_previous_copy_starts_over(tmp_path):
    run_dir = str(tmp_path)
    _fit(run_dir, epochs=1)  # one epoch: no previous copy yet
    (tmp_path / "backup" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n")  # torn
    history = _fit(run_dir, epochs=2)
    assert len(history.history["loss"]) == 2
    assert _logged_epochs(run_dir) == [0, 1]
    assert training.completed_epochs(run_dir) == 2
