"""brainview: which anatomical plane does a mouse brain section image show?

This folder, `pipelines/`, is the whole `brainview` package (setup.py maps
`brainview` -> `pipelines/`): `import brainview.X` is the file pipelines/X.py.
Its modules, in the order an image goes through them:

    labels.py          the view names and the dark-image threshold (leaf: stdlib only)
    image_files.py     any scan file -> RGB uint8, and its mean gray (leaf: NumPy, Pillow)
    preprocessing.py   the one preprocessing function, training and inference alike
    augmentation.py    training-time augmentation: hooks of that function; remounting
    training_input.py  TFDS splits -> training and evaluation batches
    experiments.py     which folds each run trains, validates and tests on
    model.py           EfficientNet-B0 + head, and the model card saved beside it
    devices.py         distribution strategy, precision and batch size for the devices
    predict.py         the forward pass, with mirror test-time augmentation
    gradcam.py         the forward pass with batched Grad-CAMs
    training.py        a training run: fit, resume, calibrate, evaluate, report
    evaluation.py      predictions on a split, metrics files, the non-brain check
    metrics.py         classification and calibration metrics
    non_brain.py       generated images that are not brain sections
    plots.py           confusion matrix and training curves
    classify/          classify_dir: scan folder -> CSV + CAM HDF5 (see its __init__)
    beam/              the same on Apache Beam: bin/classify_beam (imports Beam; nothing
                       else imports it)
    cli/               the absl binaries behind bin/

Only training_input.py (and the binaries that build or check datasets) import
the dataset builders, `brainview_tfds`; the builders in turn decode through
image_files.py and name views through labels.py. Inference never imports
TensorFlow Datasets.
"""

__version__ = "0.1.0"
