"""Helpers for the classify_dir tests (tests/test_classify_dir.py): running the binaries,
generating scan folders (the golden folder, a corpus of bad files), the test model.

The session fixtures built from these (`classifier_model`, `golden_run`, ...) are in
conftest.py. Everything is generated from fixed seeds: no downloads, no shared data.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIFY_DIR = os.path.join(REPO_ROOT, "bin", "classify_dir")
MERGE_SHARDS = os.path.join(REPO_ROOT, "bin", "merge_shards")
RENDER_CAMS = os.path.join(REPO_ROOT, "bin", "render_cams")

MODEL_IMAGE_SIZE = 64  # small input: fast on a CPU; EfficientNet's CAMs are then 2x2
MODEL_TEMPERATURE = 1.5  # != 1 so the golden output also covers the temperature scaling
UNCERTAIN_BELOW = 0.5  # so the golden output has "uncertain" rows too
LOGIT_SPREAD = 2.0  # std of the test model's centred logits over the calibration images
BINARY_TIMEOUT = 900  # seconds; generous for a loaded 2-core machine, still catches hangs


# --- Running the binaries ------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")


# Root reads and lists everything whatever the permission bits, because it holds
# CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. Dropped from the bounding set before exec,
# the program runs as root without them: permission bits apply to it as to any user.
# (No mount, no other user: the interpreter may live where only root can read.)
_WITHOUT_PERMISSION_OVERRIDE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
    if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
        sys.exit(f"cannot drop capability {capability}: {os.strerror(ctypes.get_errno())}")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _command(tool: str, args: tuple[str, ...], permissions_apply: bool) -> list[str]:
    """The command running `tool`; with `permissions_apply`, file permission bits bind it
    even when the tests run as root."""
    if permissions_apply and os.geteuid() == 0:
        return [sys.executable, "-c", _WITHOUT_PERMISSION_OVERRIDE, tool, *args]
    return [sys.executable, tool, *args]


def run_tool(
    tool: str, *args: str, timeout: float = BINARY_TIMEOUT, permissions_apply: bool = False
) -> subprocess.CompletedProcess:
    """Runs one of the bin/ tools to completion; text output (undecodable bytes replaced)."""
    return subprocess.run(
        _command(tool, args, permissions_apply),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=_environment(),
        cwd=REPO_ROOT,
    )


# Tools started in the background by the current test (see `stop_started_tools`).
_STARTED: list[subprocess.Popen] = []


def start_tool(tool: str, *args: str, log_path: str) -> subprocess.Popen:
    """Starts a bin/ tool in the background, its output in `log_path` (never a full pipe)."""
    log = open(log_path, "wb")  # noqa: SIM115 - owned by the process, closed in finish_tool
    process = subprocess.Popen(
        [sys.executable, tool, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_environment(),
        cwd=REPO_ROOT,
    )
    process.log = log  # type: ignore[attr-defined]
    process.log_path = log_path  # type: ignore[attr-defined]
    _STARTED.append(process)
    return process


def stop_started_tools() -> None:
    """Kills (by pid) the tools started by the current test that still run: a failed
    assertion must not leave a classification running in the background (conftest.py
    calls this after every test)."""
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
        process.log.close()  # type: ignore[attr-defined]


def finish_tool(process: subprocess.Popen, timeout: float = BINARY_TIMEOUT) -> tuple[int, str]:
    """Waits for a started tool; returns (exit code, its output)."""
    try:
        code = process.wait(timeout=timeout)
    finally:
        process.log.close()  # type: ignore[attr-defined]
    with open(process.log_path, encoding="utf-8", errors="replace") as file:  # type: ignore[attr-defined]
        return code, file.read()


def kill_tool(process: subprocess.Popen) -> None:
    """SIGKILL, as an out-of-memory killer or a cluster's time limit would."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    process.log.close()  # type: ignore[attr-defined]


def classify_args(
    scan_dir: str, output_csv: str, model_path: str, cams: str | None = None, *flags: str
) -> list[str]:
    args = [scan_dir, output_csv, f"--model={model_path}"]
    if cams:
        args.append(f"--cams={cams}")
    return [*args, *flags]


