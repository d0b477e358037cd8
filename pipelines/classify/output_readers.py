"""classify_dir's outputs read back: CSV rows streamed, the run manifest, unfinished runs.

For the tools that work on a run's outputs (merge_shards, sorting, scoring,
overlays, the review page) and for the writer, which reads what is already
there before it decides to start, resume or do nothing. Rows are streamed, so
a CSV of millions of scans is never held in memory.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import os
from collections.abc import Generator, Iterator

from brainview.classify import outputs


@dataclasses.dataclass(frozen=True)
class CsvRow:
    """The fields of a CSV row that tools choose rows by."""

    index: int  # 0 = the first data row
    path: str
    view: str  # "" for error rows
    confidence: float | None  # None for error rows
    status: str


def read_rows(csv_path: str) -> Iterator[CsvRow]:
    """The rows of a classify_dir CSV, streamed."""
    with open(csv_path, newline="", encoding="utf-8") as file:
        for index, row in enumerate(csv.DictReader(file)):
            confidence = row["confidence"]
            yield CsvRow(
                index=index,
                path=row["path"],
                view=row["view"],
                confidence=float(confidence) if confidence else None,
                status=row["status"],
            )


def read_records(csv_path: str) -> Generator[list[str], None, None]:
    """The data rows of a classify_dir CSV as raw fields, streamed.

    The header is checked now (outputs.OutputError if it is not classify_dir's); the
    file stays open until the rows are exhausted or the generator is closed.
    """
    file = open(csv_path, newline="", encoding="utf-8")  # noqa: SIM115 - closed by _records
    reader = csv.reader(file)
    if next(reader, None) != list(outputs.CSV_COLUMNS):
        file.close()
        raise outputs.OutputError(f"{csv_path} does not have classify_dir's columns")
    return _records(file, reader)


def _records(file: io.TextIOBase, reader) -> Generator[list[str], None, None]:
    with file:
        yield from reader


def count_rows(csv_path: str) -> tuple[int, collections.Counter, collections.Counter]:
    """(rows, rows per view, rows per status) of a classify_dir CSV, streamed."""
    views: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    rows = 0
    for row in read_rows(csv_path):
        rows += 1
        statuses[row.status] += 1
        if row.view:
            views[row.view] += 1
    return rows, views, statuses


def read_manifest(csv_path: str) -> dict | None:
    """The run manifest of complete outputs, or None (unfinished, absent or unreadable)."""
    try:
        with open(outputs.manifest_path(csv_path), encoding="utf-8") as file:
            manifest = json.load(file)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def is_unfinished(csv_path: str) -> bool:
    """Whether outputs at csv_path belong to a run that was started and not finished."""
    return os.path.exists(outputs.progress_path(csv_path))
