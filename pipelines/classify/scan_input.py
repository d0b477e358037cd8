"""The scan input pipeline: file paths -> decoded, preprocessed, equal-sized batches.

    walk (Python, CHUNK_SIZE entries per call: deterministic order, this shard's
          files, minus rows done) -> one path tensor per file
      -> decode, in parallel and in walk order, each file by the first that takes it:
           TensorFlow's decoders in the graph (brainview.native_decode: PNG, JPEG
             at reduced scale, BMP, GIF, when the header proves they return
             Pillow's pixels), then
           the Python reader (scan_files.load: Pillow, tifffile for pyramidal
             TIFFs), for everything else, for files TensorFlow fails on, and
             for unreadable files: it writes every error row
      -> reduce to the working size on the file's own channels, gray -> RGB
      -> preprocessing.preprocess (the function training uses) + blank check
      -> batch, padded to the full batch size -> prefetch

Why this shape: a Python generator around Pillow ran Python for every file,
under one interpreter lock, so it could not keep more than a core or two busy.
Here Python runs once per CHUNK_SIZE files for the walk, and only for files
the fast path does not take. A decoder error cannot be caught inside a graph,
so each file is its own small dataset: the fast path's, which fails for a
file it does not take as a decoder fails for a corrupt one, with its errors
dropped (`ignore_errors`), then the Python reader's, of which only the first
element is taken — the Python reader runs only when the fast path gave
nothing. Files are interleaved PARALLEL_FILES at a time, so several are
decoded at once even on one core (one waits for the disk, another decodes).

Both paths give the same decoded pixels (tests/test_native_decode.py), and
JPEGs are decoded at the DCT scale that covers the working size in both.

Every batch has exactly `batch_size` rows: a short last batch is padded with
copies of its last row, marked `valid = False`. The last digits of the CPU
kernels' results depend on the batch size, so an image must always be
classified in a batch of the same size to get the same numbers in a run, a
shard or a resume.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from brainview import native_decode, preprocessing
from brainview.classify import scan_files

AUTOTUNE = tf.data.AUTOTUNE

# Walk entries handed to tf.data per Python call.
CHUNK_SIZE = 1024
# Files in flight at once: at least 8, twice the usable cores on bigger machines.
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
PARALLEL_FILES = max(8, 2 * (_CORES or 1))
# Larger files skip the fast path: it reads a whole file into memory before
# looking at it, while the Python reader bounds the memory of huge images.
MAX_NATIVE_FILE_BYTES = 256 * 2**20
# The fast path decodes outside the Python reader's memory budget and decode journal;
# what bounds its memory is max_decode_side (RGB, side^2 x 3 bytes: 50 MB at 4096). With a
# larger --max_decode_side every file takes the Python reader, journaled and budgeted.
MAX_NATIVE_DECODE_SIDE = 4096
# Name suffixes (lower case) of files the fast path never takes; skipping them
# only avoids reading them twice (the header decides, not the name).
_PYTHON_ONLY_SUFFIXES = (b".tif", b".tiff", b".btf", b".svs")

DECODED_SIGNATURE = {
    "path": tf.TensorSpec((), tf.string),
    "pixels": tf.TensorSpec((None, None, None), tf.uint8),  # 1 (gray) or 3 channels
    "width": tf.TensorSpec((), tf.int32),  # of the source
    "height": tf.TensorSpec((), tf.int32),
    "mean_intensity": tf.TensorSpec((), tf.float32),
    "error": tf.TensorSpec((), tf.string),
    "decoder": tf.TensorSpec((), tf.string),  # b"tensorflow" or b"python"
}


def scan_dataset(
    scan_dir: bytes,
    *,
    image_size: int,
    mode: str,
    batch_size: int,
    max_decode_side: int,
    num_shards: int = 1,
    shard_index: int = 0,
    include_hidden: bool = False,
    resume_after: bytes | None = None,
    load_scan: Callable[..., scan_files.LoadedScan] = scan_files.load,
    python_only: frozenset[bytes] = frozenset(),
    native_decoders: bool = True,
) -> tf.data.Dataset:
    """Batches of dicts for this shard's files below `scan_dir` that come after
    `resume_after` in walk order (all of them if None).

    The Python reader is `load_scan` (scan_files.load's signature; classify_dir
    journals its decodes through it, the ones that can need much memory), and
    it alone reads the files in `python_only` (scans a killed run blamed).

    Keys: path (bytes, relative to scan_dir), image (model input), frame (in
    source pixels), width and height (of the source), mean_intensity, error
    ("" when readable), blank, decoder, valid (False for padding rows).
    `native_decoders=False` reads every file with the Python reader (tests and
    benchmarks compare the two).
    """
    scans = decoded_scans(
        scan_dir,
        max_decode_side=max_decode_side,
        target_side=preprocessing.working_side(image_size),
        num_shards=num_shards,
        shard_index=shard_index,
        include_hidden=include_hidden,
        resume_after=resume_after,
        load_scan=load_scan,
        python_only=python_only,
        native_decoders=native_decoders,
    )
    prepared = scans.map(
        lambda scan: prepare_scan(scan, image_size, mode),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    batches = prepared.batch(batch_size).map(lambda batch: _padded(batch, batch_size))
    return batches.prefetch(2)


def decoded_scans(
    scan_dir: bytes,
    *,
    max_decode_side: int,
    target_side: int,
    num_shards: int = 1,
    shard_index: int = 0,
    include_hidden: bool = False,
    resume_after: bytes | None = None,
    load_scan: Callable[..., scan_files.LoadedScan] = scan_files.load,
    python_only: frozenset[bytes] = frozenset(),
    native_decoders: bool = True,
) -> tf.data.Dataset:
    """The decoded files (DECODED_SIGNATURE), in walk order: the pipeline's first half.

    Pixels are at most `max_decode_side` on the longer side; JPEGs are
    decoded at the DCT scale that still covers `target_side`.
    """

    def entry_chunks():
        walked = scan_files.walk(scan_dir, include_hidden)
        selected = scan_files.shard(walked, num_shards, shard_index)
        yield from scan_files.chunks(_after(selected, resume_after, python_only), CHUNK_SIZE)

    chunk_spec = tf.TensorSpec((None,), tf.string)
    entries = tf.data.Dataset.from_generator(
        entry_chunks,
        output_signature=(chunk_spec, chunk_spec, tf.TensorSpec((None,), tf.int64)),
    )
    entries = entries.prefetch(1).unbatch()
    python_read = _python_reader(scan_dir, max_decode_side, target_side, load_scan)
    native_read = _native_reader(scan_dir, max_decode_side, target_side)

    native_decoders = native_decoders and max_decode_side <= MAX_NATIVE_DECODE_SIDE

    def one_file(relative_path: tf.Tensor, listing_error: tf.Tensor, size: tf.Tensor):
        entry = tf.data.Dataset.from_tensors((relative_path, listing_error, size))
        by_python = entry.map(python_read)
        if not native_decoders:
            return by_python
        # Not taken or a decoder error: dropped, and the Python reader decides.
        by_tensorflow = entry.map(native_read).ignore_errors()
        return by_tensorflow.concatenate(by_python).take(1)

    return entries.interleave(
        one_file,
        cycle_length=PARALLEL_FILES,
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def prepare_scan(scan: dict, image_size: int, mode: str) -> dict:
    """One decoded file -> the model input, its frame in source pixels and the blank check.

    The reduction to the working size happens here, on the file's own
    channels (one for gray scans, a third of the work), then gray becomes
    RGB; `preprocess` then finds the image at its working size already.
    """
    pixels = scan["pixels"]
    working, to_decoded = preprocessing.to_working_size(pixels, image_size)
    working_shape = tf.shape(working)
    rgb = tf.broadcast_to(working, [working_shape[0], working_shape[1], 3])
    model_input, frame, blank = preprocessing.preprocess(
        rgb, image_size, mode, mean_intensity=scan["mean_intensity"]
    )
    # Frame in source pixels (the decoded image may have been downscaled).
    decoded_width = tf.cast(tf.shape(pixels)[1], tf.float32)
    scale = tf.cast(tf.maximum(scan["width"], 1), tf.float32) / decoded_width
    return {
        "path": scan["path"],
        "image": model_input,
        "frame": frame * to_decoded * tf.stack([scale, scale, scale, 1.0]),  # the angle stays
        "width": scan["width"],
        "height": scan["height"],
        "mean_intensity": scan["mean_intensity"],
        "error": scan["error"],
        "blank": blank,
        "decoder": scan["decoder"],
    }


def _native_candidate(relative_path: tf.Tensor, listing_error: tf.Tensor, size: tf.Tensor):
    """Whether the fast path may look at a file (readable size, not a TIFF by name)."""
    padded = tf.strings.join(["....", tf.strings.lower(relative_path)])
    suffix4, suffix5 = tf.strings.substr(padded, -4, 4), tf.strings.substr(padded, -5, 5)
    tiff_name = tf.reduce_any(
        tf.equal(tf.stack([suffix4, suffix5]), tf.constant([[s] for s in _PYTHON_ONLY_SUFFIXES]))
    )
    return tf.equal(listing_error, "") & (size > 0) & (size <= MAX_NATIVE_FILE_BYTES) & ~tiff_name


def _native_reader(scan_dir: bytes, max_decode_side: int, target_side: int):
    prefix = os.path.join(scan_dir, b"")

    def read(relative_path: tf.Tensor, listing_error: tf.Tensor, size: tf.Tensor) -> dict:
        """The file decoded by TensorFlow; an op error for a file it does not take."""
        candidate = tf.debugging.Assert(
            _native_candidate(relative_path, listing_error, size), ["left to Python"]
        )
        with tf.control_dependencies([candidate]):
            contents = tf.io.read_file(tf.strings.join([prefix, relative_path]))
        decoded = native_decode.decode(contents, max_decode_side, target_side)
        taken = tf.debugging.Assert(decoded.handled, ["not provably decoded like Pillow"])
        with tf.control_dependencies([taken]):
            pixels = tf.identity(decoded.pixels)
        return {
            "path": relative_path,
            "pixels": pixels,
            "width": decoded.width,
            "height": decoded.height,
            "mean_intensity": tf.cast(native_decode.mean_gray(pixels), tf.float32),
            "error": tf.constant(b""),
            "decoder": tf.constant(b"tensorflow"),
        }

    return read


def _after(
    entries: Iterator[scan_files.ScanEntry],
    resume_after: bytes | None,
    python_only: frozenset[bytes],
) -> Iterator[scan_files.ScanEntry]:
    """The entries after `resume_after` in walk order; those in `python_only` with
    size 0, which the fast path never takes (the Python reader does not use it)."""
    resume_key = None if resume_after is None else scan_files.sort_key(resume_after)
    for entry in entries:
        if resume_key is not None and scan_files.sort_key(entry.relative_path) <= resume_key:
            continue
        if entry.relative_path in python_only:
            entry = dataclasses.replace(entry, size=0)
        yield entry


def _python_reader(
    scan_dir: bytes,
    max_decode_side: int,
    target_side: int,
    load_scan: Callable[..., scan_files.LoadedScan],
):
    def load(relative_path: bytes, listing_error: bytes, size: np.int64):
        entry = scan_files.ScanEntry(relative_path, listing_error.decode(), int(size))
        scan = load_scan(scan_dir, entry, max_decode_side, target_side)
        return (
            scan.pixels,
            np.int32(scan.width),
            np.int32(scan.height),
            np.float32(scan.mean_intensity),
            scan.error.encode("utf-8"),
        )

    def read(relative_path: tf.Tensor, listing_error: tf.Tensor, size: tf.Tensor) -> dict:
        pixels, width, height, mean, error = tf.numpy_function(
            load,
            [relative_path, listing_error, size],
            [tf.uint8, tf.int32, tf.int32, tf.float32, tf.string],
            stateful=False,
        )
        return {
            "path": relative_path,
            "pixels": tf.ensure_shape(pixels, [None, None, 3]),
            "width": tf.reshape(width, []),
            "height": tf.reshape(height, []),
            "mean_intensity": tf.reshape(mean, []),
            "error": tf.reshape(error, []),
            "decoder": tf.constant(b"python"),
        }

    return read


def _padded(batch: dict, batch_size: int) -> dict:
    """`batch` with its last row repeated up to `batch_size` rows, and the `valid` mask."""
    count = tf.shape(batch["path"])[0]

    def pad(values: tf.Tensor) -> tf.Tensor:
        return tf.concat([values, tf.repeat(values[-1:], batch_size - count, axis=0)], axis=0)

    padded = {key: pad(values) for key, values in batch.items()}
    padded["valid"] = tf.range(batch_size) < count
    return padded
