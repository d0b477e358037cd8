"""The Beam pipeline's outputs: rows -> CSV + CAM HDF5 shards -> the final joined files.

Every row is made by `classify_dir.batch_segment` (statuses, calibrated
probabilities), `classify.outputs` (CSV fields) and `classify.cam_file` (HDF5
values), so it equals classify_dir's row for the same file. Rows go to
`num_shards` shards by a stable hash of their path; each shard is written,
sorted in classify_dir's walk order, as

    OUT.shards/shard-SSSSS-of-NNNNN.csv    classify_dir's columns
    OUT.shards/shard-SSSSS-of-NNNNN.h5     classify_dir's CAM layout (with --cams)
    OUT.shards/shard-SSSSS-of-NNNNN.keys   the rows' raw path bytes, hex, one a line

and a last step (one worker) merges the sorted shards by those keys into OUT.csv
(+ the CAM file) in walk order — the files a single classify_dir run over the
same folder writes — then writes OUT.run.json, which marks the outputs
complete, and removes the shards (unless kept). Paths may be on any Beam
filesystem; HDF5, which needs a seekable file, is staged on local disk.

A crash cannot leave a half-written final file: local outputs are written to a
temporary file beside the target, fsynced and renamed; remote objects appear
whole when their upload closes. Shards have deterministic names, so a retried
bundle rewrites the same files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import json
import os
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator

import h5py
import numpy as np
from apache_beam.io.filesystems import FileSystems

from brainview import model as model_lib
from brainview.beam.sources import ScanFacts, walk_key
from brainview.classify import cam_file, classify_dir, output_readers, outputs

BLOCK_ROWS = 4096  # CAM rows read and written at a time by the join
_VIEW_COLUMN = outputs.CSV_COLUMNS.index("view")
_STATUS_COLUMN = outputs.CSV_COLUMNS.index("status")


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """Where and how the outputs are written; fixed before the pipeline starts."""

    output_csv: str
    cams_path: str | None
    num_shards: int
    cam_shape: tuple[int, int]
    cam_attributes: dict  # HDF5 file attributes, as classify_dir writes them
    manifest: dict  # the run's record (out.run.json) before counts are added
    keep_shards: bool = False

    @property
    def shards_dir(self) -> str:
        return shards_dir(self.output_csv)

    def shard_path(self, index: int, suffix: str) -> str:
        return FileSystems.join(
            self.shards_dir, f"shard-{index:05d}-of-{self.num_shards:05d}{suffix}"
        )


def shards_dir(output_csv: str) -> str:
    """out.csv -> out.shards: the shards of a run in progress."""
    return os.path.splitext(output_csv)[0] + ".shards"


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    index: int
    rows: int


# --- Rows ----------------------------------------------------------------------------------------


def to_row(
    element: tuple[ScanFacts, object], card: model_lib.ModelCard, num_shards: int
) -> tuple[int, tuple[bytes, outputs.Segment]]:
    """(facts, PredictionResult) -> (shard, (raw path, the one-row Segment))."""
    facts, result = element
    probabilities, cam = result.inference
    batch = {
        "valid": np.array([True]),
        "path": np.array([facts.relative_path], dtype=object),
        "error": np.array([facts.error.encode("utf-8")], dtype=object),
        "blank": np.array([facts.blank]),
        "width": np.array([facts.width], np.int32),
        "height": np.array([facts.height], np.int32),
        "mean_intensity": np.array([facts.mean_intensity], np.float32),
        "frame": facts.frame[np.newaxis].astype(np.float32),
    }
    segment = classify_dir.batch_segment(
        batch, probabilities[np.newaxis], None if cam is None else cam[np.newaxis], card
    )
    return zlib.crc32(facts.relative_path) % num_shards, (facts.relative_path, segment)


# --- Files on any Beam filesystem ----------------------------------------------------------------


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


@contextlib.contextmanager
def staged_file(target: str) -> Iterator[str]:
    """A local path to write `target`'s content to; published whole when the block ends."""
    if is_local(target):
        temporary = target + ".tmp"
        try:
            yield temporary
            with open(temporary, "rb+") as file:
                os.fsync(file.fileno())
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return
    with tempfile.TemporaryDirectory(prefix="brainview_stage_") as directory:
        local = os.path.join(directory, "staged")
        yield local
        with open(local, "rb") as source, FileSystems.create(target) as upload:
            shutil.copyfileobj(source, upload, 1 << 20)


def local_copy(path: str, directory: str) -> str:
    """`path` if local, else a copy of it in `directory`."""
    if is_local(path):
        return path
    local = os.path.join(directory, os.path.basename(path))
    with FileSystems.open(path) as remote, open(local, "wb") as copy:
        shutil.copyfileobj(remote, copy, 1 << 20)
    return local


def _cam_block(segment: outputs.Segment) -> dict[str, np.ndarray]:
    return {
        "cams": segment.cams,
        "paths": np.array(segment.paths, dtype=object),
        "views": segment.views,
        "probabilities": segment.probabilities,
        "frames": segment.frames,
        "statuses": np.array(segment.statuses, dtype=object),
    }


# --- Shards --------------------------------------------------------------------------------------


