"""The brainmaps dataset (importing registers it with TFDS)."""

from brainview_tfds.brainmaps.brainmaps_dataset_builder import Builder

__all__ = ["Builder"]
