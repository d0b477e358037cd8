"""Training runs: fit with per-epoch checkpoints that resume, calibrate, evaluate, report.

A run directory holds, when the run is complete:

    model.keras, model.json        the model and its card (what inference needs)
    metrics.json                   every metric, overall and per dataset of origin
    confusion_matrix.png, training_curves.png, misclassified.csv
    predictions.npz                every test (and validation) example's probabilities
    history.csv, logs/             per-epoch metrics, TensorBoard logs

A release run (`--experiment=release`) tests nothing: it has the model, its
card and `metrics.json` (what it trained on).

While a run is in progress `backup/` holds the state of the last finished
epoch (Keras BackupAndRestore: weights, optimizer, epoch) and `epochs_done.json`
how many epochs that is (written by brainview after each backup: Keras' own
count is private to its backup files). Running the same command again after an
interrupt resumes from there and trains only the remaining epochs; a complete
run (metrics.json present) is not repeated.

A kill must not leave a file that breaks the next run: what brainview reads
back (metrics.json, epochs_done.json) is written to a temporary file, fsynced
and renamed, and read back as absent if it does not parse; a backup that Keras
left torn (it rewrites its metadata in place) is put back to the previous
epoch's copy, or dropped (`_usable_backup`). Under multi-worker training only
the chief writes to the run directory; the other workers keep their backups
in a scratch folder of their own, seeded from the chief's, so every worker
resumes from the same epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time

import h5py
import keras
import tensorflow as tf
from absl import logging

from brainview import (
    devices,
    evaluation,
    experiments,
    metrics,
    plots,
    training_input,
)
from brainview import (
    model as model_lib,
)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes a run besides its data (the effective flags)."""

    pipeline: training_input.PipelineConfig = dataclasses.field(
        default_factory=training_input.PipelineConfig
    )
    epochs: int = 10
    steps_per_epoch: int = 0  # 0: one pass over the training data
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # or "cosine": decay to 0 over all training steps
    backbone: str = model_lib.DEFAULT_BACKBONE
    weights: str = "none"
    trainable_layers: str = "all"
    head_units: int = 128
    uncertain_below: float | None = None  # None: chosen from the validation fold
    temperature: float | None = None  # None: fitted on the validation fold (1 without one)
    tta: bool = False  # evaluate (and recommend classifying) with mirror test-time augmentation
    recipe: str = ""


LR_SCHEDULES = ("constant", "cosine")
# classify_dir's "uncertain" threshold when there is no validation fold to choose it.
DEFAULT_UNCERTAIN_BELOW = 0.5


def _learning_rate(settings: TrainSettings, steps_per_epoch: int):
    if settings.lr_schedule == "constant":
        return settings.learning_rate
    if settings.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            settings.learning_rate, decay_steps=max(1, settings.epochs * steps_per_epoch)
        )
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {settings.lr_schedule!r}")


def _compile(model: keras.Model, settings: TrainSettings, steps_per_epoch: int) -> None:
    # Under a mixed_float16 policy Keras wraps the optimizer in a LossScaleOptimizer.
    model.compile(
        optimizer=keras.optimizers.Adam(_learning_rate(settings, steps_per_epoch)),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )


EPOCHS_DONE_FILE = "epochs_done.json"
METRICS_FILE = "metrics.json"
# Keras 3 BackupAndRestore's files (double_checkpoint keeps the previous pair as *.bkp).
_BACKUP_METADATA = "training_metadata.json"
_BACKUP_WEIGHTS = "latest.weights.h5"


def write_atomically(path: str, data: bytes) -> None:
    """Writes `path` so that a kill leaves the old file or the new one, never a torn one."""
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def write_json_atomically(path: str, value: dict, indent: int | None = None) -> None:
    write_atomically(path, json.dumps(value, indent=indent).encode("utf-8"))


def read_json_or_none(path: str) -> dict | None:
    """A JSON object file, or None if it is absent or does not parse (torn by a kill)."""
    try:
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logging.warning("%s is unreadable (%s): treated as absent", path, error)
        return None
    return value if isinstance(value, dict) else None


def completed_epochs(run_dir: str) -> int:
    """Epochs of an interrupted run already saved by its backup (0 if none, or unreadable)."""
    record = read_json_or_none(os.path.join(run_dir, EPOCHS_DONE_FILE)) or {}
    epochs = record.get("epochs_done")
    return epochs if isinstance(epochs, int) else 0


