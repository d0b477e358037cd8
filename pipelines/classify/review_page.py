"""A review page of a classify_dir run: one static HTML file that opens from disk.

    OUT/index.html      per class (the six of --sort_into: coronal, horizontal,
                        sagittal for status ok; uncertain, blank, error), the
                        least confident scans first, each with its CAM overlay,
                        answer, confidence, status and probabilities, linked to
                        the scan itself; above them the run's counts and model
    OUT/overlays/*.png  the overlays it shows (overlays.render_overlay)
    OUT/legend.png      the colour key

Plain HTML and CSS with relative links: no server, no script, no network; the
page keeps working when OUT moves along with the scan folder. At most
`per_class` scans per class are shown (the page says of how many), so a run
of a million scans still gives a page a browser opens; choosing them streams
the CSV and keeps only those.
"""

from __future__ import annotations

import dataclasses
import heapq
import html
import os
import urllib.parse

from brainview import image_files
from brainview.classify import cam_file, output_readers, outputs, overlays, sorting
from brainview.labels import VIEWS

PAGE_NAME = "index.html"
OVERLAY_DIR = "overlays"


@dataclasses.dataclass(frozen=True)
class Card:
    """One scan on the page."""

    index: int  # CSV data row
    fields: dict[str, str]  # the CSV row, by column
    overlay: str | None  # path relative to the page, or None (error rows, unreadable scans)
    note: str = ""  # why there is no overlay

    @property
    def confidence(self) -> float | None:
        value = self.fields["confidence"]
        return float(value) if value else None


def choose_cards(csv_path: str, per_class: int) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Per class, the rows to show (lowest confidence first; error rows, which have
    none, in CSV order), and every class's row count. Streams the CSV, keeping at
    most `per_class` rows per class."""
    kept: dict[str, list[tuple[float, int]]] = {name: [] for name in sorting.CLASSES}
    counts = dict.fromkeys(sorting.CLASSES, 0)
    for row in output_readers.read_rows(csv_path):
        name = sorting.class_of(row.view, row.status)
        counts[name] += 1
        confidence = row.confidence if row.confidence is not None else 0.0
        _keep_smallest(kept[name], (confidence, row.index), per_class)
    chosen = {
        name: [-index for _, index in sorted(heap, reverse=True)] for name, heap in kept.items()
    }
    return chosen, counts


def _keep_smallest(heap: list[tuple[float, int]], key: tuple[float, int], limit: int) -> None:
    """Keeps in `heap` the `limit` smallest keys pushed so far (a heap of negated keys,
    so heap[0] is the largest key kept)."""
    negated = (-key[0], -key[1])
    if len(heap) < limit:
        heapq.heappush(heap, negated)
    elif negated > heap[0]:
        heapq.heapreplace(heap, negated)


def _fields_of_rows(csv_path: str, wanted: set[int]) -> dict[int, dict[str, str]]:
    fields = {}
    for index, record in enumerate(output_readers.read_records(csv_path)):
        if index in wanted:
            fields[index] = dict(zip(outputs.CSV_COLUMNS, record, strict=True))
    return fields


def write_review(
    scan_dir: str, csv_path: str, cams_path: str, output_dir: str, per_class: int = 12
) -> str:
    """Renders the chosen scans' overlays and writes the page; returns its path."""
    chosen, counts = choose_cards(csv_path, per_class)
    fields = _fields_of_rows(csv_path, {i for rows in chosen.values() for i in rows})
    os.makedirs(os.path.join(output_dir, OVERLAY_DIR), exist_ok=True)
    cards: dict[str, list[Card]] = {}
    with cam_file.CamFile(cams_path) as cams:
        attributes = cams.attributes
        cam_shape = cams.cam_shape
        for name, rows in chosen.items():
            cards[name] = [
                _card(scan_dir, cams, index, fields[index], output_dir) for index in rows
            ]
    legend = overlays.heat_legend(460)
    legend.save(os.path.join(output_dir, "legend.png"))
    page = _page(
        scan_dir=scan_dir,
        output_dir=output_dir,
        cards=cards,
        counts=counts,
        manifest=output_readers.read_manifest(csv_path) or {},
        attributes=attributes,
        cam_shape=cam_shape,
        csv_path=csv_path,
    )
    path = os.path.join(output_dir, PAGE_NAME)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(page)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    return path


def _card(
    scan_dir: str, cams: cam_file.CamFile, index: int, fields: dict[str, str], output_dir: str
) -> Card:
    if fields["status"] == "error":
        return Card(index, fields, None, fields["error"])
    row = cams.row(index)
    source = os.path.join(os.fsencode(scan_dir), row.path.encode("utf-8"))
    try:
        image = overlays.render_overlay(source, row.cam, row.frame)
    except image_files.ImageReadError as error:
        return Card(index, fields, None, f"scan not readable now: {error}")
    relative = f"{OVERLAY_DIR}/{overlays.overlay_name(index, row.view)}"
    image.save(os.path.join(output_dir, relative))
    return Card(index, fields, relative)


