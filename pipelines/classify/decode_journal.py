"""Which scans were being decoded when a run died, so a resumed run does not die on them again.

A scan whose decode needs more memory than the node has gets the whole run
killed by the out-of-memory killer: SIGKILL, no exception, no row. Resumed,
the run would decode the same scan again and die again, forever. So every
decode is journaled: a line is appended when it starts and when it ends
(O_APPEND writes of a few bytes, which a kill cannot tear; not fsynced, as
they only have to outlive the process, not the machine). On `--resume`, each
scan that was being decoded when the previous run died is

* blamed at once if its decode needs at least SUSPECT_DECODE_BYTES
  (image_files.estimated_decode_bytes, from the header): it gets an error row
  and is not decoded again;
* otherwise a suspect: if a run dies again while decoding it, it is blamed
  too; once it decodes, it is cleared.

A kill that has nothing to do with memory (a time limit, kill -9) therefore
changes no result unless it lands on a decode that large, or twice on the
same scan. The journal is compacted (rewritten, atomically) at every commit
and removed when the run finishes; blamed scans stay blamed until then, so
every resume writes the same rows.

Lines: `start HEX`, `end HEX`, `suspect HEX`, `blamed HEX REASON`, where HEX
is the scan's raw path below the scan directory, in hexadecimal.
"""

from __future__ import annotations

import contextlib
import os
import threading

from brainview import image_files, whole_slide
from brainview.classify import scan_files

# Decodes at least this large are blamed for the death of the run they were in.
SUSPECT_DECODE_BYTES = 1_000_000_000


class DecodeJournal:
    """The journal of one run's decodes; `load` is the scan loader that keeps it."""

    def __init__(self, path: str, scan_dir: bytes, max_side: int, *, resume: bool):
        self.path = path
        self.blamed: dict[bytes, str] = {}
        self.suspects: set[bytes] = set()
        self.in_flight: dict[bytes, int] = {}
        self._lock = threading.Lock()
        if resume:
            self._blame_the_dead_run(scan_dir, max_side)
        self._write_compacted()
        self._fd = self._open_for_appending()

    def _open_for_appending(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _blame_the_dead_run(self, scan_dir: bytes, max_side: int) -> None:
        in_flight = self._read()
        for path in in_flight:
            if path in self.suspects:
                self.blamed[path] = (
                    "skipped: runs were killed twice while decoding this file (out of memory?)"
                )
                continue
            full_path = os.path.join(scan_dir, path)
            # A pyramid is read level by level, in memory about the working size: what
            # Pillow would need for its full resolution says nothing about it.
            pyramid = whole_slide.is_pyramid(full_path)
            needed = 0 if pyramid else image_files.estimated_decode_bytes(full_path, max_side)
            if needed >= SUSPECT_DECODE_BYTES:
                self.blamed[path] = (
                    "skipped: the run was killed while decoding this file, which needs about "
                    f"{needed / 1e9:.1f} GB of memory (out of memory?)"
                )
            else:
                self.suspects.add(path)
        for path in self.blamed:
            self.suspects.discard(path)

    def _read(self) -> list[bytes]:
        """Loads suspects and blamed scans; returns the scans whose decode never ended."""
        in_flight: dict[bytes, None] = {}
        try:
            with open(self.path, "rb") as file:
                lines = file.read().splitlines()
        except FileNotFoundError:
            return []
        for line in lines:
            kind, _, rest = line.partition(b" ")
            hex_path, _, reason = rest.partition(b" ")
            try:
                path = bytes.fromhex(hex_path.decode("ascii"))
            except ValueError:
                continue  # not a line of ours
            if kind == b"start":
                in_flight[path] = None
            elif kind == b"end":
                in_flight.pop(path, None)
                self.suspects.discard(path)
            elif kind == b"suspect":
                self.suspects.add(path)
            elif kind == b"blamed":
                self.blamed[path] = reason.decode("utf-8", "replace")
        return list(in_flight)

    def _write_compacted(self) -> None:
        lines = [b"suspect " + path.hex().encode() for path in self.suspects]
        lines += [
            b"blamed " + path.hex().encode() + b" " + reason.encode()
            for path, reason in self.blamed.items()
        ]
        lines += [b"start " + path.hex().encode() for path in self.in_flight]
        temporary = self.path + ".tmp"
        with open(temporary, "wb") as file:
            file.write(b"".join(line + b"\n" for line in lines))
        os.replace(temporary, self.path)

    def _append(self, kind: bytes, path: bytes) -> None:
        if self._fd < 0:
            return  # closed: the run is stopping
        # A full disk must not stop a decode: the next commit reports it.
        with contextlib.suppress(OSError):
            os.write(self._fd, kind + b" " + path.hex().encode() + b"\n")

    def load(
        self,
        scan_dir: bytes,
        entry: scan_files.ScanEntry,
        max_side: int,
        target_side: int | None = None,
    ):
        """scan_files.load, journaled; blamed scans get their error without being read."""
        path = entry.relative_path
        reason = self.blamed.get(path)
        if reason:
            pixels = scan_files.PLACEHOLDER_PIXELS
            return scan_files.LoadedScan(pixels, 0, 0, float("nan"), reason)
        with self._lock:
            self.in_flight[path] = self.in_flight.get(path, 0) + 1
            self._append(b"start", path)
        try:
            return scan_files.load(scan_dir, entry, max_side, target_side)
        finally:
            with self._lock:
                self.in_flight[path] -= 1
                if not self.in_flight[path]:
                    del self.in_flight[path]
                self.suspects.discard(path)
                self._append(b"end", path)

    def compact(self) -> None:
        """Rewrites the journal to what is still needed (after each commit)."""
        with self._lock:
            os.close(self._fd)
            self._write_compacted()
            self._fd = self._open_for_appending()

    def remove(self) -> None:
        """Closes and deletes the journal (the run is complete)."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)

    def close(self) -> None:
        """Closes the journal, keeping it for a resume."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
