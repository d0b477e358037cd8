"""The allen_nissl dataset (importing registers it with TFDS)."""

from brainview_tfds.allen_nissl.allen_nissl_dataset_builder import Builder

__all__ = ["Builder"]
