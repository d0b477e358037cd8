"""A merged view over any subset of the brainview datasets.

All builders share one feature spec (`core/features.py`) and record their
dataset of origin in every example, so merging is reading them side by side:
no data is copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds


def load_merged(
    datasets: Sequence[str],
    split: str,
    *,
    data_dir: str | None = None,
    decoders: dict | None = None,
    shuffle_files: bool = False,
    seed: int = 0,
) -> tf.data.Dataset:
    """Reads `split` of every dataset in `datasets` as one stream of examples.

    Examples are interleaved at random in proportion to each part's size
    (deterministic for a given `seed`), so a shuffle buffer downstream sees a
    mix of origins rather than one dataset after another.

    Args:
      datasets: TFDS names with config, e.g. ["brainmaps", "allen_ccfv3/200um"].
      split: a TFDS split expression valid for every dataset, e.g. "fold0+fold1" or "all".
    """
    if not datasets:
        raise ValueError("load_merged needs at least one dataset")
    parts, sizes = [], []
    read_config = tfds.ReadConfig(shuffle_seed=seed)
    for name in datasets:
        builder = tfds.builder(name, data_dir=data_dir)
        parts.append(
            builder.as_dataset(
                split=split,
                decoders=decoders,
                shuffle_files=shuffle_files,
                read_config=read_config,
            )
        )
        sizes.append(_split_size(builder, split))
    if len(parts) == 1:
        return parts[0]
    total = sum(sizes)
    weights = [size / total for size in sizes]
    return tf.data.Dataset.sample_from_datasets(
        parts, weights=weights, seed=seed, stop_on_empty_dataset=False
    )


def _split_size(builder: tfds.core.DatasetBuilder, split: str) -> int:
    return builder.info.splits[split].num_examples
