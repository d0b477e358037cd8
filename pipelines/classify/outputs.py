"""classify_dir's output files: their layout, a writer that a kill cannot break, readers.

This module is the only one that knows the files' layout (CSV columns, HDF5
dataset names, manifest and progress files); classify_dir writes through it,
and merge_shards and overlays read through it.

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
from collections.abc import Generator, Iterator

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
    """Outputs cannot be written, resumed or read; the message says what to do."""


# --- Where the files are -----------------------------------------------------------------------


def manifest_path(csv_path: str) -> str:
    """out.csv -> out.run.json: written when a run (or a merge) is complete."""
    return os.path.splitext(csv_path)[0] + ".run.json"


def progress_path(csv_path: str) -> str:
    """out.csv -> out.csv.progress.json: present only while a run is unfinished."""
    return csv_path + ".progress.json"


def parts_dir(cams_path: str) -> str:
    """cams.h5 -> cams.h5.parts/: the committed CAM segments of an unfinished run."""
    return cams_path + ".parts"


# --- Rows ---------------------------------------------------------------------------------------


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


def make_segment(
    *,
    paths: list[str],
    statuses: list[str],
    errors: list[str],
    probabilities: np.ndarray,
    widths: np.ndarray,
    heights: np.ndarray,
    mean_intensities: np.ndarray,
    frames: np.ndarray,
    cams: np.ndarray | None,
) -> Segment:
    """The CSV rows and HDF5 values of consecutive scans.

    `probabilities` (n, 3) are the calibrated ones; the predicted view is
    their argmax and the confidence their maximum. Rows with status "error"
    keep only their path and error message: no view, probabilities or CAM.
    """
    failed = np.array([status == "error" for status in statuses], bool)
    predicted = probabilities.argmax(axis=1)
    rows = []
    for i, path in enumerate(paths):
        fields = dict.fromkeys(CSV_COLUMNS, "")
        fields.update(path=path, status=statuses[i], error=errors[i])
        if not failed[i]:
            fields.update(
                view=VIEWS[predicted[i]],
                confidence=f"{probabilities[i].max():.6f}",
                width=str(int(widths[i])),
                height=str(int(heights[i])),
                mean_intensity=f"{float(mean_intensities[i]):.3f}",
            )
            for view, probability in zip(VIEWS, probabilities[i], strict=True):
                fields[f"p_{view}"] = f"{probability:.6f}"
        rows.append([fields[column] for column in CSV_COLUMNS])
    if cams is not None:
        cams = np.where(failed[:, None, None], 0.0, cams).astype(np.float16)
    return Segment(
        rows=rows,
        paths=list(paths),
        statuses=list(statuses),
        views=np.where(failed, -1, predicted).astype(np.int8),
        probabilities=np.where(failed[:, None], np.nan, probabilities).astype(np.float32),
        frames=frames.astype(np.float32),
        cams=cams,
    )


def concatenate(segments: list[Segment]) -> Segment:
    """Consecutive segments as one."""
    first = segments[0]
    return Segment(
        rows=[row for s in segments for row in s.rows],
        paths=[p for s in segments for p in s.paths],
        statuses=[x for s in segments for x in s.statuses],
        views=np.concatenate([s.views for s in segments]),
        probabilities=np.concatenate([s.probabilities for s in segments]),
        frames=np.concatenate([s.frames for s in segments]),
        cams=None if first.cams is None else np.concatenate([s.cams for s in segments]),
    )


def _fsync_write(path: str, data: bytes) -> None:
    temporary = path + ".tmp"
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def csv_line(fields: list[str]) -> bytes:
    """One CSV line (UTF-8, "\\n"), quoted as classify_dir writes every row."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue().encode("utf-8")


def write_manifest(csv_path: str, manifest: dict) -> None:
    """Writes out.run.json atomically: it marks the outputs complete."""
    _fsync_write(manifest_path(csv_path), json.dumps(manifest, indent=2).encode("utf-8"))


