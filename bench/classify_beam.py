"""Benchmark 6: what the Beam engine costs on one machine, against classify_dir.

One folder of 512 x 512 gray scans (PNG and JPEG alternating), one
random-weight model at the default 128 px, CAMs on; per repeat, in turn, the
whole call a user waits for (model loading, tracing, writing and joining the
outputs included), all in this process unless said otherwise:

* classify_dir: `classify_dir.classify_directory` (tf.data input, batch 64);
* beam_local: `brainview.beam.classify.classify` on Beam's in-process runner
  (FnApiRunner, one worker: the engine bin/classify_beam uses locally when
  Prism is unavailable), Beam batching 64 at a time;
* beam_two_threads (full mode only): the same with two worker threads
  (direct_num_workers=2, direct_running_mode=multi_threading), the knob a user
  would turn on a multi-core machine: one thread decodes while the other's
  batch is in the model, which both share (worker processes would each load
  TensorFlow and the model).

Beam's rows equal classify_dir's (tests/test_beam_classify.py); this measures
only the price of the engine (listing, pickling elements between stages,
grouping shards, the final join, worker start-up) where classify_dir streams
everything in one tf.data graph.
"""

from __future__ import annotations

import dataclasses
import os

from bench import common, data

SCAN_SIDE = 512
IMAGE_SIZE = 128  # the default recipe's input size
BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Settings:
    images: int
    repeats: int


def settings_for(ctx: common.Context) -> Settings:
    if ctx.quick:
        return Settings(images=32, repeats=ctx.repeats(1, 1))
    return Settings(images=512, repeats=ctx.repeats(1, 3))


def _classify_dir(ctx: common.Context, scan_dir: str, model_path: str) -> float:
    from brainview.classify import classify_dir

    out = ctx.path("classify_beam_out", "classify_dir")
    os.makedirs(out, exist_ok=True)
    config = classify_dir.ClassifyConfig(
        scan_dir=scan_dir,
        output_csv=os.path.join(out, "predictions.csv"),
        model_path=model_path,
        cams_path=os.path.join(out, "cams.h5"),
        batch_size=BATCH_SIZE,
        overwrite=True,
        progress=False,
    )
    return common.seconds_of(lambda: classify_dir.classify_directory(config))


def _beam(ctx: common.Context, scan_dir: str, model_path: str, name: str, options: str) -> float:
    from brainview.beam import classify

    out = ctx.path("classify_beam_out", name)
    os.makedirs(out, exist_ok=True)
    config = classify.BeamClassifyConfig(
        scans=scan_dir,
        output_csv=os.path.join(out, "predictions.csv"),
        model_path=model_path,
        cams_path=os.path.join(out, "cams.h5"),
        batch_size=BATCH_SIZE,
        overwrite=True,
        runner="FnApiRunner",
        pipeline_options=options,
    )
    return common.seconds_of(lambda: classify.classify(config))


def run(ctx: common.Context) -> dict:
    settings = settings_for(ctx)
    scan_dir = data.write_scan_folder(
        ctx.path(f"scans_{settings.images}_{SCAN_SIDE}"), settings.images, SCAN_SIDE
    )
    model_path = data.random_model(ctx.path(f"model_{IMAGE_SIZE}", "model.keras"), IMAGE_SIZE)
    measurements = {
        "classify_dir": lambda: _classify_dir(ctx, scan_dir, model_path),
        "beam_local": lambda: _beam(ctx, scan_dir, model_path, "beam_local", ""),
    }
    if not ctx.quick:
        measurements["beam_two_threads"] = lambda: _beam(
            ctx,
            scan_dir,
            model_path,
            "beam_two_threads",
            "direct_num_workers=2,direct_running_mode=multi_threading",
        )
    seconds = common.interleaved(measurements, settings.repeats)
    rates = {name: common.rate(settings.images, values) for name, values in seconds.items()}
    reference = rates["classify_dir"]["per_second"]
    ratios = {
        f"{name} / classify_dir": common.ratio(rates[name]["per_second"], reference)
        for name in rates
        if name != "classify_dir"
    }
    return {
        "settings": {
            **dataclasses.asdict(settings),
            "scan_side": SCAN_SIDE,
            "image_size": IMAGE_SIZE,
            "batch_size": BATCH_SIZE,
            "cams": True,
        },
        "images_per_second": rates,
        "ratios": ratios,
        "targets": [],  # no goal: the row tells users what the engine costs
    }
