"""Benchmark 8: what the shipped default model costs at inference, against the old default.

Before plane-v1, the best recipe a user could train (configs/robust.flags) was
EfficientNet-B0 at 128 px with the aligned input and mirror TTA. plane-v1 is
EfficientNet-Lite0 at 224 px (a 7 x 7 CAM grid instead of 4 x 4), same input
and TTA. Speed depends on the network and its input size, not on the weights,
so the old recipe is timed with random weights and its own card settings.

Both run through `classify_dir.classify_directory` on the same folder of
512 px scans (PNG and JPEG), CAMs on, whole calls (model loading included),
interleaved repeats; the ratio is plane-v1 / old default in this run. Besides
wall-clock img/s, the process's CPU time per image is reported: on a machine
shared with other jobs it is the steadier measure of what a model costs.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time

from bench import common, data

SCAN_SIDE = 512
OLD_DEFAULT_SIZE = 128  # configs/robust.flags
BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Settings:
    images: int
    repeats: int


def settings_for(ctx: common.Context) -> Settings:
    if ctx.quick:
        return Settings(images=16, repeats=ctx.repeats(1, 1))
    return Settings(images=256, repeats=ctx.repeats(1, 3))


def _old_default_model(path: str) -> str:
    """B0 at 128 px with configs/robust.flags' inference settings (aligned input, TTA)."""
    from brainview import model as model_lib

    data.random_model(path, OLD_DEFAULT_SIZE)
    card = model_lib.ModelCard.load(model_lib.card_path(path))
    card = dataclasses.replace(card, preprocessing="aligned", tta=True, recipe="robust (bench)")
    card.save(model_lib.card_path(path))
    return path


def _classify_seconds(
    ctx: common.Context, scan_dir: str, model: str, name: str, cpu_seconds: list[float]
) -> float:
    """Wall seconds of one whole classify_dir call; its process CPU seconds go to cpu_seconds."""
    from brainview.classify import classify_dir

    out = ctx.path("released_model_out", name)
    os.makedirs(out, exist_ok=True)
    config = classify_dir.ClassifyConfig(
        scan_dir=scan_dir,
        output_csv=os.path.join(out, "predictions.csv"),
        model_path=model,
        cams_path=os.path.join(out, "cams.h5"),
        batch_size=BATCH_SIZE,
        overwrite=True,
        progress=False,
    )
    cpu_started = time.process_time()
    wall = common.seconds_of(lambda: classify_dir.classify_directory(config))
    cpu_seconds.append(time.process_time() - cpu_started)
    return wall


def run(ctx: common.Context) -> dict:
    from brainview import released_models

    settings = settings_for(ctx)
    scan_dir = data.write_scan_folder(
        ctx.path(f"scans_{settings.images}_{SCAN_SIDE}"), settings.images, SCAN_SIDE
    )
    old_default = _old_default_model(ctx.path("old_default_b0_128", "model.keras"))
    shipped = released_models.DEFAULT_MODEL
    old = "old_default_b0_128"
    models = {old: old_default, shipped: shipped}
    cpu: dict[str, list[float]] = {name: [] for name in models}

    def measure(name: str):
        return lambda: _classify_seconds(ctx, scan_dir, models[name], name, cpu[name])

    seconds = common.interleaved({name: measure(name) for name in models}, settings.repeats)
    rates = {name: common.rate(settings.images, values) for name, values in seconds.items()}
    cpu_ms = {
        name: round(1000 * statistics.median(values) / settings.images, 2)
        for name, values in cpu.items()
    }
    ratios = {
        f"{shipped} / {old} (img/s)": common.ratio(
            rates[shipped]["per_second"], rates[old]["per_second"]
        ),
        f"{shipped} / {old} (CPU ms per image)": common.ratio(cpu_ms[shipped], cpu_ms[old]),
    }
    return {
        "settings": {
            **dataclasses.asdict(settings),
            "scan_side": SCAN_SIDE,
            "batch_size": BATCH_SIZE,
            "cams": True,
            "tta": True,
            "shipped_model": shipped,
        },
        "images_per_second": rates,
        "cpu_ms_per_image": cpu_ms,
        "ratios": ratios,
        "targets": [],  # no goal: the row says what the better model costs
    }
