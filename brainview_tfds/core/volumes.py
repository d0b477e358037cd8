"""Atlas volumes -> display-oriented 2-D slices along all three axes.

Every volume builder (Allen CCFv3 template, Allen Nissl, phantom) slices
through this one module, so all of them agree on axis order, orientation and
intensity scaling.

Axis order is the one of the Allen Institute's NRRD files (and the CCFv3
convention): axis 0 anterior -> posterior, axis 1 superior -> inferior, axis 2
left <-> right. Slices are returned in a conventional display orientation:

* coronal    `vol[k, :, :]`   rows dorsal -> ventral, columns left -> right;
* horizontal `vol[:, k, :]`   rows anterior -> posterior, columns left -> right;
* sagittal   `vol[:, :, k].T` rows dorsal -> ventral, columns anterior -> posterior
  (transposed so that dorsal is up, as in the Allen Reference Atlas).

Intensity scaling (volumes are uint16 or float): one linear map per *volume*,
from its 0.5th..99.9th percentile to 0..255, clipped. Per-volume (not
per-slice) scaling keeps slices of one brain comparable and keeps nearly empty
edge slices dark, which is what the dark-image filter expects.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator

import numpy as np

from brainview import image_files
from brainview_tfds.core import features

AXIS_VIEWS = ("coronal", "horizontal", "sagittal")  # view of a slice across axis 0, 1, 2

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.9
# Percentiles are estimated on a strided subsample of at most this many voxels,
# so scaling a 10 um volume (1.2 G voxels) costs seconds, not minutes.
MAX_VOXELS_FOR_PERCENTILES = 8_000_000


class VolumeReadError(Exception):
    """A user-facing, one-line reason why a file is not a usable 3-D volume."""


@dataclasses.dataclass(frozen=True)
class Volume:
    """A 3-D volume in Allen axis order with its voxel size."""

    voxels: np.ndarray  # (anterior-posterior, superior-inferior, left-right)
    resolution_um: float
    source_file: str


@dataclasses.dataclass(frozen=True)
class Slice:
    """One display-oriented slice of a volume, scaled to uint8."""

    view: str
    index: int  # index along the slicing axis
    position: float  # index / (number of slices - 1): 0 first, 1 last
    pixels: np.ndarray  # uint8 HxW


def read_nrrd(path: str | os.PathLike) -> Volume:
    """Reads a 3-D NRRD file; raises VolumeReadError with the reason if unusable."""
    import nrrd  # pynrrd; imported here so that non-volume users do not need it

    path = os.fspath(path)
    try:
        voxels, header = nrrd.read(path)
    except FileNotFoundError:
        raise VolumeReadError(f"{path}: file not found") from None
    except Exception as error:  # pynrrd raises many types for bad files
        raise VolumeReadError(f"{path}: not a readable NRRD volume ({error})") from None
    if voxels.ndim != 3:
        raise VolumeReadError(f"{path}: expected a 3-D volume, got shape {voxels.shape}")
    if min(voxels.shape) < 2:
        raise VolumeReadError(f"{path}: volume too small to slice, shape {voxels.shape}")
    if not np.issubdtype(voxels.dtype, np.number):
        raise VolumeReadError(f"{path}: voxel type {voxels.dtype} is not numeric")
    return Volume(voxels=voxels, resolution_um=_resolution_um(header), source_file=path)


def read_resolution_um(path: str | os.PathLike) -> float:
    """Voxel size recorded in an NRRD header, without reading the voxels."""
    import nrrd

    try:
        return _resolution_um(nrrd.read_header(os.fspath(path)))
    except FileNotFoundError:
        raise VolumeReadError(f"{os.fspath(path)}: file not found") from None
    except Exception as error:
        raise VolumeReadError(f"{os.fspath(path)}: not a readable NRRD header ({error})") from None


def _resolution_um(header: dict) -> float:
    """Isotropic voxel size in um from an NRRD header (0 if not recorded).

    Allen files store micrometres in `space directions`; anisotropic volumes
    report their finest spacing.
    """
    if "space directions" in header:
        directions = np.asarray(header["space directions"], dtype=float)
        spacings = np.sqrt(np.nansum(directions**2, axis=1))
    elif "spacings" in header:
        spacings = np.asarray(header["spacings"], dtype=float)
    else:
        return features.UNKNOWN_RESOLUTION_UM
    spacings = spacings[np.isfinite(spacings) & (spacings > 0)]
    return float(spacings.min()) if spacings.size else features.UNKNOWN_RESOLUTION_UM


def intensity_range(voxels: np.ndarray) -> tuple[float, float]:
    """The (low, high) values mapped to 0 and 255 for this volume."""
    stride = max(1, int(np.ceil((voxels.size / MAX_VOXELS_FOR_PERCENTILES) ** (1 / 3))))
    sample = voxels[::stride, ::stride, ::stride]
    return image_files.robust_range(sample, LOW_PERCENTILE, HIGH_PERCENTILE)


def display_slice(voxels: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2-D slice `index` across the axis of `view`, in display orientation."""
    if view == "coronal":
        return voxels[index, :, :]
    if view == "horizontal":
        return voxels[:, index, :]
    if view == "sagittal":
        return voxels[:, :, index].T
    raise ValueError(f"unknown view {view!r}; expected one of {AXIS_VIEWS}")


def num_slices(voxels: np.ndarray, view: str) -> int:
    return voxels.shape[AXIS_VIEWS.index(view)]


def iter_slices(
    voxels: np.ndarray,
    view: str,
    intensity: tuple[float, float],
    indices: Iterable[int] | None = None,
    max_side: int = features.MAX_IMAGE_SIDE,
) -> Iterator[Slice]:
    """Yields the slices `indices` (default: all) across the axis of `view`."""
    count = num_slices(voxels, view)
    low, high = intensity
    for index in range(count) if indices is None else indices:
        pixels = image_files.scale_to_uint8(display_slice(voxels, view, index), low, high)
        yield Slice(
            view=view,
            index=index,
            position=index / (count - 1),
            pixels=image_files.downscale_to_max_side(pixels, max_side),
        )
