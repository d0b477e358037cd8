"""The HDF5 CAM file of a classify_dir run: its layout, its parts, their assembly, reading it.

One row per CSV row (row i of the CSV is index i of every per-row dataset,
CAM_DATASETS), gzip-compressed so that plain h5py, HDFView or MATLAB read it
without plugins. While a run is in progress its rows are committed as small
part files (cams.h5.parts/); `assemble_cams` joins them into the final file in
one pass and renames it into place, so `cams.h5` is either absent or complete
and readable, never half written.
"""

from __future__ import annotations

import dataclasses
import uuid

import h5py
import numpy as np

from brainview.classify import outputs
from brainview.labels import VIEWS

# Per-row HDF5 datasets, aligned with the CSV rows (row i of the CSV is index i).
CAM_DATASETS = ("cams", "paths", "views", "probabilities", "frames", "statuses")

# The writer builds its HDF5 files in memory and writes their bytes with Python's file
# I/O: when HDF5 fails to write (a full disk) while h5py releases an object, h5py 3.14
# crashes the process (SIGSEGV) instead of raising. In memory, the only writes that can
# fail are Python's, which raise OSError. (The files are small: CAM parts of one commit,
# and the final file, a few hundred bytes per row.)


def _memory_file() -> h5py.File:
    """A new HDF5 file that lives in memory until `_save_memory_file`."""
    name = f"memory-{uuid.uuid4().hex}.h5"  # HDF5 refuses two open files of one name
    return h5py.File(name, "w", driver="core", backing_store=False)


def _save_memory_file(file: h5py.File, path: str) -> None:
    """Closes an in-memory HDF5 file and writes it to `path` (temporary, fsync, rename)."""
    file.flush()
    image = file.id.get_file_image()
    file.close()
    outputs.fsync_write(path, image)


def _string_dataset(group: h5py.Group, name: str, values: list[str], maxshape=None) -> None:
    group.create_dataset(
        name, data=np.array(values, dtype=object), dtype=h5py.string_dtype(), maxshape=maxshape
    )


def write_part(path: str, segment: outputs.Segment) -> None:
    """Writes one committed segment's rows as a CAM part file (assembled by `assemble_cams`)."""
    part = _memory_file()
    _write_cam_datasets(part, segment)
    _save_memory_file(part, path)


def _write_cam_datasets(file: h5py.File, segment: outputs.Segment) -> None:
    file.create_dataset("cams", data=segment.cams)
    _string_dataset(file, "paths", segment.paths)
    _string_dataset(file, "statuses", segment.statuses)
    file.create_dataset("views", data=segment.views)
    file.create_dataset("probabilities", data=segment.probabilities)
    file.create_dataset("frames", data=segment.frames)


def create_cam_file(
    path: str | None, count: int, cam_shape: tuple[int, int], attributes: dict
) -> h5py.File:
    """An open HDF5 file with empty, chunked, gzip-compressed per-row datasets.

    gzip (deflate) and shuffle are built into every HDF5 library: plain h5py,
    HDFView or MATLAB read the file without plugins. Fill it with `write_block`.
    `path` None: in memory (see `_save_memory_file`).
    """
    file = _memory_file() if path is None else h5py.File(path, "w")
    height, width = cam_shape
    chunk_rows = max(1, min(count, max(1, (1 << 20) // (2 * height * width))))
    compressed = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    # h5py refuses a chunk longer than a fixed-size axis: with no rows at all (an
    # empty folder, or a shard without files) the row axis is made growable instead.
    rows = None if count == 0 else count
    file.create_dataset(
        "cams",
        (count, height, width),
        np.float16,
        chunks=(chunk_rows, height, width),
        maxshape=(rows, height, width),
        **compressed,
    )
    chunk = (max(1, min(count, 4096)),)
    for name in ("paths", "statuses"):
        file.create_dataset(
            name, (count,), h5py.string_dtype(), chunks=chunk, maxshape=(rows,), **compressed
        )
    file.create_dataset("views", (count,), np.int8, chunks=chunk, maxshape=(rows,), **compressed)
    for name, columns in (("probabilities", 3), ("frames", 4)):
        file.create_dataset(
            name,
            (count, columns),
            np.float32,
            chunks=(*chunk, columns),
            maxshape=(rows, columns),
            **compressed,
        )
    file["cams"].attrs["description"] = (
        "Grad-CAM of the predicted view, 0..1, over the square of the source image given by "
        "frames[i]"
    )
    file["frames"].attrs["description"] = (
        "center_y, center_x, side (source pixels), angle (radians): the model saw the source "
        "rotated by angle about the center, cropped to a side x side square"
    )
    file["views"].attrs["description"] = "index into the file attribute class_names; -1: error"
    for key, value in attributes.items():
        file.attrs[key] = value
    file.attrs["cam_resolution"] = np.array(cam_shape, np.int32)  # CAM cells: height, width
    return file


def write_block(file: h5py.File, start: int, block: dict[str, np.ndarray]) -> None:
    """Writes rows start.. of every per-row dataset (`block` as `CamFile.block` returns it)."""
    for name in CAM_DATASETS:
        file[name][start : start + len(block[name])] = block[name]


def assemble_cams(
    part_paths: list[str], path: str, attributes: dict, cam_shape: tuple[int, int]
) -> None:
    """Concatenates CAM part files, in order, into one final HDF5 file (written atomically)."""
    parts = [CamFile(part_path) for part_path in part_paths]
    try:
        out = create_cam_file(None, sum(map(len, parts)), cam_shape, attributes)
        start = 0
        for part in parts:
            write_block(out, start, part.block(0, len(part)))
            start += len(part)
        _save_memory_file(out, path)
    finally:
        for part in parts:
            part.close()


@dataclasses.dataclass(frozen=True)
class CamRow:
    """One row of a CAM file, as overlays need it."""

    path: str  # relative to the scan directory, as in the CSV
    view: str  # the predicted view's name ("" for error rows)
    confidence: float  # the largest probability (nan for error rows)
    cam: np.ndarray  # float16 (h, w), 0..1
    frame: np.ndarray  # float32 [center_y, center_x, side, angle] in source pixels


class CamFile:
    """Read access to a CAM HDF5 file (a final file or a segment part)."""

    def __init__(self, path: str):
        self.file = h5py.File(path, "r")

    def __enter__(self) -> CamFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def __len__(self) -> int:
        return len(self.file["paths"])

    @property
    def attributes(self) -> dict:
        return dict(self.file.attrs)

    @property
    def cam_shape(self) -> tuple[int, int]:
        return tuple(self.file["cams"].shape[1:])

    @property
    def class_names(self) -> list[str]:
        names = self.file.attrs.get("class_names", VIEWS)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    def block(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows start..stop-1 of every per-row dataset."""
        return {name: self.file[name][start:stop] for name in CAM_DATASETS}

    def row(self, index: int) -> CamRow:
        view = int(self.file["views"][index])
        path = self.file["paths"][index]
        return CamRow(
            path=path.decode() if isinstance(path, bytes) else str(path),
            view=self.class_names[view] if view >= 0 else "",
            confidence=float(np.nanmax(self.file["probabilities"][index])),
            cam=self.file["cams"][index],
            frame=self.file["frames"][index],
        )
