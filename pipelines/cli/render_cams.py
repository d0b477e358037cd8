r"""Draws the CAMs of a classify_dir run over its scans: overlays, a contact sheet, a review page.

Usage: render_cams SCAN_DIR CAMS.h5 OUTPUT_DIR [flags]

Examples:
  bin/render_cams runs/sample_scans runs/demo/cams.h5 runs/demo/overlays \
      --csv=runs/demo/predictions.csv --select=lowest_confidence --count=12
  bin/render_cams SCANS cams.h5 overlays/ --rows=0,5,17
  # A page to review the run in a browser (OUTPUT_DIR/index.html, opens from disk):
  bin/render_cams runs/sample_scans runs/demo/cams.h5 runs/demo/review \
      --csv=runs/demo/predictions.csv --review --count=48
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from brainview.cli import startup

FLAGS = flags.FLAGS

flags.DEFINE_list("rows", [], "Row numbers to render (0 = first data row of the CSV).")
flags.DEFINE_string("csv", None, "The run's CSV, to choose rows with --select/--status.")
flags.DEFINE_enum(
    "select", "first", ["first", "lowest_confidence", "random"], "How to choose rows from --csv."
)
flags.DEFINE_integer(
    "count", 12, "How many rows to choose from --csv (with --review: per class).", lower_bound=1
)
flags.DEFINE_enum(
    "status", None, ["ok", "uncertain", "blank"], "Only rows with this status (with --csv)."
)
flags.DEFINE_bool(
    "review",
    False,
    "Write a review page instead: OUTPUT_DIR/index.html, per class (coronal, horizontal, "
    "sagittal, uncertain, blank, error) the --count least confident scans with their overlays, "
    "and the run's counts and model. Needs --csv.",
)


@flags.multi_flags_validator(["review", "csv"], "--review needs the run's --csv")
def _check_review_csv(values: dict) -> bool:
    return not values["review"] or bool(values["csv"])


@flags.multi_flags_validator(["rows", "csv"], "pass --rows, or --csv to choose rows")
def _check_rows_chosen(values: dict) -> bool:
    return bool(values["rows"] or values["csv"])


@flags.validator("rows", "--rows must be row numbers (0 = the first data row), e.g. 0,5,17")
def _check_rows(values: list[str]) -> bool:
    return all(value.isdigit() for value in values)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        raise app.UsageError("usage: render_cams SCAN_DIR CAMS.h5 OUTPUT_DIR [flags]")
    scan_dir, cams_path, output_dir = argv[1:]
    from brainview.classify import overlays, review_page

    if not os.path.exists(cams_path):
        print(f"error: {cams_path} not found (run classify_dir with --cams)", file=sys.stderr)
        return 2
    if FLAGS.review:
        page = review_page.write_review(scan_dir, FLAGS.csv, cams_path, output_dir, FLAGS.count)
        print(f"review page: {page}")
        return 0
    if FLAGS.rows:
        rows = [int(r) for r in FLAGS.rows]
    else:
        rows = overlays.choose_rows(FLAGS.csv, FLAGS.select, FLAGS.count, FLAGS.status)
    written = overlays.render_rows(scan_dir, cams_path, rows, output_dir)
    print(
        f"wrote {len(written)} files to {output_dir}"
        + (f" (contact sheet: {written[-1]})" if written else "")
    )
    return 0


def run() -> None:
    startup.run(main, sys.modules[__name__], imports_tensorflow=False)


if __name__ == "__main__":
    run()
