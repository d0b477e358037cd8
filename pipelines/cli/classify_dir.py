r"""Classifies every image below SCAN_DIR: a CSV of predictions and an HDF5 of Grad-CAMs.

Usage:
  bin/classify_dir SCAN_DIR OUT.csv [--cams=OUT.h5] [--model=plane-v1 | --model=PATH.keras]

CSV columns: path (relative to SCAN_DIR), view, confidence, p_coronal,
p_horizontal, p_sagittal, width, height, mean_intensity, status (ok, uncertain,
blank, error), error. One row per file, in a deterministic order.

Large runs:
  * --resume continues a killed run (nothing lost, nothing repeated);
  * --num_shards=N --shard_index=I (e.g. $SLURM_ARRAY_TASK_ID) splits the
    directory across nodes; bin/merge_shards joins the outputs;
  * all GPUs of a node are used (tf.distribute).
Bad files never stop a run: they get status "error" and a message. The exit
code is non-zero only for fatal problems (no model, unwritable output).
"""

from __future__ import annotations

import sys

from absl import app, flags

from brainview.cli import startup

FLAGS = flags.FLAGS

# Model.
flags.DEFINE_string(
    "model",
    "plane-v1",
    "A model shipped with brainview, by name (plane-v1: see its MODEL_CARD.md), or the path "
    "of a model.keras written by bin/train (its model.json beside it).",
)
flags.DEFINE_integer(
    "image_size", None, "Model input size (default: the size it was trained at).", lower_bound=32
)
flags.DEFINE_bool(
    "tta",
    None,
    "Average each prediction over the image's four mirror images (4x the model cost; "
    "default: as recorded for the model by bin/train).",
)

# Outputs.
flags.DEFINE_string("cams", None, "Write Grad-CAMs to this HDF5 file.")
flags.DEFINE_bool("resume", False, "Continue an interrupted run of the same command.")
flags.DEFINE_bool("overwrite", False, "Replace existing outputs.")
flags.DEFINE_string(
    "sort_into",
    None,
    "Also file the scans into DIR/coronal, horizontal, sagittal (status ok) and DIR/uncertain, "
    "blank, error, as relative links, e.g. to feed DIR/coronal to DeepSlice or ABBA. Rerunning "
    "completes or updates it.",
)
flags.DEFINE_bool("sort_copies", False, "--sort_into copies the scans instead of linking them.")
flags.DEFINE_bool(
    "score_by_name",
    False,
    "The scans' paths name their true view (a folder or file name word coronal, horizontal or "
    "sagittal, like the demo's sample scans): also print accuracy and a confusion table.",
)
flags.DEFINE_integer(
    "commit_every",
    2048,
    "Rows per durable commit; a kill loses at most this much work.",
    lower_bound=1,
)

# Scale.
flags.DEFINE_integer(
    "batch_size",
    0,
    "Images per batch across all GPUs; 0: sized for the devices present (64 on a CPU, "
    "512 per GPU at 224 px).",
    lower_bound=0,
)
flags.DEFINE_integer("num_shards", 1, "Split the directory into this many shards...", lower_bound=1)
flags.DEFINE_integer("shard_index", 0, "...and process this one (0-based).", lower_bound=0)
flags.DEFINE_integer(
    "max_decode_side",
    2048,
    "Images are decoded at most this large (longer side), with JPEG decoded at reduced "
    "scale; bounds memory for huge scans.",
    lower_bound=1,
)
flags.DEFINE_bool("include_hidden", False, "Also classify hidden files (names starting with '.').")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


@flags.multi_flags_validator(
    ["num_shards", "shard_index"], "--shard_index must be less than --num_shards"
)
def _check_shard(values: dict) -> bool:
    return values["shard_index"] < values["num_shards"]


@flags.multi_flags_validator(
    ["sort_into", "num_shards"],
    "--sort_into needs the whole run: classify without --num_shards to sort",
)
def _check_sort_unsharded(values: dict) -> bool:
    return not values["sort_into"] or values["num_shards"] == 1


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        raise app.UsageError("usage: classify_dir SCAN_DIR OUT.csv [flags]; see --help")
    scan_dir, output_csv = argv[1], argv[2]
    from brainview.classify import classify_dir, outputs, scoring, sorting

    if FLAGS.sort_into:
        run_outputs = tuple(path for path in (output_csv, FLAGS.cams) if path)
        try:
            sorting.check_sort_dir(FLAGS.sort_into, scan_dir, run_outputs)
        except sorting.SortError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    config = classify_dir.ClassifyConfig(
        scan_dir=scan_dir,
        output_csv=output_csv,
        model_path=FLAGS.model,
        cams_path=FLAGS.cams,
        batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size,
        num_shards=FLAGS.num_shards,
        shard_index=FLAGS.shard_index,
        resume=FLAGS.resume,
        overwrite=FLAGS.overwrite,
        commit_every=FLAGS.commit_every,
        max_decode_side=FLAGS.max_decode_side,
        include_hidden=FLAGS.include_hidden,
        tta=FLAGS.tta,
        progress=FLAGS.progress and sys.stderr.isatty(),
    )
    try:
        summary = classify_dir.classify_directory(config)
    except (classify_dir.ClassifyError, outputs.OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.format())
    if FLAGS.sort_into:
        try:
            sorted_scans = sorting.sort_scans(
                output_csv, scan_dir, FLAGS.sort_into, FLAGS.sort_copies
            )
        except (sorting.SortError, OSError) as error:
            print(f"error: cannot sort into {FLAGS.sort_into}: {error}", file=sys.stderr)
            return 2
        print(sorted_scans.format())
    if FLAGS.score_by_name:
        print(scoring.score_run(output_csv).format())
    if not summary.already_complete:
        print(f"predictions: {output_csv}" + (f"\nCAMs: {FLAGS.cams}" if FLAGS.cams else ""))
    if FLAGS.sort_into:
        print(f"sorted: {FLAGS.sort_into}")
    return 0


def run() -> None:
    startup.run(main, sys.modules[__name__], imports_tensorflow=True)


if __name__ == "__main__":
    run()
