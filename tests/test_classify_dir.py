"""bin/classify_dir end to end: golden output, bad files, kill and resume, shards, CAMs.

The issue: classify_dir must classify a whole scan folder "never crashing on bad
files", survive being killed, split across nodes and merge back exactly. These
tests run the real binaries as subprocesses on generated folders, with a real
(untrained but deterministic) Keras model; nothing is mocked.

Tiers: the walk and output-file unit tests and the fatal errors that need no
model are fast; everything that starts a classification subprocess (~15-30 s
each on a 2-core CPU) is marked `slow` (CI runs both tiers).

Golden file: tests/golden/classify_dir_expected.csv is what classify_dir writes
for the golden folder (see classify_helpers.write_golden_scans) with the test
model. After an intended change of the outputs (preprocessing, decoding,
model, CSV format), regenerate it (that run rewrites the file, then fails on
purpose) and review the diff:

    BRAINVIEW_UPDATE_GOLDEN=1 python -m pytest -q tests/test_classify_dir.py -k golden
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from brainview import image_files
from brainview import model as model_lib
from brainview.classify import (
    classify_dir,
    decode_journal,
    output_readers,
    output_writer,
    outputs,
    overlays,
    scan_files,
    scan_input,
)
from brainview.labels import VIEWS
from tests.classify_helpers import (
    ABSENT,
    BINARY_TIMEOUT,
    BLANK,
    CLASSIFY_DIR,
    ERROR,
    GOOD,
    GOOD_OR_BLANK,
    HUGE_SIDE,
    MERGE_SHARDS,
    MODEL_IMAGE_SIZE,
    MODEL_TEMPERATURE,
    READABLE,
    RENDER_CAMS,
    REPO_ROOT,
    UNCERTAIN_BELOW,
    classify_args,
    corpus_expectations,
    finish_tool,
    kill_tool,
    read_cam_file,
    read_csv_rows,
    read_progress,
    run_tool,
    start_tool,
    wait_for_progress,
    walk_order,
    write_bad_corpus,
    write_synthetic_scans,
)

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
GOLDEN_CSV = os.path.join(GOLDEN_DIR, "classify_dir_expected.csv")
UPDATE_GOLDEN = os.environ.get("BRAINVIEW_UPDATE_GOLDEN") == "1"
# oneDNN may sum in another order on another CPU; outputs are printed with 6 decimals.
TOLERANCE = 2e-3
FLOAT_COLUMNS = ("confidence", *(f"p_{v}" for v in VIEWS), "mean_intensity")
EXACT_COLUMNS = ("path", "width", "height", "error")
CAM_DATASET_NAMES = {"cams", "paths", "views", "probabilities", "frames", "statuses"}
CAM_SIDE = MODEL_IMAGE_SIZE // 32  # EfficientNet-B0's last feature map

# Lines the TensorFlow/XLA runtime logs on its own (even with TF_CPP_MIN_LOG_LEVEL=3).
_RUNTIME_LOG = re.compile(
    r"^([IWEF]\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] |WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions|This TensorFlow binary is optimized)"
)


def tool_lines(stderr: str) -> list[str]:
    """What the tool itself printed on stderr (the runtime's own log lines removed)."""
    return [line for line in stderr.splitlines() if line.strip() and not _RUNTIME_LOG.match(line)]


def assert_one_line_error(code: int, stderr: str, *fragments: str) -> str:
    """A fatal error: exit code 2, one `error: ...` line naming the problem, no traceback."""
    lines = tool_lines(stderr)
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def read_bytes(path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def assert_same_cam_files(path: str, reference: str, ignore_attributes=("created",)) -> None:
    data, attributes = read_cam_file(path)
    expected, expected_attributes = read_cam_file(reference)
    assert data.keys() == expected.keys()
    for name in expected:
        assert data[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(data[name], expected[name], err_msg=name)
    for key in expected_attributes.keys() - set(ignore_attributes):
        assert np.all(attributes[key] == expected_attributes[key]), key


# --- The walk: lazy and deterministic (fast) ------------------------------------------------------


def test_walk_is_lazy_so_memory_does_not_grow_with_the_number_of_files(tmp_path, monkeypatch):
    """Taking the first file lists only the directories on the way to it.

    classify_dir feeds the walk to tf.data through a generator: if the walk were
    a list, memory (and the time before the first batch) would grow with the
    folder. 2000 sibling folders that sort after the first file must not be
    listed until the walk gets there. os.scandir is the real one, only counted.
    """
    (tmp_path / "a_first").mkdir()
    (tmp_path / "a_first" / "scan.png").write_bytes(b"x")
    for index in range(2000):
        (tmp_path / f"b_{index:04d}").mkdir()
    (tmp_path / "b_1999" / "last.png").write_bytes(b"x")
    listed: list[bytes] = []
    real_scandir = os.scandir

    def counting_scandir(path):
        listed.append(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    root = os.fsencode(tmp_path)
    walk = scan_files.walk(root)
    assert next(walk).relative_path == b"a_first/scan.png"
    assert listed == [root, os.path.join(root, b"a_first")]
    assert [entry.relative_path for entry in walk] == [b"b_1999/last.png"]
    assert len(listed) == 2 + 2000
    # A shard of the walk is lazy too.
    listed.clear()
    assert next(scan_files.shard(scan_files.walk(root), 3, 0)).relative_path == b"a_first/scan.png"
    assert len(listed) == 2


def test_walk_order_is_depth_first_by_raw_name_bytes_whatever_the_creation_order(tmp_path):
    """Resume and shards rely on one order: per directory sorted by name bytes (not by
    locale, case or decoded text), depth first; hidden entries skipped by default."""
    names = [
        b"b.png",
        b"B.png",
        b"a.png",
        b"a/inner.png",
        b"a/z/deep.png",
        b"a-b.png",
        b"Z10.png",
        b"Z9.png",
        "é.png".encode(),
        b"\xff\xfe.png",  # not UTF-8
        b"_.png",
        b".hidden.png",
        b".hidden_dir/x.png",
    ]
    root = os.fsencode(tmp_path)
    for name in reversed(names):  # creation order must not matter
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as file:
            file.write(b"x")
    walked = [entry.relative_path for entry in scan_files.walk(root)]
    assert walked == [
        b"B.png",
        b"Z10.png",
        b"Z9.png",
        b"_.png",
        b"a/inner.png",
        b"a/z/deep.png",
        b"a-b.png",
        b"a.png",
        b"b.png",
        "é.png".encode(),
        b"\xff\xfe.png",
    ]
    assert walked == walk_order([n for n in names if not n.startswith(b".")])
    assert [e.relative_path for e in scan_files.walk(root)] == walked  # repeatable
    with_hidden = [e.relative_path for e in scan_files.walk(root, include_hidden=True)]
    assert with_hidden[:2] == [b".hidden.png", b".hidden_dir/x.png"]
    # Shards partition the walk in order: index % num_shards.
    shards = [
        [e.relative_path for e in scan_files.shard(scan_files.walk(root), 3, k)] for k in (0, 1, 2)
    ]
    assert shards == [walked[0::3], walked[1::3], walked[2::3]]
    assert scan_files.display_path(b"\xff\xfe.png") == "\\xff\\xfe.png"


# --- Resume by path (fast) ----------------------------------------------------------------------


def _make_files(root, names: list[bytes]) -> None:
    for name in names:
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(b"x")


def _resume_point(root, rows: int, num_shards: int = 1, shard_index: int = 0):
    """The journal of a run whose first `rows` rows (of this shard) are committed now."""
    walked = scan_files.shard(scan_files.walk(os.fsencode(root)), num_shards, shard_index)
    digest, last = "", None
    for _, entry in zip(range(rows), walked, strict=False):
        digest, last = outputs.path_digest(digest, entry.relative_path), entry.relative_path
    return output_writer.ResumePoint(rows, last, digest)


def test_resume_continues_after_the_last_path_and_explains_a_changed_directory(tmp_path):
    """Resume skipped a *count* of walked files: a file added or removed before
    `--resume` duplicated one row and never classified another. Now files added after
    the last committed path are simply classified; any change among the committed ones
    is refused with what changed, for a finished run too."""
    root = tmp_path / "scans"
    _make_files(root, [b"a.png", b"b.png", b"c/d.png", b"c/e.png", b"f.png"])
    config = classify_dir.ClassifyConfig(str(root), str(tmp_path / "out.csv"), "unused.keras")

    def check(point, finished=False):
        classify_dir._check_unchanged(os.fsencode(root), config, point, finished)

    point = _resume_point(root, 4)
    assert point.last_path == b"c/e.png"
    check(point)
    _make_files(root, [b"c/e2.png", b"z.png"])  # after the last committed path: fine
    check(point)
    _make_files(root, [b"a2.png"])  # before it
    with pytest.raises(classify_dir.ClassifyError) as error:
        check(point)
    message = str(error.value)
    assert "the scan directory changed since its rows were written" in message
    assert "file 4 is now c/d.png, it was c/e.png" in message and "--overwrite" in message
    os.remove(root / "a2.png")
    os.rename(root / "b.png", root / "b2.png")  # same count, other files
    with pytest.raises(classify_dir.ClassifyError, match="among the first 4 were added, removed"):
        check(point)
    os.remove(root / "b2.png")
    with pytest.raises(classify_dir.ClassifyError, match=r"file 4 is now c/e2\.png"):
        check(point)

    finished = _resume_point(root, 6)
    check(finished, finished=True)
    _make_files(root, [b"zz.png"])
    with pytest.raises(classify_dir.ClassifyError) as error:
        check(finished, finished=True)
    assert "is complete, but the scan directory changed since it was written" in str(error.value)
    assert "were added after the 6 rows" in str(error.value)


def test_resume_check_of_a_shard_notices_files_added_in_other_shares(tmp_path):
    """With shards every later assignment (walk index % N) shifted too."""
    root = tmp_path / "scans"
    _make_files(root, [b"a.png", b"b.png", b"c.png", b"d.png", b"e.png", b"f.png"])
    config = classify_dir.ClassifyConfig(
        str(root), str(tmp_path / "out.csv"), "unused.keras", num_shards=2, shard_index=1
    )
    point = _resume_point(root, 2, num_shards=2, shard_index=1)  # b.png, d.png
    classify_dir._check_unchanged(os.fsencode(root), config, point, False)
    _make_files(root, [b"a1.png"])  # shard 0's share, but everything after it shifts
    with pytest.raises(classify_dir.ClassifyError, match=r"file 2 of this shard is now c\.png, it"):
        classify_dir._check_unchanged(os.fsencode(root), config, point, False)


def test_scan_input_starts_after_the_last_committed_path_even_if_it_is_gone(tmp_path):
    root = tmp_path / "scans"
    names = [b"a.png", b"b/c.png", b"b/d\xff.png", b"b.png", b"e.png"]
    for name in names:
        path = os.path.join(os.fsencode(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(path, format="PNG")

    def paths_after(last: bytes) -> list[bytes]:
        dataset = scan_input.scan_dataset(
            os.fsencode(root),
            image_size=32,
            mode="plain",
            batch_size=2,
            max_decode_side=64,
            resume_after=last,
        )
        return [
            p
            for batch in dataset
            for p, v in zip(batch["path"].numpy(), batch["valid"].numpy(), strict=True)
            if v
        ]

    assert paths_after(b"b/c.png") == [b"b/d\xff.png", b"b.png", b"e.png"]
    os.remove(os.path.join(os.fsencode(root), b"b/d\xff.png"))
    assert paths_after(b"b/d\xff.png") == [b"b.png", b"e.png"]


# --- Bad inputs (fast: the reader alone; slow: the binary) ----------------------------------------


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory):
    """(folder, expectations) of the bad-input corpus; permissions restored afterwards."""
    directory = str(tmp_path_factory.mktemp("bad") / "scans")
    files = write_bad_corpus(directory)
    yield directory, files
    os.chmod(os.path.join(directory, "locked_dir"), 0o755)
    os.chmod(os.path.join(directory, "no_permission.png"), 0o644)
    shutil.rmtree(os.path.join(directory, "deep"))  # deeper than PATH_MAX: remove it now


def expected_rows(files) -> list[bytes]:
    return walk_order([f.relative_path for f in files if f.expect != ABSENT])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # bomb.png, refused
def test_bad_inputs_are_walked_and_explained_one_by_one(bad_corpus):
    """The reader classify_dir uses, without TensorFlow: quick diagnosis when the
    end-to-end test below fails. Every file yields one entry, in the documented
    order, and every bad one a clear one-line reason. (In this process root reads
    files whatever their permissions.)"""
    directory, files = bad_corpus
    files = corpus_expectations(files, privileged=os.geteuid() == 0)
    root = os.fsencode(directory)
    entries = list(scan_files.walk(root))
    assert [e.relative_path for e in entries] == expected_rows(files)
    by_path = {f.relative_path: f for f in files}
    for entry in entries:
        started = time.perf_counter()
        scan = scan_files.load(root, entry, 2048)
        expected = by_path[entry.relative_path]
        if expected.expect == ERROR:
            assert expected.message in scan.error, (entry, scan.error)
            assert "\n" not in scan.error
        else:
            assert scan.error == "", (entry, scan.error)
            assert scan.pixels.dtype == np.uint8 and scan.pixels.shape[2] == 3
            assert max(scan.pixels.shape[:2]) <= 2048
        assert time.perf_counter() - started < 60, entry  # the 400 MP PNG takes ~2 s


@pytest.mark.slow
def test_bad_input_corpus_never_stops_the_run(bad_corpus, classifier_model, tmp_path):
    """One folder of broken, unreadable, special, huge and oddly named files: exit 0,
    one row per file in walk order, errors with clear messages, and a CSV/HDF5 pair
    that pandas, the csv module and h5py read with rows aligned. Permission bits apply
    to the run even when the tests run as root (it runs without root's override), so
    "permission denied" and unlistable-directory rows are produced end to end."""
    directory, files = bad_corpus
    files = corpus_expectations(files, privileged=False)
    csv_path, cams_path = str(tmp_path / "out.csv"), str(tmp_path / "cams.h5")
    started = time.perf_counter()
    result = run_tool(
        CLASSIFY_DIR,
        *classify_args(directory, csv_path, classifier_model, cams_path, "--batch_size=8"),
        timeout=600,  # a FIFO that is opened would block forever
        permissions_apply=True,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    rows = read_csv_rows(csv_path)
    expected_order = [scan_files.display_path(p) for p in expected_rows(files)]
    assert [row["path"] for row in rows] == expected_order
    assert len(set(expected_order)) == len(expected_order)
    by_path = {scan_files.display_path(f.relative_path): f for f in files}
    for row in rows:
        expected = by_path[row["path"]]
        allowed = {
            GOOD: {"ok", "uncertain"},
            BLANK: {"blank"},
            ERROR: {"error"},
            READABLE: {"ok", "uncertain", "blank"},
            GOOD_OR_BLANK: {"ok", "uncertain", "blank"},
        }[expected.expect]
        assert row["status"] in allowed, (row, expected)
        if row["status"] == "error":
            assert expected.message in row["error"], (row, expected)
            assert all(row[c] == "" for c in ("view", "confidence", "width", "height")), row
        else:
            assert row["error"] == "" and row["view"] in VIEWS, row  # blank rows too
            probabilities = [float(row[f"p_{v}"]) for v in VIEWS]
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-5), row
    huge = next(row for row in rows if row["path"] == "huge_20000.png")
    assert (huge["width"], huge["height"]) == (str(HUGE_SIDE), str(HUGE_SIDE))
    assert elapsed < 600  # the 400 MP image is decoded shrunk, in a few seconds
    odd = {row["path"] for row in rows}
    assert {"new\nline.png", "carriage\rreturn.png", 'double "quotes".png'} <= odd
    assert "latin1 \\xff\\xe9 bytes.png" in odd
    by_row = {row["path"]: row for row in rows}
    assert by_row["no_permission.png"]["error"] == "permission denied"
    assert by_row["locked_dir/"]["error"] == "cannot list directory: Permission denied"

    # pandas, as users load it (keep_default_na: an empty error is "", not NaN).
    frame = pd.read_csv(csv_path, keep_default_na=False, dtype=str)
    assert list(frame.columns) == list(outputs.CSV_COLUMNS)
    assert frame["path"].tolist() == expected_order
    assert frame["status"].tolist() == [row["status"] for row in rows]
    # The raw csv module: every record has every column (quoting intact).
    with open(csv_path, newline="", encoding="utf-8") as file:
        records = list(csv.reader(file))
    assert all(len(r) == len(outputs.CSV_COLUMNS) for r in records)
    assert len(records) == 1 + len(rows)

    data, _ = read_cam_file(cams_path)
    assert data["paths"].tolist() == expected_order
    assert data["statuses"].tolist() == [row["status"] for row in rows]
    failed = data["statuses"] == "error"
    assert np.all(data["views"][failed] == -1) and np.all(np.isnan(data["probabilities"][failed]))
    assert np.all(data["cams"][failed] == 0)
    counts = read_json(os.path.splitext(csv_path)[0] + ".run.json")["by_status"]
    assert counts["error"] == sum(f.expect == ERROR for f in files)


# --- Golden output (slow) -----------------------------------------------------------------------


def _top_two_margin(row: dict[str, str]) -> float:
    top, second = sorted((float(row[f"p_{v}"]) for v in VIEWS), reverse=True)[:2]
    return top - second


@pytest.mark.slow
def test_golden_csv_matches_the_checked_in_expectation(golden_run):
    """Decoding, preprocessing, model and CSV formatting together: a regression in
    any of them changes a path, size, status or probability of the golden folder."""
    if UPDATE_GOLDEN:
        os.makedirs(GOLDEN_DIR, exist_ok=True)
        shutil.copyfile(golden_run.csv, GOLDEN_CSV)
        # Never a pass: comparing the file with itself would prove nothing.
        pytest.fail(
            f"rewrote {GOLDEN_CSV}: review the diff (git diff tests/golden/), commit it, and "
            "run the test again without BRAINVIEW_UPDATE_GOLDEN"
        )
    with open(GOLDEN_CSV, encoding="utf-8") as file:
        assert file.readline().rstrip("\n").split(",") == list(outputs.CSV_COLUMNS)
    expected, actual = read_csv_rows(GOLDEN_CSV), read_csv_rows(golden_run.csv)
    assert [r["path"] for r in actual] == [r["path"] for r in expected]
    for want, got in zip(expected, actual, strict=True):
        where = want["path"]
        for column in EXACT_COLUMNS:
            assert got[column] == want[column], (where, column)
        for column in FLOAT_COLUMNS:
            if want[column] == "":
                assert got[column] == "", (where, column)
            else:
                assert float(got[column]) == pytest.approx(float(want[column]), abs=TOLERANCE), (
                    where,
                    column,
                )
        if want["view"] and _top_two_margin(want) > 2 * TOLERANCE:
            assert got["view"] == want["view"], where
        if abs(float(want["confidence"] or "nan") - UNCERTAIN_BELOW) <= TOLERANCE:
            assert got["status"] in {"ok", "uncertain"}, where
        else:
            assert got["status"] == want["status"], where
        if got["view"]:  # internal consistency, whatever the numerics
            probabilities = {v: float(got[f"p_{v}"]) for v in VIEWS}
            assert got["view"] == max(probabilities, key=probabilities.get), where
            assert float(got["confidence"]) == max(probabilities.values()), where
    statuses = {r["status"] for r in expected}
    assert statuses == {"ok", "uncertain", "blank", "error"}  # the folder covers them all


@pytest.mark.slow
def test_golden_cam_file_layout_attributes_and_alignment(golden_run):
    """The HDF5 a user opens with h5py: documented datasets, dtypes, chunked gzip
    storage, provenance attributes, and rows aligned with the CSV."""
    rows = read_csv_rows(golden_run.csv)
    count = len(rows)
    with h5py.File(golden_run.cams, "r") as file:
        assert set(file) == CAM_DATASET_NAMES
        shapes = {name: file[name].shape for name in file}
        assert shapes == {
            "cams": (count, CAM_SIDE, CAM_SIDE),
            "paths": (count,),
            "statuses": (count,),
            "views": (count,),
            "probabilities": (count, 3),
            "frames": (count, 4),
        }
        assert file["cams"].dtype == np.float16
        assert file["views"].dtype == np.int8
        assert file["probabilities"].dtype == np.float32
        assert file["frames"].dtype == np.float32
        for name in ("paths", "statuses"):
            assert h5py.check_string_dtype(file[name].dtype) is not None, name
        for name in file:
            dataset = file[name]
            assert dataset.chunks is not None, name
            assert dataset.compression == "gzip" and dataset.shuffle, name
        assert "description" in file["cams"].attrs
        attributes = dict(file.attrs)
    assert [str(v) for v in attributes["class_names"]] == list(VIEWS)
    assert attributes["image_size"] == MODEL_IMAGE_SIZE
    assert attributes["model_sha256"] == model_lib.file_digest(golden_run.model)
    assert attributes["model"] == os.path.abspath(golden_run.model)
    assert attributes["cam_layer"] == "efficientnetb0/top_activation"
    assert attributes["cam_resolution"].tolist() == [CAM_SIDE, CAM_SIDE]
    assert attributes["temperature"] == pytest.approx(MODEL_TEMPERATURE)
    assert attributes["preprocessing"] == "section"
    assert attributes["scan_dir"] == os.path.abspath(golden_run.scan_dir)
    assert (attributes["num_shards"], attributes["shard_index"]) == (1, 0)
    for key in ("brainview_version", "created", "cam_method"):
        assert attributes[key], key

    data, _ = read_cam_file(golden_run.cams)
    assert data["paths"].tolist() == [r["path"] for r in rows]
    assert data["statuses"].tolist() == [r["status"] for r in rows]
    failed = np.array([r["status"] == "error" for r in rows])
    views = [VIEWS.index(r["view"]) if r["view"] else -1 for r in rows]
    assert data["views"].tolist() == views
    csv_probabilities = np.array(
        [[float(r[f"p_{v}"]) if r[f"p_{v}"] else np.nan for v in VIEWS] for r in rows]
    )
    np.testing.assert_allclose(data["probabilities"], csv_probabilities, atol=6e-7)
    cams = data["cams"].astype(np.float32)
    peaks = cams.max(axis=(1, 2))
    assert np.all((cams >= 0) & (cams <= 1))
    classified = np.isin(data["statuses"], ["ok", "uncertain"])
    # Each map is normalized to its peak; a map is all zero only when no region supports
    # the predicted class, which must stay the exception.
    assert np.all(np.isin(peaks[classified], [0.0, 1.0]))
    assert np.mean(peaks[classified] == 1.0) >= 0.9
    # A blank scan's model input is empty: no evidence anywhere is a valid (all-zero) map.
    assert np.all(np.isin(peaks[data["statuses"] == "blank"], [0.0, 1.0]))
    assert np.all(cams[failed] == 0)
    assert np.all(np.isfinite(data["frames"][~failed]))

    manifest = read_json(os.path.splitext(golden_run.csv)[0] + ".run.json")
    assert manifest["rows"] == count
    assert manifest["by_status"] == {
        s: n for s in outputs.STATUSES if (n := sum(r["status"] == s for r in rows))
    }
    assert f"{count} images" in golden_run.stdout


# --- Kill and resume (slow) ---------------------------------------------------------------------


def assert_consistent_after_kill(csv_path: str, cams_path: str, reference_csv: bytes) -> int:
    """What a kill may leave: a committed prefix that equals the uninterrupted run's
    first rows byte for byte, CAM parts that open, and no half-written final HDF5.
    Returns the committed rows (-1 if the run had already finished)."""
    if os.path.exists(cams_path):
        with h5py.File(cams_path, "r") as file:  # complete, or absent: never half written
            assert set(file) == CAM_DATASET_NAMES
    progress = read_progress(csv_path)
    if progress is None:
        if os.path.exists(csv_path) and os.path.exists(os.path.splitext(csv_path)[0] + ".run.json"):
            return -1
        assert not os.path.exists(csv_path) or os.path.getsize(csv_path) == 0, "CSV without journal"
        return 0
    with open(csv_path, "rb") as file:
        written = file.read()
    committed = written[: progress["csv_bytes"]]
    assert len(written) >= progress["csv_bytes"]
    assert reference_csv.startswith(committed)
    assert len(read_csv_rows_from_bytes(committed)) == progress["rows_done"]
    rows_in_parts = 0
    for index in range(progress["parts"]):
        with h5py.File(os.path.join(cams_path + ".parts", f"part_{index:06d}.h5"), "r") as part:
            rows_in_parts += len(part["paths"])
    assert rows_in_parts == progress["rows_done"]
    return progress["rows_done"]


def read_csv_rows_from_bytes(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


@pytest.mark.slow
def test_killed_runs_resume_to_exactly_the_uninterrupted_output(classifier_model, tmp_path):
    """SIGKILL at startup, before the first commit, mid-run (twice) and at the last
    commit; `--resume` after each. The result equals an uninterrupted run byte for
    byte (batches restart on commit boundaries, so every image is computed in the
    same batch as before), with no row lost or repeated."""
    scans = str(tmp_path / "scans")
    total = len(write_synthetic_scans(scans, 200))
    flags = ("--batch_size=8", "--commit_every=16")
    reference_csv, reference_cams = str(tmp_path / "ref.csv"), str(tmp_path / "ref.h5")
    reference = run_tool(
        CLASSIFY_DIR, *classify_args(scans, reference_csv, classifier_model, reference_cams, *flags)
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    reference_bytes = read_bytes(reference_csv)
    csv_path, cams_path = str(tmp_path / "out.csv"), str(tmp_path / "out.h5")

    def start(*extra: str):
        return start_tool(
            CLASSIFY_DIR,
            *classify_args(scans, csv_path, classifier_model, cams_path, *flags, *extra),
            log_path=str(tmp_path / f"session{len(killed_at)}.log"),
        )

    # Each stage: when to kill the session (it returns once the moment has come).
    stages = {
        "during startup": lambda process: time.sleep(1.0),
        "before the first commit": lambda process: wait_for_progress(process, csv_path, 0),
        "after 48 rows": lambda process: wait_for_progress(process, csv_path, 48),
        "after 120 rows": lambda process: wait_for_progress(process, csv_path, 120),
        "at the last commit": lambda process: wait_for_progress(process, csv_path, total),
    }
    killed_at: dict[str, int] = {}
    for stage, wait in stages.items():
        process = start() if not killed_at else start("--resume")
        wait(process)
        finished_first = process.poll() is not None
        kill_tool(process)
        assert not finished_first or process.returncode == 0, stage
        killed_at[stage] = assert_consistent_after_kill(csv_path, cams_path, reference_bytes)
    # The mid-run kills really interrupted a run with work left to do.
    assert 48 <= killed_at["after 48 rows"] < total, killed_at
    assert killed_at["after 48 rows"] < killed_at["after 120 rows"] < total, killed_at

    code, log = finish_tool(start("--resume"))
    assert code == 0, log[-3000:]
    if killed_at["at the last commit"] == -1:  # the kill came after the run had finished
        assert "already complete" in log
    assert read_bytes(csv_path) == reference_bytes
    paths = [row["path"] for row in read_csv_rows(csv_path)]
    assert len(paths) == total == len(set(paths))
    assert_same_cam_files(cams_path, reference_cams)
    assert read_progress(csv_path) is None
    assert not os.path.exists(cams_path + ".parts")
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert read_json(tmp_path / "out.run.json")["rows"] == total


@pytest.mark.slow
def test_resume_refuses_other_settings_and_reruns_need_a_flag(
    classifier_model, other_classifier_model, tmp_path
):
    """An unfinished run is only continued by the same command: another model or
    setting is refused with one line naming what changed; a run is never silently
    redone or overwritten; `--resume` of a finished run is a successful no-op with the
    same settings, and refused with others."""
    scans = str(tmp_path / "scans")
    write_synthetic_scans(scans, 48, seed=11)
    csv_path, cams_path = str(tmp_path / "out.csv"), str(tmp_path / "cams.h5")
    base = classify_args(scans, csv_path, classifier_model, cams_path, "--batch_size=8")
    process = start_tool(CLASSIFY_DIR, *base, "--commit_every=8", log_path=str(tmp_path / "a.log"))
    progress = wait_for_progress(process, csv_path, 8)
    kill_tool(process)
    assert progress is not None and 8 <= progress["rows_done"] < 48, progress

    refusals = {
        "again without flags": (base, ("is an unfinished run", "--resume", "--overwrite")),
        "other model": (
            [
                scans,
                csv_path,
                f"--model={other_classifier_model}",
                f"--cams={cams_path}",
                "--resume",
            ],
            ("cannot resume", "different settings (model_sha256)", "--overwrite"),
        ),
        "other decode bound": (
            [*base, "--resume", "--max_decode_side=1024"],
            ("different settings (max_decode_side)",),
        ),
        "without CAMs": (
            [scans, csv_path, f"--model={classifier_model}", "--resume"],
            ("different settings (cams)",),
        ),
    }
    started = {
        name: start_tool(CLASSIFY_DIR, *args, log_path=str(tmp_path / f"{i}.log"))
        for i, (name, (args, _)) in enumerate(refusals.items())
    }
    before = read_bytes(csv_path)
    for name, process in started.items():
        code, log = finish_tool(process)
        assert_one_line_error(code, log, *refusals[name][1])
    assert read_bytes(csv_path) == before  # refused runs touch nothing

    code, log = finish_tool(
        start_tool(CLASSIFY_DIR, *base, "--resume", log_path=str(tmp_path / "r.log"))
    )
    assert code == 0, log[-3000:]
    assert len(read_csv_rows(csv_path)) == 48
    finished = read_bytes(csv_path)

    again = start_tool(CLASSIFY_DIR, *base, log_path=str(tmp_path / "again.log"))
    complete = start_tool(CLASSIFY_DIR, *base, "--resume", log_path=str(tmp_path / "done.log"))
    # --resume of the finished run with other settings: refused like an unfinished one
    # (it used to print "already complete" and leave the old predictions; `make
    # classify` resumes into one folder whatever SCANS is).
    other_scans = str(tmp_path / "other_scans")
    shutil.copytree(scans, other_scans)
    elsewhere = start_tool(
        CLASSIFY_DIR,
        *classify_args(other_scans, csv_path, classifier_model, cams_path, "--batch_size=8"),
        "--resume",
        log_path=str(tmp_path / "elsewhere.log"),
    )
    other_model = start_tool(
        CLASSIFY_DIR,
        *classify_args(scans, csv_path, other_classifier_model, cams_path, "--batch_size=8"),
        "--resume",
        log_path=str(tmp_path / "other_model.log"),
    )
    code, log = finish_tool(again)
    assert_one_line_error(code, log, "exists", "--overwrite")
    code, log = finish_tool(complete)
    assert code == 0 and "already complete" in log, log[-3000:]
    for process, changed in ((elsewhere, "scan_dir"), (other_model, "model_sha256")):
        code, log = finish_tool(process)
        assert_one_line_error(code, log, f"finished run made with different settings ({changed})")
    assert read_bytes(csv_path) == finished


def _copy_scan(scans: str, source: str, name: str) -> None:
    shutil.copyfile(os.path.join(scans, source), os.path.join(scans, name))


@pytest.mark.slow
def test_resume_follows_paths_one_run_at_a_time_and_never_calls_stale_outputs_complete(
    classifier_model, tmp_path
):
    """The issue's resume holes, through the binary: a second run on live outputs is
    refused (no interleaved rows) and a killed run's lock is taken over; a file added
    before the last committed one is refused with an explanation (it used to duplicate
    one row and skip another), one added after it is classified, and the result is
    byte for byte the run over the final folder; a finished run whose folder gained a
    file is not "already complete"."""
    scans, reference_scans = str(tmp_path / "scans"), str(tmp_path / "reference_scans")
    write_synthetic_scans(scans, 64, seed=5)
    shutil.copytree(scans, reference_scans)
    first_scan = "slide_000/scan_0000.png"
    _copy_scan(reference_scans, first_scan, "zzz_after.png")
    csv_path, reference_csv = str(tmp_path / "out.csv"), str(tmp_path / "reference.csv")
    base = classify_args(scans, csv_path, classifier_model, None, "--batch_size=8")
    reference = start_tool(
        CLASSIFY_DIR,
        *classify_args(reference_scans, reference_csv, classifier_model, None, "--batch_size=8"),
        log_path=str(tmp_path / "reference.log"),
    )

    def run(*extra: str, name: str) -> tuple[int, str]:
        return finish_tool(start_tool(CLASSIFY_DIR, *base, *extra, log_path=str(tmp_path / name)))

    first = start_tool(CLASSIFY_DIR, *base, "--commit_every=8", log_path=str(tmp_path / "1.log"))
    progress = wait_for_progress(first, csv_path, 16)
    os.kill(first.pid, signal.SIGSTOP)  # alive, holding its outputs
    assert progress is not None and 16 <= progress["rows_done"] < 64, progress
    code, log = run("--resume", name="2.log")
    assert_one_line_error(
        code, log, "being written by another classify_dir run", f"pid {first.pid}"
    )
    kill_tool(first)  # SIGKILL: its lock file stays behind
    assert os.path.exists(tmp_path / "out.lock")

    _copy_scan(scans, first_scan, "aaa_before.png")
    _copy_scan(scans, first_scan, "zzz_after.png")
    code, log = run("--resume", name="3.log")
    assert_one_line_error(code, log, "changed since its rows were written", "--overwrite")
    os.remove(os.path.join(scans, "aaa_before.png"))
    code, log = run("--resume", name="4.log")
    assert code == 0, log[-3000:]
    code, log = finish_tool(reference)
    assert code == 0, log[-3000:]
    assert read_bytes(csv_path) == read_bytes(reference_csv)
    outputs_left = {name for name in os.listdir(tmp_path) if not name.endswith(".log")}
    assert outputs_left == {"out.csv", "out.run.json", "reference.csv", "reference.run.json"} | {
        "scans",
        "reference_scans",
    }

    _copy_scan(scans, first_scan, "zzz_later.png")
    code, log = run("--resume", name="5.log")
    assert_one_line_error(code, log, "is complete, but the scan directory changed", "--overwrite")


def _write_rgb16_png_streamed(path: str, side: int) -> None:
    """A side x side 16-bit RGB PNG, written a row at a time: a dark frame with a bright
    band, a few hundred kB on disk for any size."""
    header = struct.pack(">IIBBBBB", side, side, 16, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    dark = b"\0" + bytes(6 * side)
    bright = b"\0" + b"\x30\x00" * 3 * side
    compressor = zlib.compressobj(1)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header))
        for row in range(side):
            data = compressor.compress(bright if side // 3 < row < 2 * side // 3 else dark)
            if data:
                file.write(chunk(b"IDAT", data))
        file.write(chunk(b"IDAT", compressor.flush()) + chunk(b"IEND", b""))


@pytest.mark.slow
def test_a_scan_that_got_the_run_killed_is_an_error_row_after_resume(classifier_model, tmp_path):
    """The out-of-memory killer's SIGKILL, during a decode that needs >1 GB, repeated on
    every --resume, which never finished. Killed while the decode journal shows that
    scan being decoded, the run resumes with an error row for it and classifies the
    rest."""
    scans = tmp_path / "scans"
    write_synthetic_scans(str(scans / "b"), 10, seed=3)
    huge = str(scans / "a_huge.png")
    _write_rgb16_png_streamed(huge, 7000)
    needed = image_files.estimated_decode_bytes(huge)
    assert needed >= decode_journal.SUSPECT_DECODE_BYTES  # ~1.2 GB: 49 MP of 16-bit RGB
    csv_path = str(tmp_path / "out.csv")
    args = classify_args(str(scans), csv_path, classifier_model, None, "--batch_size=8")
    journal = outputs.decode_journal_path(csv_path)
    started = b"start " + b"a_huge.png".hex().encode()
    first = start_tool(CLASSIFY_DIR, *args, log_path=str(tmp_path / "first.log"))
    deadline = time.monotonic() + BINARY_TIMEOUT
    while time.monotonic() < deadline and first.poll() is None:
        if os.path.exists(journal) and started in read_bytes(journal):
            break
        time.sleep(0.01)
    assert first.poll() is None, "the run ended before the journal showed the decode"
    kill_tool(first)  # as the OOM killer would
    assert not os.path.exists(os.path.splitext(csv_path)[0] + ".run.json")

    code, log = finish_tool(
        start_tool(CLASSIFY_DIR, *args, "--resume", log_path=str(tmp_path / "resume.log"))
    )
    assert code == 0, log[-3000:]
    rows = {row["path"]: row for row in read_csv_rows(csv_path)}
    assert len(rows) == 11
    assert rows["a_huge.png"]["status"] == "error"
    assert rows["a_huge.png"]["error"].startswith(
        "skipped: the run was killed while decoding this file, which needs about 1."
    )
    assert all(row["status"] != "error" for path, row in rows.items() if path != "a_huge.png")
    assert not os.path.exists(journal)


# Runs a tool (argv[2:]) whose files may not grow beyond a limit, set once its first
# rows are committed (the CSV is argv[1]): TensorFlow's own temporary files, written
# while it traces, stay unaffected. The kernel then refuses the CSV's growth (EFBIG) as
# it would refuse it on a full disk (ENOSPC): the same failed write for classify_dir.
_FILE_SIZE_LIMITED = """
import json, os, resource, runpy, signal, sys, threading, time
csv_path = sys.argv.pop(1)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process

def limit_once_classifying():
    while True:
        try:
            with open(csv_path + ".progress.json") as file:
                if json.load(file)["rows_done"] >= 8:
                    break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    limit = os.path.getsize(csv_path) + 1000
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

threading.Thread(target=limit_once_classifying, daemon=True).start()
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python SCRIPT` does: bin/_launch.py
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_full_disk_is_a_one_line_error_and_the_run_resumes(classifier_model, tmp_path):
    """Disk full in a commit escaped as a traceback. A file-size limit (RLIMIT_FSIZE)
    makes the kernel refuse the CSV's growth mid-run as a full disk would: one line,
    exit 2, and the same command with --resume then writes exactly the uninterrupted
    CSV."""
    scans = str(tmp_path / "scans")
    write_synthetic_scans(scans, 40, seed=9)
    csv_path, reference_csv = str(tmp_path / "out.csv"), str(tmp_path / "reference.csv")
    args = classify_args(scans, csv_path, classifier_model, None, "--batch_size=8")
    reference = start_tool(
        CLASSIFY_DIR,
        *classify_args(scans, reference_csv, classifier_model, None, "--batch_size=8"),
        log_path=str(tmp_path / "reference.log"),
    )
    limited = subprocess.run(
        [
            sys.executable,
            "-c",
            _FILE_SIZE_LIMITED,
            csv_path,
            CLASSIFY_DIR,
            *args,
            "--commit_every=8",
        ],
        capture_output=True,
        text=True,
        timeout=BINARY_TIMEOUT,
        cwd=REPO_ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    line = assert_one_line_error(limited.returncode, limited.stderr, "File too large", "--resume")
    assert "out.csv" in line and 0 < read_progress(csv_path)["rows_done"] < 40
    code, log = finish_tool(
        start_tool(CLASSIFY_DIR, *args, "--resume", log_path=str(tmp_path / "resume.log"))
    )
    assert code == 0, log[-3000:]
    assert finish_tool(reference)[0] == 0
    assert read_bytes(csv_path) == read_bytes(reference_csv)


# --- Shards and merge (slow) --------------------------------------------------------------------


@pytest.mark.slow
def test_three_shards_merge_into_exactly_the_single_run(
    golden_run, classifier_model, other_classifier_model, tmp_path
):
    """bin/classify_dir --num_shards=3 three times, bin/merge_shards: the same CSV
    (byte for byte) and CAM datasets as one run. Merging refuses a missing, an
    unfinished and a mismatched shard, each with one line saying which and why."""
    scans = golden_run.scan_dir

    def shard_args(index: int, model: str, name: str, *extra: str) -> list[str]:
        return classify_args(
            scans,
            str(tmp_path / f"{name}.csv"),
            model,
            str(tmp_path / f"{name}.h5"),
            "--batch_size=8",
            "--num_shards=3",
            f"--shard_index={index}",
            *extra,
        )

    processes = {
        name: start_tool(CLASSIFY_DIR, *shard_args(*spec), log_path=str(tmp_path / f"{name}.log"))
        for name, spec in {
            "shard0": (0, classifier_model, "shard0"),
            "shard1": (1, classifier_model, "shard1"),
            "shard2": (2, classifier_model, "shard2"),
            "other1": (1, other_classifier_model, "other1"),
        }.items()
    }
    # Shard 2 is killed as soon as it has started writing: an unfinished shard.
    wait_for_progress(processes["shard2"], str(tmp_path / "shard2.csv"), 0)
    kill_tool(processes.pop("shard2"))
    for name, process in processes.items():
        code, log = finish_tool(process)
        assert code == 0, (name, log[-3000:])
    shard_csvs = [str(tmp_path / f"shard{k}.csv") for k in range(3)]
    merged_csv, merged_cams = str(tmp_path / "merged_ok.csv"), str(tmp_path / "merged_ok.h5")

    other_csv = str(tmp_path / "other1.csv")

    def merge(name: str, *csvs: str):
        """Starts bin/merge_shards into merged_{name}.csv (several run at once: each
        loads TensorFlow's runtime, which takes a while)."""
        return start_tool(
            MERGE_SHARDS,
            str(tmp_path / f"merged_{name}.csv"),
            *csvs,
            f"--cams={tmp_path / f'merged_{name}.h5'}",
            log_path=str(tmp_path / f"merge_{name}.log"),
        )

    unfinished, missing = merge("unfinished", *shard_csvs), merge("missing", *shard_csvs[:2])
    assert_one_line_error(*finish_tool(unfinished), "shard2.csv", "unfinished", "--resume")
    assert_one_line_error(*finish_tool(missing), "one complete output per shard")
    code, log = finish_tool(
        start_tool(
            CLASSIFY_DIR,
            *shard_args(2, classifier_model, "shard2", "--resume"),
            log_path=str(tmp_path / "resume.log"),
        )
    )
    assert code == 0, log[-3000:]
    mismatched = merge("mismatched", shard_csvs[0], other_csv, shard_csvs[2])
    # Any order of the arguments: shards are ordered by their recorded index.
    merged = merge("ok", shard_csvs[2], shard_csvs[0], shard_csvs[1])
    assert_one_line_error(*finish_tool(mismatched), "other1.csv", "model_sha256")
    code, log = finish_tool(merged)
    assert code == 0, log[-3000:]
    refused = ("unfinished", "missing", "mismatched")
    assert not any(os.path.exists(tmp_path / f"merged_{name}.csv") for name in refused)
    assert read_bytes(merged_csv) == read_bytes(golden_run.csv)
    assert_same_cam_files(
        merged_cams, golden_run.cams, ignore_attributes=("created", "num_shards", "shard_index")
    )
    _, attributes = read_cam_file(merged_cams)
    assert (attributes["num_shards"], attributes["merged_from_shards"]) == (1, 3)
    manifest = read_json(tmp_path / "merged_ok.run.json")
    assert manifest["rows"] == len(read_csv_rows(golden_run.csv))


# --- Fatal errors -------------------------------------------------------------------------------


@pytest.mark.slow
def test_missing_scan_directory_or_model_is_one_line_and_nonzero(tmp_path):
    """Fatal problems found before any model is loaded (they run at once): a missing
    scan directory or model, and outputs that would destroy each other or be read as
    scans (--cams=OUT.csv used to rename the CAM file over the predictions; outputs in
    SCAN_DIR got error rows for themselves)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.png").write_bytes(b"x")
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    cases = {
        "missing scan dir": (
            [str(tmp_path / "nowhere"), str(tmp_path / "o1.csv"), "--model=unused.keras"],
            ("scan directory not found", "nowhere"),
        ),
        "scan dir is a file": (
            [str(not_a_dir), str(tmp_path / "o2.csv"), "--model=unused.keras"],
            ("scan directory not found", "file.txt"),
        ),
        "missing model": (
            [str(scans), str(tmp_path / "o3.csv"), f"--model={tmp_path / 'none.keras'}"],
            ("model not found", "none.keras"),
        ),
        "CAMs onto the CSV": (
            [
                str(scans),
                str(tmp_path / "o4.csv"),
                "--model=unused.keras",
                f"--cams={tmp_path}/o4.csv",
            ],
            ("the CSV and the CAM file would be the same file",),
        ),
        "outputs inside SCAN_DIR": (
            [str(scans), str(scans / "o5.csv"), "--model=unused.keras"],
            ("is inside the scan directory", "write the outputs outside it"),
        ),
    }
    processes = {
        name: start_tool(CLASSIFY_DIR, *args, log_path=str(tmp_path / f"{i}.log"))
        for i, (name, (args, _)) in enumerate(cases.items())
    }
    for name, process in processes.items():
        code, log = finish_tool(process, timeout=300)
        assert_one_line_error(code, log, *cases[name][1])
    assert not list(tmp_path.glob("o*")) and os.listdir(scans) == ["a.png"]  # nothing written


@pytest.mark.slow
def test_unwritable_outputs_and_a_corrupt_model_are_one_line_fatal_errors(
    classifier_model, golden_scans, tmp_path
):
    """Output locations that cannot be written (root-proof: below a regular file) and
    a model file that is not a model: exit 2 with one line, no traceback, no outputs."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_text("not a zip archive")
    shutil.copyfile(model_lib.card_path(classifier_model), model_lib.card_path(str(corrupt)))
    good_csv = str(tmp_path / "out.csv")
    cases = {
        "csv below a file": (
            [golden_scans, str(blocker / "out.csv"), f"--model={classifier_model}"],
            ("cannot create the folder of", "a_file/out.csv"),
        ),
        "cams below a file": (
            [golden_scans, good_csv, f"--model={classifier_model}", f"--cams={blocker / 'c.h5'}"],
            ("cannot create the folder of", "a_file/c.h5"),
        ),
        "corrupt model": (
            [golden_scans, str(tmp_path / "o.csv"), f"--model={corrupt}"],
            ("cannot load model", "corrupt.keras"),
        ),
    }
    processes = {
        name: start_tool(CLASSIFY_DIR, *args, log_path=str(tmp_path / f"{i}.log"))
        for i, (name, (args, _)) in enumerate(cases.items())
    }
    for name, process in processes.items():
        code, log = finish_tool(process)
        assert_one_line_error(code, log, *cases[name][1])
    assert not os.path.exists(good_csv) and not os.path.exists(tmp_path / "o.csv")


@pytest.mark.slow
def test_empty_scan_directory_gives_empty_but_valid_outputs(classifier_model, tmp_path):
    """No files (or a shard with no share of them) is not an error: a header-only CSV
    and a CAM file with zero rows."""
    scans = tmp_path / "scans"
    (scans / "only_dirs" / "nested").mkdir(parents=True)
    csv_path, cams_path = str(tmp_path / "out.csv"), str(tmp_path / "cams.h5")
    result = run_tool(
        CLASSIFY_DIR, *classify_args(str(scans), csv_path, classifier_model, cams_path)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_csv_rows(csv_path) == []
    data, attributes = read_cam_file(cams_path)
    assert set(data) == CAM_DATASET_NAMES
    assert data["cams"].shape == (0, CAM_SIDE, CAM_SIDE)
    assert attributes["image_size"] == MODEL_IMAGE_SIZE


def test_output_files_with_zero_rows_are_valid_hdf5(tmp_path):
    """The writer's side of the case above, in-process (fast): h5py refuses chunks
    larger than an empty dataset unless its row axis can grow."""
    writer = output_writer.OutputWriter(
        str(tmp_path / "out.csv"),
        str(tmp_path / "cams.h5"),
        {"k": 1},
        resume=False,
        overwrite=False,
    )
    writer.finish({"image_size": 64}, {}, (2, 2))
    with h5py.File(tmp_path / "cams.h5", "r") as file:
        assert {name: file[name].shape[0] for name in file} == dict.fromkeys(CAM_DATASET_NAMES, 0)
        assert file["cams"].shape == (0, 2, 2) and file["cams"].compression == "gzip"
    assert output_readers.count_rows(str(tmp_path / "out.csv"))[0] == 0


# --- CAM overlays (slow) ------------------------------------------------------------------------


@pytest.mark.slow
def test_render_cams_writes_overlays_and_a_contact_sheet(golden_run, tmp_path):
    """bin/render_cams for the rows chosen from the CSV (the 3 least confident "ok"
    rows) and for explicit rows: one overlay PNG each (the scan with the heat map
    blended in, and a caption strip), plus a contact sheet of them."""
    rows = read_csv_rows(golden_run.csv)
    output = tmp_path / "overlays"
    result = run_tool(
        RENDER_CAMS,
        golden_run.scan_dir,
        golden_run.cams,
        str(output),
        f"--csv={golden_run.csv}",
        "--select=lowest_confidence",
        "--count=3",
        "--status=ok",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    candidates = [(float(r["confidence"]), i) for i, r in enumerate(rows) if r["status"] == "ok"]
    chosen = sorted(i for _, i in sorted(candidates)[:3])
    expected = {f"row{i:07d}_{rows[i]['view']}.png" for i in chosen} | {"contact_sheet.png"}
    assert set(os.listdir(output)) == expected
    for index in chosen:
        overlay = Image.open(output / f"row{index:07d}_{rows[index]['view']}.png")
        width, height = int(rows[index]["width"]), int(rows[index]["height"])
        drawn = round(overlays.OVERLAY_SIDE * min(width, height) / max(width, height))
        # Every scan at the same legible size, its caption strip below it.
        assert max(overlay.width, overlay.height) >= overlays.OVERLAY_SIDE
        assert overlay.width == (overlays.OVERLAY_SIDE if width >= height else drawn)
        pixels = np.asarray(overlay.convert("RGB"), np.int16)[: overlay.height - 40]
        # The scan is drawn gray; the heat is the only colour (where the CAM is high).
        assert (pixels.max(axis=-1) - pixels.min(axis=-1)).max() > 40, rows[index]["path"]
    sheet = Image.open(output / "contact_sheet.png")
    assert sheet.width == 3 * (overlays.SHEET_CELL + 8) + 8  # three overlays, three columns

    error_row = next(i for i, r in enumerate(rows) if r["status"] == "error")
    blank_row = next(i for i, r in enumerate(rows) if r["status"] == "blank")
    explicit = tmp_path / "explicit"
    result = run_tool(
        RENDER_CAMS,
        golden_run.scan_dir,
        golden_run.cams,
        str(explicit),
        f"--rows={blank_row},{error_row}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipped row {error_row}" in result.stdout  # an unreadable scan: said, not fatal
    assert sorted(os.listdir(explicit)) == [
        "contact_sheet.png",
        f"row{blank_row:07d}_{rows[blank_row]['view']}.png",
    ]
