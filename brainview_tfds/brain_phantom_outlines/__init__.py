"""The brain_phantom_outlines dataset (importing registers it with TFDS)."""

from brainview_tfds.brain_phantom_outlines.brain_phantom_outlines_dataset_builder import Builder

__all__ = ["Builder"]
