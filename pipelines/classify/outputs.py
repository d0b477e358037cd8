"""classify_dir's output files: their layout, a writer that a kill cannot break, readers.

This module is the only one that knows the files' layout (CSV columns, HDF5
dataset names, manifest, progress and lock files); classify_dir writes
through it, and merge_shards and overlays read through it.

Files, for `bin/classify_dir SCANS out.csv --cams=cams.h5`:

    out.csv           one row per input file, in walk order (pandas-readable)
    cams.h5           Grad-CAMs and aligned per-row datasets (see CAM_DATASETS)
    out.run.json      what ran: model, settings, shard, counts (written at the end)

and, only while a run is in progress:

    out.csv.progress.json   the last committed state (rows, CSV bytes, CAM parts, last path)
    cams.h5.parts/          one small HDF5 file per committed segment
    out.csv.decoding        the decode journal (classify/decode_journal.py)
    out.lock, cams.h5.lock  held by the running process (see OutputLock)

Commit protocol, per segment of rows: (1) write the segment's CAM part to a
temporary file and rename it into place; (2) append the rows to the CSV and
fsync; (3) rewrite the progress file atomically. A kill (or a full disk) at
any point leaves the last progress file describing a consistent prefix: on
`--resume` the CSV is truncated to its recorded length, parts beyond the
recorded count are deleted, and the walk continues after the last committed
*path* (not after a count of files). The progress file also holds a digest of
every committed path, so a scan directory that changed under the committed
rows is noticed instead of silently shifting them. The final HDF5 is
assembled from the parts in one pass and renamed into place, so `cams.h5` is
either absent or complete and readable — never half written.

Refused before any work: outputs that collide with each other (the CSV as
--cams, --cams as the manifest, two CSV names sharing one manifest), outputs
that another live run is writing, resuming with other settings (a finished
run included).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import datetime
import errno
import fcntl
import glob
import hashlib
import io
import json
import os
import shutil
import socket
import uuid
from collections.abc import Generator, Iterator

import h5py
import numpy as np
from absl import logging

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
# Per-row HDF5 datasets, aligned with the CSV rows (row i of the CSV is index i).
CAM_DATASETS = ("cams", "paths", "views", "probabilities", "frames", "statuses")
PROGRESS_VERSION = 2


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
def _writing(path: str) -> Iterator[None]:
    """Names `path` in an OSError raised without a file name (a failed write or fsync)."""
    try:
        yield
    except OSError as error:
        if not error.filename:
            error.filename = path
        raise


def _fsync_write(path: str, data: bytes) -> None:
    temporary = path + ".tmp"
    with _writing(temporary), open(temporary, "wb") as file:
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
    _fsync_write(manifest_path(csv_path), json.dumps(manifest, indent=2).encode("utf-8"))


def utc_now() -> str:
    """The current time as the output files record it (UTC, ISO 8601, to the second)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# --- Who is writing ---------------------------------------------------------------------------


class OutputLock:
    """One process's exclusive claim on a set of outputs, released when the process dies.

    An flock(2) on `out.lock` (named like the manifest, so two CSV names that
    would share `out.run.json` claim the same lock) and on `cams.h5.lock`. The
    kernel drops the lock of a process that dies, kill -9 included, so a
    dead run's lock file is simply taken over by the next one; a live run's
    is refused with its pid, host and CSV. The files hold that owner record
    and are removed on release (the inode check in `_claim` makes that safe).
    On a file system without locks (some network mounts), runs are not
    guarded and a warning says so.
    """

    def __init__(self, csv_path: str, cams_path: str | None = None):
        self.csv_path = csv_path
        self.held: list[tuple[str, int]] = []
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "csv": os.path.abspath(csv_path),
            "started": utc_now(),
        }
        claims = [(lock_path(csv_path), None)] + (
            [(cams_path + ".lock", cams_path)] if cams_path else []
        )
        try:
            for path, cams in claims:
                fd = self._claim(path, owner, cams)
                if fd is not None:
                    self.held.append((path, fd))
        except BaseException:
            self.release()
            raise

    def _claim(self, path: str, owner: dict, cams_path: str | None) -> int | None:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise OutputError(f"cannot write {path}: {error.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_owner(fd)
                os.close(fd)
                raise OutputError(self._refusal(holder, cams_path)) from None
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    logging.warning(
                        "%s: no file locks here (%s); runs are not guarded", path, error
                    )
                    return None
                raise OutputError(f"cannot lock {path}: {error.strerror}") from None
            # The previous holder may have removed the file after we opened it: then
            # our lock is on a deleted inode, and someone else may hold the new file.
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)
                    return fd
            os.close(fd)

    def _refusal(self, holder: dict, cams_path: str | None) -> str:
        who = (
            f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {holder.get('started', '?')}"
        )
        other_csv = holder.get("csv")
        if cams_path:
            return (
                f"--cams={cams_path} is being written by another classify_dir run "
                f"({who}, CSV {other_csv}); choose another --cams file or wait for it"
            )
        if other_csv and other_csv != os.path.abspath(self.csv_path):
            return (
                f"{self.csv_path} would share its run manifest {manifest_path(self.csv_path)} with "
                f"{other_csv}, which another classify_dir run is writing ({who}); name the outputs "
                "so they differ before the extension (e.g. out-0.csv, out-1.csv)"
            )
        return (
            f"{self.csv_path} is being written by another classify_dir run ({who}): wait for it "
            "to finish, or stop it and continue with --resume"
        )

    def release(self) -> None:
        """Removes the lock files (still holding them) and lets go."""
        for path, fd in self.held:
            with contextlib.suppress(OSError):
                os.remove(path)
            os.close(fd)
        self.held = []


