"""brain_phantom_outlines builder (generated data, nothing to download)."""

import tensorflow_datasets as tfds

from brainview_tfds import testing
from brainview_tfds.brain_phantom_outlines import brain_phantom_outlines_dataset_builder


class BrainPhantomOutlinesTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = brain_phantom_outlines_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]
    SKIP_CHECKSUMS = True  # nothing is downloaded
    EXAMPLE_DIR = testing.dummy_data_dir("brain_phantom_outlines")
    # brain_phantom/tiny's slices (71, 68, 67, 70, 73 per fold), two renderings each.
    SPLITS = {"fold0": 142, "fold1": 136, "fold2": 134, "fold3": 140, "fold4": 146}


if __name__ == "__main__":
    tfds.testing.test_main()
