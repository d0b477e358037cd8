"""brain_phantom builder (generated data, nothing to download)."""

import pytest
import tensorflow_datasets as tfds

from brainview_tfds import testing
from brainview_tfds.brain_phantom import brain_phantom_dataset_builder

# Tier: a TFDS build on generated dummy data (see tests/conftest.py).
pytestmark = pytest.mark.integration


class BrainPhantomTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = brain_phantom_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]
    SKIP_CHECKSUMS = True  # nothing is downloaded
    EXAMPLE_DIR = testing.dummy_data_dir("brain_phantom")
    # 5 specimens, one per fold; slices with < 3% tissue are not emitted.
    SPLITS = {"fold0": 71, "fold1": 68, "fold2": 67, "fold3": 70, "fold4": 73}


if __name__ == "__main__":
    tfds.testing.test_main()
