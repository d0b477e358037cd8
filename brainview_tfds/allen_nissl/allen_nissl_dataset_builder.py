"""allen_nissl: slices of the Allen Reference Atlas Nissl volume."""

from __future__ import annotations

from brainview_tfds.core import volume_builder

_ALLEN_CCF = "https://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf"


class Builder(volume_builder.VolumeSliceBuilder):
    """Coronal, horizontal and sagittal slices of the ARA Nissl volume."""

    SPECIMEN = "ara_nissl_p56"
    STAIN = "nissl, reconstructed 3-D volume registered to CCFv3"
    HOMEPAGE = "https://atlas.brain-map.org/"
    BUILDER_CONFIGS = volume_builder.make_configs(
        "ara_nissl_{resolution}.nrrd", _ALLEN_CCF + "/ara_nissl/{file_name}", manual_only=()
    )
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Offline path: put the Allen Reference Atlas Nissl volume in manual_dir
    (`bin/build_datasets --allen_nissl_dir=DIR`, or `tfds build --manual_dir=DIR`):
      ara_nissl_{10,25,50,100}.nrrd from
      https://download.alleninstitute.org/informatics-archive/current-release/mouse_ccf/ara_nissl/
      (the configs download these themselves when online).
    Any other resolution: `bin/build_datasets --allen_nissl_file=PATH.nrrd`.
    """
