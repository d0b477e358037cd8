"""Finding and reading the files of a scan directory.

The walk is a generator: memory does not grow with the number of files (only
with the largest single directory listing, which is sorted). Its order is
deterministic — depth first, entries sorted by their raw file-name bytes —
so a run can be resumed by skipping the files already done, and shards split
the same sequence (`index % num_shards`). `chunks` hands it to tf.data a
thousand entries at a time, so Python runs once per chunk, not once per file.

`load` is the Python reader (Pillow, or tifffile for pyramidal TIFFs), for
the files TensorFlow's decoders do not take (see brainview.native_decode).

Paths are bytes throughout (file names need not be valid UTF-8); `display_path`
turns them into text for the CSV, with undecodable bytes written as \\xNN.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import stat
from collections.abc import Iterator

import numpy as np

from brainview import image_files, whole_slide

# Returned for files that cannot be read, so the batch keeps its shape.
PLACEHOLDER_PIXELS = np.zeros((8, 8, 3), np.uint8)


@dataclasses.dataclass(frozen=True)
class ScanEntry:
    """A file to classify, or a directory that could not be listed."""

    relative_path: bytes
    listing_error: str = ""  # set for unlistable directories (they get an error row)
    size: int = -1  # bytes, from the walk's stat; -1 when unknown (the reader reports why)


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
            size = -1 if is_dir else _file_size(entry)
        except OSError:
            is_dir, size = False, -1  # let the reader report the problem
        if is_dir:
            yield from _walk(root, path, include_hidden)
        elif size is not None:
            yield ScanEntry(path, size=size)


def _file_size(entry: os.DirEntry) -> int | None:
    """The size of a regular file or a link to one (-1 for a dangling link, reported
    as an error row); None for sockets, FIFOs and devices, which are not scans."""
    try:
        info = entry.stat(follow_symlinks=True)
    except OSError:
        return -1 if entry.is_symlink() else None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def sort_key(relative_path: bytes) -> list[bytes]:
    """A key that orders relative paths as `walk` yields them (per directory, by name bytes)."""
    return relative_path.rstrip(b"/").split(b"/")


def shard(entries: Iterator[ScanEntry], num_shards: int, shard_index: int) -> Iterator[ScanEntry]:
    """The entries of one shard: those whose walk index % num_shards == shard_index."""
    for index, entry in enumerate(entries):
        if index % num_shards == shard_index:
            yield entry


def chunks(
    entries: Iterator[ScanEntry], size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`entries` in order, `size` at a time, as arrays for tf.data.

    (relative paths, listing errors as UTF-8, sizes): object arrays of bytes
    (NumPy's fixed-width bytes type would drop trailing NUL bytes) and int64.
    """
    while chunk := list(itertools.islice(entries, size)):
        yield (
            np.array([entry.relative_path for entry in chunk], dtype=object),
            np.array([entry.listing_error.encode("utf-8") for entry in chunk], dtype=object),
            np.array([entry.size for entry in chunk], dtype=np.int64),
        )


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


def load(
    scan_dir: bytes, entry: ScanEntry, max_side: int, target_side: int | None = None
) -> LoadedScan:
    """Reads one scan; never raises for a bad file (the error goes in the result).

    `target_side` (default `max_side`): the side the caller reduces to anyway
    (classify_dir's working size): JPEGs are decoded at the DCT scale that
    still covers it, pyramidal TIFFs at the smallest level that does.
    """
    if entry.listing_error:
        return LoadedScan(PLACEHOLDER_PIXELS, 0, 0, float("nan"), entry.listing_error)
    path = os.path.join(scan_dir, entry.relative_path)
    target_side = max_side if target_side is None else min(target_side, max_side)
    try:
        decoded = whole_slide.read_pyramid(path, target_side, max_side)
        if decoded is None:
            decoded = image_files.read_image(path, max_side, target_side=target_side)
    except image_files.ImageReadError as error:
        return LoadedScan(PLACEHOLDER_PIXELS, 0, 0, float("nan"), str(error))
    return LoadedScan(
        pixels=np.asarray(decoded.pixels),
        width=decoded.width,
        height=decoded.height,
        mean_intensity=image_files.mean_gray(decoded.pixels),
        error="",
    )
