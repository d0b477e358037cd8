"""classify_dir's engine: a scan directory -> CSV of predictions + HDF5 of Grad-CAMs.

    walk (generator, deterministic order, this shard's files, minus rows done)
      -> tf.data: parallel decode (Pillow, in numpy_function) + the shared
         preprocessing + blank check -> batch -> prefetch
      -> model (tf.distribute across the GPUs present): probabilities and
         Grad-CAMs in one pass
      -> rows committed in segments (see classify_outputs.py)

Bad files never stop the run: they get a row with status "error". Fatal
problems (no model, unwritable outputs, unreadable scan directory) raise
ClassifyError with a one-line message.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import itertools
import os
import threading
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from brainview import __version__
from brainview.pipelines import (
    classify_outputs,
    devices,
    gradcam,
    metrics,
    preprocessing,
    scan_files,
)
from brainview.pipelines import model as model_lib
from brainview_tfds.core import image_files
from brainview_tfds.core.features import VIEWS

AUTOTUNE = tf.data.AUTOTUNE


class ClassifyError(Exception):
    """A fatal problem; the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
    scan_dir: str
    output_csv: str
    model_path: str
    cams_path: str | None = None
    batch_size: int = 0  # 0: sized for the devices present
    image_size: int | None = None  # None: the size the model was trained at
    num_shards: int = 1
    shard_index: int = 0
    resume: bool = False
    overwrite: bool = False
    commit_every: int = 2048  # rows per durable commit (rounded up to whole batches)
    tta: bool | None = None  # mirror test-time augmentation; None: the model card's choice
    max_decode_side: int = image_files.MAX_DECODE_SIDE
    include_hidden: bool = False
    progress: bool = True


@dataclasses.dataclass
class Summary:
    """Counts over the whole output; timing of this session (which may be a resume)."""

    rows: int = 0
    by_view: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    by_status: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    session_rows: int = 0
    seconds: float = 0.0
    already_complete: bool = False

    @property
    def images_per_second(self) -> float:
        return self.session_rows / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        if self.already_complete:
            return "already complete: nothing to do"
        views = ", ".join(f"{v} {self.by_view.get(v, 0)}" for v in VIEWS)
        statuses = ", ".join(f"{s} {self.by_status.get(s, 0)}" for s in classify_outputs.STATUSES)
        resumed = f" (this session: {self.session_rows})" if self.session_rows != self.rows else ""
        return (
            f"{self.rows} images{resumed} in {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} img/s)\n"
            f"  views:    {views}\n  statuses: {statuses}"
        )


class Predictor:
    """images -> (probabilities, CAMs or None), on one device or across replicas."""

    def __init__(
        self,
        model,
        with_cams: bool,
        strategy: tf.distribute.Strategy,
        batch_size: int = 1,
        tta: bool = False,
    ):
        self.strategy = strategy
        self.with_cams = with_cams
        self.batch_size = batch_size
        self.replicas = strategy.num_replicas_in_sync
        if with_cams:
            self.function = gradcam.make_predict_with_cams(model, tta)
        else:
            predict = gradcam.make_predict(model, tta)
            self.function = lambda images: (predict(images), tf.zeros([tf.shape(images)[0], 0, 0]))

    def __call__(self, images: tf.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        count = int(images.shape[0])
        if count < self.batch_size:
            # A short (last) batch is padded to the full size: the last digits of the
            # CPU kernels' results depend on the batch size (a batch of one differs),
            # and an image must get the same numbers in a run, a shard or a resume.
            filler = tf.repeat(images[-1:], self.batch_size - count, axis=0)
            probabilities, cams = self(tf.concat([images, filler], axis=0))
            return probabilities[:count], None if cams is None else cams[:count]
        if self.replicas == 1:
            probabilities, cams = self.function(images)
        else:
            padded = -count % self.replicas  # every replica gets an equal slice
            if padded:
                images = tf.concat([images, tf.repeat(images[-1:], padded, axis=0)], axis=0)
            per_replica = (count + padded) // self.replicas
            values = self.strategy.experimental_distribute_values_from_function(
                lambda context: images[
                    context.replica_id_in_sync_group * per_replica : (
                        context.replica_id_in_sync_group + 1
                    )
                    * per_replica
                ]
            )
            probabilities, cams = self.strategy.run(self.function, args=(values,))
            probabilities = self.strategy.gather(probabilities, axis=0)[:count]
            cams = self.strategy.gather(cams, axis=0)[:count]
        return probabilities.numpy(), cams.numpy() if self.with_cams else None


def _count_in_background(scan_dir: bytes, config: ClassifyConfig) -> dict:
    """Counts this shard's files in a thread, so the progress bar can show an ETA."""
    result: dict = {}

    def count() -> None:
        try:
            entries = scan_files.walk(scan_dir, config.include_hidden)
            result["total"] = sum(
                1 for _ in scan_files.shard(entries, config.num_shards, config.shard_index)
            )
        except OSError:
            pass

    threading.Thread(target=count, daemon=True).start()
    return result


def _dataset(
    scan_dir: bytes, config: ClassifyConfig, image_size: int, mode: str, skip: int
) -> tf.data.Dataset:
    def entries():
        walked = scan_files.walk(scan_dir, config.include_hidden)
        for entry in itertools.islice(
            scan_files.shard(walked, config.num_shards, config.shard_index), skip, None
        ):
            yield entry.relative_path, entry.listing_error

    def load(relative_path: bytes, listing_error: bytes):
        entry = scan_files.ScanEntry(relative_path, listing_error.decode())
        scan = scan_files.load(scan_dir, entry, config.max_decode_side)
        return (
            scan.pixels,
            np.int32(scan.width),
            np.int32(scan.height),
            np.float32(scan.mean_intensity),
            scan.error.encode("utf-8"),
        )

    def prepare(relative_path: tf.Tensor, listing_error: tf.Tensor) -> dict:
        pixels, width, height, mean, error = tf.numpy_function(
            load,
            [relative_path, listing_error],
            [tf.uint8, tf.int32, tf.int32, tf.float32, tf.string],
            stateful=False,
        )
        pixels.set_shape([None, None, 3])
        model_input, frame, blank = preprocessing.preprocess_and_check(pixels, image_size, mode)
        # Frame in source pixels (the decoded image may have been downscaled).
        decoded_width = tf.cast(tf.shape(pixels)[1], tf.float32)
        scale = tf.cast(tf.maximum(width, 1), tf.float32) / decoded_width
        return {
            "path": relative_path,
            "image": model_input,
            "frame": frame * tf.stack([scale, scale, scale, 1.0]),  # the angle stays
            "width": tf.reshape(width, []),
            "height": tf.reshape(height, []),
            "mean_intensity": tf.reshape(mean, []),
            "error": tf.reshape(error, []),
            "blank": blank,
        }

    paths = tf.data.Dataset.from_generator(
        entries,
        output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.string)),
    )
    batched = paths.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)
    return batched.batch(config.batch_size).prefetch(2)


