"""Experiments as lists of runs: the documented splits, and refusals of leaky or empty ones."""

import pytest

from brainview import experiments
from brainview_tfds.core.features import NUM_FOLDS

SOURCES = ("brain_phantom/tiny", "allen_ccfv3/200um")


def folds(split):
    """'fold0+fold2' -> {0, 2}; 'all' stays 'all'."""
    if split == "all":
        return "all"
    return {int(part.removeprefix("fold")) for part in split.split("+")}


def test_holdout_with_validation_trains_on_folds_0_to_2():
    (run,) = experiments.make_runs("holdout", SOURCES, validation=True)
    assert run.name == "holdout"
    assert run.train_sources == SOURCES and run.test_sources == SOURCES
    assert run.train_split == "fold0+fold1+fold2"
    assert run.validation_split == "fold3"
    assert run.test_split == "fold4"


def test_holdout_without_validation_trains_on_folds_0_to_3():
    (run,) = experiments.make_runs("holdout", SOURCES, validation=False)
    assert run.train_split == "fold0+fold1+fold2+fold3"
    assert run.validation_split is None
    assert run.test_split == "fold4"


@pytest.mark.parametrize("validation", [True, False])
def test_cv_tests_each_fold_once_and_never_trains_on_its_validation_or_test_fold(validation):
    runs = experiments.make_runs("cv", SOURCES, validation=validation)
    assert len(runs) == NUM_FOLDS
    assert [run.name for run in runs] == [f"fold{k}" for k in range(NUM_FOLDS)]
    assert sorted(folds(run.test_split).pop() for run in runs) == list(range(NUM_FOLDS))
    for k, run in enumerate(runs):
        assert folds(run.test_split) == {k}
        train = folds(run.train_split)
        assert k not in train
        if validation:
            assert folds(run.validation_split) == {(k + 1) % NUM_FOLDS}
            assert not folds(run.validation_split) & train
            assert train == set(range(NUM_FOLDS)) - {k, (k + 1) % NUM_FOLDS}
        else:
            assert run.validation_split is None
            assert train == set(range(NUM_FOLDS)) - {k}


def test_every_fold_validates_exactly_once_in_cv():
    runs = experiments.make_runs("cv", SOURCES, validation=True)
    assert sorted(folds(run.validation_split).pop() for run in runs) == list(range(NUM_FOLDS))


def test_cross_trains_on_one_origin_and_tests_on_all_of_another():
    (run,) = experiments.make_runs(
        "cross", ("brainmaps",), test_sources=("allen_ccfv3/200um",), validation=True
    )
    assert run.name == "brainmaps_to_allen_ccfv3"
    assert run.train_sources == ("brainmaps",) and run.test_sources == ("allen_ccfv3/200um",)
    # The last fold validates; the gap slices (bordering it) stay out of training.
    assert run.train_split == "fold0+fold1+fold2+fold3"
    assert run.validation_split == "fold4"
    assert run.test_split == "all"
    (run,) = experiments.make_runs(
        "cross", ("brainmaps",), test_sources=("allen_ccfv3/200um",), validation=False
    )
    assert (run.train_split, run.validation_split, run.test_split) == ("all", None, "all")


@pytest.mark.parametrize(
    ("train", "test"),
    [
        (("brainmaps",), ("brainmaps",)),
        # Another config of a training dataset is still the same origin.
        (("allen_ccfv3/200um",), ("allen_ccfv3/100um",)),
        (("brainmaps", "brain_phantom/tiny"), ("allen_ccfv3/200um", "brain_phantom/default")),
    ],
)
def test_cross_refuses_to_test_on_a_training_origin(train, test):
    with pytest.raises(ValueError, match="must not test on a training origin"):
        experiments.make_runs("cross", train, test_sources=test)


def test_matrix_is_cross_for_every_ordered_pair():
    sources = ("brainmaps", "allen_ccfv3/200um", "brain_phantom/tiny")
    runs = experiments.make_runs("matrix", sources, validation=False)
    pairs = [(run.train_sources, run.test_sources) for run in runs]
    expected = [((a,), (b,)) for a in sources for b in sources if a != b]
    assert sorted(pairs) == sorted(expected)
    assert len(runs) == 6 and len({run.name for run in runs}) == 6
    assert all(run.train_split == "all" and run.test_split == "all" for run in runs)


def test_make_runs_refuses_empty_or_incomplete_requests():
    with pytest.raises(ValueError, match="--datasets is empty"):
        experiments.make_runs("holdout", ())
    with pytest.raises(ValueError, match="needs --test_datasets"):
        experiments.make_runs("cross", ("brainmaps",))
    with pytest.raises(ValueError, match="at least two"):
        experiments.make_runs("matrix", ("brainmaps",))
    with pytest.raises(ValueError, match="unknown --experiment"):
        experiments.make_runs("bootstrap", ("brainmaps",))


def test_origin_name_drops_the_config():
    assert experiments.origin_name("allen_ccfv3/200um") == "allen_ccfv3"
    assert experiments.origin_name("brainmaps") == "brainmaps"


def test_transfer_is_the_generalization_table():
    runs = experiments.make_runs(
        "transfer", ("brain_phantom", "brainmaps", "allen_ccfv3/200um"), validation=True
    )
    pairs = {(run.train_sources, run.test_sources) for run in runs}
    assert pairs == {
        (("brainmaps",), ("allen_ccfv3/200um",)),
        (("allen_ccfv3/200um",), ("brainmaps",)),
        (("brain_phantom",), ("brainmaps", "allen_ccfv3/200um")),
        (("brain_phantom", "brainmaps"), ("allen_ccfv3/200um",)),
        (("brain_phantom", "allen_ccfv3/200um"), ("brainmaps",)),
    }
    for run in runs:  # never tested on an origin it trained on
        trained = {experiments.origin_name(s) for s in run.train_sources}
        assert not trained & {experiments.origin_name(s) for s in run.test_sources}
        assert run.test_split == "all"


def test_transfer_needs_a_phantom_and_two_real_datasets():
    with pytest.raises(ValueError, match="one brain_phantom dataset and at least two real"):
        experiments.make_runs("transfer", ("brainmaps", "allen_ccfv3/200um"))
    with pytest.raises(ValueError, match="one brain_phantom dataset and at least two real"):
        experiments.make_runs("transfer", ("brain_phantom", "brainmaps"))


def test_shuffled_split_is_random_slice_level_and_disjoint(phantom_data_dir):
    """The original study's split: every slice on exactly one side, specimens on both."""
    import tensorflow_datasets as tfds

    (run,) = experiments.make_runs("shuffled", ("brain_phantom/tiny",), validation=True)

    def keys(split):
        dataset = tfds.load(
            "brain_phantom/tiny",
            split=split,
            data_dir=phantom_data_dir,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        return {
            (ex["specimen"].decode(), int(ex["view"]), int(ex["slice_index"]))
            for ex in dataset.as_numpy_iterator()
        }

    train, validation, test = (
        keys(run.train_split),
        keys(run.validation_split),
        keys(run.test_split),
    )
    everything = keys("+".join(f"fold{k}" for k in range(NUM_FOLDS)))
    assert not (train & test) and not (train & validation) and not (validation & test)
    assert train | validation | test == everything
    assert 0.15 < len(test) / len(everything) < 0.25
    # The leak the leakage-free folds prevent: every specimen is on both sides.
    assert {s for s, _, _ in test} == {s for s, _, _ in train}