def read_progress(csv_path: str) -> dict | None:
    """The run's journal (rewritten atomically, so never half written), or None."""
    try:
        with open(csv_path + ".progress.json", encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        return None


def wait_for_progress(
    process: subprocess.Popen,
    csv_path: str,
    rows_at_least: int,
    timeout: float = BINARY_TIMEOUT,
) -> dict | None:
    """Polls the journal until `rows_at_least` rows are committed (or the process ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = read_progress(csv_path)
        if progress is not None and progress["rows_done"] >= rows_at_least:
            return progress
        if process.poll() is not None:
            return progress
        time.sleep(0.02)
    raise TimeoutError(f"no progress to {rows_at_least} rows in {timeout} s")


# --- Reading outputs -----------------------------------------------------------------------------


def read_csv_rows(path: str) -> list[dict[str, str]]:
    """The CSV as users' scripts read it with the csv module (quoting intact)."""
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def read_cam_file(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(datasets as arrays, file attributes) of a CAM HDF5 file; strings decoded."""
    with h5py.File(path, "r") as file:
        data = {}
        for name in file:
            values = file[name][...]
            if values.dtype.kind == "O":
                values = np.array([v.decode() if isinstance(v, bytes) else v for v in values])
            data[name] = values
        return data, dict(file.attrs)


def walk_order(relative_paths: list[bytes]) -> list[bytes]:
    """The documented walk order, computed independently of scan_files: depth first with
    the entries of every directory sorted by their raw name bytes, i.e. comparing the
    paths component by component (b"a/x" sorts before b"a.png", as b"a" < b"a.png")."""
    return sorted(relative_paths, key=lambda path: path.rstrip(b"/").split(b"/"))


# --- Images -----------------------------------------------------------------------------------------


def ellipse_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random ellipse (a stand-in for a section) filling most of the frame."""
    y, x = np.mgrid[:height, :width].astype(np.float32)
    cy, cx = height / 2 + rng.uniform(-4, 4), width / 2 + rng.uniform(-4, 4)
    ay, ax = rng.uniform(0.2, 0.42) * height, rng.uniform(0.2, 0.42) * width
    angle = rng.uniform(0, np.pi)
    dy, dx = y - cy, x - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0


def section_image(rng: np.random.Generator, height: int = 72, width: int = 88) -> np.ndarray:
    """A bright-field stand-in section: dark textured tissue on a light slide, RGB uint8."""
    mask = ellipse_mask(rng, height, width)
    texture = rng.normal(0, 12, (height, width))
    blobs = ellipse_mask(rng, height, width) & ~ellipse_mask(rng, height, width)
    gray = np.where(mask, 90 + 40 * blobs + texture, 228 + rng.normal(0, 3, (height, width)))
    tint = np.array([1.0, 0.9, 1.05])
    return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)


def write_synthetic_scans(directory: str, count: int, seed: int = 7) -> list[str]:
    """`count` small PNG/JPEG sections in nested folders (cheaper than the phantoms)."""
    rng = np.random.default_rng(seed)
    written = []
    for number in range(count):
        folder = os.path.join(directory, f"slide_{number // 20:03d}")
        if number % 7 == 3:
            folder = os.path.join(folder, "raw")
        os.makedirs(folder, exist_ok=True)
        pixels = section_image(rng, int(rng.integers(40, 90)), int(rng.integers(40, 90)))
        suffix = "jpg" if number % 4 == 1 else "png"
        path = os.path.join(folder, f"scan_{number:04d}.{suffix}")
        Image.fromarray(pixels).save(path, **({"quality": 90} if suffix == "jpg" else {}))
        written.append(os.path.relpath(path, directory))
    return written


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_gray_png_streamed(path: str | bytes, side: int, band: tuple[int, int] = (0, 0)) -> None:
    """An 8-bit gray PNG of side x side pixels, written row by row in bounded memory.

    Black, except rows band[0]..band[1] that have a bright stripe in their middle third.
    Deflate squeezes 400 MP of this into well under a megabyte.
    """
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    dark = b"\x00" + bytes(side)  # filter byte "none", then the samples
    third = side // 3
    bright = b"\x00" + bytes(third) + b"\xc8" * (side - 2 * third) + bytes(third)
    compressor = zlib.compressobj(6)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header))
        pending = b""
        for row in range(side):
            pending += compressor.compress(bright if band[0] <= row < band[1] else dark)
            if len(pending) > 1 << 16:
                file.write(_png_chunk(b"IDAT", pending))
                pending = b""
        file.write(_png_chunk(b"IDAT", pending + compressor.flush()))
        file.write(_png_chunk(b"IEND", b""))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but carries (almost) no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def rgba_section(rng: np.random.Generator) -> Image.Image:
    """Dark tissue on a fully transparent background (how some exporters cut sections out)."""
    pixels = section_image(rng)
    alpha = np.where(ellipse_mask(rng, *pixels.shape[:2]), 255, 0).astype(np.uint8)
    return Image.fromarray(np.dstack([pixels, alpha]), "RGBA")


