"""The review page (bin/render_cams --review): what it shows, and that a browser shows it.

The page is opened from disk in headless Chromium (Debian's `chromium`; .ci/run installs
it): every image must resolve, and a screenshot is taken. Without Chromium that test is
skipped, unless BRAINVIEW_REQUIRE_CHROMIUM=1 (CI), where it fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse

import pytest
from PIL import Image

from brainview.classify import review_page, sorting
from tests.written_runs import ScanRow, write_run

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RENDER_CAMS = os.path.join(REPO_ROOT, "bin", "render_cams")

ROWS = [
    ScanRow("a/s00_coronal.png", "coronal", confidence=0.91),
    ScanRow("a/s01_coronal.png", "coronal", confidence=0.62, dark=True),
    ScanRow("a/s02_coronal.png", "coronal", confidence=0.77, angle=0.6),
    ScanRow("a/s03_coronal.png", "coronal", confidence=0.99),
    ScanRow("b/s04_sagittal.png", "sagittal", confidence=0.85),
    ScanRow("b/s05_horizontal.png", "sagittal", status="uncertain", confidence=0.41),
    ScanRow("b/s06 & <odd>.png", "horizontal", status="blank", confidence=0.7),
    ScanRow("b/broken.png", "coronal", status="error"),
]


@pytest.fixture
def run(tmp_path):
    scan_dir = str(tmp_path / "scans")
    csv_path, cams_path = str(tmp_path / "run" / "p.csv"), str(tmp_path / "run" / "c.h5")
    os.makedirs(os.path.dirname(csv_path))
    write_run(scan_dir, csv_path, cams_path, ROWS)
    return scan_dir, csv_path, cams_path, str(tmp_path / "run" / "review")


def test_each_class_lists_its_least_confident_scans_first(run):
    _, csv_path, _, _ = run
    chosen, counts = review_page.choose_cards(csv_path, per_class=3)
    assert counts == {
        "coronal": 4,
        "horizontal": 0,
        "sagittal": 1,
        "uncertain": 1,
        "blank": 1,
        "error": 1,
    }
    assert chosen["coronal"] == [1, 2, 0]  # 0.62, 0.77, 0.91; 0.99 is left out
    assert chosen["error"] == [7]
    assert set(chosen) == set(sorting.CLASSES)


def test_page_shows_counts_model_and_every_chosen_scan_linked_to_its_file(run):
    scan_dir, csv_path, cams_path, output_dir = run
    page_path = review_page.write_review(scan_dir, csv_path, cams_path, output_dir, per_class=3)
    with open(page_path, encoding="utf-8") as file:
        page = file.read()
    assert "/models/test/model.keras" in page and "CAMs 2 x 2 cells" in page
    assert re.search(r'<a href="#coronal">4</a>', page)
    assert "the 3 least confident" in page  # 4 coronal scans, 3 shown
    assert (
        page.index("s01_coronal.png")
        < page.index("s02_coronal.png")
        < page.index("s00_coronal.png")
    )
    assert "s03_coronal.png" not in page
    assert html.escape("b/s06 & <odd>.png") in page and "<odd>" not in page
    assert "unreadable" in page  # the error row says why it has no picture
    for target in re.findall(r'(?:src|href)="([^"#]+)"', page):
        resolved = os.path.join(output_dir, urllib.parse.unquote(html.unescape(target)))
        assert os.path.isfile(resolved), target


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium, isolated: fresh profile, no network services, no GPU."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )


# Loads the page in a frame and reports what the browser made of it (file:// pages may
# read each other only with --allow-file-access-from-files).
HARNESS = """<!doctype html><html><body><pre id="report">not loaded</pre>
<iframe id="page" src="{page}" style="width:1280px;height:3000px"></iframe>
<script>
window.addEventListener("load", () => {{
  const doc = document.getElementById("page").contentDocument;
  const images = Array.from(doc.images);
  document.getElementById("report").textContent = JSON.stringify({{
    title: doc.title,
    sections: Array.from(doc.querySelectorAll("section")).map(s => s.id),
    figures: doc.querySelectorAll("figure").length,
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  }});
}});
</script></body></html>
"""


@pytest.mark.integration
def test_the_page_opens_from_disk_in_chromium_with_every_image(run, tmp_path):
    """bin/render_cams --review writes the page; headless Chromium opens it from disk (no
    server): the six class sections are there, every image resolves, a screenshot is
    taken. A page whose overlay went missing is caught the same way."""
    if not chromium():
        if os.environ.get("BRAINVIEW_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium not found (apt-get install chromium)")
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    scan_dir, csv_path, cams_path, output_dir = run
    result = subprocess.run(
        [sys.executable, RENDER_CAMS, scan_dir, cams_path, output_dir,
         f"--csv={csv_path}", "--review", "--count=3"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == f"review page: {os.path.join(output_dir, 'index.html')}"

    def browser_report() -> dict:
        harness = tmp_path / "harness.html"
        harness.write_text(
            HARNESS.format(page=os.path.relpath(output_dir, tmp_path) + "/index.html")
        )
        dumped = run_chromium(
            tmp_path, "--allow-file-access-from-files", "--virtual-time-budget=10000",
            "--dump-dom", harness.as_uri(),
        )  # fmt: skip
        match = re.search(r'<pre id="report">([^<]*)</pre>', dumped.stdout)
        assert match, dumped.stdout[-2000:] + dumped.stderr[-2000:]
        return json.loads(html.unescape(match.group(1)))

    report = browser_report()
    assert report["title"].startswith("brainview review: ")
    assert report["sections"] == list(sorting.CLASSES)
    assert report["figures"] == 7  # 3 coronal, 1 sagittal, 1 uncertain, 1 blank, 1 error
    assert report["images"] == 6 + 1  # 6 overlays (the error row has none) + the colour key
    assert report["broken"] == []

    screenshot = tmp_path / "review.png"
    shot = run_chromium(
        tmp_path, "--window-size=1280,1000", "--hide-scrollbars",
        f"--screenshot={screenshot}", f"file://{output_dir}/index.html",
    )  # fmt: skip
    assert shot.returncode == 0, shot.stderr[-2000:]
    with Image.open(screenshot) as image:
        assert image.size == (1280, 1000)
        assert len(image.convert("RGB").getcolors(1 << 20) or ()) > 200  # not a blank page

    first = sorted(os.listdir(os.path.join(output_dir, review_page.OVERLAY_DIR)))[0]
    os.remove(os.path.join(output_dir, review_page.OVERLAY_DIR, first))
    assert [os.path.basename(src) for src in browser_report()["broken"]] == [first]
