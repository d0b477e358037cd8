"""classify_dir --score_by_name: accuracy and a confusion table from views named in paths."""

from __future__ import annotations

import numpy as np
import pytest

from brainview.classify import scoring
from tests.written_runs import ScanRow, write_run


@pytest.mark.parametrize(
    ("path", "view"),
    [
        ("slide_002/s0013_horizontal.jpg", "horizontal"),
        ("coronal/coronal_354.png", "coronal"),
        ("horizontal/horizotal_12.png", "horizontal"),  # BrainMaps' typo: the folder says it
        ("Animal 3/SAGITTAL-07.TIF", "sagittal"),
        ("scans/section_0007.png", None),
        ("coronal/sagittal_mislabelled.png", None),  # two views named: not scored
        ("coronals/x.png", None),  # whole words only
    ],
)
def test_the_true_view_is_the_one_view_a_path_names(path, view):
    assert scoring.true_view(path) == view


def test_score_counts_every_named_scan_once(tmp_path):
    rows = [
        ScanRow("a/s0_coronal.png", "coronal"),
        ScanRow("a/s1_coronal.png", "sagittal", status="uncertain", confidence=0.4),
        ScanRow("a/s2_sagittal.png", "sagittal"),
        ScanRow("a/s3_sagittal.png", "coronal", status="error"),
        ScanRow("a/s4_horizontal.png", "horizontal", status="blank"),
        ScanRow("a/unnamed.png", "coronal"),
    ]
    csv_path = str(tmp_path / "p.csv")
    write_run(str(tmp_path / "scans"), csv_path, None, rows)
    score = scoring.score_run(csv_path)
    np.testing.assert_array_equal(
        score.confusion,
        [
            [1, 0, 1, 0],  # coronal: right, and called sagittal (uncertain)
            [0, 1, 0, 0],  # horizontal: right (blank rows keep their view)
            [0, 0, 1, 1],  # sagittal: right, and an error
        ],
    )
    assert (score.scored, score.right, score.unnamed) == (5, 3, 1)
    assert score.confusion_ok.sum() == 2
    text = score.format()
    assert "3 of 5 right, accuracy 0.600" in text
    assert "status ok only: 2 of 2" in text
    assert "1 scans name no view" in text
    header, *table = text.splitlines()[1:]
    assert header.split()[-4:] == ["coronal", "horizontal", "sagittal", "error"]
    assert [line.split()[0] for line in table] == ["coronal", "horizontal", "sagittal"]


def test_a_run_without_named_scans_says_so(tmp_path):
    csv_path = str(tmp_path / "p.csv")
    write_run(str(tmp_path / "scans"), csv_path, None, [ScanRow("x.png", "coronal")])
    assert "nothing to score" in scoring.score_run(csv_path).format()