def complete_metrics(run_dir: str) -> dict | None:
    """The metrics of a complete run, or None (not complete, or metrics.json torn)."""
    return read_json_or_none(os.path.join(run_dir, METRICS_FILE))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (one worker of a multi-worker cluster)."""
    return strategy.extended.should_checkpoint


def _backup_pair_usable(backup_dir: str, suffix: str) -> int | None:
    """The epoch of Keras' backup (metadata + weights) with this file suffix, if both load."""
    metadata = read_json_or_none(os.path.join(backup_dir, _BACKUP_METADATA + suffix)) or {}
    epoch = metadata.get("epoch")
    weights = os.path.join(backup_dir, _BACKUP_WEIGHTS + suffix)
    try:
        with h5py.File(weights, "r"):
            pass
    except OSError:
        return None
    return epoch if isinstance(epoch, int) else None


def _usable_backup(run_dir: str, backup_dir: str) -> None:
    """Leaves `backup_dir` in a state Keras' BackupAndRestore can load, or removes it.

    Keras rewrites its weights and metadata in place at every epoch end: a kill
    in between leaves a pair that fails to load on every later run. The
    previous epoch's pair (double_checkpoint) is then put back, with our epoch
    record to match; without one the backup is dropped and the run starts over
    (its history.csv with it, as those epochs are gone).
    """
    if not os.path.exists(os.path.join(backup_dir, _BACKUP_METADATA)):
        return
    if _backup_pair_usable(backup_dir, "") is not None:
        return
    epoch = _backup_pair_usable(backup_dir, ".bkp")
    if epoch is not None:
        logging.warning(
            "%s: the last backup is torn; restoring the one of epoch %d", backup_dir, epoch
        )
        for name in (_BACKUP_WEIGHTS, _BACKUP_METADATA):
            source = os.path.join(backup_dir, name + ".bkp")
            shutil.copyfile(source, os.path.join(backup_dir, name + ".tmp"))
            os.replace(os.path.join(backup_dir, name + ".tmp"), os.path.join(backup_dir, name))
        write_json_atomically(os.path.join(run_dir, EPOCHS_DONE_FILE), {"epochs_done": epoch})
        return
    logging.warning("%s: the backup is torn and has no previous copy; starting over", backup_dir)
    shutil.rmtree(backup_dir)
    for name in (EPOCHS_DONE_FILE, "history.csv"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(run_dir, name))


class EpochRecord(keras.callbacks.Callback):
    """Writes epochs_done.json after every epoch; placed after BackupAndRestore, so the
    count never runs ahead of the saved state."""

    def __init__(self, run_dir: str):
        super().__init__()
        self.path = os.path.join(run_dir, EPOCHS_DONE_FILE)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        write_json_atomically(self.path, {"epochs_done": epoch + 1})


def _callbacks(run_dir: str, chief: bool) -> tuple[list[keras.callbacks.Callback], str | None]:
    """fit()'s callbacks, and the scratch folder to delete afterwards (non-chief workers).

    The chief backs up into run_dir/backup and logs; another worker backs up
    into a scratch folder seeded with the chief's backup (every worker must
    resume from the same epoch) and writes nothing else.
    """
    backup_dir = os.path.join(run_dir, "backup")
    if not chief:
        scratch = tempfile.mkdtemp(prefix="brainview-worker-")
        worker_backup = os.path.join(scratch, "backup")
        if os.path.isdir(backup_dir):
            shutil.copytree(backup_dir, worker_backup)
            _usable_backup(scratch, worker_backup)
        backup = keras.callbacks.BackupAndRestore(
            worker_backup, double_checkpoint=True, delete_checkpoint=False
        )
        return [backup], scratch
    _usable_backup(run_dir, backup_dir)
    return [
        # Before CSVLogger: an epoch is logged only once its state is saved.
        keras.callbacks.BackupAndRestore(
            backup_dir, double_checkpoint=True, delete_checkpoint=False
        ),
        EpochRecord(run_dir),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
    ], None


