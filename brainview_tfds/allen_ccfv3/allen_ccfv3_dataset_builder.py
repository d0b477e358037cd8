"""allen_ccfv3: slices of the Allen Mouse Brain CCFv3 average template."""

from __future__ import annotations

from brainview_tfds.core import volume_builder

_ALLEN_CCF = "https://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf"


class Builder(volume_builder.VolumeSliceBuilder):
    """Coronal, horizontal and sagittal slices of the CCFv3 average template."""

    SPECIMEN = "ccfv3_average_template"
    STAIN = "serial two-photon autofluorescence (population average)"
    HOMEPAGE = "https://atlas.brain-map.org/"
    BUILDER_CONFIGS = volume_builder.make_configs(
        "average_template_{resolution}.nrrd",
        _ALLEN_CCF + "/average_template/{file_name}",
        # No official 200 um file; ../shared/data/allen_ccfv3_200um has one.
        manual_only=(200,),
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Offline path: put the CCFv3 average template NRRD in manual_dir
    (`bin/build_datasets --allen_ccfv3_dir=DIR`, or `tfds build --manual_dir=DIR`):
      average_template_{10,25,50,100}.nrrd from
      https://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf/average_template/
      (configs 10um/25um/50um/100um download these themselves when online).
    Config 200um has no official file: it reads average_template_200.nrrd, e.g. the
    downsampled copy in ../shared/data/allen_ccfv3_200um/.
    Any other resolution: `bin/build_datasets --allen_ccfv3_file=PATH.nrrd`.
    """
