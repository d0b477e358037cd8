"""Benchmark 5: held-out accuracy against inference speed, per model input size.

At every size the demo recipe (configs/demo.flags: from scratch, robust
augmentation, view-balanced loss, Adam with cosine decay) is trained on the
phantom holdout split for the same small number of epochs, then scored on
the held-out fold and timed on in-memory batches (the classifier alone: at
these sizes it, not decoding, bounds classify_dir — see benchmark 1).

Calibration is left out: temperature scaling does not change the argmax, so
accuracy is the same as bin/train's. Training at 512 px on a 2-core CPU takes
hours; `--skip=image_size` leaves this benchmark out.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from bench import common, data

DEMO_FLAGFILE = os.path.join(common.REPO_ROOT, "configs", "demo.flags")


@dataclasses.dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]
    phantom_config: str
    epochs: int
    batch_size: int


def settings_for(ctx: common.Context) -> Settings:
    if ctx.quick:
        return Settings(
            sizes=ctx.image_sizes or (64, 96), phantom_config="tiny", epochs=1, batch_size=32
        )
    return Settings(
        sizes=ctx.image_sizes or (128, 224, 320, 512),
        phantom_config="default",
        epochs=3,
        batch_size=32,
    )


def _train_settings(settings: Settings, image_size: int, data_dir: str):
    """bin/train's settings for the demo flagfile at this size and budget.

    The flagfile is parsed by absl with bin/train's own flag definitions, so
    every flag it sets (and every default it does not) reaches the run.
    """
    from brainview.cli import train

    return train.settings_from_args(
        [
            f"--flagfile={DEMO_FLAGFILE}",
            f"--image_size={image_size}",
            f"--epochs={settings.epochs}",
            f"--batch_size={settings.batch_size}",
            f"--data_dir={data_dir}",
            "--recipe=bench image_size",
        ]
    )


def _train_and_score(source: str, train, repeats: int) -> dict:
    """Trains one size; its held-out accuracy and model-only inference rate."""
    import keras
    import tensorflow as tf

    from brainview import evaluation, experiments, training, training_input
    from brainview import model as model_lib
    from brainview.predict import make_predict

    run = experiments.holdout((source,), validation=True)[0]
    config = train.pipeline
    train_data, num_train = training_input.training_dataset((source,), run.train_split, config)
    steps = math.ceil(num_train / config.batch_size)
    keras.utils.set_random_seed(config.seed)
    model = model_lib.build_classifier(
        config.image_size, train.weights, train.trainable_layers, train.head_units
    )
    training._compile(model, train, steps)
    clock = common.batch_end_clock()
    fit_seconds = common.seconds_of(
        lambda: model.fit(
            train_data,
            epochs=train.epochs,
            steps_per_epoch=steps,
            shuffle=False,
            verbose=0,
            callbacks=[clock],
        )
    )
    steady_steps = len(clock.times) - 1  # the first step (tracing) left out
    test = evaluation.predict(
        model, training_input.evaluation_dataset((source,), run.test_split, config), train.tta
    )
    accuracy = float(np.mean(test.probabilities.argmax(axis=1) == test.labels))

    predict = make_predict(model)
    images = tf.random.uniform([config.batch_size, config.image_size, config.image_size, 3], 0, 255)
    predict(images).numpy()  # trace
    seconds = [common.seconds_of(lambda: predict(images).numpy()) for _ in range(repeats)]
    return {
        "held_out_accuracy": round(accuracy, 4),
        "test_examples": len(test),
        "train_examples": num_train,
        "train_steps": steps * train.epochs,
        "train_seconds": round(fit_seconds, 1),
        "train_images_per_second": round(
            steady_steps * config.batch_size / (clock.times[-1] - clock.times[0]), 2
        ),
        "inference": common.rate(config.batch_size, seconds),
    }


def run(ctx: common.Context) -> dict:
    settings = settings_for(ctx)
    source = f"brain_phantom/{settings.phantom_config}"
    data_dir = data.phantom_data_dir(ctx.path("tfds"), settings.phantom_config)
    repeats = ctx.repeats(quick=3, full=5)
    results = {}
    for size in settings.sizes:
        train = _train_settings(settings, size, data_dir)
        results[str(size)] = _train_and_score(source, train, repeats)
    return {
        "settings": {
            **dataclasses.asdict(settings),
            "dataset": source,
            "recipe": f"{os.path.relpath(DEMO_FLAGFILE, common.REPO_ROOT)} with these epochs",
            "repeats": repeats,
            "inference": "classifier alone on one in-memory batch, median of repeats",
            "training_rate": "steady state: the first step (tracing) left out",
        },
        "by_size": results,
        "targets": [],
    }
