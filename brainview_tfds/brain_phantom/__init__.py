"""The brain_phantom dataset (importing registers it with TFDS)."""

from brainview_tfds.brain_phantom.brain_phantom_dataset_builder import Builder

__all__ = ["Builder"]
