"""classify_dir's input pipeline: the fast decode path gives the rows the Python reader gives.

The real pipeline (scan_input.scan_dataset: the walk in chunks, TensorFlow's
decoders with the Python reader behind them, preprocessing, padded batches)
runs twice over the same folders, once with TensorFlow's decoders and once
with every file read by the Python reader (Pillow, tifffile), and every row
must agree. The folders hold every fast-path format, the formats and layouts
only Pillow takes, and the bad-input corpus of test_classify_dir.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from brainview import image_files
from brainview.classify import scan_files, scan_input
from tests.classify_helpers import section_image, walk_order, write_bad_corpus

IMAGE_SIZE = 64  # working side 512
BATCH = 4


def _rows(scan_dir: str, native: bool, **options) -> list[dict]:
    dataset = scan_input.scan_dataset(
        os.fsencode(scan_dir),
        image_size=IMAGE_SIZE,
        mode="aligned",
        batch_size=BATCH,
        max_decode_side=image_files.MAX_DECODE_SIDE,
        native_decoders=native,
        **options,
    )
    rows = []
    for batch in dataset.as_numpy_iterator():
        for index in np.flatnonzero(batch["valid"]):
            rows.append({key: values[index] for key, values in batch.items()})
    return rows


def _decoded_paths(scan_dir: str, **options) -> list[bytes]:
    """The paths of the pipeline's decode half (no preprocessing to trace: quicker)."""
    dataset = scan_input.decoded_scans(
        os.fsencode(scan_dir),
        max_decode_side=image_files.MAX_DECODE_SIDE,
        target_side=512,
        **options,
    )
    return [scan["path"] for scan in dataset.as_numpy_iterator()]


def _assert_same_rows(fast: list[dict], python: list[dict]) -> None:
    assert [row["path"] for row in fast] == [row["path"] for row in python]
    for row, expected in zip(fast, python, strict=True):
        name = row["path"]
        for key in ("width", "height", "error", "blank", "valid"):
            assert row[key] == expected[key], (name, key, row[key], expected[key])
        np.testing.assert_array_equal(row["image"], expected["image"], err_msg=str(name))
        np.testing.assert_array_equal(row["frame"], expected["frame"], err_msg=str(name))
        if expected["error"]:
            assert np.isnan(row["mean_intensity"]) and np.isnan(expected["mean_intensity"])
        else:
            assert row["mean_intensity"] == pytest.approx(expected["mean_intensity"], abs=1e-4)


def _write_formats(directory: str) -> dict[str, str]:
    """One file per layout; returns name -> the decoder the pipeline must use."""
    rng = np.random.default_rng(5)
    os.makedirs(os.path.join(directory, "nested"))
    section = np.asarray(
        Image.fromarray(section_image(rng, 300, 420)).resize((840, 600), Image.Resampling.BICUBIC)
    )
    gray = section[..., 0]
    expected = {}

    def save(name: str, image: Image.Image, decoder: str, **options) -> None:
        image.save(os.path.join(directory, name), **options)
        expected[name] = decoder

    save("gray.png", Image.fromarray(gray), "tensorflow")
    save("rgb.png", Image.fromarray(section), "tensorflow")
    save("palette.png", Image.fromarray(section).convert("P"), "tensorflow")
    save("gray.jpg", Image.fromarray(gray), "tensorflow", quality=90)
    save("nested/rgb.jpg", Image.fromarray(section), "tensorflow", quality=90)
    save("rgb.bmp", Image.fromarray(section), "tensorflow")
    save("palette.gif", Image.fromarray(section).convert("P"), "tensorflow")
    big = np.tile(section, (3, 2, 1))  # 1800 x 1680: a JPEG decoded at 1/2 scale
    save("big.jpg", Image.fromarray(big), "tensorflow", quality=90)
    save("big.png", Image.fromarray(big), "tensorflow")  # reduced on the graph
    save(
        b"latin1 \xff\xe9.png".decode("utf-8", "surrogateescape"),
        Image.fromarray(gray),
        "tensorflow",
    )
    save("newline\nname.jpg", Image.fromarray(gray), "tensorflow")
    save("rgba.png", Image.fromarray(section).convert("RGBA"), "python")
    save("gray16.tif", Image.fromarray(gray.astype(np.uint16) * 200), "python")
    save("rgb.tif", Image.fromarray(section), "python")
    save("cmyk.jpg", Image.fromarray(section).convert("CMYK"), "python")
    save("huge.png", Image.fromarray(np.tile(gray, (4, 3))), "python")  # 2400 x 2520 > 2048
    with open(os.path.join(directory, "png_named.tif"), "wb") as file:
        Image.fromarray(gray).save(file, format="PNG")  # the name routes it to Python
    expected["png_named.tif"] = "python"
    return expected


def test_fast_path_and_python_reader_give_the_same_rows(tmp_path):
    directory = str(tmp_path / "scans")
    expected_decoders = _write_formats(directory)

    fast, python = _rows(directory, True), _rows(directory, False)

    _assert_same_rows(fast, python)
    decoders = {os.fsdecode(row["path"]): row["decoder"].decode() for row in fast}
    assert decoders == expected_decoders
    assert {row["decoder"] for row in python} == {b"python"}
    assert all(row["error"] == b"" for row in fast)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # bomb.png, refused
