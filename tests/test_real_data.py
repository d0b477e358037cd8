"""The builders on the real data in ../shared/data (skipped cleanly when absent)."""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

import brainview_tfds  # noqa: F401 - registers the builders
from brainview.labels import VIEWS

# Tier: TFDS builds of the real data (see conftest.py).
pytestmark = pytest.mark.integration


def _examples(name: str, data_dir: str, split: str = "all") -> list[dict]:
    return list(tfds.load(name, split=split, data_dir=data_dir).as_numpy_iterator())


def _view_counts(examples: list[dict]) -> dict[str, int]:
    return dict(collections.Counter(VIEWS[int(e["view"])] for e in examples))


def test_allen_200um_yields_every_slice_of_every_axis(real_data_dir):
    examples = _examples("allen_ccfv3/200um", real_data_dir)
    assert _view_counts(examples) == {"coronal": 66, "horizontal": 40, "sagittal": 57}
    shapes = {VIEWS[int(e["view"])]: e["image"].shape for e in examples}
    # Display orientation: coronal (SI x LR), horizontal (AP x LR), sagittal (SI x AP).
    assert shapes == {"coronal": (40, 57, 3), "horizontal": (66, 57, 3), "sagittal": (40, 66, 3)}
    assert all(e["resolution_um"] == 200 for e in examples)


def _mirror_correlation(image: np.ndarray) -> float:
    gray = image.mean(axis=2)
    a, b = gray.ravel(), gray[:, ::-1].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_allen_200um_slices_look_like_their_plane(real_data_dir):
    """Coronal and horizontal slices are left-right symmetric; sagittal slices are
    not symmetric front-to-back (their horizontal axis is anterior-posterior)."""
    symmetry = collections.defaultdict(list)
    for example in _examples("allen_ccfv3/200um", real_data_dir):
        if 0.3 <= example["slice_position"] <= 0.7 and example["mean_intensity"] > 10:
            symmetry[VIEWS[int(example["view"])]].append(_mirror_correlation(example["image"]))
    median = {view: float(np.median(values)) for view, values in symmetry.items()}
    assert median["coronal"] > 0.9, median
    assert median["horizontal"] > 0.9, median
    assert median["sagittal"] < 0.6, median


def test_allen_200um_splits_never_share_a_slab(real_data_dir):
    groups_by_split = {}
    for split in ["fold0", "fold1", "fold2", "fold3", "fold4", "gap"]:
        groups_by_split[split] = {
            e["group"] for e in _examples("allen_ccfv3/200um", real_data_dir, split)
        }
    folds = [f"fold{k}" for k in range(5)]
    for i, a in enumerate(folds):
        for b in folds[i + 1 :]:
            assert not groups_by_split[a] & groups_by_split[b], (a, b)


def test_brainmaps_yields_every_image_with_its_folder_view(real_data_dir):
    examples = _examples("brainmaps", real_data_dir)
    assert _view_counts(examples) == {"coronal": 357, "horizontal": 350, "sagittal": 179}
    for example in examples:
        folder = example["source_file"].decode().split("/")[0]
        assert folder == VIEWS[int(example["view"])]


def test_brainmaps_near_duplicates_stay_in_one_fold(real_data_dir):
    fold_of_group = {}
    for k in range(5):
        for example in _examples("brainmaps", real_data_dir, f"fold{k}"):
            assert fold_of_group.setdefault(example["group"], k) == k
    # Series of adjacent sections were found (many fewer groups than images).
    assert len(fold_of_group) < 0.7 * 886
