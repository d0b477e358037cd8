"""brainview: which anatomical plane does a mouse brain section image show?

`brainview.pipelines` holds the tf.data pipelines, model, training, evaluation
and classification code; `brainview.cli` the absl binaries behind `bin/`.
"""

__version__ = "0.1.0"