def _features_only(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return dataset.map(lambda images, labels, metadata: (images, labels))


def _evaluate(
    model: keras.Model,
    run: experiments.Run,
    settings: TrainSettings,
    temperature: float,
    uncertain_below: float,
) -> tuple[evaluation.Predictions, dict, dict[str, evaluation.Predictions]]:
    """The test split as it is, remounted and hemisected; and scans that are not brains.

    Returns the test predictions, the metrics, and every part's predictions.
    """
    config = settings.pipeline
    test = evaluation.predict(
        model,
        training_input.evaluation_dataset(run.test_sources, run.test_split, config),
        settings.tta,
    )
    result = evaluation.report(test, temperature)
    # The same test scans, each turned by a random angle and maybe mirrored.
    remounted = evaluation.predict(
        model,
        training_input.evaluation_dataset(
            run.test_sources, run.test_split, config, remount_seed=config.seed
        ),
        settings.tta,
    )
    result["remounted"] = evaluation.report(remounted, temperature)
    # Coronal and horizontal test scans cut at their midline, one half kept.
    hemisections = evaluation.predict(
        model,
        training_input.evaluation_dataset(
            run.test_sources, run.test_split, config, hemisection_seed=config.seed + 1
        ),
        settings.tta,
    )
    result["hemisections"] = evaluation.report(hemisections, temperature)
    result["uncertain_below"] = uncertain_below
    for part, predictions in (
        (result, test),
        (result["remounted"], remounted),
        (result["hemisections"], hemisections),
    ):
        part["selective"] = metrics.selective_metrics(
            predictions.labels, evaluation.calibrated(predictions, temperature), uncertain_below
        )
    result["non_brain"] = evaluation.non_brain_report(
        model,
        config.image_size,
        config.preprocessing,
        temperature,
        uncertain_below,
        settings.tta,
    )
    parts = {"test": test, "remounted": remounted, "hemisections": hemisections}
    return test, result, parts


def train_run(
    run: experiments.Run,
    settings: TrainSettings,
    run_dir: str,
    strategy: tf.distribute.Strategy,
) -> dict:
    """Trains, calibrates and evaluates one run; returns its metrics.

    Resumes an interrupted run from its last finished epoch and returns the
    saved metrics of a complete one.
    """
    metrics_path = os.path.join(run_dir, METRICS_FILE)
    complete = complete_metrics(run_dir)
    if complete is not None:
        logging.info("%s: already complete, reusing %s", run.name, metrics_path)
        return complete
    chief = is_chief(strategy)
    if chief:
        os.makedirs(run_dir, exist_ok=True)
    config = settings.pipeline
    keras.utils.set_random_seed(config.seed)

    train_data, num_train = training_input.training_dataset(
        run.train_sources, run.train_split, config
    )
    steps = settings.steps_per_epoch or math.ceil(num_train / config.batch_size)
    validation_data = None
    if run.validation_split:
        validation_data = training_input.evaluation_dataset(
            run.train_sources, run.validation_split, config
        )

    with strategy.scope():
        model = model_lib.build_classifier(
            config.image_size,
            settings.weights,
            settings.trainable_layers,
            settings.head_units,
            settings.backbone,
        )
        _compile(model, settings, steps)

    callbacks, scratch = _callbacks(run_dir, chief)
    done = completed_epochs(run_dir)
    if done:
        print(f"{run.name}: resuming after epoch {done} of {settings.epochs}", flush=True)
    started = time.perf_counter()
    model.fit(
        train_data,
        epochs=settings.epochs,
        steps_per_epoch=steps,
        shuffle=False,  # the tf.data pipeline shuffles
        validation_data=_features_only(validation_data) if validation_data else None,
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    train_seconds = time.perf_counter() - started
    epochs_run = settings.epochs - done
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)

    temperature = settings.temperature or 1.0
    uncertain_below = settings.uncertain_below
    validation = None
    if validation_data is not None:
        validation = evaluation.predict(model, validation_data, settings.tta)
        if settings.temperature is None:
            temperature = metrics.fit_temperature(validation.labels, validation.probabilities)
        if uncertain_below is None:
            uncertain_below = evaluation.auto_uncertain_threshold(validation, temperature)
    if uncertain_below is None:
        uncertain_below = DEFAULT_UNCERTAIN_BELOW

    parts: dict[str, evaluation.Predictions] = {}
    if run.test_sources:
        test, result, parts = _evaluate(model, run, settings, temperature, uncertain_below)
        if validation is not None:
            parts["validation"] = validation
    else:  # a release run: everything trains; its recipe was tested by fold experiments
        test, result = None, {"uncertain_below": uncertain_below, "temperature": temperature}
    result["run"] = dataclasses.asdict(run)
    result["train_examples"] = num_train
    result["test_examples"] = len(test) if test is not None else 0
    result["train_images_per_second"] = (
        round(steps * config.batch_size * epochs_run / train_seconds, 2) if epochs_run > 0 else None
    )
    result["device"] = devices.describe()
    result["precision"] = keras.mixed_precision.global_policy().name

    card = model_lib.ModelCard(
        image_size=config.image_size,
        preprocessing=config.preprocessing,
        head_units=settings.head_units,
        backbone=settings.backbone,
        temperature=temperature,
        uncertain_below=uncertain_below,
        tta=settings.tta,
        trained_on=tuple(f"{s}:{run.train_split}" for s in run.train_sources),
        recipe=settings.recipe,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    if not chief:
        return result  # the chief writes the run's files
    model_lib.save_model(model, card, os.path.join(run_dir, "model.keras"))
    if parts:
        evaluation.save_predictions(parts, os.path.join(run_dir, "predictions.npz"))
    if test is not None:
        evaluation.write_misclassified(
            test, temperature, os.path.join(run_dir, "misclassified.csv")
        )
        overall = result["overall"]
        plots.plot_confusion_matrix(
            overall["confusion_matrix"],
            f"{run.name}: test {'+'.join(run.test_sources)} {run.test_split}\n"
            f"accuracy {overall['accuracy']:.3f}, macro F1 {overall['f1_macro']:.3f}",
            os.path.join(run_dir, "confusion_matrix.png"),
        )
    plots.plot_training_curves(
        os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "training_curves.png")
    )
    write_json_atomically(metrics_path, result, indent=2)  # last: marks the run complete
    shutil.rmtree(os.path.join(run_dir, "backup"), ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(run_dir, EPOCHS_DONE_FILE))
    return result


def headline(result: dict) -> dict:
    """The few numbers a summary table shows for a run (a release run has no test)."""
    overall = result.get("overall") or {
        key: None for key in ("accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr")
    } | {"expected_calibration_error": None, "count": 0}
    row = {
        "accuracy": overall["accuracy"],
        "f1_macro": overall["f1_macro"],
        "f1_weighted": overall["f1_weighted"],
        "roc_auc_ovr": overall["roc_auc_ovr"],
        "ece": overall["expected_calibration_error"],
        "test_examples": overall["count"],
        "remounted_f1_macro": result.get("remounted", {}).get("overall", {}).get("f1_macro"),
        "hemisection_f1_macro": result.get("hemisections", {}).get("overall", {}).get("f1_macro"),
    }
    row["by_origin"] = {
        origin: {
            "accuracy": values["accuracy"],
            "f1_macro": values["f1_macro"],
            "count": values["count"],
        }
        for origin, values in result.get("by_origin", {}).items()
    }
    return row


def summarize(runs: list[experiments.Run], results: dict[str, dict]) -> dict:
    """Per-run headlines, and mean/std over runs for metrics every run has."""
    rows = {run.name: headline(results[run.name]) for run in runs}
    summary: dict = {"runs": rows}
    if len(rows) > 1:
        for key in ("accuracy", "f1_macro", "f1_weighted"):
            values = [row[key] for row in rows.values() if row[key] is not None]
            if values:
                mean = sum(values) / len(values)
                std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
                summary[f"mean_{key}"] = mean
                summary[f"std_{key}"] = std
    return summary


def _format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_summary(summary: dict) -> str:
    """Plain-text table: one line per run and test origin."""
    header = f"{'run':44s} {'test origin':14s} {'n':>5s} {'accuracy':>9s} {'macro F1':>9s}"
    lines = [header + f" {'ECE':>6s} {'remounted F1':>13s} {'hemisection F1':>15s}"]
    for name, row in summary["runs"].items():
        lines.append(
            f"{name:44s} {'(all)':14s} {row['test_examples']:5d} "
            f"{_format_number(row['accuracy']):>9s} {_format_number(row['f1_macro']):>9s} "
            f"{_format_number(row['ece']):>6s} {_format_number(row['remounted_f1_macro']):>13s} "
            f"{_format_number(row.get('hemisection_f1_macro')):>15s}"
        )
        if len(row["by_origin"]) > 1:
            for origin, values in row["by_origin"].items():
                lines.append(
                    f"{'':44s} {origin:14s} {values['count']:5d} "
                    f"{_format_number(values['accuracy']):>9s} "
                    f"{_format_number(values['f1_macro']):>9s}"
                )
    if "mean_f1_macro" in summary:
        lines.append(
            f"{'mean over runs (std)':44s} {'':14s} {'':5s} {summary['mean_accuracy']:9.3f} "
            f"{summary['mean_f1_macro']:9.3f}   (std F1 {summary['std_f1_macro']:.3f})"
        )
    return "\n".join(lines)
