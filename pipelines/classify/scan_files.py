"""Finding and reading the files of a scan directory, one at a time.

The walk is a generator: memory does not grow with the number of files (only
with the largest single directory listing, which is sorted). Its order is
deterministic — depth first, entries sorted by their raw file-name bytes —
so a run can be resumed by skipping the files already done, and shards split
the same sequence (`index % num_shards`).

Paths are bytes throughout (file names need not be valid UTF-8); `display_path`
turns them into text for the CSV, with undecodable bytes written as \\xNN.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator

import numpy as np

from brainview import image_files

# Returned for files that cannot be read, so the batch keeps its shape.
PLACEHOLDER_PIXELS = np.zeros((8, 8, 3), np.uint8)


@dataclasses.dataclass(frozen=True)
class ScanEntry:
    """A file to classify, or a directory that could not be listed."""

    relative_path: bytes
    listing_error: str = ""  # set for unlistable directories (they get an error row)


def walk(scan_dir: bytes, include_hidden: bool = False) -> Iterator[ScanEntry]:
    """Every regular file below `scan_dir`, depth first, sorted by name bytes.

    Symbolic links to files are followed; links to directories are not (no
    cycles). Hidden entries (names starting with '.') are skipped unless
    `include_hidden`. A directory that cannot be listed yields one entry with
    `listing_error` set, so it is reported rather than silently skipped.
    """
    yield from _walk(scan_dir, b"", include_hidden)


def _walk(root: bytes, relative: bytes, include_hidden: bool) -> Iterator[ScanEntry]:
    directory = os.path.join(root, relative) if relative else root
    try:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as error:
        if not relative:
            raise  # the scan directory itself: a fatal error for the caller
        yield ScanEntry(relative + b"/", f"cannot list directory: {error.strerror}")
        return
    for entry in entries:
        if not include_hidden and entry.name.startswith(b"."):
            continue
        path = os.path.join(relative, entry.name) if relative else entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = not is_dir and _is_file(entry)
        except OSError:
            is_dir, is_file = False, True  # let the reader report the problem
        if is_dir:
            yield from _walk(root, path, include_hidden)
        elif is_file:
            yield ScanEntry(path)


def _is_file(entry: os.DirEntry) -> bool:
    """Regular files and links to them; sockets, FIFOs and devices are not scans."""
    try:
        mode = entry.stat(follow_symlinks=True).st_mode
    except OSError:
        return entry.is_symlink()  # a dangling link: reported as an error row
    return stat.S_ISREG(mode)


def sort_key(relative_path: bytes) -> list[bytes]:
    """A key that orders relative paths as `walk` yields them (per directory, by name bytes)."""
    return relative_path.rstrip(b"/").split(b"/")


def shard(entries: Iterator[ScanEntry], num_shards: int, shard_index: int) -> Iterator[ScanEntry]:
    """The entries of one shard: those whose walk index % num_shards == shard_index."""
    for index, entry in enumerate(entries):
        if index % num_shards == shard_index:
            yield entry


def display_path(relative_path: bytes) -> str:
    """Text for the CSV: UTF-8 where valid, \\xNN for other bytes."""
    return relative_path.decode("utf-8", errors="backslashreplace")


@dataclasses.dataclass(frozen=True)
class LoadedScan:
    pixels: np.ndarray  # uint8 HxWx3, longer side <= the decode bound
    width: int  # original size (0 when unreadable)
    height: int
    mean_intensity: float  # mean gray 0..255 of the decoded image (nan when unreadable)
    error: str  # "" when readable


def load(scan_dir: bytes, entry: ScanEntry, max_side: int) -> LoadedScan:
    """Reads one scan; never raises for a bad file (the error goes in the result)."""
    if entry.listing_error:
        return LoadedScan(PLACEHOLDER_PIXELS, 0, 0, float("nan"), entry.listing_error)
    try:
        decoded = image_files.read_image(os.path.join(scan_dir, entry.relative_path), max_side)
    except image_files.ImageReadError as error:
        return LoadedScan(PLACEHOLDER_PIXELS, 0, 0, float("nan"), str(error))
    return LoadedScan(
        pixels=np.asarray(decoded.pixels),
        width=decoded.width,
        height=decoded.height,
        mean_intensity=image_files.mean_gray(decoded.pixels),
        error="",
    )
