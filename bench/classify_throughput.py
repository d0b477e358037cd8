"""Benchmark 1: classify_dir's images/s against other ways to classify a folder.

One folder of 512 x 512 gray scans (PNG and JPEG alternating), one
random-weight model, one batch size; per repeat, in turn:

* original: the original study's PIL loop into one array, then model.predict;
* image_dataset_from_directory: keras' folder reader (decode, plain resize) + predict;
* model_only: the classifier alone on in-memory preprocessed batches (a ceiling);
* decode_only: classify_dir's own tf.data input pipeline without the model (a ceiling);
* classify_dir, classify_dir_cams: `classify_dir.classify_directory` in this process.

Throughputs are steady-state: one-time costs (loading the model, tracing
its tf.function, starting the input pipeline) are excluded for every
approach. The baselines get a warm-up call on the same model object.
classify_dir loads its model and traces anew on every call: here its
predictor is traced right after construction, before the input pipeline
starts (otherwise the pipeline would run ahead during the trace and flatter
the next batches), and it is timed from the end of its first batch to the
end of its last, counting the images in between; the input pipeline alone is
timed the same way. Whole-call rates (everything included) are reported too.

Everything shares the CPU here: decoding and the model cannot both run at
full speed at once, so besides min(model_only, decode_only) the report gives
the "serial bound" 1 / (1/model + 1/decode), the rate if nothing overlapped,
and CPU time per image (the process's CPU clock) of the input pipeline, the
model and classify_dir: when classify_dir's CPU time is about the sum of the
other two, it wastes nothing and its rate is what the CPU available allows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
from collections.abc import Iterator

import numpy as np

from bench import common, data, original_study

SCAN_SIDE = 512
# Batches not counted at the start of a classify_dir or decode-only run (pipeline start-up).
SKIP_BATCHES = 1


@dataclasses.dataclass(frozen=True)
class Settings:
    images: int
    image_size: int
    batch_size: int
    model_only_images: int  # in-memory images for the model-only ceiling


def settings_for(ctx: common.Context) -> Settings:
    if ctx.quick:
        return Settings(images=128, image_size=64, batch_size=16, model_only_images=64)
    return Settings(images=512, image_size=224, batch_size=64, model_only_images=192)


def _steady(batch_ends: list[tuple[float, int]]) -> tuple[float, int]:
    """(seconds, images) from the end of batch SKIP_BATCHES to the end of the last batch.

    The times may be any clock: wall (perf_counter) or the process's CPU time.
    """
    if len(batch_ends) <= SKIP_BATCHES:
        raise ValueError(f"need more than {SKIP_BATCHES} batches, got {len(batch_ends)}")
    start = batch_ends[SKIP_BATCHES - 1][0]
    return batch_ends[-1][0] - start, sum(count for _, count in batch_ends[SKIP_BATCHES:])


@contextlib.contextmanager
def _batch_clock(batch_size: int) -> Iterator[list[tuple[float, float, float, int]]]:
    """Records (start, end, CPU time at end, images) of every call of classify_dir's predictor.

    Wraps prediction.Predictor for the duration: the wrapper traces the
    prediction function when it is built (on one batch of zeros; the scan
    input pads short batches, so that is the only shape it sees) and reads
    the clock twice per batch. Between calls, the loop waits for the input
    pipeline (IteratorGetNext) and turns results into rows.
    """
    import tensorflow as tf

    from brainview.classify import prediction

    original = prediction.Predictor
    clock: list[tuple[float, float, float, int]] = []

    class ClockedPredictor(original):
        def __init__(self, model, *args, **kwargs):
            super().__init__(model, *args, **kwargs)
            size = int(model.input_shape[1])
            self.function(tf.zeros([batch_size, size, size, 3]))

        def __call__(self, batch):
            started = time.perf_counter()
            result = super().__call__(batch)
            now = (time.perf_counter(), time.process_time())
            clock.append((started, *now, int(result[0]["valid"].sum())))
            return result

    prediction.Predictor = ClockedPredictor
    try:
        yield clock
    finally:
        prediction.Predictor = original


def _classify_dir(
    ctx: common.Context, scan_dir: str, model_path: str, cams: bool, batch: int
) -> dict:
    """One in-process classify_directory run: steady seconds and images, wall, loop profile."""
    from brainview.classify import classify_dir

    out_dir = ctx.path("classify_out")
    os.makedirs(out_dir, exist_ok=True)
    config = classify_dir.ClassifyConfig(
        scan_dir=scan_dir,
        output_csv=os.path.join(out_dir, "predictions.csv"),
        model_path=model_path,
        cams_path=os.path.join(out_dir, "cams.h5") if cams else None,
        batch_size=batch,
        overwrite=True,
        progress=False,
    )
    with _batch_clock(batch) as clock:
        wall = common.seconds_of(lambda: classify_dir.classify_directory(config))
    seconds, count = _steady([(end, n) for _, end, _, n in clock])
    cpu_seconds, _ = _steady([(cpu, n) for _, _, cpu, n in clock])
    in_predictor = sum(end - start for start, end, _, _ in clock[SKIP_BATCHES:])
    return {
        "seconds": seconds,
        "count": count,
        "wall": wall,
        "predictor_share": in_predictor / seconds,
        "cpu_seconds_per_image": cpu_seconds / count,
    }


def _decode_only(scan_dir: str, image_size: int, batch: int, mode: str) -> dict:
    """classify_dir's input pipeline, iterated without a model: steady seconds and images, wall."""
    started = time.perf_counter()
    dataset = _scan_dataset(scan_dir, image_size, batch, mode)
    clock = [
        (time.perf_counter(), time.process_time(), int(np.sum(batch["valid"]))) for batch in dataset
    ]
    seconds, count = _steady([(wall, n) for wall, _, n in clock])
    cpu_seconds, _ = _steady([(cpu, n) for _, cpu, n in clock])
    return {
        "seconds": seconds,
        "count": count,
        "wall": time.perf_counter() - started,
        "cpu_seconds_per_image": cpu_seconds / count,
    }


