"""The decode journal: a run killed while decoding a scan does not die on it again.

The out-of-memory killer's SIGKILL repeated on every `--resume`, which never finished.
These tests drive the real journal (brainview.classify.decode_journal) on real files:
a dead run is the journal file as a killed process leaves it (a `start` line without
its `end`, which the first test shows is what a decode writes before it returns).
The end-to-end kill during a real large decode is in test_classify_dir.py.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import tifffile
from PIL import Image

from brainview import image_files, whole_slide
from brainview.classify import decode_journal, scan_files

MAX_SIDE = 2048


def _png_header_only(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b""))  # none, in fact
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def _scan_dir(tmp_path) -> bytes:
    """A big scan (16-bit RGB 8000^2: ~1.5 GB to decode) and two small ones."""
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "big.png").write_bytes(_png_header_only(8000, 8000, 16, 2))
    for name in ("small_a.png", "small_b.png"):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(scans / name)
    return os.fsencode(scans)


def _died_while_decoding(journal_path: str, *paths: bytes) -> None:
    """What a run killed during these decodes leaves: their `start` lines, no `end`."""
    with open(journal_path, "ab") as file:
        for path in paths:
            file.write(b"start " + path.hex().encode() + b"\n")


def _load(journal, scan_dir: bytes, name: bytes) -> scan_files.LoadedScan:
    return journal.load(scan_dir, scan_files.ScanEntry(name), MAX_SIDE)


def test_every_decode_is_journaled_start_and_end(tmp_path):
    scan_dir = _scan_dir(tmp_path)
    path = str(tmp_path / "out.csv.decoding")
    journal = decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=False)
    scan = _load(journal, scan_dir, b"small_a.png")
    assert scan.error == "" and scan.width == 30
    with open(path, "rb") as file:
        assert file.read() == b"start " + b"small_a.png".hex().encode() + b"\nend " + (
            b"small_a.png".hex().encode() + b"\n"
        )
    journal.remove()
    assert not os.path.exists(path)


def test_a_large_scan_in_flight_when_the_run_died_is_an_error_row_on_resume(tmp_path):
    scan_dir = _scan_dir(tmp_path)
    assert image_files.estimated_decode_bytes(os.path.join(scan_dir, b"big.png")) > 1e9
    path = str(tmp_path / "out.csv.decoding")
    decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=False).close()
    _died_while_decoding(path, b"big.png", b"small_a.png")

    journal = decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=True)
    big = _load(journal, scan_dir, b"big.png")
    assert big.error.startswith("skipped: the run was killed while decoding this file")
    assert "needs about 1.5 GB of memory (out of memory?)" in big.error
    assert (big.width, big.height) == (0, 0)
    # The small scan in flight is not blamed (a kill for another reason changes nothing)...
    assert _load(journal, scan_dir, b"small_b.png").error == ""
    journal.compact()
    journal.close()
    # ...but stays a suspect until it decodes; a second death with it in flight blames it.
    _died_while_decoding(path, b"small_a.png")
    again = decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=True)
    assert (
        "runs were killed twice while decoding this file"
        in _load(again, scan_dir, b"small_a.png").error
    )
    assert _load(again, scan_dir, b"big.png").error == big.error  # blamed until the run ends
    again.close()


def test_a_suspect_that_decodes_is_cleared(tmp_path):
    scan_dir = _scan_dir(tmp_path)
    path = str(tmp_path / "out.csv.decoding")
    decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=False).close()
    _died_while_decoding(path, b"small_a.png")
    journal = decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=True)
    assert journal.suspects == {b"small_a.png"}
    assert _load(journal, scan_dir, b"small_a.png").error == ""
    journal.compact()
    journal.close()
    _died_while_decoding(path, b"small_a.png")  # in flight at a later, unrelated kill
    later = decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=True)
    assert not later.blamed and later.suspects == {b"small_a.png"}
    later.close()


def test_a_new_run_starts_a_new_journal(tmp_path):
    scan_dir = _scan_dir(tmp_path)
    path = str(tmp_path / "out.csv.decoding")
    decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=False).close()
    _died_while_decoding(path, b"big.png")
    fresh = decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=False)
    assert not fresh.blamed and not fresh.suspects
    assert not _load(fresh, scan_dir, b"big.png").error.startswith("skipped")  # read again
    fresh.close()


def _pyramid_16k(path) -> None:
    """A 16,384 px RGB slide with levels (sub-IFDs), written tile by tile from one tile."""
    tile = np.full((512, 512, 3), 200, np.uint8)
    sides = [16384, 4096, 1024]
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for index, side in enumerate(sides):
            level = {"subifds": len(sides) - 1} if index == 0 else {"subfiletype": 1}
            count = (side // 512) ** 2
            writer.write(
                (tile for _ in range(count)),
                shape=(side, side, 3),
                dtype=np.uint8,
                tile=(512, 512),
                compression="zlib",
                **level,
            )


def test_a_whole_slide_pyramid_in_flight_is_a_suspect_not_blamed(tmp_path):
    """Pillow would decode its full resolution (over the blame threshold), but it is read
    level by level: a kill while reading it says nothing about its memory."""
    scans = tmp_path / "scans"
    scans.mkdir()
    _pyramid_16k(str(scans / "slide.tif"))
    scan_dir = os.fsencode(scans)
    slide = os.path.join(scan_dir, b"slide.tif")
    assert image_files.estimated_decode_bytes(slide) >= decode_journal.SUSPECT_DECODE_BYTES
    assert whole_slide.is_pyramid(slide)
    path = str(tmp_path / "out.csv.decoding")
    decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=False).close()
    _died_while_decoding(path, b"slide.tif")

    journal = decode_journal.DecodeJournal(path, scan_dir, MAX_SIDE, resume=True)

    assert b"slide.tif" in journal.suspects and not journal.blamed
    scan = journal.load(scan_dir, scan_files.ScanEntry(b"slide.tif"), MAX_SIDE, 512)
    assert scan.error == "" and (scan.width, scan.height) == (16384, 16384)
    journal.close()
