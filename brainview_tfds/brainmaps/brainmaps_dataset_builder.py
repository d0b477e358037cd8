"""brainmaps: mouse brain section images from BrainMaps.org, plane from the folder.

The leakage groups need every image's thumbnail descriptor, so they are computed
where the build is launched; with Beam pipeline options the examples (decoding,
PNG encoding) are then generated in parallel, one image per work item.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from brainview import image_files, labels
from brainview_tfds.core import beam_generation, errors, features, manual_files, splits
from brainview_tfds.core.beam_generation import KeyExample

# Suffixes read as images (case-insensitive). Other files (notes, .DS_Store,
# Thumbs.db) are skipped and counted in the log.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
UNKNOWN_SPECIMEN = "unknown"
STAIN = "nissl and other histological stains, bright-field (BrainMaps.org)"
MAX_LISTED_BAD_FILES = 10


@dataclasses.dataclass(frozen=True)
class _ImageEntry:
    path: epath.Path
    relative_path: str  # key and source_file, e.g. "coronal/coronal_0.png"
    view: str
    specimen: str  # first subfolder below the view folder, or UNKNOWN_SPECIMEN


class Builder(
    beam_generation.BeamGenerationMixin,
    manual_files.ManualFilesMixin,
    tfds.core.GeneratorBasedBuilder,
):
    """BrainMaps.org images sorted by hand into coronal/ horizontal/ sagittal/."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    BrainMaps.org images cannot be downloaded automatically. Save mouse (Mus musculus)
    section images from https://brainmaps.org into manual_dir as
      coronal/     horizontal/     sagittal/
    (folder names are case-insensitive; PNG, JPEG, TIFF incl. 16-bit, BMP, GIF, WebP).
    Images in a subfolder, e.g. coronal/<specimen>/..., are grouped by that specimen so
    one brain never lands in two splits. `bin/build_datasets --brainmaps_dir=DIR`,
    e.g. ../shared/data/brainmaps (886 thumbnails: 357 coronal, 350 horizontal, 179 sagittal).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.features_dict(),
            supervised_keys=("image", "view"),
            homepage="https://brainmaps.org/",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        root = self.manual_files_dir(dl_manager, required=True)
        if not root.is_dir():
            raise errors.MissingSourceFileError(
                dataset=self.name,
                missing="the coronal/ horizontal/ sagittal/ image folders",
                searched=str(root),
                instructions=self.MANUAL_DOWNLOAD_INSTRUCTIONS,
            )
        entries = _find_images(root, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        groups = _leakage_groups(entries)
        if len(set(groups)) < features.NUM_FOLDS:
            raise errors.SourceDataError(
                f"brainmaps: only {len(set(groups))} distinct specimens/series under {root}; "
                f"at least {features.NUM_FOLDS} are needed so that every fold gets images"
            )
        fold_of_group = splits.group_folds(groups, [e.view for e in entries], features.NUM_FOLDS)
        by_fold: dict[int, list[tuple[_ImageEntry, str]]] = {}
        for entry, group in zip(entries, groups, strict=True):
            by_fold.setdefault(fold_of_group[group], []).append((entry, group))
        return {
            features.fold_split_name(fold): self._generate_examples(by_fold.get(fold, []))
            for fold in range(features.NUM_FOLDS)
        }

    def _generate_examples(
        self, entries: list[tuple[_ImageEntry, str]]
    ) -> Iterator[KeyExample] | Any:
        return self.examples_from(entries, functools.partial(_image_examples, origin=self.name))


def _image_examples(entry_and_group: tuple[_ImageEntry, str], origin: str) -> Iterator[KeyExample]:
    """The example of one image: one work item with Beam."""
    entry, group = entry_and_group
    decoded = _read(entry)
    yield (
        entry.relative_path,
        features.make_example(
            image=image_files.downscale_to_max_side(decoded.pixels, features.MAX_IMAGE_SIDE),
            view=entry.view,
            origin=origin,
            specimen=entry.specimen,
            group=group,
            source_file=entry.relative_path,
            stain=STAIN,
        ),
    )


def _find_images(root: epath.Path, instructions: str) -> list[_ImageEntry]:
    """All image files under the view folders, in a deterministic order."""
    view_dirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    missing = [view for view in labels.VIEWS if view not in view_dirs]
    if missing:
        raise errors.MissingSourceFileError(
            dataset="brainmaps",
            missing=", ".join(f"{view}/" for view in missing),
            searched=str(root),
            instructions=instructions,
        )
    entries, skipped = [], 0
    for view in labels.VIEWS:
        view_dir = view_dirs[view]
        for path in _files_below(view_dir):
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped += 1
                continue
            relative = path.relative_to(view_dir)
            specimen = relative.parts[0] if len(relative.parts) > 1 else UNKNOWN_SPECIMEN
            entries.append(
                _ImageEntry(
                    path=path,
                    relative_path=f"{view}/{relative.as_posix()}",
                    view=view,
                    specimen=specimen,
                )
            )
    if skipped:
        logging.info("brainmaps: skipped %d files that are not images", skipped)
    if not entries:
        raise errors.SourceDataError(f"brainmaps: no images found under {root}/{{coronal,...}}/")
    return entries


def _files_below(folder: epath.Path) -> Iterator[epath.Path]:
    """Files in `folder` and its subfolders, depth first, sorted by name."""
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.is_dir():
            yield from _files_below(path)
        else:
            yield path


def _read(entry: _ImageEntry) -> image_files.DecodedImage:
    try:
        return image_files.read_image(entry.path, max_side=features.MAX_IMAGE_SIDE)
    except image_files.ImageReadError as error:
        raise errors.SourceDataError(f"brainmaps: cannot read {entry.path}: {error}") from None


def _leakage_groups(entries: list[_ImageEntry]) -> list[str]:
    """Specimen folders where known; near-duplicate clusters where not.

    A flat folder of thumbnails holds adjacent sections of the same series that
    look almost identical; clustering them keeps each series on one side of
    every split. Reads every image once, so all unreadable files are reported
    together before anything is written.
    """
    descriptors, bad_files = [], []
    for entry in entries:
        try:
            descriptors.append(splits.image_descriptor(_read(entry).pixels))
        except errors.SourceDataError as error:
            bad_files.append(str(error))
    if bad_files:
        listed = "\n  ".join(bad_files[:MAX_LISTED_BAD_FILES])
        more = len(bad_files) - MAX_LISTED_BAD_FILES
        raise errors.SourceDataError(
            f"brainmaps: {len(bad_files)} unreadable image(s); fix or remove them:\n  {listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
    unknown = [i for i, e in enumerate(entries) if e.specimen == UNKNOWN_SPECIMEN]
    groups = [f"specimen/{e.specimen}" for e in entries]
    if unknown:
        cluster = splits.near_duplicate_groups(np.array([descriptors[i] for i in unknown]))
        for i, cluster_id in zip(unknown, cluster, strict=True):
            groups[i] = f"series/{unknown[cluster_id]:05d}"
    return groups
