"""merge_shards checks what it joins: paths distinct and in walk order, CAM files of their CSVs.

The merge interleaved shard rows round robin without looking at them: shards made
before and after a file was added to the scan directory merged into duplicated and
shifted rows, and a CAM file of another shard or model was joined to a CSV whose rows
it does not describe, all with exit code 0. The shard outputs here are written by the
real writer (tests.classify_helpers.write_outputs) as classify_dir writes them, with
made-up predictions; the end-to-end merge of real shards is in test_classify_dir.py.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

from brainview.classify import merge_shards, output_readers, scan_files
from tests.classify_helpers import read_cam_file, read_csv_rows, write_outputs, writer_signature

# A directory listing, in walk order.
LISTING = [b"a.png", b"b\xff.png", b"c/x.png", b"c/y.png", b"d.png", b"e.png", b"f.png"]


def write_shards(tmp_path, listing: list[bytes], count: int, prefix: str = "shard", **changes):
    """`count` shard outputs of `listing` (shard k: rows k, k + count, ...); their paths."""
    shards = []
    for index in range(count):
        csv_path = str(tmp_path / f"{prefix}{index}.csv")
        cams_path = str(tmp_path / f"{prefix}{index}.h5")
        signature = writer_signature(num_shards=count, shard_index=index, **changes)
        write_outputs(csv_path, cams_path, listing[index::count], signature, segment_rows=2)
        shards.append((csv_path, cams_path))
    return shards


def test_shards_of_one_listing_merge_into_the_single_run(tmp_path):
    shards = write_shards(tmp_path, LISTING, 3)
    single_csv, single_cams = str(tmp_path / "single.csv"), str(tmp_path / "single.h5")
    write_outputs(single_csv, single_cams, LISTING)
    merged_csv, merged_cams = str(tmp_path / "merged.csv"), str(tmp_path / "merged.h5")
    rows = merge_shards.merge_shards([c for c, _ in reversed(shards)], merged_csv, merged_cams)
    assert rows == len(LISTING)
    assert [r["path"] for r in read_csv_rows(merged_csv)] == [
        scan_files.display_path(p) for p in LISTING
    ]
    merged, attributes = read_cam_file(merged_cams)
    single, _ = read_cam_file(single_cams)
    for name in ("paths", "statuses", "views"):
        np.testing.assert_array_equal(merged[name], single[name], err_msg=name)
    assert attributes["merged_from_shards"] == 3
    assert output_readers.read_manifest(merged_csv)["csv"] == "merged.csv"


def test_shards_that_saw_different_listings_are_refused(tmp_path):
    """Shard 0 ran before b2.png was added, shard 1 after: round robin would repeat
    c/x.png and put it before b2's neighbours. Refused, naming the row, and nothing
    is written."""
    before = write_shards(tmp_path, LISTING, 2)
    after_listing = [*LISTING[:2], b"b2.png", *LISTING[2:]]
    after = write_shards(tmp_path, after_listing, 2, prefix="after")
    merged_csv = str(tmp_path / "merged.csv")
    with pytest.raises(merge_shards.MergeError) as error:
        merge_shards.merge_shards([before[0][0], after[1][0]], merged_csv)
    message = str(error.value)
    assert "does not come after" in message and "walk order" in message, message
    assert "after1.csv" in message
    assert not [name for name in os.listdir(tmp_path) if name.startswith("merged")]


@pytest.mark.parametrize(
    "mix_up",
    ["swapped --shard_cams", "CAM file of another model", "CAM file of another listing"],
)
def test_cam_files_that_do_not_belong_to_their_csv_are_refused(tmp_path, mix_up):
    shards = write_shards(tmp_path, LISTING, 2)
    csvs, cams = [c for c, _ in shards], [h for _, h in shards]
    if mix_up == "swapped --shard_cams":
        cams = cams[::-1]
        expected = "shard_index"
    elif mix_up == "CAM file of another model":
        other = write_shards(tmp_path, LISTING, 2, prefix="other", model_sha256="f" * 16)
        cams[1] = other[1][1]
        expected = "model_sha256"
    else:  # same model, shard and row count; other files
        renamed = [p.replace(b".png", b".tif") for p in LISTING]
        other = write_shards(tmp_path, renamed, 2, prefix="other")
        cams[1] = other[1][1]
        expected = "its row 0 is 'b\\\\xff.tif', the CSV's is 'b\\\\xff.png'"
    merged_csv, merged_cams = str(tmp_path / "merged.csv"), str(tmp_path / "merged.h5")
    with pytest.raises(merge_shards.MergeError) as error:
        merge_shards.merge_shards(csvs, merged_csv, merged_cams, cams)
    message = str(error.value)
    assert "does not belong to" in message and expected in message, message
    assert not [name for name in os.listdir(tmp_path) if name.startswith("merged")]


def test_merging_over_a_shards_own_files_is_refused(tmp_path):
    shards = write_shards(tmp_path, LISTING, 2)
    csvs = [c for c, _ in shards]
    before = pathlib.Path(csvs[0]).read_bytes()
    with pytest.raises(merge_shards.MergeError, match="is one of the shards' files"):
        merge_shards.merge_shards(csvs, csvs[0])
    with pytest.raises(merge_shards.MergeError, match="is one of the shards' files"):
        merge_shards.merge_shards(csvs, str(tmp_path / "m.csv"), shards[1][1])
    assert pathlib.Path(csvs[0]).read_bytes() == before


def test_raw_path_inverts_the_csv_spelling_of_undecodable_bytes():
    for raw in (b"plain.png", b"\xff\xfe.png", "é.png".encode(), b"a\\x41.png"):
        assert merge_shards.raw_path(scan_files.display_path(raw)) == raw
