"""Benchmark 4: the volume builder's slices/s against bare PNG encoding of the same slices.

A generated uint16 volume of the 25 um CCFv3 shape (528 x 320 x 456; smooth
random blobs inside an ellipsoid, plus noise) is written as a raw NRRD and
built with the allen_ccfv3 builder exactly as `bin/build_datasets
--allen_ccfv3_file` would (`build.request_for_volume_file`). The reference
loop does only what producing the images needs: the same per-volume uint8
scaling, the same RGB conversion and the same PNG encoder TFDS uses
(`tf.image.encode_png`) on every slice of all three axes, volume already in
memory. The builder's extra work — reading the file, splits, examples,
serialization, shuffling, TFRecord writing — is what the ratio prices.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import numpy as np

from bench import common

CCF_25UM_SHAPE = (528, 320, 456)


@dataclasses.dataclass(frozen=True)
class Settings:
    shape: tuple[int, int, int]
    resolution_um: int


def settings_for(ctx: common.Context) -> Settings:
    if ctx.quick:
        return Settings(shape=(132, 80, 114), resolution_um=100)  # the 100 um CCFv3 shape
    return Settings(shape=CCF_25UM_SHAPE, resolution_um=25)


def write_volume(path: str, shape: tuple[int, int, int], resolution_um: int, seed: int = 0) -> str:
    """A brain-like uint16 volume as a raw NRRD with the Allen files' header fields."""
    import nrrd
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.3, 1.0, tuple(max(2, s // 24) for s in shape)).astype(np.float32)
    blobs = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape, strict=True)], order=1)
    blobs = blobs[: shape[0], : shape[1], : shape[2]]
    axes = np.ogrid[tuple(slice(0, s) for s in shape)]
    radius = sum(((a - s / 2) / (0.45 * s)) ** 2 for a, s in zip(axes, shape, strict=True))
    voxels = np.where(radius <= 1.0, blobs * 400.0, 0.0).astype(np.float32)
    voxels += rng.integers(0, 4, shape, dtype=np.uint16)  # ~2 gray levels of noise
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([float(resolution_um)] * 3),
        "encoding": "raw",
    }
    nrrd.write(path, voxels.astype(np.uint16), header=header)
    return path


def _encode_all_slices(voxels: np.ndarray, intensity: tuple[float, float]) -> int:
    """Every slice of all three axes scaled, made RGB and PNG-encoded; returns the count."""
    import tensorflow as tf

    from brainview import image_files
    from brainview_tfds.core import volumes

    count = 0
    for view in volumes.AXIS_VIEWS:
        for section in volumes.iter_slices(voxels, view, intensity):
            tf.image.encode_png(image_files.as_rgb_uint8(section.pixels)).numpy()
            count += 1
    return count


def _shards(builder) -> dict:
    """TFRecord shard files per split: how many and how large."""
    by_split: dict[str, list[int]] = {}
    for path in glob.glob(os.path.join(str(builder.data_dir), "*.tfrecord-*")):
        match = re.search(r"-(\w+)\.tfrecord-", os.path.basename(path))
        split = match.group(1) if match else "?"
        by_split.setdefault(split, []).append(os.path.getsize(path))
    return {
        split: {
            "shards": len(sizes),
            "total_mb": round(sum(sizes) / 2**20, 2),
            "largest_mb": round(max(sizes) / 2**20, 2),
        }
        for split, sizes in sorted(by_split.items())
    }


def run(ctx: common.Context) -> dict:
    from brainview_tfds import build
    from brainview_tfds.core import volumes

    settings = settings_for(ctx)
    volume_dir = ctx.path("volume")
    os.makedirs(volume_dir, exist_ok=True)
    path = os.path.join(volume_dir, f"average_template_{settings.resolution_um}.nrrd")
    if not os.path.exists(path):
        write_volume(path, settings.shape, settings.resolution_um)
    read_seconds = common.seconds_of(lambda: volumes.read_nrrd(path))
    volume = volumes.read_nrrd(path)
    intensity = volumes.intensity_range(volume.voxels)
    request = build.request_for_volume_file("allen_ccfv3", path)
    built: list = []
    slice_counts: list[int] = []

    def build_once() -> float:
        data_dir = ctx.path("builder_tfds", str(len(built)))
        seconds = common.seconds_of(lambda: built.append(build.build(request, data_dir=data_dir)))
        slice_counts.append(sum(s.num_examples for s in built[-1].info.splits.values()))
        return seconds

    def encode_only() -> float:
        return common.seconds_of(
            lambda: slice_counts.append(_encode_all_slices(volume.voxels, intensity))
        )

    repeats = ctx.repeats(quick=2, full=1)  # a full pass over the 25 um volume takes minutes
    seconds = common.interleaved({"builder": build_once, "png_encode_only": encode_only}, repeats)
    total_slices = sum(volume.voxels.shape)
    if set(slice_counts) != {total_slices}:
        raise RuntimeError(
            f"expected {total_slices} slices per pass, got {sorted(set(slice_counts))}"
        )
    rates = {name: common.rate(total_slices, values) for name, values in seconds.items()}
    relative = common.ratio(rates["builder"]["per_second"], rates["png_encode_only"]["per_second"])
    return {
        "settings": {
            **dataclasses.asdict(settings),
            "volume": "uint16, raw NRRD, smooth random blobs in an ellipsoid + noise",
            "volume_mb": round(os.path.getsize(path) / 2**20, 1),
            "builder_config": request.full_name,
            "read_nrrd_seconds": round(read_seconds, 2),
            "repeats": repeats,
        },
        "slices": total_slices,
        "slices_per_second": rates,
        "shards": _shards(built[-1]),
        "ratios": {"builder / png_encode_only": relative},
        "targets": [common.target("builder >= 0.8 x bare PNG-encode rate", relative, 0.8)],
    }
