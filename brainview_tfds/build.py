"""Building datasets and summarizing what was built (used by bin/build_datasets).

Kept out of the binary so tests and notebooks can build datasets the same way.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import tensorflow_datasets as tfds

from brainview import labels
from brainview_tfds.core import volume_builder, volumes


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """One dataset to build: TFDS name, config, and where its source files are."""

    name: str  # e.g. "allen_ccfv3"
    config: str | tfds.core.BuilderConfig | None = None
    manual_dir: str | None = None

    @property
    def full_name(self) -> str:
        if self.config is None:
            return self.name
        config_name = self.config if isinstance(self.config, str) else self.config.name
        return f"{self.name}/{config_name}"


def request_for_volume_file(name: str, path: str) -> BuildRequest:
    """A request for a local NRRD volume of any resolution (read from its header)."""
    resolution = volumes.read_resolution_um(path)
    if resolution <= 0:
        raise volumes.VolumeReadError(
            f"{path}: the NRRD header records no voxel size ('space directions' or 'spacings')"
        )
    file_name = os.path.basename(path)
    manual_dir = os.path.dirname(os.path.abspath(path))
    predefined = {c.name: c for c in tfds.builder_cls(name).BUILDER_CONFIGS}
    config = volume_builder.config_for_file(file_name, resolution)
    if config.name in predefined:
        if predefined[config.name].file_name == file_name:
            return BuildRequest(name=name, config=config.name, manual_dir=manual_dir)
        # Same resolution, another file: a config of its own, named after it.
        config = volume_builder.config_for_file(
            file_name, resolution, suffix=_config_suffix(file_name)
        )
    return BuildRequest(name=name, config=config, manual_dir=manual_dir)


def _config_suffix(file_name: str) -> str:
    stem = os.path.splitext(file_name)[0]
    return "".join(c if c.isalnum() else "_" for c in stem).strip("_").lower()


def build(
    request: BuildRequest, data_dir: str | None = None, overwrite: bool = False
) -> tfds.core.DatasetBuilder:
    """Builds (or reuses) one dataset; returns its builder."""
    builder_kwargs = {"data_dir": data_dir}
    if isinstance(request.config, tfds.core.BuilderConfig):
        builder_cls = tfds.builder_cls(request.name)
        builder = builder_cls(config=request.config, **builder_kwargs)
    else:
        builder = tfds.builder(request.full_name, **builder_kwargs)
    # TFDS's documented default manual_dir, spelled out so that the builders can
    # say where they looked (see core/manual_files.py).
    manual_dir = request.manual_dir or os.fspath(builder.data_dir_root / "downloads" / "manual")
    download_config = tfds.download.DownloadConfig(
        manual_dir=manual_dir,
        download_mode=(
            tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
            if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        ),
    )
    builder.download_and_prepare(download_config=download_config, file_format="tfrecord")
    return builder


@dataclasses.dataclass
class SplitSummary:
    """Counts of one split: examples per view, and how many the dark filter drops."""

    views: collections.Counter
    dark: int = 0

    @property
    def total(self) -> int:
        return sum(self.views.values())


def summarize(builder: tfds.core.DatasetBuilder) -> dict[str, SplitSummary]:
    """Examples per split x view (and dark images), read from the built records.

    Reads only the metadata features (images are not decoded).
    """
    summary = {}
    for split in sorted(builder.info.splits):
        dataset = builder.as_dataset(
            split=split, decoders={"image": tfds.decode.SkipDecoding()}
        ).map(lambda example: (example["view"], example["mean_intensity"]))
        counts: collections.Counter = collections.Counter()
        dark = 0
        for view, mean_intensity in dataset.batch(4096).as_numpy_iterator():
            counts.update(labels.VIEWS[int(v)] for v in view)
            dark += int((mean_intensity <= labels.DARK_IMAGE_THRESHOLD).sum())
        summary[split] = SplitSummary(views=counts, dark=dark)
    return summary


def format_summary_table(summaries: dict[str, dict[str, SplitSummary]]) -> str:
    """A plain-text table: dataset (origin) x split x view, plus totals."""
    header = (
        "dataset",
        "split",
        *labels.VIEWS,
        "total",
        f"dark<={labels.DARK_IMAGE_THRESHOLD}",
    )
    rows = []
    for dataset_name, splits in summaries.items():
        total = SplitSummary(views=collections.Counter())
        for split, summary in splits.items():
            rows.append(_summary_row(dataset_name, split, summary))
            total.views.update(summary.views)
            total.dark += summary.dark
        rows.append(_summary_row(dataset_name, "all", total))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: tuple) -> str:
        cells = [
            str(cell).ljust(w) if i < 2 else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def _summary_row(dataset_name: str, split: str, summary: SplitSummary) -> tuple:
    return (
        dataset_name,
        split,
        *(summary.views.get(view, 0) for view in labels.VIEWS),
        summary.total,
        summary.dark,
    )