def _scan_dataset(scan_dir: str, image_size: int, batch: int, mode: str):
    """classify_dir's input pipeline over the whole folder, as classify_dir builds it."""
    from brainview import image_files
    from brainview.classify import scan_input

    return scan_input.scan_dataset(
        os.fsencode(os.path.abspath(scan_dir)),
        image_size=image_size,
        mode=mode,
        batch_size=batch,
        max_decode_side=image_files.MAX_DECODE_SIDE,
    )


def _in_memory_batches(scan_dir: str, settings: Settings, mode: str) -> list:
    """The first preprocessed batches of the folder, held as tensors (model-only input)."""
    dataset = _scan_dataset(scan_dir, settings.image_size, settings.batch_size, mode)
    batches = settings.model_only_images // settings.batch_size
    return [b["image"] for b in dataset.take(batches)]


def run(ctx: common.Context) -> dict:
    import keras
    import tensorflow as tf

    from brainview import gradcam
    from brainview import model as model_lib
    from brainview.predict import make_predict

    settings = settings_for(ctx)
    scan_dir = data.write_scan_folder(ctx.path("scans_512"), settings.images, SCAN_SIDE)
    model_path = data.random_model(
        ctx.path(f"model_{settings.image_size}", "model.keras"), settings.image_size
    )
    model, card = model_lib.load_model(model_path)
    size, batch = settings.image_size, settings.batch_size

    # Warm-ups: trace every function once so that no timed call pays for it.
    warm = np.zeros((batch + 3, size, size, 3), np.float32)  # a full and a partial batch
    model.predict(warm, batch_size=batch, verbose=0)
    in_memory = _in_memory_batches(scan_dir, settings, card.preprocessing)
    predict = make_predict(model)
    predict_with_cams = gradcam.make_predict_with_cams(model)
    for images in in_memory[:1]:
        predict(images).numpy()
        [tensor.numpy() for tensor in predict_with_cams(images)]

    def original() -> float:
        return common.seconds_of(lambda: original_study.classify(scan_dir, model, size, batch))

    def from_directory() -> float:
        def classify_folder() -> None:
            dataset = keras.utils.image_dataset_from_directory(
                scan_dir,
                labels=None,
                image_size=(size, size),
                batch_size=batch,
                shuffle=False,
                verbose=False,
            )
            model.predict(dataset, verbose=0)

        return common.seconds_of(classify_folder)

    def model_only(function) -> dict:
        def loop() -> None:
            for images in in_memory:
                outputs = function(images)
                tf.nest.map_structure(lambda tensor: tensor.numpy(), outputs)

        cpu_started = time.process_time()
        seconds = common.seconds_of(loop)
        count = len(in_memory) * batch
        cpu_per_image = (time.process_time() - cpu_started) / count
        return {"seconds": seconds, "count": count, "cpu_seconds_per_image": cpu_per_image}

    runs: dict[str, list[dict]] = {
        name: []
        for name in (
            "model_only",
            "model_only_cams",
            "decode_only",
            "classify_dir",
            "classify_dir_cams",
        )
    }

    def steady(name: str, measure) -> float:
        runs[name].append(measure())
        return runs[name][-1]["seconds"]

    measurements = {
        "original": original,
        "image_dataset_from_directory": from_directory,
        "model_only": lambda: steady("model_only", lambda: model_only(predict)),
        "model_only_cams": lambda: steady("model_only_cams", lambda: model_only(predict_with_cams)),
        "decode_only": lambda: steady(
            "decode_only", lambda: _decode_only(scan_dir, size, batch, card.preprocessing)
        ),
        "classify_dir": lambda: steady(
            "classify_dir", lambda: _classify_dir(ctx, scan_dir, model_path, False, batch)
        ),
        "classify_dir_cams": lambda: steady(
            "classify_dir_cams", lambda: _classify_dir(ctx, scan_dir, model_path, True, batch)
        ),
    }
    repeats = ctx.repeats(quick=1, full=3)
    seconds = common.interleaved(measurements, repeats)
    counts = {
        "original": settings.images,
        "image_dataset_from_directory": settings.images,
        **{name: values[0]["count"] for name, values in runs.items()},
    }
    rates = {name: common.rate(counts[name], seconds[name]) for name in seconds}
    for name, values in runs.items():
        if "wall" in values[0]:
            walls = [value["wall"] for value in values]
            rates[name]["whole_call_per_second"] = common.rate(settings.images, walls)["per_second"]
        if "predictor_share" in values[0]:
            # Share of the steady loop spent in the model; the rest is waiting
            # for the input pipeline and writing rows.
            shares = [value["predictor_share"] for value in values]
            rates[name]["share_of_loop_in_predictor"] = round(statistics.median(shares), 3)
        if "cpu_seconds_per_image" in values[0]:
            cpu = statistics.median(value["cpu_seconds_per_image"] for value in values)
            rates[name]["cpu_ms_per_image"] = round(1000 * cpu, 2)
    return _report(settings, rates, scan_dir, repeats)


