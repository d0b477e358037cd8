"""Shared mechanics of the builders that slice one atlas NRRD volume.

A subclass names its source (file pattern, URL pattern, stain) and gets:
configs for every published resolution, the offline path (`manual_dir`), the
download path (TFDS download manager, checksums from `checksums.tsv`),
slices along all three axes, leakage-free slab folds with gaps, the shared
feature spec, and generation with Beam when given pipeline options (runs of
slices are the work items; workers read the volume file themselves). A
subclass that renders slices its own way (allen_ccfv3_outlines draws labels)
names a `SliceExamples` subclass and keeps all of that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from brainview_tfds.core import beam_generation, errors, features, manual_files, splits, volumes
from brainview_tfds.core.beam_generation import KeyExample


@dataclasses.dataclass
class VolumeConfig(tfds.core.BuilderConfig):
    """One volume file: its name, where to download it (None: manual only)."""

    resolution_um: float = 0.0
    file_name: str = ""
    url: str | None = None


DOWNLOADABLE_RESOLUTIONS = (10, 25, 50, 100)  # um; the Allen Institute's published files


def make_configs(
    file_pattern: str, url_pattern: str, manual_only: tuple[int, ...] = ()
) -> list[VolumeConfig]:
    """One config per resolution; `file_pattern` has a `{resolution}` field.

    `manual_only` resolutions get a config without a URL (built from manual_dir).
    """
    configs = []
    for resolution in DOWNLOADABLE_RESOLUTIONS + manual_only:
        file_name = file_pattern.format(resolution=resolution)
        downloadable = resolution in DOWNLOADABLE_RESOLUTIONS
        configs.append(
            VolumeConfig(
                name=f"{resolution}um",
                description=f"{file_name} ({resolution} um voxels)"
                + ("" if downloadable else "; no official file: manual_dir only"),
                resolution_um=float(resolution),
                file_name=file_name,
                url=url_pattern.format(file_name=file_name) if downloadable else None,
            )
        )
    return configs


def config_for_file(file_name: str, resolution_um: float, suffix: str = "") -> VolumeConfig:
    """A config for a local volume of any resolution (manual_dir only).

    Named "<resolution>um", or "<resolution>um_<suffix>" to tell apart several
    local files of one resolution.
    """
    return VolumeConfig(
        name=f"{resolution_um:g}um" + (f"_{suffix}" if suffix else ""),
        description=f"{file_name} ({resolution_um:g} um voxels), local file",
        resolution_um=resolution_um,
        file_name=file_name,
        url=None,
    )


# Slices per work item with Beam: enough that a worker's PNG encoding outweighs
# the item's overhead, few enough that a 10 um volume (1320 + 800 + 1140 slices)
# spreads over many workers.
SLICES_PER_WORK_ITEM = 16


class SliceExamples:
    """(view, slice indices) -> the examples of those slices of one volume.

    Pickled for Beam workers without the voxels: a worker reads the volume from
    its source file when it first needs it (once per copy of this object, which
    Beam reuses across work items), so the file must be on a path the workers
    can open. The local path passes the voxels already read.
    """

    def __init__(
        self,
        *,
        volume: volumes.Volume,
        resolution_um: float,
        intensity: tuple[float, float],
        slabs: dict[str, np.ndarray],
        origin: str,
        specimen: str,
        stain: str,
    ):
        self.volume: volumes.Volume | None = volume
        self.source_file = volume.source_file
        self.resolution_um = resolution_um
        self.intensity = intensity
        self.slabs = slabs
        self.origin = origin
        self.specimen = specimen
        self.stain = stain

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, volume=None)

    def __call__(self, work_item: tuple[str, tuple[int, ...]]) -> Iterator[KeyExample]:
        view, indices = work_item
        if self.volume is None:
            self.volume = volumes.read_nrrd(self.source_file)
        return self.examples(self.volume.voxels, view, indices)

    def examples(
        self, voxels: np.ndarray, view: str, indices: tuple[int, ...]
    ) -> Iterator[KeyExample]:
        """The examples of slices `indices` across `view`: intensity-scaled sections.

        Subclasses that render slices otherwise override this (the volume is
        already read; `self.source_file` and the rest are set).
        """
        source_file = epath.Path(self.source_file).name
        for section in volumes.iter_slices(voxels, view, self.intensity, indices):
            yield (
                f"{view}/{section.index:05d}",
                features.make_example(
                    image=section.pixels,
                    view=view,
                    origin=self.origin,
                    specimen=self.specimen,
                    group=f"{self.specimen}/{view}/slab{self.slabs[view][section.index]:02d}",
                    source_file=source_file,
                    stain=self.stain,
                    slice_index=section.index,
                    slice_position=section.position,
                    resolution_um=self.resolution_um,
                ),
            )


class VolumeSliceBuilder(
    beam_generation.BeamGenerationMixin,
    manual_files.ManualFilesMixin,
    tfds.core.GeneratorBasedBuilder,
    skip_registration=True,
):
    """Slices one NRRD volume along all three axes into leakage-free folds."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}

    # Set by subclasses, with BUILDER_CONFIGS = make_configs(...).
    SPECIMEN: ClassVar[str]
    STAIN: ClassVar[str]
    HOMEPAGE: ClassVar[str]
    # What a work item of slices becomes: a subclass that renders slices its own way
    # names its SliceExamples subclass here, and keeps the slices, folds and Beam path.
    SLICE_EXAMPLES: ClassVar[type[SliceExamples]] = SliceExamples

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.features_dict(),
            supervised_keys=("image", "view"),
            homepage=self.HOMEPAGE,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        volume = volumes.read_nrrd(self._locate_volume(dl_manager))
        resolution = volume.resolution_um or self.builder_config.resolution_um
        intensity = volumes.intensity_range(volume.voxels)
        gap = splits.gap_slices(resolution)
        plan = {}  # view -> (fold per slice, slab per slice)
        for view in volumes.AXIS_VIEWS:
            plan[view] = splits.slab_folds(
                volumes.num_slices(volume.voxels, view), features.NUM_FOLDS, gap
            )
        split_folds = {features.fold_split_name(k): k for k in range(features.NUM_FOLDS)}
        split_folds[features.GAP_SPLIT] = splits.GAP_FOLD
        return {
            name: self._generate_examples(volume, resolution, intensity, plan, fold)
            for name, fold in split_folds.items()
        }

    def _locate_volume(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
        """The volume file from manual_dir if there, else from the download manager."""
        config = self.builder_config
        manual_dir = self.manual_files_dir(dl_manager, required=config.url is None)
        if manual_dir is not None and (manual_dir / config.file_name).exists():
            return manual_dir / config.file_name
        if config.url:
            return dl_manager.download(config.url)
        raise errors.MissingSourceFileError(
            dataset=f"{self.name}/{config.name}",
            missing=config.file_name,
            searched=str(manual_dir),
            instructions=self.MANUAL_DOWNLOAD_INSTRUCTIONS,
        )

    def _generate_examples(
        self,
        volume: volumes.Volume,
        resolution_um: float,
        intensity: tuple[float, float],
        plan: dict[str, tuple[Any, Any]],
        fold: int,
    ) -> Iterator[KeyExample] | Any:
        work = []  # (view, slice indices): runs of this fold's slices
        for view in volumes.AXIS_VIEWS:
            indices = np.flatnonzero(plan[view][0] == fold).tolist()
            for start in range(0, len(indices), SLICES_PER_WORK_ITEM):
                work.append((view, tuple(indices[start : start + SLICES_PER_WORK_ITEM])))
        examples_of = self.SLICE_EXAMPLES(
            volume=volume,
            resolution_um=resolution_um,
            intensity=intensity,
            slabs={view: slabs for view, (_, slabs) in plan.items()},
            origin=self.name,
            specimen=self.SPECIMEN,
            stain=self.STAIN,
        )
        return self.examples_from(work, examples_of)
