r"""Classifies scans with Apache Beam: classify_dir's CSV and CAMs, on any Beam runner.

Usage:
  bin/classify_beam SCANS OUT.csv [--model=plane-v1 | --model=MODEL.keras] [--cams=OUT.h5]
      [--runner=...]

SCANS is a local folder (walked exactly as bin/classify_dir walks it) or a file
pattern / folder on any Beam filesystem (gs://bucket/scans/**, s3://...,
hdfs://...); OUT.csv, OUT.h5 and MODEL may be on one too. The outputs are the
files bin/classify_dir writes for the same folder: the same columns, statuses
and row order, the same CAM file layout, and OUT.run.json at the end.

Locally (Beam's DirectRunner, or --runner=FnApiRunner, its in-process engine):
  bin/classify_beam /scans out.csv --cams=out.h5
On a cluster (see README, "Past one machine: Apache Beam"):
  bin/classify_beam gs://lab/scans/** gs://lab/out/predictions.csv \
      --model=gs://lab/models/model.keras --runner=DataflowRunner \
      --beam_pipeline_options=project=P,region=R,temp_location=gs://lab/tmp,\
sdk_container_image=REGION-docker.pkg.dev/P/brainview/beam:0.1.0
"""

from __future__ import annotations

import sys

from absl import app, flags

from brainview import released_models
from brainview.cli import startup

FLAGS = flags.FLAGS

# Model.
flags.DEFINE_string(
    "model",
    released_models.DEFAULT_MODEL,
    "A model shipped with brainview, by name (plane-v1: see its MODEL_CARD.md), or a "
    "model.keras written by bin/train, with its model.json beside it: a local path or one "
    "on a Beam filesystem (every worker copies it once).",
)
flags.DEFINE_bool(
    "tta",
    None,
    "Average each prediction over the image's four mirror images (default: as recorded "
    "for the model by bin/train).",
)

# Outputs.
flags.DEFINE_string("cams", None, "Write Grad-CAMs to this HDF5 file.")
flags.DEFINE_bool("overwrite", False, "Replace existing outputs.")
flags.DEFINE_integer(
    "output_shards",
    16,
    "Shards written in parallel before the final join (OUT.shards/); more for millions "
    "of scans (each shard's rows are sorted in one worker's memory).",
    lower_bound=1,
)
flags.DEFINE_bool("keep_shards", False, "Keep OUT.shards/ after joining them.")

# Beam.
flags.DEFINE_string(
    "runner",
    None,
    "Beam runner: DirectRunner (default; tries Prism first, which downloads its binary "
    "once), FnApiRunner (in-process, offline), PrismRunner, DataflowRunner, FlinkRunner, "
    "SparkRunner.",
)
flags.DEFINE_string(
    "beam_pipeline_options",
    None,
    "Other Beam pipeline options, comma-separated as for `tfds build`: e.g. "
    "direct_num_workers=2,direct_running_mode=multi_threading, or "
    "project=P,region=R,temp_location=gs://B/tmp,sdk_container_image=IMAGE for Dataflow.",
)

# Scans.
flags.DEFINE_integer(
    "batch_size",
    64,
    "Images per model call (Beam forms the batches; a bundle's last one may be smaller).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "max_decode_side",
    2048,
    "Images are decoded at most this large (longer side); bounds memory for huge scans.",
    lower_bound=1,
)
flags.DEFINE_bool("include_hidden", False, "Also classify hidden files (names starting with '.').")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        raise app.UsageError("usage: classify_beam SCANS OUT.csv [flags]; see --help")
    try:
        from brainview.beam import classify
    except ModuleNotFoundError as error:
        print(f"error: {error}: install Apache Beam with pip install .[beam]", file=sys.stderr)
        return 2
    config = classify.BeamClassifyConfig(
        scans=argv[1],
        output_csv=argv[2],
        model_path=FLAGS.model,
        cams_path=FLAGS.cams,
        tta=FLAGS.tta,
        batch_size=FLAGS.batch_size,
        max_decode_side=FLAGS.max_decode_side,
        include_hidden=FLAGS.include_hidden,
        output_shards=FLAGS.output_shards,
        keep_shards=FLAGS.keep_shards,
        overwrite=FLAGS.overwrite,
        runner=FLAGS.runner,
        pipeline_options=FLAGS.beam_pipeline_options,
    )
    try:
        summary = classify.classify(config)
    except classify.BeamClassifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.format())
    print(
        f"predictions: {config.output_csv}"
        + (f"\nCAMs: {config.cams_path}" if config.cams_path else "")
    )
    return 0


def run() -> None:
    startup.run(main, sys.modules[__name__], imports_tensorflow=True)


if __name__ == "__main__":
    run()
