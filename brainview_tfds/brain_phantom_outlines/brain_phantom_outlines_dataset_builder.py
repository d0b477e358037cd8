"""brain_phantom_outlines: the phantom brains rendered as silhouettes and label maps.

With Beam pipeline options, specimens are rendered in parallel (one work item
each), as in brain_phantom.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from brainview_tfds.brain_phantom import anatomy, phantom_volumes
from brainview_tfds.brain_phantom import brain_phantom_dataset_builder as phantom_builder
from brainview_tfds.core import beam_generation, features, outlines, volumes
from brainview_tfds.core.beam_generation import KeyExample

# Bands of density that stand in for regions in the phantom's label maps.
DENSITY_LEVELS = 6


class Builder(beam_generation.BeamGenerationMixin, tfds.core.GeneratorBasedBuilder):
    """Shape-only slices of the brain_phantom specimens (same seeds, same folds).

    The phantom's brains vary in proportions, pose and size far more than one
    atlas, so their outlines teach shape across the whole range of sections.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[phantom_builder.PhantomConfig]] = list(
        phantom_builder.Builder.BUILDER_CONFIGS
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.features_dict(),
            supervised_keys=("image", "view"),
            homepage="https://github.com/brainview/brainview",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # nothing to download
        config = self.builder_config
        return {
            features.fold_split_name(fold): self._generate_examples(
                range(fold, config.num_specimens, features.NUM_FOLDS)
            )
            for fold in range(features.NUM_FOLDS)
        }

    def _generate_examples(self, specimens: range) -> Iterator[KeyExample] | Any:
        config = self.builder_config
        examples_of = functools.partial(
            specimen_outline_examples,
            first_seed=config.first_seed,
            shape=config.shape,
            origin=self.name,
        )
        return self.examples_from(specimens, examples_of)


def specimen_outline_examples(
    number: int, *, first_seed: int, shape: tuple[int, int, int], origin: str
) -> Iterator[KeyExample]:
    """The outline examples of phantom specimen `number`: one Beam worker's work item."""
    resolution_um = 1000 * anatomy.VOLUME_EXTENT_MM[0] / shape[0]
    threshold = phantom_builder.TISSUE_DENSITY
    seed = first_seed + number
    density, _, _ = phantom_volumes.make_specimen(seed, shape)
    specimen = f"phantom{seed:04d}"
    for view_number, view in enumerate(volumes.AXIS_VIEWS):
        count = volumes.num_slices(density, view)
        for index in range(count):
            section = volumes.display_slice(density, view, index)
            if np.mean(section > threshold) < phantom_builder.MIN_TISSUE_FRACTION:
                continue
            labels = outlines.quantize_density(section, DENSITY_LEVELS, threshold)
            for kind_number, kind in enumerate(outlines.OUTLINE_KINDS):
                rng = np.random.default_rng([seed, view_number, index, kind_number])
                yield (
                    f"{specimen}/{view}/{index:04d}/{kind}",
                    features.make_example(
                        image=outlines.render(kind, labels, rng),
                        view=view,
                        origin=origin,
                        specimen=specimen,
                        group=specimen,
                        source_file=f"{specimen} (generated, seed {seed})",
                        stain=f"outline: {kind}",
                        slice_index=index,
                        slice_position=index / (count - 1),
                        resolution_um=resolution_um,
                    ),
                )
