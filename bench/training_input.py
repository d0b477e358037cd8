"""Benchmark 3: does the TFDS input pipeline keep training fed?

The same compiled model takes `model.fit` steps fed either by
`training_input.training_dataset` (TFRecords -> decode -> the demo recipe's
augmentation and preprocessing, in parallel) or by the very same kind of
batches materialized once as in-memory arrays. Same model, batch, image size
and number of steps; steps/s come from the batch-end times of each fit, the
first batch (iterator start, shuffle-buffer fill) excluded.

To tell an input-bound loop from a compute-bound one, the pipeline is also
iterated alone (no model): if it yields batches much faster than fit consumes
them, the model is never waiting on IteratorGetNext for long. What remains is
the CPU the pipeline takes from the training step on the same cores; from the
pipeline's CPU time per batch (the process's CPU clock) the report predicts
the ratio that sharing alone would give: step / (step + CPU per batch / cores).
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

import numpy as np

from bench import common, data

DEMO_LEARNING_RATE = 1e-3


@dataclasses.dataclass(frozen=True)
class Settings:
    phantom_config: str
    image_size: int
    batch_size: int
    steps: int  # timed steps per measurement (one more is run and not counted)
    augment: str = "robust"  # configs/demo.flags
    balance: str = "view"


def settings_for(ctx: common.Context) -> Settings:
    if ctx.quick:
        return Settings(phantom_config="tiny", image_size=64, batch_size=32, steps=3)
    return Settings(phantom_config="default", image_size=128, batch_size=32, steps=6)


def _fit_seconds(model, *fit_args, steps: int, **fit_kwargs) -> float:
    """Seconds for `steps` training steps, after one uncounted step."""
    clock = common.batch_end_clock()
    model.fit(*fit_args, epochs=1, verbose=0, callbacks=[clock], shuffle=False, **fit_kwargs)
    if len(clock.times) != steps + 1:
        raise RuntimeError(f"fit ran {len(clock.times)} steps, expected {steps + 1}")
    return clock.times[-1] - clock.times[0]


def _iteration_seconds(iterator, steps: int, cpu_seconds: list[float]) -> float:
    """Seconds to draw `steps` batches, after one uncounted (start-up, shuffle-buffer fill).

    Appends the process CPU seconds those batches took to `cpu_seconds`.
    """
    next(iterator)
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(steps):
        next(iterator)
    cpu_seconds.append(time.process_time() - cpu_started)
    return time.perf_counter() - started


def run(ctx: common.Context) -> dict:
    import keras

    from brainview import augmentation, experiments, training_input
    from brainview import model as model_lib

    settings = settings_for(ctx)
    source = f"brain_phantom/{settings.phantom_config}"
    data_dir = data.phantom_data_dir(ctx.path("tfds"), settings.phantom_config)
    split = experiments.holdout((source,), validation=True)[0].train_split
    config = training_input.PipelineConfig(
        image_size=settings.image_size,
        batch_size=settings.batch_size,
        augmentations=augmentation.parse_augmentations(settings.augment),
        balance=settings.balance,
        data_dir=data_dir,
    )
    train_data, num_examples = training_input.training_dataset((source,), split, config)

    # The in-memory copy: the pipeline's own batches (augmented, preprocessed), taken once.
    taken = list(train_data.take(settings.steps + 1).as_numpy_iterator())
    images, labels, weights = (np.concatenate(parts) for parts in zip(*taken, strict=True))

    keras.utils.set_random_seed(0)
    model = model_lib.build_classifier(settings.image_size, "none")
    model.compile(
        optimizer=keras.optimizers.Adam(DEMO_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    steps = settings.steps

    def from_tfds() -> float:
        return _fit_seconds(model, train_data, steps=steps, steps_per_epoch=steps + 1)

    def from_memory() -> float:
        return _fit_seconds(
            model,
            images,
            labels,
            steps=steps,
            sample_weight=weights,
            batch_size=settings.batch_size,
        )

    pipeline_cpu: list[float] = []

    def pipeline_alone() -> float:
        # A fresh iterator each time: a kept one would prefetch between measurements.
        return _iteration_seconds(iter(train_data), steps, pipeline_cpu)

    warm_up = time.perf_counter()
    model.fit(train_data, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)  # traces it
    model.fit(images, labels, sample_weight=weights, batch_size=settings.batch_size, verbose=0)
    pipeline_alone()
    pipeline_cpu.clear()  # the first pass also filled the cache
    warm_up = time.perf_counter() - warm_up

    repeats = ctx.repeats(quick=1, full=3)
    seconds = common.interleaved(
        {"tfds": from_tfds, "in_memory": from_memory, "pipeline_alone": pipeline_alone}, repeats
    )
    steps_per_second = {name: common.rate(steps, values) for name, values in seconds.items()}
    tfds_rate = steps_per_second["tfds"]["per_second"]
    memory_rate = steps_per_second["in_memory"]["per_second"]
    pipeline_rate = steps_per_second["pipeline_alone"]["per_second"]
    relative = common.ratio(tfds_rate, memory_rate)
    cpu_per_batch = statistics.median(pipeline_cpu) / steps
    step_seconds = 1 / memory_rate
    sharing_prediction = step_seconds / (step_seconds + cpu_per_batch / (os.cpu_count() or 1))
    return {
        "settings": {
            **dataclasses.asdict(settings),
            "dataset": source,
            "split": split,
            "train_examples": num_examples,
            "warm_up_seconds": round(warm_up, 1),
            "repeats": repeats,
        },
        "steps_per_second": steps_per_second,
        "images_per_second": {
            name: round(value["per_second"] * settings.batch_size, 2)
            for name, value in steps_per_second.items()
        },
        "ratios": {
            "tfds / in_memory": relative,
            "pipeline_alone / tfds (headroom of the input pipeline)": common.ratio(
                pipeline_rate, tfds_rate
            ),
            "predicted tfds / in_memory from CPU sharing alone": round(sharing_prediction, 3),
        },
        "pipeline_cpu_seconds_per_batch": round(cpu_per_batch, 4),
        "targets": [common.target("training from TFDS >= 0.9 x in-memory", relative, 0.9)],
    }