def test_bad_input_corpus_gives_the_same_rows_on_both_paths(tmp_path):
    """Truncated and corrupt files reach TensorFlow's decoders, fail there, and get
    Pillow's error row; unreadable, missing and looping files too."""
    directory = str(tmp_path / "bad")
    files = write_bad_corpus(directory)
    try:
        fast, python = _rows(directory, True), _rows(directory, False)
    finally:
        os.chmod(os.path.join(directory, "locked_dir"), 0o755)
        os.chmod(os.path.join(directory, "no_permission.png"), 0o644)
        shutil.rmtree(os.path.join(directory, "deep"))

    _assert_same_rows(fast, python)
    by_path = {row["path"]: row for row in fast}
    for name in (b"truncated.png", b"truncated.jpg"):
        assert by_path[name]["error"].startswith(b"cannot decode image data"), name
    assert by_path[b"huge_20000.png"]["decoder"] == b"python"
    assert by_path[b"latin1 \xff\xe9 bytes.png"]["decoder"] == b"tensorflow"
    assert len(fast) == len([f for f in files if f.expect != "absent"])


def test_python_runs_only_for_files_the_fast_path_does_not_take(tmp_path):
    directory = str(tmp_path / "scans")
    expected_decoders = _write_formats(directory)
    loaded = []

    def counting_load(scan_dir, entry, *args):
        loaded.append(entry.relative_path)
        return scan_files.load(scan_dir, entry, *args)

    paths = _decoded_paths(directory, load_scan=counting_load)

    python_files = sorted(os.fsencode(n) for n, d in expected_decoders.items() if d == "python")
    assert sorted(loaded) == python_files
    assert len(paths) == len(expected_decoders)


def test_python_only_files_skip_the_fast_path(tmp_path):
    """Scans a killed run blamed go to classify_dir's journaled reader, never to TensorFlow."""
    directory = str(tmp_path / "scans")
    expected_decoders = _write_formats(directory)
    fast = sorted(os.fsencode(n) for n, d in expected_decoders.items() if d == "tensorflow")
    dataset = scan_input.decoded_scans(
        os.fsencode(directory),
        max_decode_side=image_files.MAX_DECODE_SIDE,
        target_side=512,
        python_only=frozenset(fast[:1]),
    )
    decoders = {scan["path"]: scan["decoder"] for scan in dataset.as_numpy_iterator()}

    assert decoders[fast[0]] == b"python"
    assert all(decoders[path] == b"tensorflow" for path in fast[1:])


def test_walk_order_shards_and_skip_hold_across_chunks(tmp_path, monkeypatch):
    """The walk reaches tf.data in chunks (3 entries here): order, shards and resume
    skipping are those of scan_files.walk."""
    monkeypatch.setattr(scan_input, "CHUNK_SIZE", 3)
    root = tmp_path / "scans"
    names = [
        b"b.png",
        b"a/inner.png",
        b"a/z/deep.jpg",
        b"a-b.png",
        b"Z9.png",
        b"\xff\xfe.png",
        b"c/d/e/f.png",
        b"c/d.png",
        b"x.jpg",
        b"y.png",
        b"zz/1.png",
    ]
    rng = np.random.default_rng(1)
    for name in names:
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(section_image(rng, 40, 50)).save(
            path, format="JPEG" if name.endswith(b".jpg") else "PNG"
        )
    walked = [entry.relative_path for entry in scan_files.walk(os.fsencode(root))]
    assert walked == walk_order(names)

    assert _decoded_paths(str(root)) == walked
    # Shards and resuming happen before decoding: the Python reader alone is quicker to build.
    for shard, done in ((0, 0), (1, 2), (2, 1)):
        mine = walked[shard::3]
        paths = _decoded_paths(
            str(root),
            num_shards=3,
            shard_index=shard,
            resume_after=mine[done - 1] if done else None,
            native_decoders=False,
        )
        assert paths == mine[done:], (shard, done)


def test_chunks_keep_every_byte_of_a_name():
    entries = [
        scan_files.ScanEntry(b"ends with nul-free bytes \xff"),
        scan_files.ScanEntry(b"d/", "cannot list directory: Permission denied"),
        scan_files.ScanEntry("naïve.png".encode(), size=12),
    ]

    chunks = list(scan_files.chunks(iter(entries), 2))

    assert [len(chunk[0]) for chunk in chunks] == [2, 1]
    paths = [path for chunk in chunks for path in chunk[0]]
    assert paths == [entry.relative_path for entry in entries]
    assert [e for chunk in chunks for e in chunk[1]] == [
        b"",
        b"cannot list directory: Permission denied",
        b"",
    ]
    assert [s for chunk in chunks for s in chunk[2]] == [-1, -1, 12]


def test_decodes_larger_than_the_fast_paths_bound_are_all_journaled(tmp_path):
    """Past MAX_NATIVE_DECODE_SIDE the fast path's decodes could be large and unjournaled:
    every file then goes to the Python reader (classify_dir's journaled one)."""
    directory = str(tmp_path / "scans")
    expected_decoders = _write_formats(directory)
    assert "tensorflow" in expected_decoders.values()
    dataset = scan_input.decoded_scans(
        os.fsencode(directory),
        max_decode_side=scan_input.MAX_NATIVE_DECODE_SIDE + 1,
        target_side=512,
    )
    assert {scan["decoder"] for scan in dataset.as_numpy_iterator()} == {b"python"}
