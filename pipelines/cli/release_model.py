r"""Ships a trained release run as a named model inside the package, with its model card.

Example (after the runs named in configs/plane_v1.flags' header):
  bin/release_model --name=plane-v1 --run_dir=runs/plane_v1_release/release \
      --holdout=runs/plane_v1/holdout/metrics.json \
      --cross=runs/plane_v1_cross_to_brainmaps/x/metrics.json,...

Saves the run's weights (verified against its card's sha256; no optimizer state;
at most 20 MB) and its inference card into pipelines/models/<name>/, with the
holdout run's calibration, and writes MODEL_CARD.md from the runs' own metrics
files.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from brainview.cli import startup

FLAGS = flags.FLAGS

flags.DEFINE_string("name", None, "Name of the shipped model, e.g. plane-v1 (--model=NAME).")
flags.DEFINE_string("run_dir", None, "The release run's directory (holds model.keras).")
flags.DEFINE_string(
    "flags_file", None, "The release run's flags.txt (default: beside --run_dir, one level up)."
)
flags.DEFINE_string("holdout", None, "metrics.json of the holdout run of the same recipe.")
flags.DEFINE_list("cross", [], "metrics.json files of the recipe's cross-dataset runs.")
flags.DEFINE_list("extra", [], "metrics.json files of other runs to list for comparison.")
flags.DEFINE_string(
    "released_dir", None, "Where shipped models live (default: the package's models/ folder)."
)
flags.DEFINE_bool(
    "card_only",
    False,
    "Rewrite MODEL_CARD.md of the shipped model from the runs given (e.g. cross-dataset runs "
    "that finished after the release); the weights and model.json stay as they are.",
)
flags.mark_flags_as_required(["name", "run_dir", "holdout"])


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from brainview import model, release

    flags_file = FLAGS.flags_file or os.path.join(os.path.dirname(FLAGS.run_dir), "flags.txt")
    evidence = release.Evidence(
        holdout=FLAGS.holdout, cross=tuple(FLAGS.cross), extra=tuple(FLAGS.extra)
    )
    try:
        target = release.make_release(
            FLAGS.name,
            FLAGS.run_dir,
            flags_file,
            evidence,
            FLAGS.released_dir,
            card_only=FLAGS.card_only,
        )
    except (release.ReleaseError, model.ModelFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"released {FLAGS.name} -> {target}")
    return 0


def run() -> None:
    startup.run(main, sys.modules[__name__], imports_tensorflow=True)


if __name__ == "__main__":
    run()
