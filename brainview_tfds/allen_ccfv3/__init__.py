"""The allen_ccfv3 dataset (importing registers it with TFDS)."""

from brainview_tfds.allen_ccfv3.allen_ccfv3_dataset_builder import Builder

__all__ = ["Builder"]
