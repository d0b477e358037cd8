"""Joins the outputs of `classify_dir --num_shards=N` runs into one CSV + HDF5.

Shard k holds the files whose index in the (deterministic) walk is k mod N,
in walk order, so the merged order is a round robin over the shards: the
result equals a single run over the whole directory. Only complete shards
(with their `.run.json` manifest) are merged, and they must agree on the
scan directory, model and settings.

That holds only if every shard saw the same directory listing. So the merge
checks what it writes: the merged paths must be distinct and strictly in walk
order (shards made before and after a file was added interleave wrongly),
and each CAM file must belong to its shard's CSV (its model hash, shard index
and row count, and every row's path). A failed check removes what was
written and names the shard and row.
"""

from __future__ import annotations

import contextlib
import os
import re

import numpy as np

from brainview.classify import cam_file, output_readers, outputs, scan_files

BLOCK_ROWS = 65536  # rows merged at a time (bounded memory)


class MergeError(Exception):
    """Shards that cannot be merged; the message says which and why."""


def _manifest(csv_path: str) -> dict:
    manifest = output_readers.read_manifest(csv_path)
    if manifest is None:
        state = (
            "unfinished (resume it with --resume)"
            if output_readers.is_unfinished(csv_path)
            else "missing"
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


_ESCAPED_BYTE = re.compile(r"\\x([89a-f][0-9a-f])")


def raw_path(display_path: str) -> bytes:
    r"""The raw path a CSV path was written from (inverting scan_files.display_path).

    Undecodable bytes (0x80-0xff) were written as \xNN; a name that spells
    such an escape in plain text is read as that byte (the CSV cannot tell).
    """
    parts = _ESCAPED_BYTE.split(display_path)
    return b"".join(
        bytes([int(part, 16)]) if i % 2 else part.encode("utf-8") for i, part in enumerate(parts)
    )


def _merge_csv(shard_csvs: list[str], temporary: str) -> int:
    """Writes the round robin of the shards' rows to `temporary`; returns the row count."""
    try:
        readers = [output_readers.read_records(path) for path in shard_csvs]
    except outputs.OutputError as error:
        raise MergeError(f"a shard CSV cannot be merged: {error}") from None
    rows = 0
    previous: tuple[list[bytes], str] | None = None
    try:
        with open(temporary, "wb") as out:
            out.write(outputs.csv_line(list(outputs.CSV_COLUMNS)))
            while True:
                shard = rows % len(readers)
                row = next(readers[shard], None)
                if row is None:
                    break
                key = scan_files.sort_key(raw_path(row[0]))
                if previous is not None and not key > previous[0]:
                    raise MergeError(
                        f"merged row {rows} ({row[0]!r}, row {rows // len(readers)} of "
                        f"{shard_csvs[shard]}) does not come after {previous[1]!r} in walk order: "
                        "the shards did not see the same files (was the scan directory changed "
                        "between shard runs?); run the shards again"
                    )
                previous = (key, row[0])
                out.write(outputs.csv_line(row))
                rows += 1
            if any(next(reader, None) is not None for reader in readers):
                raise MergeError("shard CSVs have inconsistent lengths (not from one N-shard run)")
    finally:
        for reader in readers:
            reader.close()
    return rows


def _check_cam_files(shards: list[tuple[str, dict]], shard_cams: list[str]) -> None:
    """Each CAM file must be its shard's: same model, shard index and number of rows."""
    for (csv_path, manifest), cams_path in zip(shards, shard_cams, strict=True):
        signature = manifest["signature"]
        try:
            with cam_file.CamFile(cams_path) as cams:
                attributes, rows = cams.attributes, len(cams)
        except OSError as error:
            raise MergeError(f"cannot read CAM file {cams_path}: {error}") from None
        found = {
            "model_sha256": attributes.get("model_sha256"),
            "shard_index": attributes.get("shard_index"),
            "num_shards": attributes.get("num_shards"),
            "rows": rows,
        }
        expected = {
            "model_sha256": signature["model_sha256"],
            "shard_index": signature["shard_index"],
            "num_shards": signature["num_shards"],
            "rows": output_readers.count_rows(csv_path)[0],
        }
        wrong = [key for key in expected if found[key] != expected[key]]
        if wrong:
            details = ", ".join(f"{key} {found[key]} != {expected[key]}" for key in wrong)
            raise MergeError(f"{cams_path} does not belong to {csv_path}: {details}")


def _merge_cams(
    shard_cams: list[str], temporary: str, total: int, merged_csv: str, shard_csvs: list[str]
) -> None:
    """Writes the round robin of the shards' CAM rows, checking every row's path
    against the merged CSV's."""
    csv_rows = output_readers.read_records(merged_csv)
    with contextlib.ExitStack() as stack:
        stack.callback(csv_rows.close)
        sources = [stack.enter_context(cam_file.CamFile(path)) for path in shard_cams]
        count = len(sources)
        attributes = sources[0].attributes
        attributes.update(num_shards=1, shard_index=0, merged_from_shards=count)
        cam_shape = sources[0].cam_shape
        with cam_file.create_cam_file(temporary, total, cam_shape, attributes) as out:
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
                for offset, cam_path in enumerate(merged["paths"]):
                    cam_path = cam_path.decode() if isinstance(cam_path, bytes) else str(cam_path)
                    csv_path = next(csv_rows)[0]
                    if cam_path != csv_path:
                        row = start + offset
                        raise MergeError(
                            f"{shard_cams[row % count]} does not belong to "
                            f"{shard_csvs[row % count]}: its row {row // count} is {cam_path!r}, "
                            f"the CSV's is {csv_path!r}"
                        )
                cam_file.write_block(out, start, merged)


def _check_outputs(
    output_csv: str,
    output_cams: str | None,
    shards: list[tuple[str, dict]],
    shard_cams: list[str] | None,
) -> None:
    """The merged files must not overwrite each other or any shard's files."""
    try:
        outputs.check_output_paths(output_csv, output_cams)
    except outputs.OutputError as error:
        raise MergeError(str(error)) from None
    recorded_cams = [manifest.get("cams") for _, manifest in shards]
    shard_files = [*(path for path, _ in shards), *(shard_cams or []), *filter(None, recorded_cams)]
    inputs = {os.path.realpath(p) for p in shard_files}
    inputs |= {os.path.realpath(outputs.manifest_path(p)) for p, _ in shards}
    for output in filter(None, (output_csv, outputs.manifest_path(output_csv), output_cams)):
        if os.path.realpath(output) in inputs:
            raise MergeError(f"{output} is one of the shards' files: merge into another name")


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
    _check_outputs(output_csv, output_cams, shards, shard_cams)
    if output_cams:
        if shard_cams is None:
            shard_cams = [manifest.get("cams") for _, manifest in shards]
        else:
            if len(shard_cams) != len(shard_csvs):
                raise MergeError(
                    f"{len(shard_cams)} --shard_cams for {len(shard_csvs)} shard CSVs: give one "
                    "per CSV, in the same order"
                )
            by_csv = dict(zip(shard_csvs, shard_cams, strict=True))
            shard_cams = [by_csv[path] for path in ordered_csvs]
        if not all(shard_cams) or not all(os.path.exists(p) for p in shard_cams):
            raise MergeError("CAM files of some shards are missing (run them with --cams)")
        _check_cam_files(shards, shard_cams)
    temporaries = [output_csv + ".tmp"] + ([output_cams + ".tmp"] if output_cams else [])
    try:
        rows = _merge_csv(ordered_csvs, temporaries[0])
        if output_cams:
            _merge_cams(shard_cams, temporaries[1], rows, temporaries[0], ordered_csvs)
    except BaseException:
        for temporary in temporaries:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
        raise
    if output_cams:
        os.replace(temporaries[1], output_cams)
    os.replace(temporaries[0], output_csv)
    manifest = dict(shards[0][1])
    manifest["signature"] = dict(manifest["signature"], num_shards=1, shard_index=0)
    manifest.update(
        csv=os.path.basename(output_csv),
        rows=rows,
        cams=os.path.abspath(output_cams) if output_cams else None,
        merged_from=ordered_csvs,
        finished=outputs.utc_now(),
    )
    manifest.pop("last_session", None)
    manifest.pop("paths_sha256", None)  # a shard's; the merge is not resumed
    _, manifest["by_view"], manifest["by_status"] = output_readers.count_rows(output_csv)
    outputs.write_manifest(output_csv, manifest)
    return rows
