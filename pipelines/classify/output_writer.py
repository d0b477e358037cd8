"""classify_dir's output writer: commits that a kill or a full disk cannot break, and resume.

Commit protocol, per segment of rows: (1) write the segment's CAM part to a
temporary file and rename it into place; (2) append the rows to the CSV and
fsync; (3) rewrite the progress file atomically. A kill (or a full disk) at
any point leaves the last progress file describing a consistent prefix: on
`--resume` the CSV is truncated to its recorded length, parts beyond the
recorded count are deleted, and the walk continues after the last committed
*path* (not after a count of files). The progress file also holds a digest of
every committed path, so a scan directory that changed under the committed
rows is noticed instead of silently shifting them. The final HDF5 is
assembled from the parts in one pass and renamed into place (cam_file.py).

Refused before any work: outputs that collide with each other (the CSV as
--cams, --cams as the manifest, two CSV names sharing one manifest), outputs
that another live run is writing (output_lock.py), resuming with other
settings (a finished run included).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shutil

from brainview.classify import cam_file, output_lock, output_readers, outputs

PROGRESS_VERSION = 2


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where an unfinished (or finished) run's committed rows end."""

    rows: int
    last_path: bytes | None  # the raw path of the last committed row (None: no rows yet)
    paths_digest: str  # outputs.path_digest chained over every committed row's raw path


def _changed_settings(recorded: dict, current: dict) -> list[str]:
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k) != current.get(k))