def palette_section(rng: np.random.Generator) -> Image.Image:
    """A palette ("P") image with an explicit 4-colour palette (deterministic, no quantizer)."""
    mask = ellipse_mask(rng, 70, 90)
    inner = ellipse_mask(rng, 70, 90) & mask
    indices = np.where(inner, 2, np.where(mask, 1, 0)).astype(np.uint8)
    indices[::7, ::5] = np.where(mask[::7, ::5], 3, 0)
    image = Image.fromarray(indices, "P")
    image.putpalette([235, 230, 240, 120, 80, 140, 60, 30, 90, 150, 120, 170])
    return image


def two_page_tiff(rng: np.random.Generator, path: str | bytes) -> None:
    """A 2-page TIFF stack: a section, then a page of noise (only page 1 must be used)."""
    first = Image.fromarray(section_image(rng))
    noise = Image.fromarray(rng.integers(0, 256, (72, 88, 3), dtype=np.uint8))
    first.save(path, format="TIFF", save_all=True, append_images=[noise])


def gray16_tiff(rng: np.random.Generator, path: str | bytes) -> None:
    """A 16-bit gray TIFF using the upper part of the range (a 12-bit camera's look)."""
    gray = section_image(rng).mean(axis=2)
    Image.fromarray((gray * 16 + 500).astype(np.uint16)).save(path, format="TIFF")


def write_image(path: str | bytes, pixels: np.ndarray, file_format: str = "PNG") -> None:
    Image.fromarray(pixels).save(path, format=file_format)


# --- The golden folder ---------------------------------------------------------------------------


def write_golden_scans(directory: str) -> None:
    """The golden test's folder: 18 phantom scans (PNG, JPEG, 8/16-bit TIFF, BMP in
    nested slide folders) plus files that pin the other decoding paths and statuses."""
    from brainview_tfds.brain_phantom import sample_scans

    sample_scans.write_sample_scans(directory, count=18, scale=1)
    rng = np.random.default_rng(20240611)
    extra = os.path.join(directory, "extra")
    os.makedirs(os.path.join(extra, "nested", "deeper"))
    rgba_section(rng).save(os.path.join(extra, "nested", "deeper", "cut_out.png"))
    palette_section(rng).save(os.path.join(extra, "palette.gif"))
    two_page_tiff(rng, os.path.join(extra, "stack.tif"))
    write_image(os.path.join(extra, "uniform_gray.png"), np.full((60, 80, 3), 180, np.uint8))
    write_image(os.path.join(extra, "all_black.png"), np.zeros((60, 80, 3), np.uint8))
    with open(os.path.join(extra, "notes.png"), "w", encoding="utf-8") as file:
        file.write("not an image, whatever the name says\n")
    open(os.path.join(extra, "empty.jpg"), "wb").close()
    odd = os.path.join(directory, "odd names")
    os.makedirs(odd)
    write_image(os.path.join(odd, 'comma, "quoted".png'), section_image(rng))
    write_image(os.path.join(odd, "naïve café.png"), section_image(rng))


# --- The bad-input corpus ------------------------------------------------------------------------

# What classify_dir must report for a file: "good" (ok or uncertain), "blank", "error"
# (with `message` in the error column), "absent" (no row, by design: hidden files,
# special files, links to directories), or "readable" (ok/uncertain/blank).
GOOD, BLANK, ERROR, ABSENT = "good", "blank", "error", "absent"
READABLE = "readable"  # good, uncertain or blank, whichever
GOOD_OR_BLANK = "good_or_blank"


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    relative_path: bytes  # as the walk yields it (directories that cannot be listed end in /)
    expect: str
    message: str = ""  # a fragment of the expected error message
    note: str = ""
    privileged: str = ""  # `expect` for a reader that ignores permission bits (root), if other


