"""Experiments as lists of runs: which data each run trains, validates and tests on.

All splits are unions of the leakage-free folds written by the builders
(`fold0`..`fold4`; `all` adds the `gap` slices of volumes), so no specimen,
series or slab is ever on both sides of a run.

* holdout: per origin 80/20 (folds 0-3 / fold 4). With validation, fold 3 is
  held out of training to calibrate and monitor (60/20/20).
* cv: five runs, fold k tests, fold k+1 validates (if asked), the rest train.
* cross: train on some origins, test on every other origin (all of it).
* matrix: `cross` for every ordered pair of origins.
* transfer: the generalization table. With one phantom source and real
  sources A, B, ...: A -> B for every ordered pair, phantom -> all real
  sources, and phantom + A -> B for every ordered pair.
* release: train on everything (`all` of every dataset), test on nothing:
  the shipped model, whose recipe the other experiments measured; its
  calibration (`--temperature`, `--uncertain_below`) comes from them.

One experiment leaks on purpose, to measure what the leak is worth:

* shuffled: the original study's split, slices assigned at random (80/20,
  60/20/20 with validation), so neighbouring slices of one volume sit on both
  sides. TFDS stores every split in the order of its hashed example keys,
  so the first 80 % of each fold is a random 80 % of its slices.
"""

from __future__ import annotations

import dataclasses
import itertools

from brainview_tfds.core.features import NUM_FOLDS, fold_split_name

EXPERIMENTS = ("holdout", "cv", "cross", "matrix", "transfer", "shuffled", "release")
PHANTOM_ORIGIN = "brain_phantom"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run and the data it sees."""

    name: str  # also its output subdirectory
    train_sources: tuple[str, ...]
    train_split: str
    test_sources: tuple[str, ...]  # empty for a release run
    test_split: str
    validation_split: str | None = None  # of the train sources


def _folds(indices) -> str:
    return "+".join(fold_split_name(k) for k in sorted(indices))


def origin_name(source: str) -> str:
    """'allen_ccfv3/200um' -> 'allen_ccfv3' (the origin recorded in examples)."""
    return source.split("/")[0]


def holdout(sources: tuple[str, ...], validation: bool) -> list[Run]:
    test_fold, validation_fold = NUM_FOLDS - 1, NUM_FOLDS - 2
    train = set(range(NUM_FOLDS)) - {test_fold} - ({validation_fold} if validation else set())
    return [
        Run(
            name="holdout",
            train_sources=sources,
            train_split=_folds(train),
            test_sources=sources,
            test_split=fold_split_name(test_fold),
            validation_split=fold_split_name(validation_fold) if validation else None,
        )
    ]


def _percent_of_every_fold(start: int, end: int) -> str:
    return "+".join(f"{fold_split_name(k)}[{start}%:{end}%]" for k in range(NUM_FOLDS))


def shuffled_holdout(sources: tuple[str, ...], validation: bool) -> list[Run]:
    """A random slice-level split, as in the original study (leaks neighbouring slices)."""
    train_end = 60 if validation else 80
    return [
        Run(
            name="shuffled_holdout",
            train_sources=sources,
            train_split=_percent_of_every_fold(0, train_end),
            test_sources=sources,
            test_split=_percent_of_every_fold(80, 100),
            validation_split=_percent_of_every_fold(60, 80) if validation else None,
        )
    ]


def release(sources: tuple[str, ...]) -> list[Run]:
    """Everything trains; nothing is held out (see the module docstring)."""
    return [
        Run(
            name="release", train_sources=sources, train_split="all", test_sources=(), test_split=""
        )
    ]


def cross_validation(sources: tuple[str, ...], validation: bool) -> list[Run]:
    runs = []
    for test_fold in range(NUM_FOLDS):
        validation_fold = (test_fold + 1) % NUM_FOLDS
        excluded = {test_fold} | ({validation_fold} if validation else set())
        runs.append(
            Run(
                name=f"fold{test_fold}",
                train_sources=sources,
                train_split=_folds(set(range(NUM_FOLDS)) - excluded),
                test_sources=sources,
                test_split=fold_split_name(test_fold),
                validation_split=fold_split_name(validation_fold) if validation else None,
            )
        )
    return runs


def cross_dataset(
    train_sources: tuple[str, ...], test_sources: tuple[str, ...], validation: bool
) -> list[Run]:
    """Train on all of `train_sources` (minus a validation fold), test on all of the rest.

    With validation, the last fold validates and the `gap` slices (which border
    it) are left out of training; without, training uses everything.
    """
    overlap = {origin_name(s) for s in train_sources} & {origin_name(s) for s in test_sources}
    if overlap:
        raise ValueError(
            f"cross-dataset runs must not test on a training origin: {sorted(overlap)}"
        )
    name = (
        "+".join(origin_name(s) for s in train_sources)
        + "_to_"
        + "+".join(origin_name(s) for s in test_sources)
    )
    return [
        Run(
            name=name,
            train_sources=train_sources,
            train_split=_folds(range(NUM_FOLDS - 1)) if validation else "all",
            test_sources=test_sources,
            test_split="all",
            validation_split=fold_split_name(NUM_FOLDS - 1) if validation else None,
        )
    ]


def matrix(sources: tuple[str, ...], validation: bool) -> list[Run]:
    """`cross_dataset` for every ordered pair of distinct sources."""
    runs = []
    for train, test in itertools.permutations(sources, 2):
        runs.extend(cross_dataset((train,), (test,), validation))
    return runs


def transfer(sources: tuple[str, ...], validation: bool) -> list[Run]:
    """Every real -> real pair, phantom -> all real, phantom + real -> other real."""
    phantoms = [s for s in sources if origin_name(s) == PHANTOM_ORIGIN]
    real = tuple(s for s in sources if origin_name(s) != PHANTOM_ORIGIN)
    if len(phantoms) != 1 or len(real) < 2:
        raise ValueError(
            "--experiment=transfer needs one brain_phantom dataset and at least two real ones"
        )
    phantom = phantoms[0]
    runs = matrix(real, validation)
    runs.extend(cross_dataset((phantom,), real, validation))
    for train, test in itertools.permutations(real, 2):
        runs.extend(cross_dataset((phantom, train), (test,), validation))
    return runs


def make_runs(
    experiment: str,
    sources: tuple[str, ...],
    test_sources: tuple[str, ...] = (),
    validation: bool = True,
) -> list[Run]:
    if not sources:
        raise ValueError("--datasets is empty: name at least one dataset to train on")
    if experiment == "holdout":
        return holdout(sources, validation)
    if experiment == "cv":
        return cross_validation(sources, validation)
    if experiment == "cross":
        if not test_sources:
            raise ValueError("--experiment=cross needs --test_datasets (origins to test on)")
        return cross_dataset(sources, test_sources, validation)
    if experiment == "matrix":
        if len(sources) < 2:
            raise ValueError("--experiment=matrix needs at least two --datasets")
        return matrix(sources, validation)
    if experiment == "transfer":
        return transfer(sources, validation)
    if experiment == "shuffled":
        return shuffled_holdout(sources, validation)
    if experiment == "release":
        return release(sources)
    raise ValueError(f"unknown --experiment {experiment!r}; choose from {EXPERIMENTS}")
