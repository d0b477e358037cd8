"""Where the Beam pipeline's scans come from, and reading one into the model's input.

Two kinds of input, told apart by `ScanInput.parse`:

* a local directory (or one every worker mounts: NFS, Lustre) is walked by
  `classify.scan_files.walk`, exactly as classify_dir walks it: the same files,
  the same skipped ones (hidden, special files, links to directories), the same
  error rows for directories that cannot be listed;
* a file pattern on any Beam filesystem (`gs://bucket/scans/**`,
  `s3://.../*.tif`, `hdfs://...`, or a local glob) is matched by Beam's
  `fileio.MatchAll`; a remote folder without wildcards means everything below
  it. Paths in the CSV are relative to the pattern's folder (the part before
  its first wildcard); hidden files are skipped as in a walk.

Each scan is decoded by `brainview.image_files` (through `scan_files.load` for
local files, from the bytes Beam's filesystem returns otherwise) and
preprocessed by `brainview.preprocessing.preprocess`, the function training and
classify_dir use. A bad file never fails the pipeline: its error goes into the
row, as in classify_dir.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from brainview import image_files
from brainview.classify import scan_files

_WILDCARD = re.compile(r"[*?\[]")


class InputError(Exception):
    """The scan input cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class ScanInput:
    """What to classify: a local directory, or a file pattern on a Beam filesystem."""

    scan_dir: bytes | None  # absolute local directory (walk mode), else None
    pattern: str  # pattern mode: what Beam matches ("" in walk mode)
    base: str  # pattern mode: the folder CSV paths are relative to, ending in "/"
    include_hidden: bool = False

    @classmethod
    def parse(cls, spec: str, include_hidden: bool = False) -> ScanInput:
        """A local directory, a pattern with wildcards, or a remote folder (= folder/**)."""
        wildcard = _WILDCARD.search(spec)
        if wildcard is None and FileSystems.get_scheme(spec) is None:
            if not os.path.isdir(spec):
                raise InputError(f"scan directory not found: {spec}")
            scan_dir = os.fsencode(os.path.abspath(spec))
            try:
                os.listdir(scan_dir)
            except OSError as error:
                raise InputError(f"cannot read scan directory {spec}: {error.strerror}") from None
            return cls(scan_dir=scan_dir, pattern="", base="", include_hidden=include_hidden)
        if wildcard is None:  # a remote folder
            base = spec.rstrip("/") + "/"
            return cls(None, base + "**", base, include_hidden)
        base = spec[: spec.rfind("/", 0, wildcard.start()) + 1]
        if FileSystems.get_scheme(spec) is None:
            base = os.path.abspath(base or ".") + "/"
            spec = base + spec[spec.rfind("/", 0, wildcard.start()) + 1 :]
        return cls(None, spec, base, include_hidden)

    @property
    def description(self) -> str:
        """The input as the output files record it (`scan_dir` in classify_dir's files)."""
        return os.fsdecode(self.scan_dir) if self.scan_dir else self.pattern

    def contains(self, path: str) -> bool:
        """Whether an output at `path` would lie inside the input (and be read by a rerun)."""
        if self.scan_dir is not None:
            if FileSystems.get_scheme(path) is not None:
                return False
            root = os.fsdecode(self.scan_dir).rstrip("/") + "/"
            return os.path.abspath(path).startswith(root)
        target = path if FileSystems.get_scheme(path) else os.path.abspath(path)
        return target.startswith(self.base)


@dataclasses.dataclass(frozen=True)
class Scan:
    """One file to classify (or a folder that could not be listed)."""

    relative_path: bytes  # the CSV's path and the walk order key
    location: str = ""  # pattern mode: the path Beam opens; walk mode: ""
    listing_error: str = ""


def walk_key(relative_path: bytes) -> list[bytes]:
    """The sort key of classify_dir's walk order: path components, compared as bytes."""
    return relative_path.rstrip(b"/").split(b"/")


class ListScans(beam.PTransform):
    """PBegin -> PCollection[Scan], spread over the workers."""

    def __init__(self, scan_input: ScanInput):
        super().__init__()
        self.scan_input = scan_input

    def expand(self, pbegin):
        if self.scan_input.scan_dir is not None:
            scans = (
                pbegin
                | "Root" >> beam.Create([self.scan_input.scan_dir])
                | "Walk" >> beam.FlatMap(_walked, include_hidden=self.scan_input.include_hidden)
            )
        else:
            scans = (
                pbegin
                | "Pattern" >> beam.Create([self.scan_input.pattern])
                | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
                | "Relative" >> beam.FlatMap(_matched, scan_input=self.scan_input)
            )
        # The listing runs on one worker; reading and inference need not.
        return scans | "Spread" >> beam.Reshuffle()


