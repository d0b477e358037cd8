"""The scan input pipeline: file paths -> decoded, preprocessed, equal-sized batches.

    walk (generator: deterministic order, this shard's files, minus rows done)
      -> parallel decode (Pillow, in tf.numpy_function; bad files become error rows)
      -> preprocessing.preprocess (the function training uses) + blank check
      -> batch, padded to the full batch size -> prefetch

Every batch has exactly `batch_size` rows: a short last batch is padded with
copies of its last row, marked `valid = False`. The last digits of the CPU
kernels' results depend on the batch size, so an image must always be
classified in a batch of the same size to get the same numbers in a run, a
shard or a resume.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from brainview import preprocessing
from brainview.classify import scan_files

AUTOTUNE = tf.data.AUTOTUNE


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
) -> tf.data.Dataset:
    """Batches of dicts for this shard's files below `scan_dir` that come after
    `resume_after` in walk order (all of them if None), read with `load_scan`
    (scan_files.load's signature; classify_dir journals decodes through it).

    Keys: path (bytes, relative to scan_dir), image (model input), frame (in
    source pixels), width and height (of the source), mean_intensity, error
    ("" when readable), blank, valid (False for padding rows).
    """
    resume_key = None if resume_after is None else scan_files.sort_key(resume_after)

    def entries():
        walked = scan_files.walk(scan_dir, include_hidden)
        for entry in scan_files.shard(walked, num_shards, shard_index):
            if resume_key is None or scan_files.sort_key(entry.relative_path) > resume_key:
                yield entry.relative_path, entry.listing_error

    def load(relative_path: bytes, listing_error: bytes):
        entry = scan_files.ScanEntry(relative_path, listing_error.decode())
        scan = load_scan(scan_dir, entry, max_decode_side)
        return (
            scan.pixels,
            np.int32(scan.width),
            np.int32(scan.height),
            np.float32(scan.mean_intensity),
            scan.error.encode("utf-8"),
        )

    def prepare(relative_path: tf.Tensor, listing_error: tf.Tensor) -> dict:
        pixels, width, height, mean, error = tf.numpy_function(
            load,
            [relative_path, listing_error],
            [tf.uint8, tf.int32, tf.int32, tf.float32, tf.string],
            stateful=False,
        )
        pixels.set_shape([None, None, 3])
        mean = tf.reshape(mean, [])
        model_input, frame, blank = preprocessing.preprocess(
            pixels, image_size, mode, mean_intensity=mean
        )
        # Frame in source pixels (the decoded image may have been downscaled).
        decoded_width = tf.cast(tf.shape(pixels)[1], tf.float32)
        scale = tf.cast(tf.maximum(width, 1), tf.float32) / decoded_width
        return {
            "path": relative_path,
            "image": model_input,
            "frame": frame * tf.stack([scale, scale, scale, 1.0]),  # the angle stays
            "width": tf.reshape(width, []),
            "height": tf.reshape(height, []),
            "mean_intensity": mean,
            "error": tf.reshape(error, []),
            "blank": blank,
        }

    paths = tf.data.Dataset.from_generator(
        entries,
        output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.string)),
    )
    scans = paths.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    batches = scans.batch(batch_size).map(lambda batch: _padded(batch, batch_size))
    return batches.prefetch(2)


def _padded(batch: dict, batch_size: int) -> dict:
    """`batch` with its last row repeated up to `batch_size` rows, and the `valid` mask."""
    count = tf.shape(batch["path"])[0]

    def pad(values: tf.Tensor) -> tf.Tensor:
        return tf.concat([values, tf.repeat(values[-1:], batch_size - count, axis=0)], axis=0)

    padded = {key: pad(values) for key, values in batch.items()}
    padded["valid"] = tf.range(batch_size) < count
    return padded
