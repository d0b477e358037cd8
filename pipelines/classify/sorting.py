"""Sorting a finished run's scans into one folder per answer (classify_dir --sort_into=DIR).

    DIR/coronal/  DIR/horizontal/  DIR/sagittal/   status "ok": the predicted view
    DIR/uncertain/  DIR/blank/  DIR/error/         the other statuses

so a lab hands DIR/coronal straight to a registration tool (DeepSlice, ABBA)
that assumes one plane, and looks at the rest by hand. Each entry is a
relative symbolic link to the scan (the sorted tree stays valid when scans and
DIR move together), or a copy (`copy=True`, for tools or file systems that do
not follow links). Names are the scan's path below the scan folder with "/"
written "__" (`slide_003/raw/s0017.png` -> `slide_003__raw__s0017.png`), so one
flat folder per class holds scans from any depth and says where each came from.
Two paths that would get one name (`a__b.png` and `a/b.png`) are told apart
by the later one's `~2` before its extension, in CSV order; for that the sort
holds one name per scan while it runs (about 100 bytes each).

Resumable and idempotent, like the CSV: entries appear atomically (made under
a temporary name, then renamed), so a kill leaves whole entries only; running
again completes the folder and leaves entries that are already right alone.
DIR/sort.json records which run the folder holds: when the run's outputs
change (a rerun with --overwrite, another model), the six class folders are
emptied and sorted again, so no scan stays filed under an old answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from brainview.classify import output_readers
from brainview.labels import VIEWS

# The folders, in the order they are reported.
CLASSES = (*VIEWS, "uncertain", "blank", "error")
RECORD_NAME = "sort.json"
_TEMPORARY_SUFFIX = ".sorting-tmp"


class SortError(Exception):
    """The sort folder cannot be used; the message says what to do."""


def class_of(view: str, status: str) -> str:
    """The folder of a CSV row: its view when it is "ok", its status otherwise."""
    return view if status == "ok" else status


def entry_name(path: str) -> str:
    """A scan's path below the scan folder as one file name."""
    return path.replace("/", "__")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def check_sort_dir(sort_dir: str, scan_dir: str, run_outputs: tuple[str, ...] = ()) -> None:
    """Refuses, before any work, a sort folder that would hurt: inside the scan
    folder (the next run would classify the sorted links again), holding the
    run's own outputs, or holding other files or another scan folder's sort."""
    if _inside(sort_dir, scan_dir):
        raise SortError(
            f"--sort_into={sort_dir} is inside the scan directory {scan_dir}: "
            "choose a folder outside it"
        )
    for path in run_outputs:
        if _inside(path, sort_dir):
            raise SortError(
                f"--sort_into={sort_dir} would hold the run's output {path}: "
                "choose a folder of its own, e.g. a subfolder"
            )
    scan_real = os.path.realpath(scan_dir)
    if not os.path.isdir(sort_dir):
        if os.path.exists(sort_dir):
            raise SortError(f"--sort_into={sort_dir} exists and is not a folder")
        return
    record = _read_record(sort_dir)
    if record is None:
        if os.listdir(sort_dir):
            raise SortError(
                f"--sort_into={sort_dir} holds other files: choose a new or empty folder"
            )
    elif record.get("scan_dir") != scan_real:
        raise SortError(
            f"--sort_into={sort_dir} holds the sort of another scan directory "
            f"({record.get('scan_dir')}): choose another folder"
        )


@dataclasses.dataclass
class SortSummary:
    """What a sort did: entries per class, made now, already right, or without a file."""

    by_class: dict[str, int]
    made: int = 0
    kept: int = 0
    missing: list[str] = dataclasses.field(default_factory=list)  # rows whose scan is gone

    def format(self) -> str:
        counts = ", ".join(f"{name} {self.by_class.get(name, 0)}" for name in CLASSES)
        line = f"  sorted:   {counts} ({self.made} new, {self.kept} already there)"
        if self.missing:
            line += f"; {len(self.missing)} without a file to link, e.g. {self.missing[0]}"
        return line