def _walked(scan_dir: bytes, include_hidden: bool) -> Iterator[Scan]:
    for entry in scan_files.walk(scan_dir, include_hidden):
        yield Scan(entry.relative_path, listing_error=entry.listing_error)


def _matched(metadata, scan_input: ScanInput) -> Iterator[Scan]:
    path = metadata.path
    if not path.startswith(scan_input.base):
        return
    relative = os.fsencode(path[len(scan_input.base) :])
    if not scan_input.include_hidden and any(
        part.startswith(b".") for part in relative.split(b"/")
    ):
        return
    yield Scan(relative, location=path)


def load(scan: Scan, scan_input: ScanInput, max_side: int) -> scan_files.LoadedScan:
    """Reads one scan; never raises for a bad file (the error goes in the result)."""
    if scan_input.scan_dir is not None:
        entry = scan_files.ScanEntry(scan.relative_path, scan.listing_error)
        return scan_files.load(scan_input.scan_dir, entry, max_side)
    try:
        with FileSystems.open(scan.location, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read()
        decoded = image_files.decode_image_bytes(data, max_side, name=scan.location)
    except image_files.ImageReadError as error:
        return _unreadable(str(error))
    except Exception as error:  # Beam filesystems raise their own types (BeamIOError, ...)
        return _unreadable(f"cannot open file: {' '.join(str(error).split())}")
    return scan_files.LoadedScan(
        pixels=np.asarray(decoded.pixels),
        width=decoded.width,
        height=decoded.height,
        mean_intensity=image_files.mean_gray(decoded.pixels),
        error="",
    )


def _unreadable(reason: str) -> scan_files.LoadedScan:
    return scan_files.LoadedScan(scan_files.PLACEHOLDER_PIXELS, 0, 0, float("nan"), reason)


@dataclasses.dataclass(frozen=True, eq=False)
class ScanFacts:
    """What a row needs besides the model's answer: RunInference's key for the scan."""

    relative_path: bytes
    width: int  # of the source file (0 when unreadable)
    height: int
    mean_intensity: float  # mean gray of the decoded image (nan when unreadable)
    error: str  # "" when readable
    blank: bool
    frame: np.ndarray  # float32 [center_y, center_x, side, angle], in source pixels


class PrepareScans(beam.DoFn):
    """Scan -> (ScanFacts, model input (S, S, 3) float32): decode, then `preprocess`."""

    def __init__(self, scan_input: ScanInput, image_size: int, mode: str, max_side: int):
        super().__init__()
        self.scan_input = scan_input
        self.image_size = image_size
        self.mode = mode
        self.max_side = max_side

    def setup(self) -> None:
        import tensorflow as tf

        from brainview import preprocessing

        image_size, mode = self.image_size, self.mode

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, 3], tf.uint8),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([], tf.int32),
            ]
        )
        def prepare(pixels, mean_intensity, width):
            model_input, frame, blank = preprocessing.preprocess(
                pixels, image_size, mode, mean_intensity=mean_intensity
            )
            # The frame in source pixels, as classify.scan_input reports it (the
            # decoded image may have been downscaled; the angle stays).
            decoded_width = tf.cast(tf.shape(pixels)[1], tf.float32)
            scale = tf.cast(tf.maximum(width, 1), tf.float32) / decoded_width
            return model_input, frame * tf.stack([scale, scale, scale, 1.0]), blank

        self._prepare = prepare

    def process(self, scan: Scan) -> Iterator[tuple[ScanFacts, np.ndarray]]:
        loaded = load(scan, self.scan_input, self.max_side)
        model_input, frame, blank = self._prepare(
            loaded.pixels, np.float32(loaded.mean_intensity), np.int32(loaded.width)
        )
        facts = ScanFacts(
            relative_path=scan.relative_path,
            width=loaded.width,
            height=loaded.height,
            mean_intensity=loaded.mean_intensity,
            error=loaded.error,
            blank=bool(blank),
            frame=frame.numpy(),
        )
        yield facts, model_input.numpy()
