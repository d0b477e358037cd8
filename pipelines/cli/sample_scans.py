r"""Writes a folder of phantom section scans whose names give their true view.

For trying classify_dir without scans of one's own (make demo runs it):
nested folders, PNG, JPEG, 8/16-bit TIFF and BMP, sections mounted at any
rotation, bright- and dark-field, from phantom specimens the brain_phantom
dataset does not hold. Names like `slide_002/s0013_horizontal.jpg` make them
a labelled test set (classify_dir --score_by_name).

Example:
  python -m brainview.cli.sample_scans --output_dir=runs/sample_scans --count=48
"""

from __future__ import annotations

import sys

from absl import app, flags

from brainview.cli import startup

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Folder to write the scans into.")
flags.DEFINE_integer("count", 48, "Number of scans.", lower_bound=1)
flags.DEFINE_integer("seed", 1000, "First phantom seed (the dataset uses 0..9).", lower_bound=10)
flags.mark_flag_as_required("output_dir")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from brainview_tfds.brain_phantom import sample_scans

    paths = sample_scans.write_sample_scans(FLAGS.output_dir, FLAGS.count, FLAGS.seed)
    print(f"wrote {len(paths)} scans below {FLAGS.output_dir}")
    return 0


def run() -> None:
    startup.run(main, sys.modules[__name__], imports_tensorflow=True)


if __name__ == "__main__":
    run()
