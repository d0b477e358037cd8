"""classify_dir's output files, written so that a killed run loses nothing.

Files, for `bin/classify_dir SCANS out.csv --cams=cams.h5`:

    out.csv           one row per input file, in walk order (pandas-readable)
    cams.h5           Grad-CAMs and aligned per-row datasets (see CAM_DATASETS)
    out.run.json      what ran: model, shard, counts, timing (written at the end)

and, only while a run is in progress:

    out.csv.progress.json   the last committed state (rows, CSV bytes, CAM parts)
    cams.h5.parts/          one small HDF5 file per committed segment

Commit protocol, per segment of rows: (1) write the segment's CAM part to a
temporary file and rename it into place; (2) append the rows to the CSV and
fsync; (3) rewrite the progress file atomically. A kill at any point leaves
the last progress file describing a consistent prefix: on `--resume` the CSV
is truncated to its recorded length, parts beyond the recorded count are
deleted, and the walk skips the rows already done. The final HDF5 is
assembled from the parts in one pass and renamed into place, so `cams.h5` is
either absent or complete and readable — never half written.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import glob
import io
import json
import os
import shutil

import h5py
import numpy as np

from brainview.labels import VIEWS

CSV_COLUMNS = (
    "path",
    "view",
    "confidence",
    *(f"p_{view}" for view in VIEWS),
    "width",
    "height",
    "mean_intensity",
    "status",
    "error",
)
STATUSES = ("ok", "uncertain", "blank", "error")
# Per-row HDF5 datasets, aligned with the CSV rows (row i of the CSV is index i).
CAM_DATASETS = ("cams", "paths", "views", "probabilities", "frames", "statuses")
PROGRESS_VERSION = 1


class OutputError(Exception):
    """Outputs cannot be written or resumed; the message says what to do."""


@dataclasses.dataclass
class Segment:
    """The results for a run of consecutive rows."""

    rows: list[list[str]]  # CSV fields, in CSV_COLUMNS order
    paths: list[str]
    statuses: list[str]
    views: np.ndarray  # int8 (n,), -1 for error rows
    probabilities: np.ndarray  # float32 (n, 3), nan for error rows
    frames: np.ndarray  # float32 (n, 4): center_y, center_x, side, angle (see preprocessing)
    cams: np.ndarray | None  # float16 (n, h, w), or None without CAMs

    def __len__(self) -> int:
        return len(self.rows)


def _fsync_write(path: str, data: bytes) -> None:
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _csv_line(fields: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue().encode("utf-8")


class OutputWriter:
    """Appends segments to the CSV and CAM parts; finishes into the final files."""

    def __init__(
        self,
        csv_path: str,
        cams_path: str | None,
        signature: dict,
        *,
        resume: bool,
        overwrite: bool,
    ):
        self.csv_path = csv_path
        self.cams_path = cams_path
        self.signature = signature
        self.progress_path = csv_path + ".progress.json"
        self.parts_dir = cams_path + ".parts" if cams_path else None
        self.manifest_path = os.path.splitext(csv_path)[0] + ".run.json"
        self.rows_done = 0
        self.parts = 0
        self.cam_shape: tuple[int, int] | None = None
        self.already_complete = False
        existing = [p for p in (csv_path, cams_path) if p and os.path.exists(p)]
        if os.path.exists(self.progress_path):
            if resume:
                self._resume()
                return
            if not overwrite:
                raise OutputError(
                    f"{csv_path} is an unfinished run: pass --resume to continue it "
                    "or --overwrite to start again"
                )
        elif existing and not overwrite:
            if resume and os.path.exists(self.manifest_path):
                self.already_complete = True  # nothing left to do
                return
            if not (resume and self._killed_while_starting()):
                raise OutputError(f"{existing[0]} exists: pass --overwrite to replace it")
        self._start()

    def _killed_while_starting(self) -> bool:
        """True if the CSV holds at most its header: a run killed before its first commit."""
        header = _csv_line(list(CSV_COLUMNS))
        with open(self.csv_path, "rb") as file:
            return header.startswith(file.read(len(header) + 1))

    # -- starting and resuming ---------------------------------------------------

    def _start(self) -> None:
        for path in (self.cams_path, self.manifest_path, self.progress_path):
            if path and os.path.exists(path):
                os.remove(path)
        if self.parts_dir:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            os.makedirs(self.parts_dir)
        try:
            _fsync_write(self.csv_path, _csv_line(list(CSV_COLUMNS)))
        except OSError as error:
            raise OutputError(f"cannot write {self.csv_path}: {error.strerror}") from None
        self._save_progress(os.path.getsize(self.csv_path))

    def _resume(self) -> None:
        with open(self.progress_path, encoding="utf-8") as file:
            progress = json.load(file)
        if progress.get("version") != PROGRESS_VERSION or progress["signature"] != self.signature:
            changed = sorted(
                key
                for key in set(progress.get("signature", {})) | set(self.signature)
                if progress.get("signature", {}).get(key) != self.signature.get(key)
            )
            raise OutputError(
                f"cannot resume {self.csv_path}: it was started with different settings "
                f"({', '.join(changed)}); use --overwrite to start again"
            )
        self.rows_done = progress["rows_done"]
        self.parts = progress["parts"]
        self.cam_shape = tuple(progress["cam_shape"]) if progress["cam_shape"] else None
        with open(self.csv_path, "r+b") as file:
            file.truncate(progress["csv_bytes"])
        if self.parts_dir:
            os.makedirs(self.parts_dir, exist_ok=True)
            for path in glob.glob(os.path.join(self.parts_dir, "*")):
                name = os.path.basename(path)
                if not name.endswith(".h5") or int(name[5:11]) >= self.parts:
                    os.remove(path)  # written after the last commit, or a temporary

    def _save_progress(self, csv_bytes: int) -> None:
        progress = {
            "version": PROGRESS_VERSION,
            "rows_done": self.rows_done,
            "csv_bytes": csv_bytes,
            "parts": self.parts,
            "cam_shape": list(self.cam_shape) if self.cam_shape else None,
            "signature": self.signature,
        }
        _fsync_write(self.progress_path, json.dumps(progress, indent=1).encode("utf-8"))

    # -- committing segments -----------------------------------------------------

    def _part_path(self, index: int) -> str:
        return os.path.join(self.parts_dir, f"part_{index:06d}.h5")

    def commit(self, segment: Segment) -> None:
        """Makes a segment durable: CAM part, then CSV rows, then progress."""
        if not len(segment):
            return
        if self.parts_dir:
            self.cam_shape = tuple(segment.cams.shape[1:])
            temporary = self._part_path(self.parts) + ".tmp"
            with h5py.File(temporary, "w") as part:
                _write_cam_datasets(part, segment)
            os.replace(temporary, self._part_path(self.parts))
            self.parts += 1
        with open(self.csv_path, "ab") as file:
            file.write(b"".join(_csv_line(row) for row in segment.rows))
            file.flush()
            os.fsync(file.fileno())
            csv_bytes = file.tell()
        self.rows_done += len(segment)
        self._save_progress(csv_bytes)

    # -- finishing -----------------------------------------------------------------

    def finish(self, cam_attributes: dict, manifest: dict, cam_shape: tuple[int, int]) -> None:
        """Assembles the final HDF5, writes the run manifest, removes the journal."""
        if self.cams_path:
            temporary = self.cams_path + ".tmp"
            assemble_cams(
                [self._part_path(i) for i in range(self.parts)],
                temporary,
                cam_attributes,
                self.cam_shape or cam_shape,
            )
            os.replace(temporary, self.cams_path)
        manifest = dict(manifest, rows=self.rows_done, signature=self.signature)
        manifest["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        _fsync_write(self.manifest_path, json.dumps(manifest, indent=2).encode("utf-8"))
        os.remove(self.progress_path)
        if self.parts_dir:
            shutil.rmtree(self.parts_dir, ignore_errors=True)


def count_rows(csv_path: str) -> tuple[int, collections.Counter, collections.Counter]:
    """(rows, rows per view, rows per status) of a classify_dir CSV, streamed."""
    views: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    rows = 0
    with open(csv_path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            rows += 1
            statuses[row["status"]] += 1
            if row["view"]:
                views[row["view"]] += 1
    return rows, views, statuses


def _string_dataset(group: h5py.Group, name: str, values: list[str], maxshape=None) -> None:
    group.create_dataset(
        name, data=np.array(values, dtype=object), dtype=h5py.string_dtype(), maxshape=maxshape
    )


def _write_cam_datasets(file: h5py.File, segment: Segment) -> None:
    file.create_dataset("cams", data=segment.cams)
    _string_dataset(file, "paths", segment.paths)
    _string_dataset(file, "statuses", segment.statuses)
    file.create_dataset("views", data=segment.views)
    file.create_dataset("probabilities", data=segment.probabilities)
    file.create_dataset("frames", data=segment.frames)


def create_cam_file(
    path: str, count: int, cam_shape: tuple[int, int], attributes: dict
) -> h5py.File:
    """An open HDF5 file with empty, chunked, gzip-compressed per-row datasets.

    gzip (deflate) and shuffle are built into every HDF5 library: plain h5py,
    HDFView or MATLAB read the file without plugins.
    """
    file = h5py.File(path, "w")
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
    return file


def assemble_cams(
    part_paths: list[str], path: str, attributes: dict, cam_shape: tuple[int, int]
) -> None:
    """Concatenates CAM part files, in order, into one final HDF5 file."""
    counts = []
    for part_path in part_paths:
        with h5py.File(part_path, "r") as part:
            counts.append(len(part["paths"]))
    with create_cam_file(path, sum(counts), cam_shape, attributes) as out:
        start = 0
        for part_path, count in zip(part_paths, counts, strict=True):
            with h5py.File(part_path, "r") as part:
                for name in CAM_DATASETS:
                    out[name][start : start + count] = part[name][...]
            start += count