class OutputWriter:
    """Appends segments to the CSV and CAM parts; finishes into the final files.

    Construction decides what the run is, refusing with outputs.OutputError what it
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
        outputs.check_output_paths(csv_path, cams_path)
        self.csv_path = csv_path
        self.cams_path = cams_path
        self.signature = signature
        self.progress_path = outputs.progress_path(csv_path)
        self.parts_dir = outputs.parts_dir(cams_path) if cams_path else None
        self.manifest_path = outputs.manifest_path(csv_path)
        self.rows_done = 0
        self.parts = 0
        self.last_path: bytes | None = None
        self.paths_digest = ""
        self.cam_shape: tuple[int, int] | None = None
        self.already_complete = False
        self.resume_point: ResumePoint | None = None
        self.lock: output_lock.OutputLock | None = None
        action, state = self._decide(resume, overwrite)
        if action == "complete":
            self._complete(state)
            return
        for path in (csv_path, cams_path):
            if path:  # out/run1/predictions.csv: out/run1/ is made, as a user expects
                try:
                    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                except OSError as error:
                    raise outputs.OutputError(
                        f"cannot create the folder of {path}: {error}"
                    ) from None
        self.lock = output_lock.OutputLock(csv_path, cams_path)
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
        manifest = output_readers.read_manifest(csv_path)
        owner = (manifest or {}).get("csv")
        if owner and owner != os.path.basename(csv_path):
            sibling = os.path.join(os.path.dirname(csv_path), owner)
            if os.path.exists(sibling):
                raise outputs.OutputError(
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
                raise outputs.OutputError(
                    f"{csv_path} is an unfinished run: pass --resume to continue it "
                    "or --overwrite to start again"
                )
        elif resume and manifest is not None and os.path.exists(csv_path) and not overwrite:
            self._check_finished(manifest)
            return "complete", manifest
        elif existing and not overwrite and not (resume and self._killed_while_starting()):
            raise outputs.OutputError(f"{existing[0]} exists: pass --overwrite to replace it")
        return "start", None

    def _check_finished(self, manifest: dict) -> None:
        """--resume of a finished run is nothing to do, if it is this very run."""
        changed = _changed_settings(manifest.get("signature", {}), self.signature)
        if changed:
            raise outputs.OutputError(
                f"cannot resume {self.csv_path}: it is a finished run made with different "
                f"settings ({', '.join(changed)}); use --overwrite to replace it"
            )
        if self.cams_path and not os.path.exists(self.cams_path):
            raise outputs.OutputError(
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
            lock = self.lock or output_lock.OutputLock(self.csv_path, self.cams_path)
        except outputs.OutputError:
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
        files = outputs.output_files(self.csv_path, self.cams_path)
        return [
            path
            for name, path in files.items()
            if name.endswith(("temporary", "lock file", "parts folder"))
            or name == "the decode journal"
        ]

    def _killed_while_starting(self) -> bool:
        """True if the CSV holds at most its header: a run killed before its first commit."""
        header = outputs.csv_line(list(outputs.CSV_COLUMNS))
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
            outputs.fsync_write(self.csv_path, outputs.csv_line(list(outputs.CSV_COLUMNS)))
            self._save_progress(os.path.getsize(self.csv_path))
        except OSError as error:
            raise outputs.OutputError(
                f"cannot write {error.filename or self.csv_path}: {error.strerror}"
            ) from None

    def _read_progress(self) -> dict:
        """The unfinished run's progress file, if this run may continue it."""
        try:
            with open(self.progress_path, encoding="utf-8") as file:
                progress = json.load(file)
        except (OSError, ValueError) as error:
            raise outputs.OutputError(
                f"cannot resume {self.csv_path}: its progress file {self.progress_path} is "
                f"unreadable ({error}); use --overwrite to start again"
            ) from None
        if not isinstance(progress, dict) or progress.get("version") != PROGRESS_VERSION:
            raise outputs.OutputError(
                f"cannot resume {self.csv_path}: it was started by another version of "
                "classify_dir; use --overwrite to start again"
            )
        changed = _changed_settings(progress["signature"], self.signature)
        if changed:
            raise outputs.OutputError(
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
            raise outputs.OutputError(f"cannot resume {self.csv_path}: {error}") from None

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
        outputs.fsync_write(self.progress_path, json.dumps(progress, indent=1).encode("utf-8"))

    # -- committing segments -----------------------------------------------------

    def _part_path(self, index: int) -> str:
        return os.path.join(self.parts_dir, f"part_{index:06d}.h5")

    def commit(self, segment: outputs.Segment) -> None:
        """Makes a segment durable: CAM part, then CSV rows, then progress.

        A failure to write (a full disk, a quota, an I/O error) raises
        outputs.OutputError with one line; what was committed before stays resumable.
        """
        if not len(segment):
            return
        try:
            self._commit(segment)
        except OSError as error:
            raise self._write_error(error) from None

    def _commit(self, segment: outputs.Segment) -> None:
        parts = self.parts
        if self.parts_dir:
            self.cam_shape = tuple(segment.cams.shape[1:])
            cam_file.write_part(self._part_path(parts), segment)
            parts += 1
        with outputs.writing(self.csv_path), open(self.csv_path, "ab") as file:
            file.write(b"".join(outputs.csv_line(row) for row in segment.rows))
            file.flush()
            os.fsync(file.fileno())
            csv_bytes = file.tell()
        digest = self.paths_digest
        for path in segment.relative_paths:
            digest = outputs.path_digest(digest, path)
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

    def _write_error(self, error: Exception) -> outputs.OutputError:
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())
        where = getattr(error, "filename", None)
        return outputs.OutputError(
            f"cannot write outputs{f' ({where})' if where else ''}: {reason}; the "
            f"{self.rows_done} rows committed before are kept: fix that (free disk space?) "
            "and run the same command with --resume"
        )

    # -- finishing -----------------------------------------------------------------

    def finish(self, cam_attributes: dict, manifest: dict, cam_shape: tuple[int, int]) -> None:
        """Assembles the final HDF5, writes the run manifest, removes the journal."""
        try:
            if self.cams_path:
                cam_file.assemble_cams(
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
            manifest["finished"] = outputs.utc_now()
            outputs.write_manifest(self.csv_path, manifest)
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