def write_shard(
    shard: tuple[int, Iterable[tuple[bytes, outputs.Segment]]], plan: OutputPlan
) -> ShardInfo:
    """Writes one shard's rows, sorted in walk order: CSV, keys and (with CAMs) HDF5."""
    index, rows = shard
    ordered = sorted(rows, key=lambda row: walk_key(row[0]))
    segment = outputs.concatenate([row_segment for _, row_segment in ordered])
    with staged_file(plan.shard_path(index, ".csv")) as path, open(path, "wb") as file:
        file.write(outputs.csv_line(list(outputs.CSV_COLUMNS)))
        file.writelines(outputs.csv_line(row) for row in segment.rows)
    with staged_file(plan.shard_path(index, ".keys")) as path, open(path, "w") as file:
        file.writelines(raw_path.hex() + "\n" for raw_path, _ in ordered)
    if plan.cams_path:
        with (
            staged_file(plan.shard_path(index, ".h5")) as path,
            cam_file.create_cam_file(path, len(segment), plan.cam_shape, {}) as file,
        ):
            cam_file.write_block(file, 0, _cam_block(segment))
    return ShardInfo(index, len(segment))


# --- The join ------------------------------------------------------------------------------------


class _CamCursor:
    """The rows of one shard's CAM file, in order, read a block at a time."""

    def __init__(self, shard_cams: cam_file.CamFile):
        self.shard_cams = shard_cams
        self.block: dict[str, np.ndarray] = {}
        self.start = 0
        self.offset = 0

    def next_row(self) -> dict[str, np.ndarray]:
        if not self.block or self.offset == len(self.block["paths"]):
            self.block = self.shard_cams.block(self.start, self.start + BLOCK_ROWS)
            self.start += len(self.block["paths"])
            self.offset = 0
        row = {name: values[self.offset] for name, values in self.block.items()}
        self.offset += 1
        return row


class _CamWriter:
    """Fills a final CAM file row by row, a block at a time."""

    def __init__(self, file: h5py.File):
        self.file = file
        self.pending: list[dict[str, np.ndarray]] = []
        self.written = 0

    def add(self, row: dict[str, np.ndarray]) -> None:
        self.pending.append(row)
        if len(self.pending) == BLOCK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        block = {
            name: np.array([row[name] for row in self.pending], dtype=self.pending[0][name].dtype)
            if name not in ("paths", "statuses")
            else np.array([row[name] for row in self.pending], dtype=object)
            for name in cam_file.CAM_DATASETS
        }
        cam_file.write_block(self.file, self.written, block)
        self.written += len(self.pending)
        self.pending = []


def _keys(path: str, shard: int) -> Iterator[tuple[list[bytes], int]]:
    with open(path, encoding="ascii") as file:
        for line in file:
            yield walk_key(bytes.fromhex(line.strip())), shard


def join_shards(shards: list[ShardInfo], plan: OutputPlan) -> dict:
    """Merges the sorted shards into the final files; returns the manifest written."""
    manifest_path = outputs.manifest_path(plan.output_csv)
    if not FileSystems.exists(plan.shards_dir) and FileSystems.exists(manifest_path):
        return {}  # a retry of a join that completed: nothing left to do
    shards = sorted(shards, key=lambda shard: shard.index)
    total = sum(shard.rows for shard in shards)
    by_view: Counter = Counter()
    by_status: Counter = Counter()
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="brainview_join_"))

        def fetch(index: int, suffix: str) -> str:
            return local_copy(plan.shard_path(index, suffix), work)

        merged = heapq.merge(*(_keys(fetch(s.index, ".keys"), k) for k, s in enumerate(shards)))
        records = [output_readers.read_records(fetch(s.index, ".csv")) for s in shards]
        for reader in records:
            stack.callback(reader.close)
        csv_file = stack.enter_context(
            open(stack.enter_context(staged_file(plan.output_csv)), "wb")
        )
        csv_file.write(outputs.csv_line(list(outputs.CSV_COLUMNS)))
        cursors, cam_writer = [], None
        if plan.cams_path:
            for shard in shards:
                shard_cams = stack.enter_context(cam_file.CamFile(fetch(shard.index, ".h5")))
                cursors.append(_CamCursor(shard_cams))
            attributes = dict(plan.cam_attributes, created=outputs.utc_now())
            cam_path = stack.enter_context(staged_file(plan.cams_path))
            merged_cams = stack.enter_context(
                cam_file.create_cam_file(cam_path, total, plan.cam_shape, attributes)
            )
            cam_writer = _CamWriter(merged_cams)
        for _, shard in merged:
            row = next(records[shard])
            csv_file.write(outputs.csv_line(row))
            by_status[row[_STATUS_COLUMN]] += 1
            if row[_VIEW_COLUMN]:
                by_view[row[_VIEW_COLUMN]] += 1
            if cam_writer is not None:
                cam_writer.add(cursors[shard].next_row())
        if cam_writer is not None:
            cam_writer.flush()
        csv_file.flush()
    manifest = dict(
        plan.manifest,
        rows=total,
        by_view=dict(by_view),
        by_status=dict(by_status),
        finished=outputs.utc_now(),
    )
    with staged_file(manifest_path) as path, open(path, "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=2)
    if not plan.keep_shards:
        FileSystems.delete([plan.shards_dir])
    return manifest