def _report(settings: Settings, rates: dict, scan_dir: str, repeats: int) -> dict:
    per_second = {name: value["per_second"] for name, value in rates.items()}
    model, decode = per_second["model_only"], per_second["decode_only"]
    ceiling = min(model, decode)
    serial_bound = 1 / (1 / model + 1 / decode)
    cpu_ms = {
        name: value["cpu_ms_per_image"]
        for name, value in rates.items()
        if "cpu_ms_per_image" in value
    }
    parts_cpu = cpu_ms["decode_only"] + cpu_ms["model_only"]
    classify_rate, cams_rate = per_second["classify_dir"], per_second["classify_dir_cams"]
    cam_cost = round(1 - cams_rate / classify_rate, 3)
    ratios = {
        "classify_dir / min(model_only, decode_only)": common.ratio(classify_rate, ceiling),
        "classify_dir / serial_bound": common.ratio(classify_rate, serial_bound),
        "classify_dir CPU / (decode_only + model_only CPU)": common.ratio(
            cpu_ms["classify_dir"], parts_cpu
        ),
        "classify_dir / image_dataset_from_directory": common.ratio(
            classify_rate, per_second["image_dataset_from_directory"]
        ),
        "classify_dir / original": common.ratio(classify_rate, per_second["original"]),
        "cam_cost (1 - cams / no cams)": cam_cost,
        "cam_cost_model_only": round(1 - per_second["model_only_cams"] / model, 3),
    }
    return {
        "settings": {
            **dataclasses.asdict(settings),
            "scan_side": SCAN_SIDE,
            "formats": "PNG and JPEG (quality 90) alternating, 8-bit gray",
            "folder_mb": round(data.folder_bytes(scan_dir) / 2**20, 1),
            "repeats": repeats,
            "steady_state": f"classify_dir and decode_only: after batch {SKIP_BATCHES}",
        },
        "images_per_second": rates,
        "serial_bound_per_second": round(serial_bound, 2),
        "cpu_ms_per_image": cpu_ms,
        "ratios": ratios,
        "targets": [
            common.target(
                "classify_dir >= 0.9 x min(model-only, decode-only)",
                ratios["classify_dir / min(model_only, decode_only)"],
                0.9,
            ),
            common.target(
                "classify_dir not slower than image_dataset_from_directory + predict",
                ratios["classify_dir / image_dataset_from_directory"],
                1.0,
            ),
            common.target(
                "classify_dir faster than the original loop",
                ratios["classify_dir / original"],
                1.0,
            ),
            common.target("CAMs cost <= 10 %", cam_cost, 0.10, higher_is_better=False),
        ],
    }