def _read_owner(fd: int) -> dict:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


# --- Writing a run ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where an unfinished (or finished) run's committed rows end."""

    rows: int
    last_path: bytes | None  # the raw path of the last committed row (None: no rows yet)
    paths_digest: str  # path_digest chained over every committed row's raw path


def _changed_settings(recorded: dict, current: dict) -> list[str]:
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


class OutputWriter:
    """Appends segments to the CSV and CAM parts; finishes into the final files.

    Construction decides what the run is, refusing with OutputError what it
    must not do: a new run, the continuation of an unfinished one
    (`resume_point`), or nothing to do (`already_complete`, with the finished
    run's `resume_point` so the caller can check the scan directory). The
    decision is made once without touching anything, so refused runs never
    contend for the lock, and again once the output lock is held (another run
    may have changed the outputs meanwhile); the lock is held until `finish`
    or `close`.
    """

    def __init__(
        self,
        csv_path: str,
        cams_path: str | None,
        signature: dict,
        *,
        resume: bool,
        overwrite: bool,
    ):
        check_output_paths(csv_path, cams_path)
        self.csv_path = csv_path
        self.cams_path = cams_path
        self.signature = signature
        self.progress_path = progress_path(csv_path)
        self.parts_dir = parts_dir(cams_path) if cams_path else None
        self.manifest_path = manifest_path(csv_path)
        self.rows_done = 0
        self.parts = 0
        self.last_path: bytes | None = None
        self.paths_digest = ""
        self.cam_shape: tuple[int, int] | None = None
        self.already_complete = False
        self.resume_point: ResumePoint | None = None
        self.lock: OutputLock | None = None
        action, state = self._decide(resume, overwrite)
        if action == "complete":
            self._complete(state)
            return
        for path in (csv_path, cams_path):
            if path:  # out/run1/predictions.csv: out/run1/ is made, as a user expects
                try:
                    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                except OSError as error:
                    raise OutputError(f"cannot create the folder of {path}: {error}") from None
        self.lock = OutputLock(csv_path, cams_path)
        try:
            action, state = self._decide(resume, overwrite)
            if action == "complete":
                self._complete(state)
            elif action == "resume":
                self._resume(state)
            else:
                self._start()
        except BaseException:
            self.close()
            raise

    def _decide(self, resume: bool, overwrite: bool) -> tuple[str, dict | None]:
        """("start" | "resume" | "complete", the progress or manifest), reading only."""
        csv_path = self.csv_path
        manifest = read_manifest(csv_path)
        owner = (manifest or {}).get("csv")
        if owner and owner != os.path.basename(csv_path):
            sibling = os.path.join(os.path.dirname(csv_path), owner)
            if os.path.exists(sibling):
                raise OutputError(
                    f"{csv_path} would share its run manifest {self.manifest_path} with the "
                    f"finished outputs {sibling}; name the outputs so they differ before the "
                    "extension (e.g. out-0.csv, out-1.csv)"
                )
            manifest = None  # a stale manifest: its CSV is gone
        existing = [p for p in (csv_path, self.cams_path) if p and os.path.exists(p)]
        if os.path.exists(self.progress_path):
            if resume:
                return "resume", self._read_progress()
            if not overwrite:
                raise OutputError(
                    f"{csv_path} is an unfinished run: pass --resume to continue it "
                    "or --overwrite to start again"
                )
        elif resume and manifest is not None and os.path.exists(csv_path) and not overwrite:
            self._check_finished(manifest)
            return "complete", manifest
        elif existing and not overwrite and not (resume and self._killed_while_starting()):
            raise OutputError(f"{existing[0]} exists: pass --overwrite to replace it")
        return "start", None

    def _check_finished(self, manifest: dict) -> None:
        """--resume of a finished run is nothing to do, if it is this very run."""
        changed = _changed_settings(manifest.get("signature", {}), self.signature)
        if changed:
            raise OutputError(
                f"cannot resume {self.csv_path}: it is a finished run made with different "
                f"settings ({', '.join(changed)}); use --overwrite to replace it"
            )
        if self.cams_path and not os.path.exists(self.cams_path):
            raise OutputError(
                f"{self.csv_path} is a finished run but its CAM file {self.cams_path} is "
                "missing; use --overwrite to run it again"
            )

    def _complete(self, manifest: dict) -> None:
        self.already_complete = True
        if "paths_sha256" in manifest:
            self.resume_point = ResumePoint(manifest["rows"], None, manifest["paths_sha256"])
        leftovers = [p for p in self._leftovers() if os.path.lexists(p)]
        if not leftovers:
            return
        # What a kill just after the manifest was written left behind (lock files
        # included: taking the lock takes them over, releasing it removes them). A
        # live run holding the lock (e.g. with --overwrite) owns them instead.
        try:
            lock = self.lock or OutputLock(self.csv_path, self.cams_path)
        except OutputError:
            return
        try:
            for path in leftovers:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif not path.endswith(".lock"):
                    with contextlib.suppress(OSError):
                        os.remove(path)
        finally:
            if lock is not self.lock:
                lock.release()

    def _leftovers(self) -> list[str]:
        files = output_files(self.csv_path, self.cams_path)
        return [
            path
            for name, path in files.items()
            if name.endswith(("temporary", "lock file", "parts folder"))
            or name == "the decode journal"
        ]

    def _killed_while_starting(self) -> bool:
        """True if the CSV holds at most its header: a run killed before its first commit."""
        header = csv_line(list(CSV_COLUMNS))
        with open(self.csv_path, "rb") as file:
            return header.startswith(file.read(len(header) + 1))

    # -- starting and resuming ---------------------------------------------------

    def _start(self) -> None:
        try:
            for path in (self.cams_path, self.manifest_path, self.progress_path):
                if path and os.path.exists(path):
                    os.remove(path)
            if self.parts_dir:
                shutil.rmtree(self.parts_dir, ignore_errors=True)
                os.makedirs(self.parts_dir)
            _fsync_write(self.csv_path, csv_line(list(CSV_COLUMNS)))
            self._save_progress(os.path.getsize(self.csv_path))
        except OSError as error:
            raise OutputError(
                f"cannot write {error.filename or self.csv_path}: {error.strerror}"
            ) from None

    def _read_progress(self) -> dict:
        """The unfinished run's progress file, if this run may continue it."""
        try:
            with open(self.progress_path, encoding="utf-8") as file:
                progress = json.load(file)
        except (OSError, ValueError) as error:
            raise OutputError(
                f"cannot resume {self.csv_path}: its progress file {self.progress_path} is "
                f"unreadable ({error}); use --overwrite to start again"
            ) from None
        if not isinstance(progress, dict) or progress.get("version") != PROGRESS_VERSION:
            raise OutputError(
                f"cannot resume {self.csv_path}: it was started by another version of "
                "classify_dir; use --overwrite to start again"
            )
        changed = _changed_settings(progress["signature"], self.signature)
        if changed:
            raise OutputError(
                f"cannot resume {self.csv_path}: it was started with different settings "
                f"({', '.join(changed)}); use --overwrite to start again"
            )
        return progress

    def _resume(self, progress: dict) -> None:
        self.rows_done = progress["rows_done"]
        self.parts = progress["parts"]
        self.cam_shape = tuple(progress["cam_shape"]) if progress["cam_shape"] else None
        self.last_path = bytes.fromhex(progress["last_path"]) if progress["last_path"] else None
        self.paths_digest = progress["paths_sha256"]
        self.resume_point = ResumePoint(self.rows_done, self.last_path, self.paths_digest)
        try:
            with open(self.csv_path, "r+b") as file:
                file.truncate(progress["csv_bytes"])
            if self.parts_dir:
                os.makedirs(self.parts_dir, exist_ok=True)
                for path in glob.glob(os.path.join(self.parts_dir, "*")):
                    name = os.path.basename(path)
                    if not name.endswith(".h5") or int(name[5:11]) >= self.parts:
                        os.remove(path)  # written after the last commit, or a temporary
        except OSError as error:
            raise OutputError(f"cannot resume {self.csv_path}: {error}") from None

    def _save_progress(self, csv_bytes: int) -> None:
        progress = {
            "version": PROGRESS_VERSION,
            "csv": os.path.basename(self.csv_path),
            "rows_done": self.rows_done,
            "csv_bytes": csv_bytes,
            "parts": self.parts,
            "cam_shape": list(self.cam_shape) if self.cam_shape else None,
            "last_path": self.last_path.hex() if self.last_path is not None else None,
            "paths_sha256": self.paths_digest,
            "signature": self.signature,
        }
        _fsync_write(self.progress_path, json.dumps(progress, indent=1).encode("utf-8"))

    # -- committing segments -----------------------------------------------------

    def _part_path(self, index: int) -> str:
        return os.path.join(self.parts_dir, f"part_{index:06d}.h5")

    def commit(self, segment: Segment) -> None:
        """Makes a segment durable: CAM part, then CSV rows, then progress.

        A failure to write (a full disk, a quota, an I/O error) raises
        OutputError with one line; what was committed before stays resumable.
        """
        if not len(segment):
            return
        try:
            self._commit(segment)
        except OSError as error:
            raise self._write_error(error) from None

    def _commit(self, segment: Segment) -> None:
        parts = self.parts
        if self.parts_dir:
            self.cam_shape = tuple(segment.cams.shape[1:])
            part = _memory_file()
            _write_cam_datasets(part, segment)
            _save_memory_file(part, self._part_path(parts))
            parts += 1
        with _writing(self.csv_path), open(self.csv_path, "ab") as file:
            file.write(b"".join(csv_line(row) for row in segment.rows))
            file.flush()
            os.fsync(file.fileno())
            csv_bytes = file.tell()
        digest = self.paths_digest
        for path in segment.relative_paths:
            digest = path_digest(digest, path)
        committed = (self.rows_done, self.parts, self.last_path, self.paths_digest)
        self.rows_done += len(segment)
        self.parts = parts
        self.last_path = segment.relative_paths[-1]
        self.paths_digest = digest
        try:
            self._save_progress(csv_bytes)
        except BaseException:
            self.rows_done, self.parts, self.last_path, self.paths_digest = committed
            raise

    def _write_error(self, error: Exception) -> OutputError:
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())
        where = getattr(error, "filename", None)
        return OutputError(
            f"cannot write outputs{f' ({where})' if where else ''}: {reason}; the "
            f"{self.rows_done} rows committed before are kept: fix that (free disk space?) "
            "and run the same command with --resume"
        )

    # -- finishing -----------------------------------------------------------------

    def finish(self, cam_attributes: dict, manifest: dict, cam_shape: tuple[int, int]) -> None:
        """Assembles the final HDF5, writes the run manifest, removes the journal."""
        try:
            if self.cams_path:
                assemble_cams(
                    [self._part_path(i) for i in range(self.parts)],
                    self.cams_path,
                    cam_attributes,
                    self.cam_shape or cam_shape,
                )
            manifest = dict(
                manifest,
                csv=os.path.basename(self.csv_path),
                rows=self.rows_done,
                paths_sha256=self.paths_digest,
                signature=self.signature,
            )
            manifest["finished"] = utc_now()
            write_manifest(self.csv_path, manifest)
            os.remove(self.progress_path)
        except OSError as error:
            raise self._write_error(error) from None
        if self.parts_dir:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        self.close()

    def close(self) -> None:
        """Lets go of the outputs (after `finish`, or when the run stops early)."""
        if self.lock is not None:
            self.lock.release()


# --- The HDF5 file ------------------------------------------------------------------------------
#
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
    _fsync_write(path, image)


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
