"""bin/classify_beam: the Beam pipeline gives classify_dir's rows and CAMs.

The pipeline runs on Beam's in-process local runner, FnApiRunner (what the
DirectRunner runs when Prism is not available, as here, without its attempt to
download Prism), with the real test model, TensorFlow, h5py and files on disk.
Its outputs are compared with bin/classify_dir's for the same folder: the same
rows in the same order (path, view, status, error, width, height, mean
intensity exactly; probabilities and confidence within 1e-5 — Beam forms its
own batches, and CPU kernels round the last digits per batch size), and the
same CAM file (paths, views, statuses, frames exactly; probabilities within
1e-5; CAMs, stored as float16, within 1e-3).

Tiers: the checks made before a pipeline starts and the lazy import are unit
tests; every run of the pipeline is `slow` (CI runs it). Skipped without
apache_beam, unless BRAINVIEW_REQUIRE_BEAM=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from brainview.labels import VIEWS
from tests.classify_helpers import (
    CLASSIFY_DIR,
    REPO_ROOT,
    classify_args,
    read_cam_file,
    read_csv_rows,
    run_tool,
    walk_order,
    write_bad_corpus,
)
from tests.conftest import require_beam

require_beam("bin/classify_beam needs the beam extra")

CLASSIFY_BEAM = os.path.join(REPO_ROOT, "bin", "classify_beam")
LOCAL_RUNNER = "--runner=FnApiRunner"
PROBABILITY_TOLERANCE = 1e-5
CAM_TOLERANCE = 1e-3  # float16 CAMs: a float32 difference of 1e-6 can flip the last bit
PROBABILITY_COLUMNS = ("confidence", *(f"p_{view}" for view in VIEWS))
EXACT_COLUMNS = ("path", "view", "status", "error", "width", "height", "mean_intensity")
# Attributes that say when and with what engine the file was made.
RUN_ATTRIBUTES = {"created", "engine"}


def assert_same_outputs(
    expected_csv: str, actual_csv: str, expected_cams=None, actual_cams=None, scans=None
):
    """`scans`: the input the CAM file should record, if not classify_dir's folder."""
    expected, actual = read_csv_rows(expected_csv), read_csv_rows(actual_csv)
    assert [row["path"] for row in actual] == [row["path"] for row in expected]
    for want, got in zip(expected, actual, strict=True):
        assert list(got) == list(want)  # classify_dir's columns, in its order
        for column in EXACT_COLUMNS:
            assert got[column] == want[column], (want["path"], column)
        for column in PROBABILITY_COLUMNS:
            if want[column] or got[column]:
                assert float(got[column]) == pytest.approx(
                    float(want[column]), abs=PROBABILITY_TOLERANCE
                ), (want["path"], column)
    if expected_cams is None:
        return
    want_data, want_attributes = read_cam_file(expected_cams)
    got_data, got_attributes = read_cam_file(actual_cams)
    assert got_data.keys() == want_data.keys()
    for name in ("paths", "views", "statuses", "frames"):
        np.testing.assert_array_equal(got_data[name], want_data[name], err_msg=name)
    np.testing.assert_allclose(
        got_data["probabilities"], want_data["probabilities"], atol=PROBABILITY_TOLERANCE
    )
    np.testing.assert_allclose(
        got_data["cams"].astype(np.float32),
        want_data["cams"].astype(np.float32),
        atol=CAM_TOLERANCE,
    )
    if scans is not None:
        want_attributes["scan_dir"] = scans
    assert set(got_attributes) - RUN_ATTRIBUTES == set(want_attributes) - RUN_ATTRIBUTES
    for key in set(want_attributes) - RUN_ATTRIBUTES:
        assert str(got_attributes[key]) == str(want_attributes[key]), key


# --- Unit: before any work -------------------------------------------------------------------------


