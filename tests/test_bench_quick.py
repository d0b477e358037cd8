"""`make bench-quick` end to end: every benchmark runs and reports every section.

Speed goals are never asserted here (a shared CI machine would make them
flaky); the run only has to complete and write complete results.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

BENCHMARKS = (
    "classify_throughput",
    "memory_scaling",
    "training_input",
    "builder",
    "input_path",
    "image_size",
    "classify_beam",
    "released_model",
)
SECTIONS = {
    "classify_throughput": ("settings", "images_per_second", "ratios", "targets"),
    "memory_scaling": ("settings", "classify_dir", "original", "growth", "targets"),
    "training_input": ("settings", "steps_per_second", "ratios", "targets"),
    "builder": ("settings", "slices_per_second", "shards", "ratios", "targets"),
    "input_path": ("settings", "images_per_second", "classify", "pyramids", "ratios", "targets"),
    "image_size": ("settings", "by_size", "targets"),
    "classify_beam": ("settings", "images_per_second", "ratios", "targets"),
    "released_model": ("settings", "images_per_second", "ratios", "targets"),
}


@pytest.mark.slow
def test_quick_benchmarks_write_every_section(tmp_path):
    results_dir = tmp_path / "results"
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO_ROOT, "bench", "run_all.py"),
            "--quick",
            f"--results_dir={results_dir}",
            f"--work_dir={tmp_path / 'data'}",
        ],
        cwd=REPO_ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["mode"] == "quick"
    assert set(summary["results"]) == set(BENCHMARKS)
    for name in BENCHMARKS:
        result = summary["results"][name]
        assert "error" not in result, result.get("error")
        for section in SECTIONS[name]:
            assert section in result, f"{name} has no {section!r}"
        for goal in result["targets"]:
            assert set(goal) >= {"name", "value", "threshold", "met"}
        saved = json.loads((results_dir / f"{name}.json").read_text())
        assert saved["benchmark"] == name and "machine" in saved

    table = (results_dir / "README_table.md").read_text()
    assert "### Targets" in table
    headings = (
        "classify_dir throughput",
        "Peak memory",
        "Training input",
        "Builder",
        "Apache Beam on one machine",
        "Input path",
        "The shipped model's cost",
    )
    for heading in headings:
        assert heading in table
    assert "Image size" in table
