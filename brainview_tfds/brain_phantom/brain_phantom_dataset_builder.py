"""brain_phantom: procedurally generated mouse-brain-like volumes, sliced on 3 axes.

The embedded default dataset: no download, deterministic, builds in seconds.
Each specimen is a random anatomy (`anatomy.sample_anatomy`) imaged
with a random appearance (bright- or dark-field, stain tint, noise, blur), so
the dataset doubles as a domain-randomization source for training. With Beam
pipeline options, specimens are generated in parallel (one work item each).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from brainview_tfds.brain_phantom import anatomy, phantom_volumes, rendering
from brainview_tfds.core import beam_generation, features, volumes
from brainview_tfds.core.beam_generation import KeyExample

# Slices whose tissue covers less of the image than this carry no plane
# information (empty ends of each axis); the phantom does not emit them.
MIN_TISSUE_FRACTION = 0.03
TISSUE_DENSITY = 0.02  # density above which a voxel counts as tissue


@dataclasses.dataclass
class PhantomConfig(tfds.core.BuilderConfig):
    num_specimens: int = 10
    shape: tuple[int, int, int] = (80, 48, 68)
    first_seed: int = 0


class Builder(beam_generation.BeamGenerationMixin, tfds.core.GeneratorBasedBuilder):
    """Slices of synthetic mouse brains in all three planes, grouped by specimen."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Initial release.",
        "1.1.0": "Less sensor noise on most specimens (closer to real scanners).",
    }
    BUILDER_CONFIGS: ClassVar[list[PhantomConfig]] = [
        PhantomConfig(name="default", description="10 specimens of 80x48x68 voxels (~165 um)."),
        PhantomConfig(
            name="tiny",
            description="5 specimens of 40x24x34 voxels, for tests and smoke runs.",
            num_specimens=5,
            shape=(40, 24, 34),
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.features_dict(),
            supervised_keys=("image", "view"),
            homepage="https://github.com/brainview/brainview",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # nothing to download
        config = self.builder_config
        # Whole specimens go to one fold each: specimen s -> fold s % NUM_FOLDS.
        return {
            features.fold_split_name(fold): self._generate_examples(
                range(fold, config.num_specimens, features.NUM_FOLDS)
            )
            for fold in range(features.NUM_FOLDS)
        }

    def _generate_examples(self, specimens: range) -> Iterator[KeyExample] | Any:
        config = self.builder_config
        examples_of = functools.partial(
            specimen_examples, first_seed=config.first_seed, shape=config.shape, origin=self.name
        )
        return self.examples_from(specimens, examples_of)


def specimen_examples(
    number: int, *, first_seed: int, shape: tuple[int, int, int], origin: str
) -> Iterator[KeyExample]:
    """The examples of phantom specimen `number`: the work item of one worker with Beam."""
    resolution_um = 1000 * anatomy.VOLUME_EXTENT_MM[0] / shape[0]
    seed = first_seed + number
    density, _, appearance = phantom_volumes.make_specimen(seed, shape)
    specimen = f"phantom{seed:04d}"
    for view in volumes.AXIS_VIEWS:
        count = volumes.num_slices(density, view)
        for index in range(count):
            section = volumes.display_slice(density, view, index)
            if np.mean(section > TISSUE_DENSITY) < MIN_TISSUE_FRACTION:
                continue
            rng = np.random.default_rng([seed, volumes.AXIS_VIEWS.index(view), index])
            yield (
                f"{specimen}/{view}/{index:04d}",
                features.make_example(
                    image=rendering.render_section(section, appearance, rng),
                    view=view,
                    origin=origin,
                    specimen=specimen,
                    group=specimen,
                    source_file=f"{specimen} (generated, seed {seed})",
                    stain=f"phantom: {appearance.describe()}",
                    slice_index=index,
                    slice_position=index / (count - 1),
                    resolution_um=resolution_um,
                ),
            )