def _link(path: str) -> str:
    """A relative file path as an href/src value."""
    return html.escape(urllib.parse.quote(path.replace(os.sep, "/")), quote=True)


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: .2em; }
h2 { font-size: 1.15em; margin: 1.6em 0 .5em; border-bottom: 1px solid #ccc; }
h2 small { font-weight: normal; color: #666; }
.run { color: #444; margin: .2em 0; }
table.counts { border-collapse: collapse; margin: .8em 0; }
table.counts th, table.counts td { border: 1px solid #ccc; padding: .25em .7em; text-align: right; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 260px; }
figure img { width: 260px; height: auto; display: block; background: #eee; }
figure .none { width: 260px; height: 80px; background: #f4f4f4; color: #a33; padding: .5em;
  box-sizing: border-box; overflow: hidden; font-size: 12px; }
figcaption { font-size: 12px; word-break: break-all; }
.answer { font-weight: 600; font-size: 13px; }
.status-uncertain .answer { color: #a60; }
.status-blank .answer, .status-error .answer { color: #a33; }
.p { color: #666; }
"""


def _page(
    *,
    scan_dir: str,
    output_dir: str,
    cards: dict[str, list[Card]],
    counts: dict[str, int],
    manifest: dict,
    attributes: dict,
    cam_shape: tuple[int, int],
    csv_path: str,
) -> str:
    escape = html.escape
    total = sum(counts.values())
    model = manifest.get("model") or str(attributes.get("model", "?"))
    digest = manifest.get("model_sha256") or str(attributes.get("model_sha256", ""))
    lines = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>brainview review: {escape(scan_dir)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>brainview review: {escape(scan_dir)}</h1>",
        f'<p class="run">{total} scans, from <code>{escape(csv_path)}</code>'
        + (f", finished {escape(str(manifest['finished']))}" if manifest.get("finished") else "")
        + ".</p>",
        f'<p class="run">Model <code>{escape(model)}</code> (sha256 {escape(digest)}): '
        f"{escape(str(attributes.get('image_size', '?')))} px input, "
        f"{escape(str(attributes.get('preprocessing', '?')))} preprocessing, "
        f"test-time augmentation: {escape(str(attributes.get('test_time_augmentation', '?')))}; "
        f"CAMs {cam_shape[0]} x {cam_shape[1]} cells.</p>",
        '<table class="counts"><tr>'
        + "".join(f"<th>{name}</th>" for name in sorting.CLASSES)
        + "</tr><tr>"
        + "".join(f'<td><a href="#{name}">{counts[name]}</a></td>' for name in sorting.CLASSES)
        + "</tr></table>",
        '<p class="run">Per class, the least confident scans first; click one to open the '
        "scan. The heat is the Grad-CAM of the predicted view over the part of the scan the "
        'model saw.<br><img src="legend.png" alt="colour key: CAM 0 to 1"></p>',
    ]
    for name in sorting.CLASSES:
        shown = cards[name]
        more = f" · the {len(shown)} least confident" if len(shown) < counts[name] else ""
        if name == "error":
            more = f" · the first {len(shown)}" if len(shown) < counts[name] else ""
        lines.append(
            f'<section id="{name}"><h2>{name} <small>{counts[name]} scans{more}</small></h2>'
            '<div class="grid">'
        )
        lines.extend(_figure(card, scan_dir, output_dir) for card in shown)
        lines.append("</div></section>")
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def _figure(card: Card, scan_dir: str, output_dir: str) -> str:
    escape = html.escape
    fields = card.fields
    scan = os.path.relpath(os.path.join(os.path.abspath(scan_dir), fields["path"]), output_dir)
    if card.overlay:
        picture = f'<img src="{_link(card.overlay)}" alt="CAM overlay of {escape(fields["path"])}">'
    else:
        picture = f'<div class="none">{escape(card.note)}</div>'
    if fields["status"] == "error":
        answer = "error"
        probabilities = ""
    else:
        answer = f"{fields['view']} {float(fields['confidence']):.2f}"
        if fields["status"] != "ok":
            answer += f" · {fields['status']}"
        probabilities = " · ".join(f"{view[0]} {float(fields[f'p_{view}']):.2f}" for view in VIEWS)
    return (
        f'<figure class="status-{escape(fields["status"])}" id="row{card.index}">'
        f'<a href="{_link(scan)}">{picture}</a><figcaption>'
        f'<span class="answer">{escape(answer)}</span><br>'
        f"{escape(fields['path'])}"
        + (f'<br><span class="p">{probabilities}</span>' if probabilities else "")
        + "</figcaption></figure>"
    )
