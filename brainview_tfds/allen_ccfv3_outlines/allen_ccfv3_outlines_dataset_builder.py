"""allen_ccfv3_outlines: the CCFv3 annotation volume rendered as silhouettes and label maps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from etils import epath

from brainview_tfds.core import features, outlines, volume_builder, volumes

_ALLEN_CCF = "https://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf"
# Slices whose brain covers less of the image than this carry no plane information.
MIN_BRAIN_FRACTION = 0.03


class Builder(volume_builder.VolumeSliceBuilder):
    """Every slice of the CCFv3 annotation, once as a silhouette and once as a label map.

    Slices and folds are those of `allen_ccfv3` for the same resolution (the
    annotation is aligned voxel for voxel with the template and has its shape),
    so a fold of one never shares a slab with another fold of the other.
    """

    SPECIMEN = "ccfv3_average_template"  # the same brain as allen_ccfv3's slices
    STAIN = "outline"
    HOMEPAGE = "https://atlas.brain-map.org/"
    BUILDER_CONFIGS = volume_builder.make_configs(
        "annotation_{resolution}.nrrd",
        _ALLEN_CCF + "/annotation/ccf_2017/{file_name}",
        manual_only=(200,),
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Offline path: put the CCFv3 (2017) annotation NRRD in manual_dir
    (`bin/build_datasets --allen_ccfv3_outlines_dir=DIR`, or `tfds build --manual_dir=DIR`):
      annotation_{10,25,50,100}.nrrd from
      https://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf/annotation/ccf_2017/
      (configs 10um/25um/50um/100um download these themselves when online).
    Config 200um has no official file: it reads annotation_200.nrrd, e.g. the
    downsampled copy in ../shared/data/allen_ccfv3_200um/.
    """

    def _generate_examples(
        self,
        volume: volumes.Volume,
        resolution_um: float,
        intensity: tuple[float, float],
        plan: dict[str, tuple[Any, Any]],
        fold: int,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        del intensity  # labels are rendered, not scaled
        source_file = epath.Path(volume.source_file).name
        for view_number, view in enumerate(volumes.AXIS_VIEWS):
            slice_folds, slice_slabs = plan[view]
            count = volumes.num_slices(volume.voxels, view)
            for index in np.flatnonzero(slice_folds == fold):
                labels = volumes.display_slice(volume.voxels, view, int(index)).astype(np.int64)
                if np.mean(labels > 0) < MIN_BRAIN_FRACTION:
                    continue
                for kind_number, kind in enumerate(outlines.OUTLINE_KINDS):
                    rng = np.random.default_rng([view_number, int(index), kind_number])
                    yield (
                        f"{view}/{index:05d}/{kind}",
                        features.make_example(
                            image=outlines.render(kind, labels, rng),
                            view=view,
                            origin=self.name,
                            specimen=self.SPECIMEN,
                            group=f"{self.SPECIMEN}/{view}/slab{slice_slabs[index]:02d}",
                            source_file=source_file,
                            stain=f"{self.STAIN}: {kind}",
                            slice_index=int(index),
                            slice_position=int(index) / (count - 1),
                            resolution_um=resolution_um,
                        ),
                    )
