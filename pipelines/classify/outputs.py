"""classify_dir's output files: their names, their rows, and the writes they are made of.

The other modules of the outputs build on this one (imports go one way):

    outputs.py         file names, CSV columns and statuses, the checks on output
                       paths, rows (Segment), durable writes, the run manifest
    output_lock.py     OutputLock: one live run per set of outputs
    cam_file.py        the HDF5 CAM file: layout, parts, assembly, reading
    output_readers.py  finished outputs read back: CSV rows, the manifest
    output_writer.py   OutputWriter: a run's commits that a kill cannot break, and resume

classify_dir writes through output_writer.py; merge_shards, sorting, scoring,
overlays, the review page and the Beam pipeline read (and merge_shards and the
Beam pipeline write) through the others.

Files, for `bin/classify_dir SCANS out.csv --cams=cams.h5`:

    out.csv           one row per input file, in walk order (pandas-readable)
    cams.h5           Grad-CAMs and aligned per-row datasets (see cam_file.CAM_DATASETS)
    out.run.json      what ran: model, settings, shard, counts (written at the end)

and, only while a run is in progress:

    out.csv.progress.json   the last committed state (rows, CSV bytes, CAM parts, last path)
    cams.h5.parts/          one small HDF5 file per committed segment
    out.csv.decoding        the decode journal (classify/decode_journal.py)
    out.lock, cams.h5.lock  held by the running process (see output_lock.py)
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import hashlib
import io
import json
import os
from collections.abc import Iterator

import numpy as np

from brainview.classify import scan_files
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


def lock_path(csv_path: str) -> str:
    """out.csv -> out.lock: named like the manifest, so CSVs that would share one collide."""
    return os.path.splitext(csv_path)[0] + ".lock"


def decode_journal_path(csv_path: str) -> str:
    """out.csv -> out.csv.decoding: which scans were being decoded (decode_journal.py)."""
    return csv_path + ".decoding"


def output_files(csv_path: str, cams_path: str | None) -> dict[str, str]:
    """Every file (or folder) a run with these outputs creates, by what it is."""
    files = {
        "the CSV": csv_path,
        "the run manifest": manifest_path(csv_path),
        "the progress file": progress_path(csv_path),
        "the decode journal": decode_journal_path(csv_path),
        "the lock file": lock_path(csv_path),
    }
    for name, path in list(files.items()):
        if name != "the lock file":
            files[f"{name}'s temporary"] = path + ".tmp"
    if cams_path:
        files.update(
            {
                "the CAM file": cams_path,
                "the CAM file's temporary": cams_path + ".tmp",
                "the CAM parts folder": parts_dir(cams_path),
                "the CAM lock file": cams_path + ".lock",
            }
        )
    return files


def _same_or_inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_paths(csv_path: str, cams_path: str | None, scan_dir: str | None = None) -> None:
    """Refuses (OutputError) outputs that would overwrite each other or sit in `scan_dir`.

    Compared after resolving symbolic links, before anything is written.
    """
    files = {
        name: os.path.realpath(path) for name, path in output_files(csv_path, cams_path).items()
    }
    seen: dict[str, str] = {}
    for name, path in files.items():
        if path in seen:
            raise OutputError(
                f"--cams={cams_path} and {csv_path}: {seen[path]} and {name} would be the same "
                f"file ({path}); choose another --cams name"
            )
        seen[path] = name
    if cams_path:
        parts = files["the CAM parts folder"]
        for name, path in files.items():
            if name != "the CAM parts folder" and _same_or_inside(path, parts):
                raise OutputError(
                    f"{name} ({path}) would be inside the CAM parts folder {parts}, which is "
                    "deleted when the run ends; choose other names"
                )
    if scan_dir is not None:
        scans = os.path.realpath(scan_dir)
        for name, path in files.items():
            if _same_or_inside(path, scans):
                raise OutputError(
                    f"{name} {path} is inside the scan directory {scan_dir}: it would be read "
                    "as a scan; write the outputs outside it"
                )


# --- Rows ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Segment:
    """The results for a run of consecutive rows."""

    rows: list[list[str]]  # CSV fields, in CSV_COLUMNS order
    paths: list[str]  # as in the CSV (display_path)
    relative_paths: list[bytes]  # the raw paths, for the resume journal
    statuses: list[str]
    views: np.ndarray  # int8 (n,), -1 for error rows
    probabilities: np.ndarray  # float32 (n, 3), nan for error rows
    frames: np.ndarray  # float32 (n, 4): center_y, center_x, side, angle (see preprocessing)
    cams: np.ndarray | None  # float16 (n, h, w), or None without CAMs

    def __len__(self) -> int:
        return len(self.rows)


def make_segment(
    *,
    relative_paths: list[bytes],
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

    `relative_paths` are the scans' raw paths below the scan directory.
    `probabilities` (n, 3) are the calibrated ones; the predicted view is
    their argmax and the confidence their maximum. Rows with status "error"
    keep only their path and error message: no view, probabilities or CAM.
    """
    paths = [scan_files.display_path(path) for path in relative_paths]
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
        paths=paths,
        relative_paths=list(relative_paths),
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
        relative_paths=[p for s in segments for p in s.relative_paths],
        statuses=[x for s in segments for x in s.statuses],
        views=np.concatenate([s.views for s in segments]),
        probabilities=np.concatenate([s.probabilities for s in segments]),
        frames=np.concatenate([s.frames for s in segments]),
        cams=None if first.cams is None else np.concatenate([s.cams for s in segments]),
    )


def path_digest(previous: str, relative_path: bytes) -> str:
    """The running digest of committed paths after one more (hex; "" before the first)."""
    return hashlib.sha256(previous.encode("ascii") + relative_path + b"\0").hexdigest()


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Names `path` in an OSError raised without a file name (a failed write or fsync)."""
    try:
        yield
    except OSError as error:
        if not error.filename:
            error.filename = path
        raise


def fsync_write(path: str, data: bytes) -> None:
    """Replaces `path` with `data` durably: temporary file, fsync, rename.

    A kill leaves the old file or the new one, never a mix.
    """
    temporary = path + ".tmp"
    with writing(temporary), open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def csv_line(fields: list[str]) -> bytes:
    """One CSV line (UTF-8, "\\n"), quoted as classify_dir writes every row.

    The csv module quotes a field holding the line terminator ("\\n") but not a
    lone carriage return, which csv readers and pandas take as a line end too:
    a row with one is written with every field quoted, so any name round-trips.
    """
    buffer = io.StringIO()
    quoting = csv.QUOTE_ALL if any("\r" in field for field in fields) else csv.QUOTE_MINIMAL
    csv.writer(buffer, lineterminator="\n", quoting=quoting).writerow(fields)
    return buffer.getvalue().encode("utf-8")


def write_manifest(csv_path: str, manifest: dict) -> None:
    """Writes out.run.json atomically: it marks the outputs complete."""
    fsync_write(manifest_path(csv_path), json.dumps(manifest, indent=2).encode("utf-8"))


def utc_now() -> str:
    """The current time as the output files record it (UTC, ISO 8601, to the second)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
