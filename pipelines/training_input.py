"""TFDS splits -> batches for training and evaluation.

    TFRecord shards (interleaved, parallel reads)
      -> dark-image filter on stored metadata (optional)
      -> cache of the *encoded* examples (small: PNG bytes), optional
      -> shuffle (training)
      -> decode PNG -> preprocessing.preprocess, with augmentation hooks in
         training (parallel, AUTOTUNE)
      -> batch -> prefetch

Nothing is ever held as one big array: the original study loaded every
image into RAM, which caps the dataset size by memory. Class balancing is done
with per-example loss weights (inverse stratum frequency), which keeps the
stream single-pass and deterministic.
"""

from __future__ import annotations

import collections
import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds

import brainview_tfds
from brainview import augmentation, hemisection, preprocessing
from brainview.labels import DARK_IMAGE_THRESHOLD, VIEWS

AUTOTUNE = tf.data.AUTOTUNE
BALANCE_MODES = ("none", "view", "origin_view")
METADATA_KEYS = ("origin", "specimen", "group", "slice_index", "source_file", "mean_intensity")


class EmptySplitError(ValueError):
    """The requested split has no examples (after filtering)."""


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    image_size: int = 224
    batch_size: int = 32
    preprocessing: str = "section"
    augmentations: tuple[str, ...] = ()
    dark_filter: bool = True
    balance: str = "none"
    cache: bool = True
    deterministic: bool = False
    seed: int = 0
    shuffle_buffer: int = 4096
    data_dir: str | None = None


def _read_examples(
    sources: tuple[str, ...], split: str, config: PipelineConfig, shuffle_files: bool
) -> tf.data.Dataset:
    dataset = brainview_tfds.load_merged(
        sources,
        split,
        data_dir=config.data_dir,
        decoders={"image": tfds.decode.SkipDecoding()},
        shuffle_files=shuffle_files,
        seed=config.seed,
    )
    if config.dark_filter:
        dataset = dataset.filter(lambda ex: ex["mean_intensity"] > DARK_IMAGE_THRESHOLD)
    return dataset


def _stratum_key(origin: tf.Tensor, view: tf.Tensor) -> tf.Tensor:
    return tf.strings.join([origin, tf.gather(tf.constant(VIEWS), view)], separator="|")


def count_strata(
    sources: tuple[str, ...], split: str, config: PipelineConfig
) -> collections.Counter:
    """Examples per 'origin|view' after filtering (reads metadata only, no decoding)."""
    dataset = _read_examples(sources, split, config, shuffle_files=False)
    dataset = dataset.map(lambda ex: _stratum_key(ex["origin"], ex["view"]))
    counts: collections.Counter = collections.Counter()
    for batch in dataset.batch(4096).as_numpy_iterator():
        counts.update(key.decode() for key in batch)
    return counts


def balance_weights(counts: collections.Counter, balance: str) -> dict[str, float]:
    """Loss weight per 'origin|view' so that every stratum weighs the same in total.

    balance="view": the three views weigh the same; "origin_view": every
    (origin, view) pair does. Weight = total / (number of strata x stratum count).
    """
    if balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, got {balance!r}")
    total = sum(counts.values())
    if balance == "none":
        return {key: 1.0 for key in counts}

    def stratum(key: str) -> str:
        return key.split("|")[1] if balance == "view" else key

    stratum_counts = collections.Counter()
    for key, count in counts.items():
        stratum_counts[stratum(key)] += count
    return {key: total / (len(stratum_counts) * stratum_counts[stratum(key)]) for key in counts}


def _weight_table(weights: dict[str, float]) -> tf.lookup.StaticHashTable:
    keys = sorted(weights)
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys), tf.constant([weights[k] for k in keys], tf.float32)
        ),
        default_value=1.0,
    )


def _decode(example: dict) -> tf.Tensor:
    return tf.io.decode_png(example["image"], channels=3)


def training_dataset(
    sources: tuple[str, ...], split: str, config: PipelineConfig
) -> tuple[tf.data.Dataset, int]:
    """Endless (images, labels, weights) batches, and the number of examples.

    One epoch is ceil(examples / batch_size) batches; every epoch is
    reshuffled and re-augmented, and deterministic for a given seed when
    `config.deterministic`.
    """
    counts = count_strata(sources, split, config)
    num_examples = sum(counts.values())
    if num_examples == 0:
        raise EmptySplitError(
            f"no training examples in {split} of {', '.join(sources)}"
            + (" after the dark-image filter" if config.dark_filter else "")
        )
    table = _weight_table(balance_weights(counts, config.balance))
    dataset = _read_examples(sources, split, config, shuffle_files=True)
    if config.cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(
        min(config.shuffle_buffer, num_examples), seed=config.seed, reshuffle_each_iteration=True
    )
    seeds = tf.data.Dataset.random(seed=config.seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip(dataset, seeds)

    def prepare(example: dict, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        image = preprocessing.preprocess(
            _decode(example),
            config.image_size,
            config.preprocessing,
            mean_intensity=example["mean_intensity"],
            augmenter=augmentation.RandomAugmenter(config.augmentations, seed),
        ).model_input
        weight = table.lookup(_stratum_key(example["origin"], example["view"]))
        return image, example["view"], weight

    dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
    return dataset.batch(config.batch_size).repeat().prefetch(AUTOTUNE), num_examples


def evaluation_dataset(
    sources: tuple[str, ...],
    split: str,
    config: PipelineConfig,
    remount_seed: int | None = None,
    hemisection_seed: int | None = None,
) -> tf.data.Dataset:
    """(images, labels, metadata) batches in a fixed order, no augmentation.

    With `remount_seed`, every scan is first turned by a random angle and
    maybe mirrored (`augmentation.remount`): a test of robustness to how slides
    are mounted. With `hemisection_seed`, coronal and horizontal scans are cut
    at their midline and one half kept (`hemisection.hemisection_test_image`).

    The dataset declares its length: through the dark-image filter tf.data
    cannot know it, and Keras (fit's validation, predict) would then read until
    the data runs out and warn "Your input ran out of data" at every use.
    """
    num_examples = sum(count_strata(sources, split, config).values())
    dataset = _read_examples(sources, split, config, shuffle_files=False)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_examples))
    seeds = tf.data.Dataset.random(seed=remount_seed or hemisection_seed or 0).batch(2)

    def prepare(example: dict, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, dict]:
        image = _decode(example)
        if hemisection_seed is not None:
            image = hemisection.hemisection_test_image(image, example["view"], seed)
        if remount_seed is not None:
            image = augmentation.remount(image, seed)
        image = preprocessing.preprocess(
            image,
            config.image_size,
            config.preprocessing,
            mean_intensity=example["mean_intensity"],
        ).model_input
        metadata = {key: example[key] for key in METADATA_KEYS}
        return image, example["view"], metadata

    dataset = tf.data.Dataset.zip(dataset, seeds)
    dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return dataset.batch(config.batch_size).prefetch(AUTOTUNE)
