"""brainmaps builder on a generated folder with real-world quirks (no real images)."""

import pytest
import tensorflow_datasets as tfds

from brainview_tfds import testing
from brainview_tfds.brainmaps import brainmaps_dataset_builder

# Tier: a TFDS build on generated dummy data (see tests/conftest.py).
pytestmark = pytest.mark.integration


class BrainmapsTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = brainmaps_dataset_builder.Builder
    EXAMPLE_DIR = testing.dummy_data_dir("brainmaps")
    # 7 images per view (PNG, upper-case JPG, 16-bit TIFF, one in a specimen
    # subfolder); notes.txt is skipped.
    SPLITS = {"fold0": 4, "fold1": 4, "fold2": 5, "fold3": 4, "fold4": 4}


if __name__ == "__main__":
    tfds.testing.test_main()
