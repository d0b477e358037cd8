"""TFDS builders for brainview's mouse brain section datasets.

`import brainview_tfds` registers every builder, after which
`tfds.load("brain_phantom")`, `tfds.load("allen_ccfv3/200um")`, ... work.
`load_merged` reads several of them as one dataset.
"""

from brainview.labels import VIEWS
from brainview_tfds import (
    allen_ccfv3,
    allen_ccfv3_outlines,
    allen_nissl,
    brain_phantom,
    brain_phantom_outlines,
    brainmaps,
)
from brainview_tfds.merged import load_merged

__all__ = [
    "VIEWS",
    "allen_ccfv3",
    "allen_ccfv3_outlines",
    "allen_nissl",
    "brain_phantom",
    "brain_phantom_outlines",
    "brainmaps",
    "load_merged",
]