def corpus_expectations(files: list[CorpusFile], privileged: bool) -> list[CorpusFile]:
    """The corpus as a reader sees it that does (root in-process) or does not ignore
    permission bits (any user; root without its capabilities, see run_tool)."""
    if not privileged:
        return list(files)
    return [dataclasses.replace(f, expect=f.privileged or f.expect) for f in files]


HUGE_SIDE = 20_000


def _deep_chain(root: bytes, top: bytes) -> bytes:
    """Nested directories below root/top until their absolute path exceeds PATH_MAX.

    Listing the deepest one fails with ENAMETOOLONG, for root as for anyone: the one
    root-proof way to get a directory that cannot be listed. Returns the relative path
    (ending in /) of the first directory whose absolute path is too long to list.
    Built with directory descriptors, as ordinary paths to it are too long.
    """
    limit = os.pathconf(root, "PC_PATH_MAX")
    name = b"d" * 200
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    relative, too_long = top, None
    try:
        os.mkdir(top, dir_fd=fd)
        fd = _descend(fd, top)
        while too_long is None:
            os.mkdir(name, dir_fd=fd)
            fd = _descend(fd, name)
            relative += b"/" + name
            if len(root) + 1 + len(relative) >= limit:
                too_long = relative + b"/"
        leaf = os.open(b"unreachable.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, png_header_only(8, 8))
        os.close(leaf)
    finally:
        os.close(fd)
    return too_long


def _descend(fd: int, name: bytes) -> int:
    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
    os.close(fd)
    return child


def write_bad_corpus(directory: str) -> list[CorpusFile]:
    """One folder with every kind of bad (and awkward but good) input; what each must give."""
    root = os.fsencode(directory)
    os.makedirs(root)
    rng = np.random.default_rng(99)
    files: list[CorpusFile] = []

    def path(name: bytes) -> bytes:
        return os.path.join(root, name)

    def good_png(name: bytes, note: str = "") -> None:
        write_image(path(name), section_image(rng))
        files.append(CorpusFile(name, GOOD, note=note))

    # Broken files.
    open(path(b"empty.png"), "wb").close()
    files.append(CorpusFile(b"empty.png", ERROR, "empty file (0 bytes)"))
    png = _encoded(section_image(rng), "PNG")
    with open(path(b"truncated.png"), "wb") as file:
        file.write(png[: len(png) // 2])
    files.append(CorpusFile(b"truncated.png", ERROR, "cannot decode image data"))
    jpeg = _encoded(section_image(rng), "JPEG")
    with open(path(b"truncated.jpg"), "wb") as file:
        file.write(jpeg[: len(jpeg) // 2])
    files.append(CorpusFile(b"truncated.jpg", ERROR, "cannot decode image data"))
    with open(path(b"text_named.png"), "w", encoding="utf-8") as file:
        file.write("<html>a web page saved with the wrong name</html>\n")
    files.append(CorpusFile(b"text_named.png", ERROR, "not a recognized image format"))
    with open(path(b"metadata.json"), "w", encoding="utf-8") as file:
        file.write('{"stain": "nissl"}\n')
    files.append(CorpusFile(b"metadata.json", ERROR, "not a recognized image format"))
    with open(path(b"bomb.png"), "wb") as file:
        file.write(png_header_only(40_000, 40_000))
    files.append(CorpusFile(b"bomb.png", ERROR, "too many pixels"))

    # Unreadable: permissions (root reads anyway), and paths the kernel refuses.
    write_image(path(b"no_permission.png"), section_image(rng))
    os.chmod(path(b"no_permission.png"), 0)
    files.append(CorpusFile(b"no_permission.png", ERROR, "permission denied", privileged=READABLE))
    os.mkdir(path(b"locked_dir"))
    write_image(path(b"locked_dir/inside.png"), section_image(rng))
    os.chmod(path(b"locked_dir"), 0)
    files.append(
        CorpusFile(
            b"locked_dir/", ERROR, "cannot list directory: Permission denied", privileged=ABSENT
        )
    )
    files.append(CorpusFile(b"locked_dir/inside.png", ABSENT, privileged=READABLE))
    too_long = _deep_chain(root, b"deep")
    files.append(CorpusFile(too_long, ERROR, "cannot list directory: File name too long"))

    # Links.
    os.symlink(b"loop_b.png", path(b"loop_a.png"))
    os.symlink(b"loop_a.png", path(b"loop_b.png"))
    for name in (b"loop_a.png", b"loop_b.png"):
        files.append(CorpusFile(name, ERROR, "symbolic links"))
    os.symlink(b"no_such_target.png", path(b"dangling.png"))
    files.append(CorpusFile(b"dangling.png", ERROR, "file not found"))
    good_png(b"target.png")
    os.symlink(b"target.png", path(b"link_to_file.png"))
    files.append(CorpusFile(b"link_to_file.png", GOOD, note="links to files are followed"))
    os.mkdir(path(b"sub"))
    good_png(b"sub/inner.png")
    os.symlink(b"sub", path(b"link_to_dir"))
    files.append(CorpusFile(b"link_to_dir", ABSENT, note="links to directories: not followed"))
    os.symlink(b".", path(b"sub/cycle"))
    files.append(CorpusFile(b"sub/cycle", ABSENT, note="a link cycle is never entered"))

    # Special and hidden files.
    os.mkfifo(path(b"pipe.png"))
    files.append(CorpusFile(b"pipe.png", ABSENT, note="FIFO: not a scan, never opened"))
    good_png(b".hidden.png")
    files[-1] = CorpusFile(b".hidden.png", ABSENT, note="hidden files are skipped by default")

    # Huge, but cheap to store: 20000 x 20000 gray with a bright band.
    write_gray_png_streamed(path(b"huge_20000.png"), HUGE_SIDE, band=(8000, 12000))
    files.append(CorpusFile(b"huge_20000.png", GOOD_OR_BLANK, note="400 MP, decoded shrunk"))

    # Awkward names (for the CSV's quoting and for bytes paths).
    for name in (
        b"comma, in name.png",
        b'double "quotes".png',
        b"it's single.png",
        b"new\nline.png",
        b"carriage\rreturn.png",
        b"tab\tand  spaces .png",
        b"latin1 \xff\xe9 bytes.png",  # not valid UTF-8
        "naïve ünïcode.png".encode(),
        b"folder.png/looks_like_a_file.png",
    ):
        os.makedirs(os.path.dirname(path(name)), exist_ok=True)
        good_png(name, note="odd name")

    # Formats and bit depths.
    gray16_tiff(rng, path(b"gray16.tif"))
    files.append(CorpusFile(b"gray16.tif", GOOD))
    two_page_tiff(rng, path(b"pages.tif"))
    files.append(CorpusFile(b"pages.tif", GOOD))
    rgba_section(rng).save(path(b"rgba.png"))
    files.append(CorpusFile(b"rgba.png", GOOD))
    palette_section(rng).save(path(b"palette.gif"))
    files.append(CorpusFile(b"palette.gif", GOOD))
    write_image(path(b"uniform.png"), np.full((64, 96, 3), 200, np.uint8))
    files.append(CorpusFile(b"uniform.png", BLANK))
    write_image(path(b"black.jpg"), np.zeros((64, 96, 3), np.uint8), "JPEG")
    files.append(CorpusFile(b"black.jpg", BLANK))
    return files


def _encoded(pixels: np.ndarray, file_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=file_format)
    return buffer.getvalue()


# --- The test model ------------------------------------------------------------------------------


def _calibration_inputs() -> np.ndarray:
    """16 fixed model inputs (bright sections on black, as the preprocessing produces them).

    Drawn here, not by the production preprocessing, so the test model does not
    change when the preprocessing does (the golden test must notice such changes).
    """
    rng = np.random.default_rng(0)
    size = MODEL_IMAGE_SIZE
    images = []
    for _ in range(16):
        mask = ellipse_mask(rng, size, size)
        gray = np.where(mask, rng.uniform(120, 255, (size, size)), 0.0)
        images.append(np.repeat(gray[..., None], 3, axis=2))
    return np.stack(images).astype(np.float32)


def build_test_model(path: str, bias: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
    """Saves (model.keras + model.json) a deterministic, strongly input-dependent classifier.

    An untrained EfficientNet-B0 (seed 0) has tiny features (~1e-6) that differ little
    between images, so its softmax is ~1/3 everywhere and would hide any regression.
    The head's last layer is therefore rescaled so the logits, centred on 16 fixed
    calibration inputs, have a standard deviation of LOGIT_SPREAD: predictions and
    confidences then vary clearly from image to image. `bias` adds a fixed offset to
    the logits (another model, another sha256).
    """
    import keras

    from brainview import model as model_lib

    keras.utils.set_random_seed(0)
    classifier = model_lib.build_classifier(MODEL_IMAGE_SIZE, "none")
    backbone, head = model_lib.backbone_and_head(classifier)
    features = np.asarray(backbone(_calibration_inputs(), training=False), np.float64)
    dense, views = head.get_layer("dense"), head.get_layer("views")
    dense_kernel, dense_bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    hidden = np.maximum(features.mean(axis=(1, 2)) @ dense_kernel + dense_bias, 0.0)
    kernel = np.asarray(views.get_weights()[0], np.float64)
    logits = hidden @ kernel
    gain = LOGIT_SPREAD / (logits - logits.mean(axis=0)).std()
    views.set_weights(
        [
            (kernel * gain).astype(np.float32),
            (np.asarray(bias) - gain * logits.mean(axis=0)).astype(np.float32),
        ]
    )
    card = model_lib.ModelCard(
        image_size=MODEL_IMAGE_SIZE,
        temperature=MODEL_TEMPERATURE,
        uncertain_below=UNCERTAIN_BELOW,
        recipe="tests: untrained EfficientNet-B0 (seed 0), head rescaled for input dependence",
    )
    model_lib.save_model(classifier, card, path)


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished bin/classify_dir run: its scan folder, outputs, model and printed summary."""

    scan_dir: str
    csv: str
    cams: str
    model: str
    stdout: str


# --- Outputs written without a model ------------------------------------------------------------
#
# The writer, the merge and the resume checks do not care where predictions come from: these
# helpers feed them made-up but deterministic rows, so their tests need no TensorFlow.

WRITER_CAM_SHAPE = (2, 3)


def writer_segment(relative_paths: list[bytes]):
    """The segment classify_dir would commit for these scans, with made-up values that
    depend only on each path (so a scan gets the same row in any run or shard): every
    fifth an error row, every seventh blank."""
    from brainview.classify import outputs

    seeds = np.array([zlib.crc32(path) % 1000 for path in relative_paths], np.int64)
    logits = np.stack([np.sin(seeds), np.cos(seeds * 1.3), np.sin(seeds * 0.7 + 1)], axis=1)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    statuses = ["error" if r % 5 == 4 else "blank" if r % 7 == 6 else "ok" for r in seeds]
    cams = (seeds[:, None, None] % 11 / 10.0) * np.ones((len(seeds), *WRITER_CAM_SHAPE))
    return outputs.make_segment(
        relative_paths=list(relative_paths),
        statuses=statuses,
        errors=["cannot decode image data" if s == "error" else "" for s in statuses],
        probabilities=probabilities.astype(np.float32),
        widths=100 + seeds,
        heights=80 + seeds,
        mean_intensities=seeds * 1.5,
        frames=np.stack([seeds, seeds + 1, seeds + 2, seeds * 0.01], axis=1).astype(np.float32),
        cams=cams.astype(np.float16),
    )


def writer_signature(scan_dir: str = "/scans", **changes) -> dict:
    """A run signature like classify_dir's."""
    signature = {
        "scan_dir": scan_dir,
        "model_sha256": "0123456789abcdef",
        "image_size": 64,
        "tta": False,
        "num_shards": 1,
        "shard_index": 0,
        "cams": True,
        "include_hidden": False,
        "max_decode_side": 2048,
    }
    return dict(signature, **changes)


def write_outputs(
    csv_path: str,
    cams_path: str | None,
    relative_paths: list[bytes],
    signature: dict | None = None,
    segment_rows: int = 4,
) -> None:
    """A complete run's outputs, as classify_dir writes them (manifest and CAM attributes
    included), for `relative_paths` in this order."""
    from brainview.classify import output_writer

    signature = signature or writer_signature(cams=bool(cams_path))
    writer = output_writer.OutputWriter(
        csv_path, cams_path, signature, resume=False, overwrite=False
    )
    for start in range(0, len(relative_paths), segment_rows):
        writer.commit(writer_segment(relative_paths[start : start + segment_rows]))
    attributes = {
        "class_names": np.array(["coronal", "horizontal", "sagittal"], dtype=object),
        "model_sha256": signature["model_sha256"],
        "num_shards": signature["num_shards"],
        "shard_index": signature["shard_index"],
    }
    manifest = {
        "cams": os.path.abspath(cams_path) if cams_path else None,
        "num_shards": signature["num_shards"],
        "shard_index": signature["shard_index"],
    }
    writer.finish(attributes, manifest, WRITER_CAM_SHAPE)
