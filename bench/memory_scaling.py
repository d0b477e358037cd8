"""Benchmark 2: peak memory against the number of images, classify_dir vs the original.

Each run is a separate process (bin/classify_dir with CAMs, and
`python -m bench.original_study`), so its peak resident set size is its own:
the kernel's high-water mark from wait4 (see common.run_measuring_memory).

classify_dir streams, so its peak should not depend on the folder's size;
the original holds every image as float32 at the model's input size, so its
peak grows linearly. Its measured bytes per image are also scaled to the
original study's own input size (512 px) to show what a large folder would
need there; that figure is an extrapolation and labelled as one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import sys

import numpy as np

from bench import common, data

SCAN_SIDE = 128  # small scans: 16k of them decode in well under a minute
ORIGINAL_STUDY_IMAGE_SIZE = 512  # the original's model input, for the extrapolation


@dataclasses.dataclass(frozen=True)
class Settings:
    counts: tuple[int, ...]
    image_size: int  # model input; small, so 16k images run in a couple of minutes
    batch_size: int
    original_measured_up_to: int  # above this many images the original is extrapolated


def settings_for(ctx: common.Context) -> Settings:
    if ctx.quick:
        return Settings(
            counts=(50, 100, 200), image_size=64, batch_size=32, original_measured_up_to=200
        )
    return Settings(
        counts=(1000, 4000, 16000), image_size=64, batch_size=64, original_measured_up_to=4000
    )


def _classify_dir(scan_dir: str, model_path: str, out_dir: str, batch_size: int) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    return common.run_measuring_memory(
        [
            sys.executable,
            os.path.join(common.REPO_ROOT, "bin", "classify_dir"),
            scan_dir,
            os.path.join(out_dir, "predictions.csv"),
            f"--model={model_path}",
            f"--cams={os.path.join(out_dir, 'cams.h5')}",
            f"--batch_size={batch_size}",
            "--overwrite",
            "--noprogress",
        ]
    )


def _original(scan_dir: str, model_path: str, batch_size: int) -> dict:
    return common.run_measuring_memory(
        [
            sys.executable,
            "-m",
            "bench.original_study",
            scan_dir,
            model_path,
            f"--batch_size={batch_size}",
        ],
        env={"PYTHONPATH": common.REPO_ROOT},
    )


def run(ctx: common.Context) -> dict:
    settings = settings_for(ctx)
    model_path = data.random_model(
        ctx.path(f"model_{settings.image_size}", "model.keras"), settings.image_size
    )
    classify_runs, original_runs = {}, {}
    # The two processes of one count run side by side: each one's peak is its
    # own, and it halves the wall time of a benchmark that is mostly start-up.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for count in settings.counts:
            scan_dir = data.write_scan_folder(
                ctx.path(f"scans_{SCAN_SIDE}", str(count)), count, SCAN_SIDE, formats=("png",)
            )
            out_dir = ctx.path("memory_out", str(count))
            classify_run = pool.submit(
                _classify_dir, scan_dir, model_path, out_dir, settings.batch_size
            )
            if count <= settings.original_measured_up_to:
                original_runs[count] = _original(scan_dir, model_path, settings.batch_size)
            classify_runs[count] = classify_run.result()
    return _report(settings, classify_runs, original_runs)


def _report(settings: Settings, classify_runs: dict, original_runs: dict) -> dict:
    first, last = settings.counts[0], settings.counts[-1]
    measured = sorted(original_runs)
    high = measured[-1]
    # Least-squares slope over every measured count: steadier than two end points.
    slope_mb, _ = np.polyfit(measured, [original_runs[c]["peak_rss_mb"] for c in measured], 1)
    bytes_per_image = slope_mb * 2**20
    original_mb = {}
    for count in settings.counts:
        if count in original_runs:
            original_mb[count] = {**original_runs[count], "extrapolated": False}
        else:
            estimate = original_runs[high]["peak_rss_mb"] + (count - high) * bytes_per_image / 2**20
            original_mb[count] = {"peak_rss_mb": round(estimate, 1), "extrapolated": True}
    input_bytes = settings.image_size**2 * 3 * 4  # one float32 image at the model's input
    overhead = bytes_per_image / input_bytes
    at_512 = overhead * ORIGINAL_STUDY_IMAGE_SIZE**2 * 3 * 4
    growth_classify = common.ratio(
        classify_runs[last]["peak_rss_mb"], classify_runs[first]["peak_rss_mb"]
    )
    return {
        "settings": {
            **dataclasses.asdict(settings),
            "scan_side": SCAN_SIDE,
            "formats": "PNG, 8-bit gray",
            "classify_dir": "bin/classify_dir with --cams, one process per count",
            "original": "python -m bench.original_study, one process per count",
            "seconds": "wall time, the two processes of a count running side by side",
        },
        "classify_dir": {str(count): run for count, run in classify_runs.items()},
        "original": {str(count): run for count, run in original_mb.items()},
        "growth": {
            f"classify_dir {last} / {first}": growth_classify,
            f"original {last} / {first}": common.ratio(
                original_mb[last]["peak_rss_mb"], original_mb[first]["peak_rss_mb"]
            ),
        },
        "original_mb_per_image": round(bytes_per_image / 2**20, 4),
        "original_bytes_per_image_over_float32_input": round(overhead, 2),
        "original_at_512px_extrapolated": {
            "mb_per_image": round(at_512 / 2**20, 2),
            f"gb_for_{last}_images": round(at_512 * last / 2**30, 1),
            "note": "measured bytes per image scaled by (512 / image_size)^2; not run",
        },
        "targets": [
            common.target(
                f"classify_dir peak RSS grows <= 10 % from {first} to {last} images",
                None if growth_classify is None else round(growth_classify - 1, 3),
                0.10,
                higher_is_better=False,
            )
        ],
    }
