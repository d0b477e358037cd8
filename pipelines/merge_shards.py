"""Joins the outputs of `classify_dir --num_shards=N` runs into one CSV + HDF5.

Shard k holds the files whose index in the (deterministic) walk is k mod N,
in walk order, so the merged order is a round robin over the shards: the
result equals a single run over the whole directory. Only complete shards
(with their `.run.json` manifest) are merged, and they must agree on the
scan directory, model and settings.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os

import h5py
import numpy as np

from brainview import classify_outputs

BLOCK_ROWS = 65536  # rows merged at a time (bounded memory)


class MergeError(Exception):
    """Shards that cannot be merged; the message says which and why."""


def _manifest(csv_path: str) -> dict:
    path = os.path.splitext(csv_path)[0] + ".run.json"
    if not os.path.exists(path):
        progress = csv_path + ".progress.json"
        state = "unfinished (resume it with --resume)" if os.path.exists(progress) else "missing"
        raise MergeError(f"{csv_path}: shard is {state}; no {path}")
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _check_shards(shard_csvs: list[str]) -> list[tuple[str, dict]]:
    shards = [(path, _manifest(path)) for path in shard_csvs]
    count = len(shards)
    indices = sorted(m["signature"]["shard_index"] for _, m in shards)
    declared = {m["signature"]["num_shards"] for _, m in shards}
    if declared != {count} or indices != list(range(count)):
        raise MergeError(
            f"need exactly one complete output per shard 0..N-1 of one N-shard run; got shard "
            f"indices {indices} of num_shards {sorted(declared)}"
        )
    reference = {k: v for k, v in shards[0][1]["signature"].items() if k != "shard_index"}
    for path, manifest in shards[1:]:
        other = {k: v for k, v in manifest["signature"].items() if k != "shard_index"}
        if other != reference:
            changed = sorted(k for k in reference if reference[k] != other.get(k))
            raise MergeError(f"{path} was run with other settings than the first shard: {changed}")
    return sorted(shards, key=lambda item: item[1]["signature"]["shard_index"])


def _merge_csv(shard_csvs: list[str], output_csv: str) -> int:
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(p, newline="", encoding="utf-8")) for p in shard_csvs]
        readers = [csv.reader(file) for file in files]
        headers = [next(reader) for reader in readers]
        if any(header != list(classify_outputs.CSV_COLUMNS) for header in headers):
            raise MergeError("a shard CSV does not have classify_dir's columns")
        temporary = output_csv + ".tmp"
        rows = 0
        with open(temporary, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(classify_outputs.CSV_COLUMNS)
            while True:
                row = next(readers[rows % len(readers)], None)
                if row is None:
                    break
                writer.writerow(row)
                rows += 1
        if any(next(reader, None) is not None for reader in readers):
            raise MergeError("shard CSVs have inconsistent lengths (not from one N-shard run)")
        os.replace(temporary, output_csv)
        return rows


def _merge_cams(shard_cams: list[str], output_path: str, total: int) -> None:
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(h5py.File(path, "r")) for path in shard_cams]
        count = len(sources)
        attributes = dict(sources[0].attrs)
        attributes.update(num_shards=1, shard_index=0, merged_from_shards=count)
        cam_shape = sources[0]["cams"].shape[1:]
        temporary = output_path + ".tmp"
        with classify_outputs.create_cam_file(temporary, total, cam_shape, attributes) as out:
            block = BLOCK_ROWS - BLOCK_ROWS % count
            for start in range(0, total, block):
                stop = min(start + block, total)
                for name in classify_outputs.CAM_DATASETS:
                    parts = [
                        source[name][-(-(start - k) // count) : -(-(stop - k) // count)]
                        for k, source in enumerate(sources)
                    ]
                    merged = np.empty((stop - start, *parts[0].shape[1:]), parts[0].dtype)
                    for k, part in enumerate(parts):
                        merged[(k - start) % count :: count] = part
                    out[name][start:stop] = merged
        os.replace(temporary, output_path)


def merge_shards(
    shard_csvs: list[str],
    output_csv: str,
    output_cams: str | None = None,
    shard_cams: list[str] | None = None,
) -> int:
    """Merges complete shard outputs; returns the number of rows.

    `shard_cams` defaults to each shard's CAM file as recorded in its manifest.
    """
    shards = _check_shards(shard_csvs)
    ordered_csvs = [path for path, _ in shards]
    rows = _merge_csv(ordered_csvs, output_csv)
    if output_cams:
        if shard_cams is None:
            shard_cams = [manifest.get("cams") for _, manifest in shards]
        else:
            by_csv = dict(zip(shard_csvs, shard_cams, strict=True))
            shard_cams = [by_csv[path] for path in ordered_csvs]
        if not all(shard_cams) or not all(os.path.exists(p) for p in shard_cams):
            raise MergeError("CAM files of some shards are missing (run them with --cams)")
        _merge_cams(shard_cams, output_cams, rows)
    manifest = dict(shards[0][1])
    manifest["signature"] = dict(manifest["signature"], num_shards=1, shard_index=0)
    manifest.update(
        rows=rows,
        cams=output_cams,
        merged_from=ordered_csvs,
        finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    manifest.pop("last_session", None)
    _, manifest["by_view"], manifest["by_status"] = classify_outputs.count_rows(output_csv)
    with open(os.path.splitext(output_csv)[0] + ".run.json", "w", encoding="utf-8") as file:
        json.dump(manifest, file, indent=2)
    return rows
