"""classify_dir --sort_into: one folder per answer, with links (or copies) to the scans.

Unit tier: finished runs written by classify_dir's own writer (tests/written_runs.py),
real files and symbolic links on disk.
"""

from __future__ import annotations

import filecmp
import os

import pytest

from brainview.classify import sorting
from tests.written_runs import ScanRow, write_run

ROWS = [
    ScanRow("slide_000/s0000_coronal.png", "coronal", confidence=0.95),
    ScanRow("slide_000/raw/s0001_sagittal.png", "sagittal", confidence=0.8),
    ScanRow("slide_001/s0002_horizontal.png", "horizontal", confidence=0.7),
    ScanRow("slide_001/s0003_sagittal.png", "coronal", status="uncertain", confidence=0.4),
    ScanRow("dark.png", "sagittal", status="blank", confidence=0.6),
    ScanRow("broken.png", "coronal", status="error"),
    ScanRow("top__level.png", "coronal", confidence=0.9),  # collides with top/level.png
    ScanRow("top/level.png", "coronal", confidence=0.9),
]


def tree(folder) -> dict[str, str]:
    """Every entry below `folder` (relative path -> link text, or 'file')."""
    entries = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            entries[os.path.relpath(path, folder)] = (
                os.readlink(path) if os.path.islink(path) else "file"
            )
    return entries


@pytest.fixture
def run(tmp_path):
    scan_dir, csv_path = str(tmp_path / "scans"), str(tmp_path / "out" / "p.csv")
    os.makedirs(os.path.dirname(csv_path))
    write_run(scan_dir, csv_path, None, ROWS)
    return scan_dir, csv_path, str(tmp_path / "sorted")


def test_every_scan_is_linked_under_its_answer(run):
    """ok rows under their view, the others under their status; relative links that
    resolve to the scan itself; nested paths flattened with '__', and the one name two
    paths would share told apart by '~2' in CSV order."""
    scan_dir, csv_path, sort_dir = run
    summary = sorting.sort_scans(csv_path, scan_dir, sort_dir)
    expected = {
        "coronal/slide_000__s0000_coronal.png": "slide_000/s0000_coronal.png",
        "sagittal/slide_000__raw__s0001_sagittal.png": "slide_000/raw/s0001_sagittal.png",
        "horizontal/slide_001__s0002_horizontal.png": "slide_001/s0002_horizontal.png",
        "uncertain/slide_001__s0003_sagittal.png": "slide_001/s0003_sagittal.png",
        "blank/dark.png": "dark.png",
        "error/broken.png": "broken.png",
        "coronal/top__level.png": "top__level.png",
        "coronal/top__level~2.png": "top/level.png",
    }
    entries = tree(sort_dir)
    assert set(entries) == set(expected) | {sorting.RECORD_NAME}
    for entry, scan in expected.items():
        link = os.path.join(sort_dir, entry)
        assert not os.path.isabs(entries[entry]), entry
        assert os.path.samefile(link, os.path.join(scan_dir, scan)), entry
    assert summary.by_class == {
        "coronal": 3,
        "horizontal": 1,
        "sagittal": 1,
        "uncertain": 1,
        "blank": 1,
        "error": 1,
    }
    assert (summary.made, summary.kept, summary.missing) == (8, 0, [])


def test_links_survive_moving_scans_and_sort_together(run, tmp_path):
    scan_dir, csv_path, sort_dir = run
    sorting.sort_scans(csv_path, scan_dir, sort_dir)
    moved = tmp_path / "moved"
    moved.mkdir()
    os.rename(scan_dir, moved / "scans")
    os.rename(sort_dir, moved / "sorted")
    link = moved / "sorted" / "coronal" / "slide_000__s0000_coronal.png"
    assert os.path.samefile(link, moved / "scans" / "slide_000" / "s0000_coronal.png")


