"""The one feature spec every brainview dataset shares.

All builders emit exactly these features so that any subset of datasets can be
merged into one `tf.data.Dataset` (see `brainview_tfds.merged`) and fed to the
same input pipeline. Fields that do not apply to a source hold a documented
sentinel instead of being absent (TFDS features cannot be optional). The view
names and the dark-image threshold come from `brainview.labels`, the leaf
module inference shares with the builders.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from brainview import image_files
from brainview.labels import VIEWS

# Images wider or taller than this are downscaled (area filter, aspect kept)
# before encoding. 1024 px keeps every official Allen slice up to 10 um at
# about native size while bounding the cost of full-resolution scans.
MAX_IMAGE_SIDE = 1024

# Sentinels for fields that do not apply to an example.
NO_SLICE_INDEX = -1  # images that are not slices of a volume we hold
NO_POSITION = -1.0  # relative position along an axis, unknown
UNKNOWN_RESOLUTION_UM = 0.0

# Physical TFDS splits are leakage-free folds, plus slices set aside as gaps
# between slabs of different folds (volumes only). See `core/splits.py`.
NUM_FOLDS = 5
GAP_SPLIT = "gap"


def fold_split_name(fold: int) -> str:
    return f"fold{fold}"


def features_dict() -> tfds.features.FeaturesDict:
    """Returns the shared FeaturesDict (a new instance per builder, as TFDS wants)."""
    return tfds.features.FeaturesDict(
        {
            # Always 3 channels: gray sources are replicated so every dataset
            # merges with every other. PNG keeps the pixels lossless.
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
            "view": tfds.features.ClassLabel(names=list(VIEWS)),
            # Name of the TFDS dataset the example came from, e.g. "allen_ccfv3".
            "origin": tfds.features.Text(),
            # Specimen / volume id. Examples sharing it are never split apart
            # unless they come from distant slabs of one volume.
            "specimen": tfds.features.Text(),
            # Leakage group: the unit that never crosses a split
            # ("<specimen>/<view>/slab<k>" for volume slices).
            "group": tfds.features.Text(),
            "slice_index": np.int32,
            "slice_position": np.float32,  # 0 (first slice) .. 1 (last slice)
            "source_file": tfds.features.Text(),
            "resolution_um": np.float32,
            # Mean gray level on a 0-255 scale of the stored image, so the
            # original study's dark-image filter (mean > 0.6) can be applied
            # at read time instead of deleting data.
            "mean_intensity": np.float32,
            # Free text: "nissl", "two-photon autofluorescence", "phantom", ...
            "stain": tfds.features.Text(),
        }
    )


def make_example(
    *,
    image: np.ndarray,
    view: str,
    origin: str,
    specimen: str,
    group: str,
    source_file: str,
    stain: str,
    slice_index: int = NO_SLICE_INDEX,
    slice_position: float = NO_POSITION,
    resolution_um: float = UNKNOWN_RESOLUTION_UM,
) -> dict[str, Any]:
    """Builds one example dict; computes the mean intensity from `image`.

    Args:
      image: uint8 array, HxWx3 (or HxW, replicated to 3 channels).
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    image = image_files.as_rgb_uint8(image)
    return {
        "image": image,
        "view": view,
        "origin": origin,
        "specimen": specimen,
        "group": group,
        "slice_index": np.int32(slice_index),
        "slice_position": np.float32(slice_position),
        "source_file": source_file,
        "resolution_um": np.float32(resolution_um),
        "mean_intensity": np.float32(image_files.mean_gray(image)),
        "stain": stain,
    }
