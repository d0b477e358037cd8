"""The shipped model plane-v1: classify_dir uses it with no --model flag, and it is right.

Slow tier: these run the real binary with the real released weights.
"""

from __future__ import annotations

import csv
import os

import h5py
import pytest
from sklearn.metrics import f1_score

from brainview import released_models
from brainview.labels import VIEWS
from brainview_tfds.brain_phantom import sample_scans
from tests import classify_helpers
from tests.conftest import require_shared

pytestmark = pytest.mark.slow


def _true_view(path: str) -> str:
    """The plane a scan's folder or name says it is (BrainMaps folders, sample scan names)."""
    lowered = path.lower().replace("horizotal", "horizontal")  # BrainMaps' typo
    (view,) = [v for v in VIEWS if v in lowered]
    return view


def _classify(scan_dir: str, out_dir) -> tuple[list[dict[str, str]], str]:
    csv_path, cams_path = str(out_dir / "out.csv"), str(out_dir / "cams.h5")
    result = classify_helpers.run_tool(
        classify_helpers.CLASSIFY_DIR, scan_dir, csv_path, f"--cams={cams_path}", "--progress=false"
    )
    assert result.returncode == 0, result.stderr
    return classify_helpers.read_csv_rows(csv_path), cams_path


def test_classify_dir_without_model_flag_uses_the_shipped_model(tmp_path):
    scans = tmp_path / "scans"
    sample_scans.write_sample_scans(str(scans), count=12)
    rows, cams_path = _classify(str(scans), tmp_path)
    assert len(rows) == 12
    with h5py.File(cams_path, "r") as cams:
        assert cams.attrs["model"] == released_models.DEFAULT_MODEL
        card_path = released_models.model_card_path(released_models.DEFAULT_MODEL)
        with open(card_path, encoding="utf-8") as file:
            assert cams.attrs["model_sha256"] in file.read()
        assert cams["cams"].shape[1] >= 7 and cams["cams"].shape[2] >= 7  # a readable grid
    correct = sum(row["view"] == _true_view(row["path"]) for row in rows)
    assert correct >= 9, rows  # generated phantom scans: never trained on these seeds


def test_shipped_model_on_the_shared_brainmaps_folders(tmp_path):
    """BrainMaps was training data for the release: this guards the shipped file, and the
    README reports the figure; the fold experiments are the honest generalization numbers."""
    brainmaps = require_shared("brainmaps")
    rows, _ = _classify(brainmaps, tmp_path)
    assert len(rows) == 886
    truth = [_true_view(row["path"]) for row in rows]
    predicted = [row["view"] for row in rows]
    macro_f1 = f1_score(truth, predicted, labels=list(VIEWS), average="macro")
    print(f"plane-v1 on ../shared/data/brainmaps: macro-F1 {macro_f1:.3f}")
    assert macro_f1 >= 0.95
    with open(os.path.join(str(tmp_path), "out.csv"), newline="", encoding="utf-8") as file:
        assert sum(1 for _ in csv.DictReader(file)) == 886
