r"""Joins the outputs of a sharded classify_dir run into one CSV (and one CAM HDF5).

Example (after `classify_dir SCANS out-$I.csv --cams=out-$I.h5 --num_shards=8 --shard_index=$I`):
  bin/merge_shards out.csv out-0.csv out-1.csv ... out-7.csv --cams=out.h5

The merged files equal those of one run over the whole directory.
"""

from __future__ import annotations

import sys

from absl import app, flags

from brainview.cli import startup

FLAGS = flags.FLAGS

flags.DEFINE_string("cams", None, "Also merge the shards' CAM files into this HDF5 file.")
flags.DEFINE_list(
    "shard_cams",
    None,
    "The shards' CAM files, in the order of the shard CSVs (default: as recorded by each shard).",
)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        raise app.UsageError(
            "usage: merge_shards OUT.csv SHARD.csv [SHARD.csv ...] [--cams=OUT.h5]"
        )
    from brainview.classify import merge_shards

    try:
        rows = merge_shards.merge_shards(argv[2:], argv[1], FLAGS.cams, FLAGS.shard_cams)
    except merge_shards.MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"merged {len(argv) - 2} shards: {rows} rows -> {argv[1]}"
        + (f", {FLAGS.cams}" if FLAGS.cams else "")
    )
    return 0


def run() -> None:
    startup.run(main, sys.modules[__name__], imports_tensorflow=False)


if __name__ == "__main__":
    run()