def _segment(
    batch: dict, probabilities: np.ndarray, cams: np.ndarray | None, card: model_lib.ModelCard
) -> classify_outputs.Segment:
    """CSV rows and CAM datasets for one batch."""
    batch = {key: value.numpy() for key, value in batch.items() if key != "image"}
    probabilities = metrics.apply_temperature(probabilities, card.temperature)
    errors = [e.decode("utf-8") for e in batch["error"]]
    failed = np.array([bool(e) for e in errors])
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    rows, statuses, paths = [], [], []
    for i, relative in enumerate(batch["path"]):
        path = scan_files.display_path(relative)
        paths.append(path)
        if failed[i]:
            statuses.append("error")
            rows.append([path, "", "", "", "", "", "", "", "", "error", errors[i]])
            continue
        if batch["blank"][i]:
            status = "blank"
        elif confidence[i] < card.uncertain_below:
            status = "uncertain"
        else:
            status = "ok"
        statuses.append(status)
        rows.append(
            [
                path,
                VIEWS[predicted[i]],
                f"{confidence[i]:.6f}",
                *(f"{p:.6f}" for p in probabilities[i]),
                str(int(batch["width"][i])),
                str(int(batch["height"][i])),
                f"{float(batch['mean_intensity'][i]):.3f}",
                status,
                "",
            ]
        )
    views = np.where(failed, -1, predicted).astype(np.int8)
    probabilities = np.where(failed[:, None], np.nan, probabilities).astype(np.float32)
    frames = batch["frame"].astype(np.float32)
    if cams is not None:
        cams = np.where(failed[:, None, None], 0.0, cams).astype(np.float16)
    return classify_outputs.Segment(rows, paths, statuses, views, probabilities, frames, cams)


def _concatenate(segments: list[classify_outputs.Segment]) -> classify_outputs.Segment:
    first = segments[0]
    return classify_outputs.Segment(
        rows=[row for s in segments for row in s.rows],
        paths=[p for s in segments for p in s.paths],
        statuses=[x for s in segments for x in s.statuses],
        views=np.concatenate([s.views for s in segments]),
        probabilities=np.concatenate([s.probabilities for s in segments]),
        frames=np.concatenate([s.frames for s in segments]),
        cams=None if first.cams is None else np.concatenate([s.cams for s in segments]),
    )


def _load_model(config: ClassifyConfig, strategy: tf.distribute.Strategy):
    try:
        with strategy.scope():
            return model_lib.load_model(config.model_path)
    except FileNotFoundError as error:
        raise ClassifyError(str(error)) from None
    except Exception as error:  # e.g. zipfile.BadZipFile for a file that is not a .keras archive
        raise ClassifyError(f"cannot load model {config.model_path}: {error}") from None