def utc_now() -> str:
    """The current time as the output files record it (UTC, ISO 8601, to the second)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# --- Writing a run ------------------------------------------------------------------------------


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
        self.progress_path = progress_path(csv_path)
        self.parts_dir = parts_dir(cams_path) if cams_path else None
        self.manifest_path = manifest_path(csv_path)
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
        header = csv_line(list(CSV_COLUMNS))
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
            _fsync_write(self.csv_path, csv_line(list(CSV_COLUMNS)))
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
            file.write(b"".join(csv_line(row) for row in segment.rows))
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
        manifest["finished"] = utc_now()
        write_manifest(self.csv_path, manifest)
        os.remove(self.progress_path)
        if self.parts_dir:
            shutil.rmtree(self.parts_dir, ignore_errors=True)


# --- The HDF5 file ------------------------------------------------------------------------------


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
    HDFView or MATLAB read the file without plugins. Fill it with `write_block`.
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
    file.attrs["cam_resolution"] = np.array(cam_shape, np.int32)  # CAM cells: height, width
    return file


def write_block(file: h5py.File, start: int, block: dict[str, np.ndarray]) -> None:
    """Writes rows start.. of every per-row dataset (`block` as `CamFile.block` returns it)."""
    for name in CAM_DATASETS:
        file[name][start : start + len(block[name])] = block[name]


def assemble_cams(
    part_paths: list[str], path: str, attributes: dict, cam_shape: tuple[int, int]
) -> None:
    """Concatenates CAM part files, in order, into one final HDF5 file."""
    parts = [CamFile(part_path) for part_path in part_paths]
    try:
        with create_cam_file(path, sum(map(len, parts)), cam_shape, attributes) as out:
            start = 0
            for part in parts:
                write_block(out, start, part.block(0, len(part)))
                start += len(part)
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


# --- Reading the CSV and the manifest -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CsvRow:
    """The fields of a CSV row that tools choose rows by."""

    index: int  # 0 = the first data row
    path: str
    view: str  # "" for error rows
    confidence: float | None  # None for error rows
    status: str


def read_rows(csv_path: str) -> Iterator[CsvRow]:
    """The rows of a classify_dir CSV, streamed."""
    with open(csv_path, newline="", encoding="utf-8") as file:
        for index, row in enumerate(csv.DictReader(file)):
            confidence = row["confidence"]
            yield CsvRow(
                index=index,
                path=row["path"],
                view=row["view"],
                confidence=float(confidence) if confidence else None,
                status=row["status"],
            )


def read_records(csv_path: str) -> Generator[list[str], None, None]:
    """The data rows of a classify_dir CSV as raw fields, streamed.

    The header is checked now (OutputError if it is not classify_dir's); the
    file stays open until the rows are exhausted or the generator is closed.
    """
    file = open(csv_path, newline="", encoding="utf-8")  # noqa: SIM115 - closed by _records
    reader = csv.reader(file)
    if next(reader, None) != list(CSV_COLUMNS):
        file.close()
        raise OutputError(f"{csv_path} does not have classify_dir's columns")
    return _records(file, reader)


def _records(file: io.TextIOBase, reader) -> Generator[list[str], None, None]:
    with file:
        yield from reader


def count_rows(csv_path: str) -> tuple[int, collections.Counter, collections.Counter]:
    """(rows, rows per view, rows per status) of a classify_dir CSV, streamed."""
    views: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    rows = 0
    for row in read_rows(csv_path):
        rows += 1
        statuses[row.status] += 1
        if row.view:
            views[row.view] += 1
    return rows, views, statuses


def read_manifest(csv_path: str) -> dict | None:
    """The run manifest of complete outputs, or None (unfinished, absent or unreadable)."""
    try:
        with open(manifest_path(csv_path), encoding="utf-8") as file:
            manifest = json.load(file)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_unfinished(csv_path: str) -> bool:
    """Whether outputs at csv_path belong to a run that was started and not finished."""
    return os.path.exists(progress_path(csv_path))
