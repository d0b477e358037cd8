"""Leakage-free fold assignment.

The original study split slices at random, so neighbouring, nearly identical
slices of one volume landed on both sides of the split. Here every example
belongs to a *leakage group* that never crosses a split:

* slices of a volume: contiguous slabs along the slicing axis; slabs are dealt
  round-robin to folds (so every fold samples several regions of the brain)
  and the slices around every slab boundary go to a separate `gap` split, so a
  train slice and a test slice are always at least `gap_um` apart;
* images of a specimen: the specimen is the group; groups are dealt to folds
  greedily so each fold gets a similar share of every view;
* images whose specimen is unknown (a flat folder of thumbnails): images that
  are near-duplicates of each other (adjacent sections of one series) are
  joined into one group by `near_duplicate_groups`.

Physical TFDS splits are `fold0` .. `fold{k-1}` (and `gap`); holdout and
k-fold experiments are unions of folds (see `pipelines/experiments.py`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from absl import logging

from brainview import image_files

GAP_FOLD = -1  # fold id of slices set aside between slabs of different folds
DEFAULT_SLABS_PER_FOLD = 2
DEFAULT_GAP_UM = 200.0
# Two images whose normalized 24x24 RGB descriptors correlate above this are
# treated as sections of one series (see near_duplicate_groups). Chosen by
# looking at pairs of the 886 BrainMaps thumbnails: above 0.88 nearly every
# pair is the same stain and series; 0.90 gives 448 groups (largest 59), none
# mixing views.
NEAR_DUPLICATE_CORRELATION = 0.90


def gap_slices(resolution_um: float, gap_um: float = DEFAULT_GAP_UM) -> int:
    """Number of slices set aside at each slab boundary (at least one)."""
    if resolution_um <= 0:
        return 1
    return max(1, round(gap_um / resolution_um))


def slab_folds(
    num_slices: int,
    num_folds: int,
    gap: int,
    slabs_per_fold: int = DEFAULT_SLABS_PER_FOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Assigns the slices of one axis to folds in contiguous slabs.

    Returns:
      (fold, slab): int arrays of length `num_slices`; `fold` is GAP_FOLD for
      the `gap` slices centred on each slab boundary. Slab `s` goes to fold
      `s % num_folds`, so adjacent slabs always belong to different folds.
      Every fold keeps at least one slice: on an axis too short for the
      requested gap, the gap shrinks (with a warning).
    """
    if num_folds < 2:
        raise ValueError(f"need at least 2 folds, got {num_folds}")
    if num_slices < 2 * num_folds:
        raise ValueError(f"{num_slices} slices are too few for {num_folds} folds with gaps")
    # Fewer slabs for short axes, so no slab is swallowed by its gaps.
    num_slabs = min(num_folds * slabs_per_fold, max(num_folds, num_slices // (gap + 2)))
    edges = np.round(np.linspace(0, num_slices, num_slabs + 1)).astype(int)
    widest_gap = int(np.diff(edges).min()) - 1
    if gap > widest_gap:
        logging.warning(
            "%d slices in %d slabs: gap reduced from %d to %d slices",
            num_slices,
            num_slabs,
            gap,
            widest_gap,
        )
        gap = widest_gap
    slab = np.searchsorted(edges, np.arange(num_slices), side="right") - 1
    fold = slab % num_folds
    for boundary in edges[1:-1]:
        first = max(0, boundary - (gap + 1) // 2)
        fold[first : boundary + gap // 2] = GAP_FOLD
    return fold, slab


def _stable_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def group_folds(groups: Sequence[str], strata: Sequence[str], num_folds: int) -> dict[str, int]:
    """Deals whole groups to folds, balancing every stratum (e.g. view) across folds.

    Deterministic: depends only on the (group, stratum) pairs, not their order.
    Largest groups are placed first; each goes to the fold where it increases
    the sum of squared per-stratum counts least.
    """
    if len(groups) != len(strata):
        raise ValueError("groups and strata must have the same length")
    stratum_names = sorted(set(strata))
    counts: dict[str, np.ndarray] = {}
    for group, stratum in zip(groups, strata, strict=True):
        counts.setdefault(group, np.zeros(len(stratum_names)))
        counts[group][stratum_names.index(stratum)] += 1
    order = sorted(counts, key=lambda g: (-counts[g].sum(), _stable_hash(g)))
    fold_counts = np.zeros((num_folds, len(stratum_names)))
    assignment = {}
    for group in order:
        cost = ((fold_counts + counts[group]) ** 2).sum(axis=1)
        fold = int(np.argmin(cost))  # ties go to the lowest fold index
        fold_counts[fold] += counts[group]
        assignment[group] = fold
    return assignment


def image_descriptor(pixels: np.ndarray, side: int = 24) -> np.ndarray:
    """A zero-mean, unit-norm vector of a small colour version of an image.

    The dot product of two descriptors is their normalized correlation: close
    to 1 for the same section or an adjacent section of the same series (the
    colour keeps series with different stains apart).
    """
    from PIL import Image

    image = Image.fromarray(image_files.as_rgb_uint8(pixels))
    small = np.asarray(image.resize((side, side), Image.Resampling.BOX), dtype=np.float64)
    vector = small.ravel() - small.mean()
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def near_duplicate_groups(
    descriptors: np.ndarray, threshold: float = NEAR_DUPLICATE_CORRELATION
) -> np.ndarray:
    """Connected components of the 'correlation > threshold' graph.

    Returns one component id per row of `descriptors` (N x D). The id is the
    smallest row index in the component, so it is stable for a fixed order.
    """
    count = len(descriptors)
    parent = np.arange(count)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    similarity = descriptors @ descriptors.T
    for i, j in zip(*np.nonzero(np.triu(similarity > threshold, k=1)), strict=True):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(count)])
