"""The names and thresholds that every stage of brainview agrees on.

A leaf module (standard library only): the dataset builders (`brainview_tfds`),
the training input and classify_dir all import these from here, so a label
index or the dark-image filter means the same thing at every stage, and
inference never has to import the builders (nor tensorflow_datasets) to know
them.
"""

from __future__ import annotations

# Order matters: it is the label index of the datasets' `view` ClassLabel and
# the order of the classifier's softmax outputs everywhere in the project.
VIEWS = ("coronal", "horizontal", "sagittal")

# The original study's dark-image filter keeps images whose mean gray level
# (0-255 scale, `image_files.mean_gray`) is above this. The builders record the
# mean of every example so training applies the filter at read time, and
# classify_dir reports such scans as `blank`.
DARK_IMAGE_THRESHOLD = 0.6
