"""tf.data pipelines, model, training, evaluation, classification and CAMs.

Installed as `brainview.pipelines` (see setup.py for why).
"""
