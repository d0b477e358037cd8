"""Leakage-free fold assignment: slabs with gaps, whole groups, near-duplicates."""

import numpy as np
import pytest

from brainview_tfds.core import splits


@pytest.mark.parametrize("num_slices", [40, 57, 66, 132, 528, 1320])
@pytest.mark.parametrize("gap", [1, 2, 8, 20])
def test_slab_folds_keep_train_and_test_apart(num_slices, gap):
    if num_slices < 5 * (gap + 2):
        pytest.skip("axis too short for this gap (covered by the short-axis test)")
    fold, slab = splits.slab_folds(num_slices, num_folds=5, gap=gap)
    assert fold.shape == slab.shape == (num_slices,)
    assert set(np.unique(fold)) <= {splits.GAP_FOLD, 0, 1, 2, 3, 4}
    for test_fold in range(5):
        test = np.flatnonzero(fold == test_fold)
        train = np.flatnonzero((fold != test_fold) & (fold != splits.GAP_FOLD))
        if len(test) and len(train):
            # At least `gap` slices lie between any train slice and any test slice.
            distance = np.abs(test[:, None] - train[None, :]).min()
            assert distance > gap, (test_fold, distance)


def test_slab_folds_are_contiguous_and_every_fold_is_used():
    fold, slab = splits.slab_folds(66, num_folds=5, gap=1)
    assert np.all(np.diff(slab) >= 0)  # slabs are contiguous runs
    assert set(fold[fold >= 0]) == {0, 1, 2, 3, 4}
    for s in np.unique(slab):  # one slab, one fold
        assert len(set(fold[(slab == s) & (fold >= 0)])) == 1


def test_slab_folds_spread_each_fold_over_the_axis():
    fold, _ = splits.slab_folds(528, num_folds=5, gap=8)
    for k in range(5):
        where = np.flatnonzero(fold == k)
        # Two slabs per fold: the fold reaches both halves of the brain.
        assert where.min() < 264 < where.max()


def test_gap_slices_scale_with_resolution():
    assert splits.gap_slices(10) == 20
    assert splits.gap_slices(25) == 8
    assert splits.gap_slices(200) == 1
    assert splits.gap_slices(0) == 1  # unknown resolution


def test_group_folds_never_splits_a_group_and_balances_views():
    rng = np.random.default_rng(0)
    groups, views = [], []
    for g in range(60):
        view = ["coronal", "horizontal", "sagittal"][g % 3]
        for _ in range(rng.integers(1, 8)):
            groups.append(f"g{g}")
            views.append(view)
    assignment = splits.group_folds(groups, views, num_folds=5)
    assert set(assignment) == set(groups)
    per_fold_view = np.zeros((5, 3))
    for group, view in zip(groups, views, strict=True):
        per_fold_view[assignment[group], ["coronal", "horizontal", "sagittal"].index(view)] += 1
    share = per_fold_view / per_fold_view.sum(axis=0)
    assert np.all(np.abs(share - 0.2) < 0.08), share


def test_group_folds_do_not_depend_on_input_order():
    groups = [f"g{i % 17}" for i in range(100)]
    views = [["coronal", "sagittal"][i % 17 % 2] for i in range(100)]
    forward = splits.group_folds(groups, views, 5)
    backward = splits.group_folds(groups[::-1], views[::-1], 5)
    assert forward == backward


def test_near_duplicate_groups_join_similar_images_only():
    rng = np.random.default_rng(1)
    base = [rng.random((40, 40)) for _ in range(3)]
    images = [base[0], base[0] + 0.01 * rng.random((40, 40)), base[1], base[2], base[2] * 1.1]
    descriptors = np.array(
        [splits.image_descriptor((255 * im / im.max()).astype(np.uint8)) for im in images]
    )
    groups = splits.near_duplicate_groups(descriptors)
    assert groups.tolist() == [0, 0, 2, 3, 3]


@pytest.mark.parametrize("num_slices", [10, 18, 28])
def test_short_axes_keep_every_fold_with_a_smaller_gap(num_slices):
    fold, _ = splits.slab_folds(num_slices, num_folds=5, gap=7)
    assert set(fold[fold >= 0]) == {0, 1, 2, 3, 4}


def test_too_short_axes_are_refused():
    with pytest.raises(ValueError, match="too few"):
        splits.slab_folds(9, num_folds=5, gap=1)
