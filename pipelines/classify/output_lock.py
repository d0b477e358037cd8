"""Who is writing a set of classify_dir outputs: one live run at a time.

Two runs writing one CSV (or one CAM file) would interleave their rows; a run
killed with -9 must not block the next one. An flock(2) gives both: the kernel
holds it for the live process and drops it when the process dies.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket

from absl import logging

from brainview.classify import outputs


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
            "started": outputs.utc_now(),
        }
        claims = [(outputs.lock_path(csv_path), None)] + (
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
                raise outputs.OutputError(f"cannot write {path}: {error.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_owner(fd)
                os.close(fd)
                raise outputs.OutputError(self._refusal(holder, cams_path)) from None
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    logging.warning(
                        "%s: no file locks here (%s); runs are not guarded", path, error
                    )
                    return None
                raise outputs.OutputError(f"cannot lock {path}: {error.strerror}") from None
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
                f"{self.csv_path} would share its run manifest {outputs.manifest_path(self.csv_path)} with "
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
