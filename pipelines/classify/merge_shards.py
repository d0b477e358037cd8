"""Joins the outputs of `classify_dir --num_shards=N` runs into one CSV + HDF5.

Shard k holds the files whose index in the (deterministic) walk is k mod N,
in walk order, so the merged order is a round robin over the shards: the
result equals a single run over the whole directory. Only complete shards
(with their `.run.json` manifest) are merged, and they must agree on the
scan directory, model and settings.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from brainview.classify import outputs

BLOCK_ROWS = 65536  # rows merged at a time (bounded memory)


class MergeError(Exception):
    """Shards that cannot be merged; the message says which and why."""


def _manifest(csv_path: str) -> dict:
    manifest = outputs.read_manifest(csv_path)
    if manifest is None:
        state = (
            "unfinished (resume it with --resume)" if outputs.is_unfinished(csv_path) else "missing"
        )
        raise MergeError(f"{csv_path}: shard is {state}; no {outputs.manifest_path(csv_path)}")
    return manifest


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
    try:
        readers = [outputs.read_records(path) for path in shard_csvs]
    except outputs.OutputError as error:
        raise MergeError(f"a shard CSV cannot be merged: {error}") from None
    temporary = output_csv + ".tmp"
    rows = 0
    try:
        with open(temporary, "wb") as out:
            out.write(outputs.csv_line(list(outputs.CSV_COLUMNS)))
            while True:
                row = next(readers[rows % len(readers)], None)
                if row is None:
                    break
                out.write(outputs.csv_line(row))
                rows += 1
            if any(next(reader, None) is not None for reader in readers):
                raise MergeError("shard CSVs have inconsistent lengths (not from one N-shard run)")
    finally:
        for reader in readers:
            reader.close()
    os.replace(temporary, output_csv)
    return rows


def _merge_cams(shard_cams: list[str], output_path: str, total: int) -> None:
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(outputs.CamFile(path)) for path in shard_cams]
        count = len(sources)
        attributes = sources[0].attributes
        attributes.update(num_shards=1, shard_index=0, merged_from_shards=count)
        temporary = output_path + ".tmp"
        cam_shape = sources[0].cam_shape
        with outputs.create_cam_file(temporary, total, cam_shape, attributes) as out:
            block = BLOCK_ROWS - BLOCK_ROWS % count
            for start in range(0, total, block):
                stop = min(start + block, total)
                # Row r of the merged file is row r // count of shard r % count.
                parts = [
                    source.block(-(-(start - k) // count), -(-(stop - k) // count))
                    for k, source in enumerate(sources)
                ]
                merged = {}
                for name, first in parts[0].items():
                    merged[name] = np.empty((stop - start, *first.shape[1:]), first.dtype)
                    for k, part in enumerate(parts):
                        merged[name][(k - start) % count :: count] = part[name]
                outputs.write_block(out, start, merged)
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
        rows=rows, cams=output_cams, merged_from=ordered_csvs, finished=outputs.utc_now()
    )
    manifest.pop("last_session", None)
    _, manifest["by_view"], manifest["by_status"] = outputs.count_rows(output_csv)
    outputs.write_manifest(output_csv, manifest)
    return rows
