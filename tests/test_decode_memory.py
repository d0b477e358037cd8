"""The memory a decode may take, estimated from the header by mode and bit depth.

Pixels alone did not bound it: a PNG or TIFF just under the 10^9-pixel limit was
decoded at ~4 bytes per pixel, 16-bit RGB at ~22, so a few-MB file could need 17 GB
and the out-of-memory killer ended the run. `image_files.decode_memory` estimates
the peak from the header and `read_image` refuses what would exceed
MAX_DECODE_BYTES. The estimate is checked here against the peak memory measured
in fresh processes, for every decode path.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from brainview import image_files
from brainview.image_files import ImageReadError
from tests.test_image_files import _write_png16

SIDE = 2400  # 5.8 MP: large against the interpreter's own noise, quick to write


def _texture(shape, high=256, dtype=np.uint8, seed=0) -> np.ndarray:
    """Blocks of random values: compressible, but not constant (decoders do real work)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(
        0, high, (shape[0] // 10 + 1, shape[1] // 10 + 1, *shape[2:]), dtype=dtype
    )
    return np.repeat(np.repeat(blocks, 10, axis=0), 10, axis=1)[: shape[0], : shape[1]]


def _write_kind(kind: str, path: str) -> None:
    gray, rgb = _texture((SIDE, SIDE)), _texture((SIDE, SIDE, 3))
    if kind == "1.png":
        Image.fromarray(gray > 128).save(path)
    elif kind == "L.png":
        Image.fromarray(gray).save(path, compress_level=1)
    elif kind == "P.png":
        Image.fromarray(gray % 4).convert("P").save(path)
    elif kind == "P-transparent.png":
        palette = Image.fromarray((gray % 4).astype(np.uint8), "P")
        palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
        palette.save(path, transparency=0)
    elif kind == "LA.png":
        Image.fromarray(np.dstack([gray, gray]), "LA").save(path, compress_level=1)
    elif kind == "RGB.png":
        Image.fromarray(rgb).save(path, compress_level=1)
    elif kind == "RGBA.png":
        Image.fromarray(np.dstack([rgb, gray])).save(path, compress_level=1)
    elif kind == "I16.png":
        Image.fromarray(_texture((SIDE, SIDE), 4096, np.uint16)).save(path)
    elif kind == "RGB16.png":
        _write_png16(path, _texture((SIDE, SIDE, 3), 4096, np.uint16))
    elif kind == "RGBA16.png":
        _write_png16(path, _texture((SIDE, SIDE, 4), 4096, np.uint16))
    elif kind == "F.tif":
        Image.fromarray(_texture((SIDE, SIDE), 4096, np.uint16).astype(np.float32)).save(path)
    elif kind == "CMYK.jpg":
        Image.fromarray(rgb).convert("CMYK").save(path)
    elif kind == "RGB.webp":
        Image.fromarray(rgb).save(path, lossless=True, quality=0)
    else:
        raise ValueError(kind)


KINDS = [
    "1.png",
    "L.png",
    "P.png",
    "P-transparent.png",
    "LA.png",
    "RGB.png",
    "RGBA.png",
    "I16.png",
    "RGB16.png",
    "RGBA16.png",
    "F.tif",
    "CMYK.jpg",
    "RGB.webp",
]

# A fresh interpreter per decode, so the peak (VmHWM) is this decode's alone. The module
# is loaded from its file: importing the package would import TensorFlow.
_MEASURE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("image_files", sys.argv[1])
image_files = importlib.util.module_from_spec(spec)
sys.modules["image_files"] = image_files
spec.loader.exec_module(image_files)
def memory_kb(field):
    with open("/proc/self/status") as status:
        return int(status.read().split(field + ":")[1].split()[0])
baseline_kb = memory_kb("VmRSS")
image_files.read_image(sys.argv[2], int(sys.argv[3]))
print(json.dumps({"growth": (memory_kb("VmHWM") - baseline_kb) * 1024,
                  "estimate": image_files.estimated_decode_bytes(sys.argv[2], int(sys.argv[3]))}))
"""


def _measure(path: str, max_side: int) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _MEASURE, image_files.__file__, path, str(max_side)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(completed.stdout)


@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_estimate_bounds_the_measured_peak_of_every_decode_path(tmp_path):
    """For each mode and bit depth, decoded to 256 px (where the full-size decode is nearly
    everything): the measured peak is never above the estimate, and the estimate is close
    to it (not a blanket factor). Decoded to the default 2048 px (a result as large as the
    source), for the modes whose results cost most per pixel: still within the estimate."""
    paths = {kind: str(tmp_path / kind) for kind in KINDS}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(_write_kind, paths, paths.values()))
        cases = [(kind, 256) for kind in KINDS]
        cases += [(kind, 2048) for kind in ("L.png", "RGB.png", "I16.png", "F.tif")]
        jobs = {(kind, side): pool.submit(_measure, paths[kind], side) for kind, side in cases}
        measured = {key: job.result() for key, job in jobs.items()}
    for (kind, side), result in measured.items():
        growth, estimate = result["growth"], result["estimate"]
        assert growth <= estimate, (kind, side, growth / 1e6, estimate / 1e6)
        if side == 256:
            assert estimate <= 1.4 * growth + 20e6, (kind, growth / 1e6, estimate / 1e6)


def _png_header_only(width: int, height: int, bit_depth: int, color_type: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_a_decode_over_the_memory_budget_is_refused_from_the_header(tmp_path):
    """16000^2 = 256 MP is far below the pixel limit, but as 16-bit RGB it needs ~5.6 GB:
    refused before a pixel is decoded, with the estimate. The same size in 8-bit gray
    (~0.4 GB) or 8-bit RGB (~1.3 GB) is within the budget (these files carry no pixel
    data, so they fail later, as truncated)."""
    wide = tmp_path / "rgb16.png"
    wide.write_bytes(_png_header_only(16000, 16000, 16, 2))
    with pytest.raises(ImageReadError) as error:
        image_files.read_image(wide)
    message = str(error.value)
    assert message.startswith("too large to decode: 16000x16000 16-bit RGB PNG needs about")
    assert "GB of memory, over the limit of 5.0 GB" in message
    for name, bit_depth, color_type in (("gray8.png", 8, 0), ("rgb8.png", 8, 2)):
        path = tmp_path / name
        path.write_bytes(_png_header_only(16000, 16000, bit_depth, color_type))
        estimate = image_files.estimated_decode_bytes(path)
        assert 0 < estimate < image_files.MAX_DECODE_BYTES, name
        with pytest.raises(ImageReadError, match="cannot decode image data"):
            image_files.read_image(path)


def test_jpeg_estimate_follows_the_reduced_scale_it_is_decoded_at(tmp_path):
    """libjpeg decodes a large JPEG at 1/8 scale when that covers the target size: the
    estimate counts those pixels, not the full frame."""
    path = tmp_path / "large.jpg"
    Image.fromarray(_texture((3000, 4000, 3))).save(path, quality=80)
    full = image_files.estimated_decode_bytes(path, max_side=4000)
    reduced = image_files.estimated_decode_bytes(path, max_side=500)
    assert full > 12e6 * 4  # 12 MP of RGB
    assert reduced < full / 10


def test_estimate_of_an_unreadable_file_is_zero(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    os.mkfifo(tmp_path / "pipe.png")  # never opened (it would block)
    for name in ("text.png", "pipe.png", "missing.png"):
        assert image_files.estimated_decode_bytes(tmp_path / name) == 0, name
