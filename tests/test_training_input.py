"""TFDS splits -> batches: shapes, the dark-image filter, class-balancing weights, a fixed
evaluation order, and no leakage between the splits a run actually reads.

Runs on the tiny phantom (`phantom_data_dir`) and on the dummy Allen CCFv3 volume, whose
empty end slices exercise the dark-image filter; on the real data when it is present.
"""

import collections
import functools
import math
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from brainview import experiments, preprocessing, training_input
from brainview.labels import DARK_IMAGE_THRESHOLD, VIEWS
from brainview_tfds import build, testing

# Tier: reads TFDS datasets built for the session (see conftest.py).
pytestmark = pytest.mark.integration

PHANTOM = ("brain_phantom/tiny",)
CCF = ("allen_ccfv3/200um",)
SIZE = 32


@pytest.fixture(scope="module")
def mixed_data_dir(phantom_data_dir, tmp_path_factory):
    """A data_dir with the session's tiny phantom and the dummy allen_ccfv3/200um volume,
    whose empty end slices are dark (mean gray <= 0.6)."""
    data_dir = tmp_path_factory.mktemp("tfds_mixed")
    os.symlink(
        os.path.join(phantom_data_dir, "brain_phantom"), data_dir / "brain_phantom"
    )  # reuse the built phantom, do not rebuild it
    build.build(
        build.BuildRequest("allen_ccfv3", "200um", testing.dummy_data_dir("allen_ccfv3")),
        data_dir=str(data_dir),
    )
    return str(data_dir)


def config(data_dir, **overrides):
    settings = {"image_size": SIZE, "batch_size": 16, "data_dir": data_dir, "seed": 1}
    settings.update(overrides)
    return training_input.PipelineConfig(**settings)


def scan(data_dir, sources, split):
    """Metadata of every stored example of `split`, read straight from TFDS (no pipeline)."""
    rows = []
    for name in sources:
        dataset = tfds.builder(name, data_dir=data_dir).as_dataset(
            split=split, decoders={"image": tfds.decode.SkipDecoding()}
        )
        for example in dataset.as_numpy_iterator():
            rows.append(
                {
                    "origin": example["origin"].decode(),
                    "view": VIEWS[int(example["view"])],
                    "group": example["group"].decode(),
                    "specimen": example["specimen"].decode(),
                    "slice_index": int(example["slice_index"]),
                    "mean_intensity": float(example["mean_intensity"]),
                }
            )
    return rows


def strata(rows):
    return collections.Counter(f"{row['origin']}|{row['view']}" for row in rows)


def not_dark(rows):
    return [row for row in rows if row["mean_intensity"] > DARK_IMAGE_THRESHOLD]


# -- training batches ---------------------------------------------------------------------


