"""The allen_ccfv3_outlines dataset (importing registers it with TFDS)."""

from brainview_tfds.allen_ccfv3_outlines.allen_ccfv3_outlines_dataset_builder import Builder

__all__ = ["Builder"]