def sort_scans(csv_path: str, scan_dir: str, sort_dir: str, copy: bool = False) -> SortSummary:
    """Files every row of a finished run's CSV into sort_dir (see the module docstring)."""
    check_sort_dir(sort_dir, scan_dir, (csv_path,))
    manifest = output_readers.read_manifest(csv_path)
    if manifest is None:
        raise SortError(f"{csv_path} is not a finished run: finish it (--resume) before sorting")
    scan_real = os.path.realpath(scan_dir)
    record = {
        "scan_dir": scan_real,
        "csv": os.path.abspath(csv_path),
        "run_finished": manifest.get("finished"),
        "model_sha256": manifest.get("model_sha256"),
        "rows": manifest.get("rows"),
        "copies": copy,
    }
    previous = _read_record(sort_dir)
    if previous is not None and {k: previous.get(k) for k in record} != record:
        for name in CLASSES:  # another run's answers: start again
            shutil.rmtree(os.path.join(sort_dir, name), ignore_errors=True)
    for name in CLASSES:
        os.makedirs(os.path.join(sort_dir, name), exist_ok=True)
    _write_record(sort_dir, dict(record, complete=False))

    sort_real = os.path.realpath(sort_dir)
    summary = SortSummary(by_class=dict.fromkeys(CLASSES, 0))
    taken: set[tuple[str, str]] = set()
    for row in output_readers.read_rows(csv_path):
        folder = class_of(row.view, row.status)
        source = os.path.join(os.fsencode(scan_real), row.path.encode("utf-8"))
        if not os.path.isfile(source):  # e.g. a folder that could not be listed
            summary.missing.append(row.path)
            continue
        name = _unique(entry_name(row.path), folder, taken)
        target = os.path.join(os.fsencode(sort_real), folder.encode(), name.encode())
        if _is_entry_of(target, source, copy):
            summary.kept += 1
        else:
            _make_entry(target, source, copy)
            summary.made += 1
        summary.by_class[folder] += 1
    _write_record(sort_dir, dict(record, complete=True, by_class=summary.by_class))
    return summary


def _unique(name: str, folder: str, taken: set[tuple[str, str]]) -> str:
    """`name`, or `stem~N.ext` with the smallest N >= 2 not yet taken in `folder`."""
    stem, extension = os.path.splitext(name)
    candidate, number = name, 1
    while (folder, candidate) in taken:
        number += 1
        candidate = f"{stem}~{number}{extension}"
    taken.add((folder, candidate))
    return candidate


def _is_entry_of(target: bytes, source: bytes, copy: bool) -> bool:
    """Whether target already is the entry for source (a link to it, or a full copy)."""
    if copy:
        if os.path.islink(target) or not os.path.isfile(target):
            return False
        return os.path.getsize(target) == os.path.getsize(source) and os.path.getmtime(
            target
        ) == os.path.getmtime(source)
    return os.path.islink(target) and os.readlink(target) == _link_text(target, source)


def _link_text(target: bytes, source: bytes) -> bytes:
    return os.path.relpath(source, os.path.dirname(target))


def _make_entry(target: bytes, source: bytes, copy: bool) -> None:
    temporary = target + _TEMPORARY_SUFFIX.encode()
    if os.path.lexists(temporary):
        os.remove(temporary)  # left by a killed sort
    if copy:
        shutil.copy2(source, temporary)  # keeps the modification time: how a rerun knows it
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
    else:
        os.symlink(_link_text(target, source), temporary)
    os.replace(temporary, target)


def _read_record(sort_dir: str) -> dict | None:
    try:
        with open(os.path.join(sort_dir, RECORD_NAME), encoding="utf-8") as file:
            record = json.load(file)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(sort_dir: str, record: dict) -> None:
    path = os.path.join(sort_dir, RECORD_NAME)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(record, file, indent=2)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