def test_importing_the_inference_path_does_not_import_beam():
    code = (
        "import sys\n"
        "import brainview.classify.classify_dir, brainview.cli.classify_dir\n"
        "import brainview.beam, brainview.beam.options, brainview_tfds, brainview_tfds.build\n"
        "assert 'apache_beam' not in sys.modules, 'apache_beam was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture
def small_folder(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not really")
    return str(folder)


def plan_error(**fields) -> str:
    from brainview.beam import classify

    with pytest.raises(classify.BeamClassifyError) as error:
        classify.plan(classify.BeamClassifyConfig(**fields))
    return str(error.value)


def test_refuses_bad_input_outputs_and_options_before_any_work(small_folder, tmp_path):
    model = str(tmp_path / "model.keras")  # never reached: every case fails before
    out = str(tmp_path / "out.csv")
    assert "scan directory not found" in plan_error(
        scans=str(tmp_path / "nope"), output_csv=out, model_path=model
    )
    assert "inside the scan input" in plan_error(
        scans=small_folder, output_csv=os.path.join(small_folder, "out.csv"), model_path=model
    )
    assert "inside the scan input" in plan_error(
        scans=small_folder + "/**/*.png",
        output_csv=out,
        cams_path=os.path.join(small_folder, "sub", "cams.h5"),
        model_path=model,
    )
    assert "unknown Beam pipeline option(s): --num_wokers=2" in plan_error(
        scans=small_folder, output_csv=out, model_path=model, pipeline_options="num_wokers=2"
    )
    assert "contradicts runner=DataflowRunner" in plan_error(
        scans=small_folder,
        output_csv=out,
        model_path=model,
        runner="FnApiRunner",
        pipeline_options="runner=DataflowRunner",
    )
    assert "output folder not found" in plan_error(
        scans=small_folder, output_csv=str(tmp_path / "missing" / "out.csv"), model_path=model
    )
    assert "model not found" in plan_error(scans=small_folder, output_csv=out, model_path=model)
    open(out, "w").close()
    assert "exists: pass --overwrite" in plan_error(
        scans=small_folder, output_csv=out, model_path=model
    )
    assert set(os.listdir(tmp_path)) == {"scans", "out.csv"}  # nothing else was written


def test_file_patterns_are_relative_to_their_folder_and_skip_hidden_files(tmp_path):
    from brainview.beam import sources

    scan_input = sources.ScanInput.parse(str(tmp_path) + "/slides/**/*.png")
    assert scan_input.scan_dir is None
    assert scan_input.base == str(tmp_path) + "/slides/"
    remote = sources.ScanInput.parse("gs://lab/scans")
    assert (remote.pattern, remote.base) == ("gs://lab/scans/**", "gs://lab/scans/")
    assert remote.contains("gs://lab/scans/out.csv") and not remote.contains("gs://lab/out.csv")

    class Match:
        def __init__(self, path):
            self.path = path

    scans = [
        scan
        for path in ("gs://lab/scans/a/b.png", "gs://lab/scans/.hidden/c.png", "gs://lab/x.png")
        for scan in sources._matched(Match(path), remote)
    ]
    assert [scan.relative_path for scan in scans] == [b"a/b.png"]


# --- Slow: the pipeline end to end ---------------------------------------------------------------


@pytest.mark.slow
def test_beam_classification_equals_classify_dir(golden_run, tmp_path):
    """bin/classify_beam over the golden folder (PNG, JPEG, 8/16-bit TIFF, BMP, GIF, an
    RGBA cut-out, a 2-page stack, blank, uniform, empty and non-image files, odd names)."""
    csv_path, cams_path = str(tmp_path / "beam.csv"), str(tmp_path / "beam.h5")
    result = run_tool(
        CLASSIFY_BEAM,
        *classify_args(golden_run.scan_dir, csv_path, golden_run.model, cams_path, LOCAL_RUNNER),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_outputs(golden_run.csv, csv_path, golden_run.cams, cams_path)
    # The printed summary counts the same rows.
    assert result.stdout.splitlines()[1:3] == golden_run.stdout.splitlines()[1:3]
    assert os.path.exists(str(tmp_path / "beam.run.json"))
    assert sorted(os.listdir(tmp_path)) == ["beam.csv", "beam.h5", "beam.run.json"]


@pytest.mark.slow
def test_beam_file_pattern_and_its_shards_equal_classify_dir(golden_run, tmp_path):
    """The Beam-filesystem path (a glob matched by Beam, files read through
    FileSystems.open), in process, keeping the shards to check them too."""
    from brainview.beam import classify, sinks

    csv_path, cams_path = str(tmp_path / "pattern.csv"), str(tmp_path / "pattern.h5")
    config = classify.BeamClassifyConfig(
        scans=golden_run.scan_dir + "/**",
        output_csv=csv_path,
        model_path=golden_run.model,
        cams_path=cams_path,
        runner="FnApiRunner",
        output_shards=3,
        keep_shards=True,
    )
    summary = classify.classify(config)
    assert_same_outputs(golden_run.csv, csv_path, golden_run.cams, cams_path, config.scans)
    assert summary.rows == len(read_csv_rows(golden_run.csv))

    # Shards: classify_dir's columns and CAM layout, each sorted in walk order, together
    # holding every row once.
    shards = sorted(os.listdir(sinks.shards_dir(csv_path)))
    shard_csvs = [name for name in shards if name.endswith(".csv")]
    assert 1 < len(shard_csvs) <= 3
    shard_paths = []
    for name in shard_csvs:
        path = os.path.join(sinks.shards_dir(csv_path), name)
        rows = read_csv_rows(path)
        raw = [p.encode() for p in (row["path"] for row in rows)]
        assert raw == walk_order(raw)
        cams, _ = read_cam_file(path[: -len(".csv")] + ".h5")
        assert list(cams["paths"]) == [row["path"] for row in rows]
        shard_paths += [row["path"] for row in rows]
    assert sorted(shard_paths) == sorted(row["path"] for row in read_csv_rows(golden_run.csv))


@pytest.fixture
def bad_corpus_dir(tmp_path):
    """The classify_dir bad-input corpus (classify_helpers.write_bad_corpus)."""
    directory = str(tmp_path / "bad")
    write_bad_corpus(directory)
    yield directory
    os.chmod(os.path.join(directory, "locked_dir"), 0o755)
    os.chmod(os.path.join(directory, "no_permission.png"), 0o644)
    shutil.rmtree(os.path.join(directory, "deep"))  # deeper than PATH_MAX: remove it now


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_beam_reports_every_bad_file_exactly_as_classify_dir(
    bad_corpus_dir, classifier_model, tmp_path
):
    """Broken, unreadable, special, huge and oddly named files (newlines, quotes, bytes
    that are not UTF-8, a directory that cannot be listed): the same rows and errors."""
    expected_csv = str(tmp_path / "dir.csv")
    result = run_tool(
        CLASSIFY_DIR,
        *classify_args(bad_corpus_dir, expected_csv, classifier_model, None, "--batch_size=8"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    actual_csv = str(tmp_path / "beam.csv")
    result = run_tool(
        CLASSIFY_BEAM,
        *classify_args(bad_corpus_dir, actual_csv, classifier_model, None, LOCAL_RUNNER),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_outputs(expected_csv, actual_csv)
    statuses = {row["status"] for row in read_csv_rows(actual_csv)}
    assert {"error", "blank"} <= statuses