def test_training_batches_have_the_right_shapes_dtypes_and_ranges(phantom_data_dir):
    dataset, num_examples = training_input.training_dataset(
        PHANTOM, "fold0+fold1", config(phantom_data_dir)
    )
    assert num_examples == len(not_dark(scan(phantom_data_dir, PHANTOM, "fold0+fold1")))
    images, labels, weights = next(iter(dataset))
    assert images.shape == (16, SIZE, SIZE, 3) and images.dtype == tf.float32
    assert labels.shape == (16,) and labels.dtype.is_integer
    assert weights.shape == (16,) and weights.dtype == tf.float32
    images = images.numpy()
    assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 200.0
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # section mode: gray
    assert set(labels.numpy().tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(weights.numpy(), 1.0)  # balance "none"


def test_training_stream_is_endless_and_each_epoch_sees_every_example_once(phantom_data_dir):
    """One epoch = ceil(N / batch) batches holding each example once; then it repeats."""
    split = "fold0+fold1"
    dataset, num_examples = training_input.training_dataset(
        PHANTOM, split, config(phantom_data_dir, deterministic=True)
    )
    steps = math.ceil(num_examples / 16)
    expected_views = collections.Counter(
        row["view"] for row in not_dark(scan(phantom_data_dir, PHANTOM, split))
    )
    batches = [labels.numpy() for _, labels, _ in dataset.take(2 * steps + 1)]
    assert len(batches) == 2 * steps + 1  # the stream goes on past two epochs
    sizes = [len(batch) for batch in batches[:steps]]
    assert sizes == [16] * (steps - 1) + [num_examples - 16 * (steps - 1)]
    for epoch in (batches[:steps], batches[steps : 2 * steps]):
        seen = collections.Counter(VIEWS[label] for batch in epoch for label in batch)
        assert seen == expected_views


def test_training_stream_is_reproducible_for_a_seed(phantom_data_dir):
    """--deterministic: same seed, same shuffled and augmented batches; another seed differs."""

    def first_batch(seed):
        dataset, _ = training_input.training_dataset(
            PHANTOM,
            "fold2",
            config(
                phantom_data_dir,
                deterministic=True,
                seed=seed,
                augmentations=("rotate", "flip"),
            ),
        )
        images, labels, _ = next(iter(dataset))
        return images.numpy(), labels.numpy()

    images, labels = first_batch(4)
    again_images, again_labels = first_batch(4)
    np.testing.assert_array_equal(labels, again_labels)
    np.testing.assert_allclose(images, again_images, atol=1e-3)
    other_images, other_labels = first_batch(5)
    assert not np.array_equal(labels, other_labels) or np.abs(images - other_images).mean() > 1


# -- the dark-image filter ----------------------------------------------------------------


@pytest.mark.parametrize("split", ["fold0", "fold3", "gap", "all"])
def test_dark_filter_drops_exactly_the_dark_examples(mixed_data_dir, split):
    rows = scan(mixed_data_dir, CCF, split)
    kept = not_dark(rows)
    assert len(kept) < len(rows)  # the dummy volume has dark end slices in these splits
    filtered = training_input.count_strata(CCF, split, config(mixed_data_dir))
    assert filtered == strata(kept)
    unfiltered = training_input.count_strata(CCF, split, config(mixed_data_dir, dark_filter=False))
    assert unfiltered == strata(rows)


def test_evaluation_data_declares_its_length_so_keras_never_runs_out_of_data(mixed_data_dir):
    """Through the dark-image filter tf.data cannot count the examples; the evaluation
    dataset declares its number of batches, so Keras (fit's validation, evaluate, predict)
    stops at its end instead of warning "Your input ran out of data" in every run."""
    import keras

    split = "fold0+fold2"
    assert len(not_dark(scan(mixed_data_dir, CCF, split))) < len(scan(mixed_data_dir, CCF, split))
    dataset = training_input.evaluation_dataset(CCF, split, config(mixed_data_dir, batch_size=4))
    assert int(dataset.cardinality()) == sum(1 for _ in dataset) > 1
    images_and_labels = dataset.map(lambda images, labels, metadata: (images, labels))
    model = keras.Sequential(
        [
            keras.Input(dataset.element_spec[0].shape[1:]),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(len(VIEWS)),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.evaluate(images_and_labels, verbose=0)
        model.predict(images_and_labels, verbose=0)
    assert not [w for w in caught if "ran out of data" in str(w.message)]


def test_dark_filter_applies_to_the_examples_actually_fed(mixed_data_dir):
    """The training count and the evaluation stream both hold exactly the non-dark examples."""
    split = "fold0+fold2"
    rows = scan(mixed_data_dir, CCF, split)
    kept = not_dark(rows)
    assert 0 < len(kept) < len(rows)
    _, num_examples = training_input.training_dataset(CCF, split, config(mixed_data_dir))
    assert num_examples == len(kept)
    evaluated = []
    for _, _, metadata in training_input.evaluation_dataset(CCF, split, config(mixed_data_dir)):
        evaluated += zip(
            metadata["group"].numpy().tolist(),
            metadata["slice_index"].numpy().tolist(),
            metadata["mean_intensity"].numpy().tolist(),
            strict=True,
        )
    assert sorted((g.decode(), i) for g, i, _ in evaluated) == sorted(
        (row["group"], row["slice_index"]) for row in kept
    )
    assert min(m for _, _, m in evaluated) > DARK_IMAGE_THRESHOLD


def test_an_empty_split_is_an_error_naming_the_filter(mixed_data_dir):
    rows = scan(mixed_data_dir, CCF, "fold0")
    dark = next(i for i, row in enumerate(rows) if row["mean_intensity"] <= DARK_IMAGE_THRESHOLD)
    one_dark_example = f"fold0[{dark}:{dark + 1}]"
    with pytest.raises(training_input.EmptySplitError, match="after the dark-image filter"):
        training_input.training_dataset(CCF, one_dark_example, config(mixed_data_dir))
    # Unfiltered, the same slice is one training example.
    _, num_examples = training_input.training_dataset(
        CCF, one_dark_example, config(mixed_data_dir, dark_filter=False)
    )
    assert num_examples == 1


# -- class balancing ----------------------------------------------------------------------

COUNTS = collections.Counter(
    {"a|coronal": 6, "a|horizontal": 2, "b|coronal": 2, "b|sagittal": 10}  # total 20
)


def test_balance_weights_by_hand():
    """weight = total / (number of strata x stratum count)."""
    assert training_input.balance_weights(COUNTS, "none") == dict.fromkeys(COUNTS, 1.0)
    # view: coronal 6 + 2 = 8, horizontal 2, sagittal 10 -> 20/24, 20/6, 20/30
    assert training_input.balance_weights(COUNTS, "view") == pytest.approx(
        {"a|coronal": 5 / 6, "b|coronal": 5 / 6, "a|horizontal": 10 / 3, "b|sagittal": 2 / 3}
    )
    # origin_view: 4 strata -> 20 / (4 x count)
    assert training_input.balance_weights(COUNTS, "origin_view") == pytest.approx(
        {"a|coronal": 5 / 6, "a|horizontal": 2.5, "b|coronal": 2.5, "b|sagittal": 0.5}
    )
    with pytest.raises(ValueError, match="balance must be one of"):
        training_input.balance_weights(COUNTS, "origin")


@pytest.mark.parametrize("balance", ["view", "origin_view"])
def test_balanced_strata_weigh_the_same_in_total(balance):
    weights = training_input.balance_weights(COUNTS, balance)

    def stratum(key):
        return key.split("|")[1] if balance == "view" else key

    totals = collections.defaultdict(float)
    for key, count in COUNTS.items():
        totals[stratum(key)] += count * weights[key]
    # Every stratum weighs total / strata, and the weights keep the total example count.
    assert list(totals.values()) == pytest.approx([20 / len(totals)] * len(totals))
    assert sum(totals.values()) == pytest.approx(20)


@pytest.mark.parametrize("balance", ["view", "origin_view"])
def test_emitted_weights_match_the_balance_of_the_split(mixed_data_dir, balance):
    """Over one epoch of a phantom + CCF merge, every (label, weight) pair the pipeline emits
    is that of the example's stratum, counted from the stored metadata."""
    sources = PHANTOM + CCF
    split = "fold1+fold3"
    kept = not_dark(scan(mixed_data_dir, sources, split))
    expected_weights = training_input.balance_weights(strata(kept), balance)
    expected = collections.Counter(
        (VIEWS.index(key.split("|")[1]), round(expected_weights[key], 4))
        for row in kept
        for key in [f"{row['origin']}|{row['view']}"]
    )
    dataset, num_examples = training_input.training_dataset(
        sources, split, config(mixed_data_dir, balance=balance, deterministic=True)
    )
    emitted = collections.Counter()
    for _, labels, weights in dataset.take(math.ceil(num_examples / 16)):
        emitted.update(
            zip(
                labels.numpy().tolist(),
                [round(w, 4) for w in weights.numpy().tolist()],
                strict=True,
            )
        )
    assert emitted == expected
    # The balance is real: the weights are not all equal.
    assert len({weight for _, weight in emitted}) > 1


# -- evaluation batches -------------------------------------------------------------------


def evaluation_rows(data_dir, sources, split, **overrides):
    rows = []
    for images, labels, metadata in training_input.evaluation_dataset(
        sources, split, config(data_dir, **overrides)
    ):
        for i in range(len(labels)):
            rows.append(
                (
                    images[i].numpy(),
                    int(labels[i]),
                    {key: metadata[key][i].numpy() for key in metadata},
                )
            )
    return rows


def test_evaluation_order_is_fixed_and_metadata_complete(mixed_data_dir):
    sources = PHANTOM + CCF
    first = evaluation_rows(mixed_data_dir, sources, "fold4")
    second = evaluation_rows(mixed_data_dir, sources, "fold4")
    assert len(first) == len(not_dark(scan(mixed_data_dir, sources, "fold4")))
    assert set(first[0][2]) == set(training_input.METADATA_KEYS)
    for (image_a, label_a, meta_a), (image_b, label_b, meta_b) in zip(first, second, strict=True):
        assert label_a == label_b
        assert meta_a == meta_b
        np.testing.assert_array_equal(image_a, image_b)
    # Both origins are interleaved into one stream.
    assert {meta["origin"] for _, _, meta in first} == {b"brain_phantom", b"allen_ccfv3"}


def test_evaluation_images_are_the_inference_preprocessing(phantom_data_dir):
    """No augmentation at evaluation: each image is preprocessing.preprocess of the stored one."""
    stored = {
        (e["group"], int(e["view"]), int(e["slice_index"])): e["image"]
        for e in tfds.load("brain_phantom/tiny", split="fold3", data_dir=phantom_data_dir)
        .take(200)
        .as_numpy_iterator()
    }
    rows = evaluation_rows(phantom_data_dir, PHANTOM, "fold3", augmentations=("rotate", "tone"))
    assert len(rows) == len(stored)
    for image, label, meta in rows[:12]:
        source = stored[(meta["group"], label, int(meta["slice_index"]))]
        expected = preprocessing.preprocess(
            tf.constant(source), SIZE, mean_intensity=meta["mean_intensity"]
        ).model_input
        np.testing.assert_allclose(image, expected.numpy(), atol=1e-3)


# -- leakage ------------------------------------------------------------------------------


@functools.cache
def values_fed(data_dir, sources, split):
    """{metadata key: values} of the examples a run reads from `split`, through the reader
    `training_dataset` and `evaluation_dataset` share (so with the dark-image filter)."""
    reader = training_input._read_examples(sources, split, config(data_dir), shuffle_files=True)
    keys = ("group", "specimen", "origin")
    values = {key: set() for key in keys}
    columns = reader.map(lambda e: {key: e[key] for key in keys}).batch(4096)
    for batch in columns.as_numpy_iterator():
        for key in keys:
            values[key].update(value.decode() for value in batch[key])
    return values


def assert_runs_do_not_leak(data_dir, runs, keys):
    for run in runs:
        train = values_fed(data_dir, run.train_sources, run.train_split)
        test = values_fed(data_dir, run.test_sources, run.test_split)
        validation = (
            values_fed(data_dir, run.train_sources, run.validation_split)
            if run.validation_split
            else None
        )
        for key in keys:
            assert train[key] and test[key]
            assert not train[key] & test[key], (run.name, key, sorted(train[key] & test[key]))
            if validation is not None:
                assert validation[key]
                assert not validation[key] & train[key], (run.name, key, "validation/train")
                assert not validation[key] & test[key], (run.name, key, "validation/test")


def test_no_specimen_is_in_two_splits_of_a_phantom_run(phantom_data_dir):
    runs = (
        experiments.make_runs("holdout", PHANTOM, validation=True)
        + experiments.make_runs("holdout", PHANTOM, validation=False)
        + experiments.make_runs("cv", PHANTOM, validation=True)
    )
    assert_runs_do_not_leak(phantom_data_dir, runs, keys=("group", "specimen"))


def test_no_slab_is_in_two_splits_of_a_merged_run(mixed_data_dir):
    """Volumes split by slab: groups (not specimens: one volume) never cross a split."""
    runs = experiments.make_runs("holdout", PHANTOM + CCF) + experiments.make_runs("cv", CCF)
    assert_runs_do_not_leak(mixed_data_dir, runs, keys=("group",))
    # Cross-dataset: nothing of the test origin is read for training or validation.
    (cross,) = experiments.make_runs("cross", PHANTOM, test_sources=CCF)
    assert_runs_do_not_leak(mixed_data_dir, [cross], keys=("group", "specimen"))
    tested = values_fed(mixed_data_dir, cross.test_sources, cross.test_split)["origin"]
    assert tested == {"allen_ccfv3"}
    for split in (cross.train_split, cross.validation_split):
        assert values_fed(mixed_data_dir, cross.train_sources, split)["origin"] == {"brain_phantom"}


@pytest.mark.slow
def test_no_group_is_in_two_splits_of_a_real_data_run(real_data_dir):
    sources = ("allen_ccfv3/200um", "brainmaps")
    runs = experiments.make_runs("holdout", sources) + experiments.make_runs("cv", sources)
    assert_runs_do_not_leak(real_data_dir, runs, keys=("group",))
