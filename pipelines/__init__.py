"""brainview: which anatomical plane does a mouse brain section image show?

This folder, `pipelines/`, is the whole `brainview` package (setup.py maps
`brainview` -> `pipelines/`): tf.data pipelines, model, training, evaluation,
classification, CAMs, and the absl binaries behind `bin/` (`brainview.cli`).
"""

__version__ = "0.1.0"