def test_sorting_again_is_idempotent_and_completes_a_killed_sort(run):
    """A second sort changes nothing; a sort killed midway (entries missing, a temporary
    left behind) is completed by the next one, to the same tree."""
    scan_dir, csv_path, sort_dir = run
    sorting.sort_scans(csv_path, scan_dir, sort_dir)
    complete = tree(sort_dir)
    again = sorting.sort_scans(csv_path, scan_dir, sort_dir)
    assert (again.made, again.kept) == (0, 8)
    assert tree(sort_dir) == complete

    os.remove(os.path.join(sort_dir, "sagittal", "slide_000__raw__s0001_sagittal.png"))
    os.remove(os.path.join(sort_dir, "error", "broken.png"))
    os.symlink("nowhere", os.path.join(sort_dir, "blank", "dark.png.sorting-tmp"))
    os.remove(os.path.join(sort_dir, "blank", "dark.png"))
    resumed = sorting.sort_scans(csv_path, scan_dir, sort_dir)
    assert (resumed.made, resumed.kept) == (3, 5)
    assert tree(sort_dir) == complete


def test_a_changed_run_is_sorted_again_with_no_scan_left_under_its_old_answer(run, tmp_path):
    scan_dir, csv_path, sort_dir = run
    sorting.sort_scans(csv_path, scan_dir, sort_dir)
    changed = [
        ScanRow(row.path, "sagittal", confidence=0.9, write_file=False)
        if row.status != "error"
        else row
        for row in ROWS
    ]
    write_run(scan_dir, csv_path, None, changed, model_sha="another")
    summary = sorting.sort_scans(csv_path, scan_dir, sort_dir)
    assert summary.by_class["sagittal"] == 7 and summary.by_class["coronal"] == 0
    assert os.listdir(os.path.join(sort_dir, "coronal")) == []
    assert os.listdir(os.path.join(sort_dir, "uncertain")) == []


def test_copies_are_whole_files_and_kept_on_the_next_sort(run):
    scan_dir, csv_path, sort_dir = run
    sorting.sort_scans(csv_path, scan_dir, sort_dir, copy=True)
    copy = os.path.join(sort_dir, "sagittal", "slide_000__raw__s0001_sagittal.png")
    assert not os.path.islink(copy)
    assert filecmp.cmp(copy, os.path.join(scan_dir, "slide_000/raw/s0001_sagittal.png"), False)
    assert sorting.sort_scans(csv_path, scan_dir, sort_dir, copy=True).kept == 8
    # Switching to links replaces the copies.
    assert sorting.sort_scans(csv_path, scan_dir, sort_dir).made == 8
    assert os.path.islink(copy)


def test_rows_without_a_file_are_reported_not_linked(tmp_path):
    scan_dir, csv_path = str(tmp_path / "scans"), str(tmp_path / "p.csv")
    rows = [ScanRow("a_coronal.png", "coronal"), ScanRow("gone.png", "coronal", write_file=False)]
    write_run(scan_dir, csv_path, None, rows)
    summary = sorting.sort_scans(csv_path, scan_dir, str(tmp_path / "sorted"))
    assert summary.missing == ["gone.png"]
    assert summary.by_class["coronal"] == 1
    assert "1 without a file" in summary.format()


def test_sort_folders_that_would_hurt_are_refused_before_any_work(run, tmp_path):
    scan_dir, csv_path, sort_dir = run
    with pytest.raises(sorting.SortError, match="inside the scan directory"):
        sorting.check_sort_dir(os.path.join(scan_dir, "sorted"), scan_dir)
    with pytest.raises(sorting.SortError, match="would hold the run's output"):
        sorting.check_sort_dir(os.path.dirname(csv_path), scan_dir, (csv_path,))
    foreign = tmp_path / "my_documents"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("do not touch")
    with pytest.raises(sorting.SortError, match="holds other files"):
        sorting.sort_scans(csv_path, scan_dir, str(foreign))
    assert os.listdir(foreign) == ["thesis.txt"]

    sorting.sort_scans(csv_path, scan_dir, sort_dir)
    other_scans = tmp_path / "other_scans"
    other_scans.mkdir()
    with pytest.raises(sorting.SortError, match="another scan directory"):
        sorting.check_sort_dir(sort_dir, str(other_scans))
    sorting.check_sort_dir(sort_dir, scan_dir)  # its own sort: fine


def test_an_unfinished_run_is_not_sorted(run):
    scan_dir, csv_path, sort_dir = run
    os.remove(os.path.splitext(csv_path)[0] + ".run.json")
    with pytest.raises(sorting.SortError, match="not a finished run"):
        sorting.sort_scans(csv_path, scan_dir, sort_dir)