def classify_directory(config: ClassifyConfig) -> Summary:
    """Classifies every file below config.scan_dir (this shard's share of them)."""
    if not os.path.isdir(config.scan_dir):
        raise ClassifyError(f"scan directory not found: {config.scan_dir}")
    if not 0 <= config.shard_index < config.num_shards:
        raise ClassifyError(
            f"--shard_index must be in [0, {config.num_shards}), got {config.shard_index}"
        )
    scan_dir = os.fsencode(os.path.abspath(config.scan_dir))
    try:
        os.listdir(scan_dir)
    except OSError as error:
        raise ClassifyError(
            f"cannot read scan directory {config.scan_dir}: {error.strerror}"
        ) from None

    devices.set_precision("auto")
    strategy = devices.select_strategy()
    model, card = _load_model(config, strategy)
    image_size = config.image_size or card.image_size
    if image_size != card.image_size:
        model, card = _rebuilt_for_size(config, strategy, image_size)
    if not config.batch_size:
        config = dataclasses.replace(
            config,
            batch_size=devices.auto_batch_size(
                image_size, strategy.num_replicas_in_sync, training=False
            ),
        )
    _, head = model_lib.backbone_and_head(model)
    cam_shape = tuple(int(d) for d in head.input.shape[1:3])
    model_digest = model_lib.file_digest(config.model_path)
    tta = card.tta if config.tta is None else config.tta
    signature = {
        "scan_dir": os.fsdecode(scan_dir),
        "model_sha256": model_digest,
        "image_size": image_size,
        "tta": tta,
        "num_shards": config.num_shards,
        "shard_index": config.shard_index,
        "cams": bool(config.cams_path),
        "include_hidden": config.include_hidden,
        "max_decode_side": config.max_decode_side,
    }
    try:
        writer = classify_outputs.OutputWriter(
            config.output_csv,
            config.cams_path,
            signature,
            resume=config.resume,
            overwrite=config.overwrite,
        )
    except OSError as error:
        raise ClassifyError(f"cannot write outputs next to {config.output_csv}: {error}") from None
    if writer.already_complete:
        return Summary(already_complete=True)

    summary = Summary()
    total = _count_in_background(scan_dir, config)
    predictor = Predictor(model, bool(config.cams_path), strategy, config.batch_size, tta)
    dataset = _dataset(scan_dir, config, image_size, card.preprocessing, writer.rows_done)
    batches_per_commit = max(1, -(-config.commit_every // config.batch_size))
    started = time.perf_counter()
    pending: list[classify_outputs.Segment] = []
    with tqdm(
        initial=writer.rows_done,
        unit="img",
        disable=not config.progress,
        dynamic_ncols=True,
        desc="classify",
    ) as bar:
        for batch in dataset:
            probabilities, cams = predictor(batch["image"])
            segment = _segment(batch, probabilities, cams, card)
            pending.append(segment)
            summary.session_rows += len(segment)
            if len(pending) >= batches_per_commit:
                writer.commit(_concatenate(pending))
                pending = []
            if "total" in total and bar.total is None:
                bar.total = total["total"]
            bar.update(len(segment))
        if pending:
            writer.commit(_concatenate(pending))
    summary.seconds = time.perf_counter() - started
    summary.rows, summary.by_view, summary.by_status = classify_outputs.count_rows(
        config.output_csv
    )

    attributes = {
        "class_names": np.array(VIEWS, dtype=object),
        "image_size": image_size,
        "model": os.path.abspath(config.model_path),
        "model_sha256": model_digest,
        "temperature": card.temperature,
        "preprocessing": card.preprocessing,
        "test_time_augmentation": "mean over 4 mirror images" if tta else "none",
        "cam_layer": model_lib.cam_layer_name(model),
        "cam_method": "Grad-CAM of the predicted view's pre-softmax score, per image, float32",
        "scan_dir": os.fsdecode(scan_dir),
        "num_shards": config.num_shards,
        "shard_index": config.shard_index,
        "brainview_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    manifest = {
        "scan_dir": os.fsdecode(scan_dir),
        "model": os.path.abspath(config.model_path),
        "model_sha256": model_digest,
        "cams": config.cams_path,
        "num_shards": config.num_shards,
        "shard_index": config.shard_index,
        "by_view": dict(summary.by_view),
        "by_status": dict(summary.by_status),
        "last_session": {"rows": summary.session_rows, "seconds": round(summary.seconds, 2)},
        "device": devices.describe(),
    }
    writer.finish(attributes, manifest, cam_shape)
    return summary


def _rebuilt_for_size(config: ClassifyConfig, strategy: tf.distribute.Strategy, image_size: int):
    """The model at another input size (EfficientNet is fully convolutional)."""
    if image_size < 32:
        raise ClassifyError(f"--image_size must be at least 32, got {image_size}")
    card = model_lib.ModelCard.load(model_lib.card_path(config.model_path))
    with strategy.scope():
        model = model_lib.build_classifier(
            image_size, "none", head_units=card.head_units, backbone_name=card.backbone
        )
        model.load_weights(config.model_path)
    return model, dataclasses.replace(card, image_size=image_size)
