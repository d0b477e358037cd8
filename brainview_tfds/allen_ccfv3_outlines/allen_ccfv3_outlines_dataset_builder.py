"""allen_ccfv3_outlines: the CCFv3 annotation volume rendered as silhouettes and label maps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from etils import epath

from brainview_tfds.core import features, outlines, volume_builder, volumes
from brainview_tfds.core.beam_generation import KeyExample

_ALLEN_CCF = "https://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf"
# Slices whose brain covers less of the image than this carry no plane information.
MIN_BRAIN_FRACTION = 0.03


class OutlineExamples(volume_builder.SliceExamples):
    """Label slices -> one silhouette and one label map each (slices with brain only).

    A module-level class, so Beam workers can unpickle it; the labels are
    rendered, not intensity-scaled, so the volume's intensity range goes unused.
    """

    def examples(
        self, voxels: np.ndarray, view: str, indices: tuple[int, ...]
    ) -> Iterator[KeyExample]:
        source_file = epath.Path(self.source_file).name
        view_number = volumes.AXIS_VIEWS.index(view)
        count = volumes.num_slices(voxels, view)
        for index in indices:
            labels = volumes.display_slice(voxels, view, index).astype(np.int64)
            if np.mean(labels > 0) < MIN_BRAIN_FRACTION:
                continue
            for kind_number, kind in enumerate(outlines.OUTLINE_KINDS):
                rng = np.random.default_rng([view_number, index, kind_number])
                yield (
                    f"{view}/{index:05d}/{kind}",
                    features.make_example(
                        image=outlines.render(kind, labels, rng),
                        view=view,
                        origin=self.origin,
                        specimen=self.specimen,
                        group=f"{self.specimen}/{view}/slab{self.slabs[view][index]:02d}",
                        source_file=source_file,
                        stain=f"{self.stain}: {kind}",
                        slice_index=index,
                        slice_position=index / (count - 1),
                        resolution_um=self.resolution_um,
                    ),
                )


class Builder(volume_builder.VolumeSliceBuilder):
    """Every slice of the CCFv3 annotation, once as a silhouette and once as a label map.

    Slices and folds are those of `allen_ccfv3` for the same resolution (the
    annotation is aligned voxel for voxel with the template and has its shape),
    so a fold of one never shares a slab with another fold of the other. With
    Beam pipeline options, runs of slices are rendered in parallel, as for
    every volume builder.
    """

    SPECIMEN = "ccfv3_average_template"  # the same brain as allen_ccfv3's slices
    STAIN = "outline"
    HOMEPAGE = "https://atlas.brain-map.org/"
    SLICE_EXAMPLES = OutlineExamples
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
