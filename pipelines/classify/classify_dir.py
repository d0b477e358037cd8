"""classify_dir's run: a scan directory -> CSV of predictions + HDF5 of Grad-CAMs.

    scan_input.scan_dataset   walk, decode, preprocess, batch (tf.data)
      -> prediction.Predictor  probabilities and Grad-CAMs, on every GPU of the node
      -> statuses (ok, uncertain, blank, error) and calibrated probabilities
      -> output_writer.OutputWriter  rows committed in segments a kill cannot break

This module decides what a run is (model, image size, batch size, TTA, the
settings a resume must match) and what each row says; the other modules of
`brainview.classify` do the work. Bad files never stop the run: they get a
row with status "error". Fatal problems (no model, unwritable outputs,
unreadable scan directory) raise ClassifyError (or outputs.OutputError) with a
one-line message. Refused before any work: outputs that collide or sit inside
the scan directory, outputs another run is writing, a resume (of an
unfinished or a finished run) with other settings or over a scan directory
whose committed files changed. Decodes go through a journal
(decode_journal.py), so a scan that gets the run killed for lack of memory is
an error row after `--resume` instead of the next death.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import time

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from brainview import __version__, devices, image_files, metrics, released_models
from brainview import model as model_lib
from brainview.classify import (
    decode_journal,
    output_readers,
    output_writer,
    outputs,
    prediction,
    scan_files,
    scan_input,
)
from brainview.labels import VIEWS


class ClassifyError(Exception):
    """A fatal problem; the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class ClassifyConfig:
    """One classify_dir run: bin/classify_dir's arguments and flags."""

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
        statuses = ", ".join(f"{s} {self.by_status.get(s, 0)}" for s in outputs.STATUSES)
        resumed = f" (this session: {self.session_rows})" if self.session_rows != self.rows else ""
        return (
            f"{self.rows} images{resumed} in {self.seconds:.1f} s "
            f"({self.images_per_second:.1f} img/s)\n"
            f"  views:    {views}\n  statuses: {statuses}"
        )


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


def batch_segment(
    batch: dict[str, np.ndarray],
    probabilities: np.ndarray,
    cams: np.ndarray | None,
    card: model_lib.ModelCard,
) -> outputs.Segment:
    """The rows of one batch of predictions (its padding rows dropped).

    Decides every row's status; the Beam pipeline (brainview.beam) calls it too,
    so both engines write the same rows.
    """
    valid = batch["valid"]
    probabilities = metrics.apply_temperature(probabilities[valid], card.temperature)
    errors = [error.decode("utf-8") for error in batch["error"][valid]]
    blank = batch["blank"][valid]
    confidence = probabilities.max(axis=1)
    statuses = []
    for i, error in enumerate(errors):
        if error:
            statuses.append("error")
        elif blank[i]:
            statuses.append("blank")
        elif confidence[i] < card.uncertain_below:
            statuses.append("uncertain")
        else:
            statuses.append("ok")
    return outputs.make_segment(
        relative_paths=list(batch["path"][valid]),
        statuses=statuses,
        errors=errors,
        probabilities=probabilities,
        widths=batch["width"][valid],
        heights=batch["height"][valid],
        mean_intensities=batch["mean_intensity"][valid],
        frames=batch["frame"][valid],
        cams=None if cams is None else cams[valid],
    )


def _load_model(config: ClassifyConfig, strategy: tf.distribute.Strategy):
    try:
        with strategy.scope():
            return model_lib.load_model(config.model_path)
    except FileNotFoundError as error:
        raise ClassifyError(str(error)) from None
    except Exception as error:  # e.g. zipfile.BadZipFile for a file that is not a .keras archive
        raise ClassifyError(f"cannot load model {config.model_path}: {error}") from None


def _check_unchanged(
    scan_dir: bytes, config: ClassifyConfig, point: output_writer.ResumePoint, finished: bool
) -> None:
    """Refuses outputs whose committed rows no longer match the scan directory's files.

    The committed rows must be exactly this shard's first files in walk order
    now (the digest of their raw paths is recorded with them), and a finished
    run must have no file after them. Otherwise resuming would shift rows onto
    other files, or call stale outputs complete.
    """
    walked = scan_files.shard(
        scan_files.walk(scan_dir, config.include_hidden), config.num_shards, config.shard_index
    )
    digest, count, nth, more = "", 0, None, False
    try:
        for entry in walked:
            if count == point.rows:
                more = True
                break
            digest = outputs.path_digest(digest, entry.relative_path)
            count += 1
            nth = entry.relative_path
    except OSError as error:
        raise ClassifyError(f"cannot read scan directory {config.scan_dir}: {error}") from None
    files = "files in this shard" if config.num_shards > 1 else "files"
    if count < point.rows:
        detail = f"it now has {count} {files} where {point.rows} rows were written"
    elif digest != point.paths_digest:
        if point.last_path is not None and nth != point.last_path:
            shard = " of this shard" if config.num_shards > 1 else ""
            detail = (
                f"file {point.rows}{shard} is now {scan_files.display_path(nth)}, "
                f"it was {scan_files.display_path(point.last_path)}"
            )
        else:
            detail = f"{files} among the first {point.rows} were added, removed or renamed"
    elif finished and more:
        detail = f"{files} were added after the {point.rows} rows written"
    else:
        return
    if finished:
        raise ClassifyError(
            f"{config.output_csv} is complete, but the scan directory changed since it was "
            f"written ({detail}): use --overwrite to classify it again"
        )
    raise ClassifyError(
        f"cannot resume {config.output_csv}: the scan directory changed since its rows were "
        f"written ({detail}), so they would no longer line up with its files: use --overwrite "
        "to start again"
    )


def classify_directory(config: ClassifyConfig) -> Summary:
    """Classifies every file below config.scan_dir (this shard's share of them).

    `config.model_path` is a model.keras path or a shipped model's name (`plane-v1`).
    """
    model_name = config.model_path if released_models.is_name(config.model_path) else ""
    try:
        config = dataclasses.replace(config, model_path=released_models.resolve(config.model_path))
    except released_models.UnknownModelError as error:
        raise ClassifyError(str(error)) from None
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
    outputs.check_output_paths(config.output_csv, config.cams_path, config.scan_dir)
    # The outputs name a shipped model by its name, a trained one by its path.
    model_label = model_name or os.path.abspath(config.model_path)
    return _classify(config, scan_dir, model_label)


def _classify(config: ClassifyConfig, scan_dir: bytes, model_label: str) -> Summary:
    devices.set_precision("auto")
    # Nodes share a run through --num_shards; within a node, every GPU is used.
    strategy = devices.select_strategy(cluster=False)
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
    writer = output_writer.OutputWriter(
        config.output_csv,
        config.cams_path,
        signature,
        resume=config.resume,
        overwrite=config.overwrite,
    )
    try:
        if writer.resume_point is not None:
            _check_unchanged(scan_dir, config, writer.resume_point, writer.already_complete)
        if writer.already_complete:
            return Summary(already_complete=True)
        try:
            journal = decode_journal.DecodeJournal(
                outputs.decode_journal_path(config.output_csv),
                scan_dir,
                config.max_decode_side,
                resume=writer.resume_point is not None,
            )
        except OSError as error:
            raise ClassifyError(f"cannot write next to {config.output_csv}: {error}") from None
        try:
            predictor = prediction.Predictor(model, strategy, bool(config.cams_path), tta)
            summary = _run(config, scan_dir, predictor, card, image_size, writer, journal)
            summary.rows, summary.by_view, summary.by_status = output_readers.count_rows(
                config.output_csv
            )
            attributes, manifest = _provenance(
                config, signature, card, summary, model_label, model_lib.cam_layer_name(model)
            )
            writer.finish(attributes, manifest, cam_shape)
            journal.remove()
        finally:
            journal.close()
        return summary
    finally:
        writer.close()


def _provenance(
    config: ClassifyConfig,
    signature: dict,
    card: model_lib.ModelCard,
    summary: Summary,
    model_label: str,
    cam_layer: str,
) -> tuple[dict, dict]:
    """The CAM file's attributes and the run manifest's fields: what ran, on what."""
    attributes = {
        "class_names": np.array(VIEWS, dtype=object),
        "image_size": signature["image_size"],
        "model": model_label,
        "model_sha256": signature["model_sha256"],
        "temperature": card.temperature,
        "preprocessing": card.preprocessing,
        "test_time_augmentation": "mean over 4 mirror images" if signature["tta"] else "none",
        "cam_layer": cam_layer,
        "cam_method": "Grad-CAM of the predicted view's pre-softmax score, per image, float32",
        "scan_dir": signature["scan_dir"],
        "num_shards": config.num_shards,
        "shard_index": config.shard_index,
        "brainview_version": __version__,
        "created": outputs.utc_now(),
    }
    manifest = {
        "scan_dir": signature["scan_dir"],
        "model": model_label,
        "model_sha256": signature["model_sha256"],
        "cams": os.path.abspath(config.cams_path) if config.cams_path else None,
        "num_shards": config.num_shards,
        "shard_index": config.shard_index,
        "by_view": dict(summary.by_view),
        "by_status": dict(summary.by_status),
        "last_session": {"rows": summary.session_rows, "seconds": round(summary.seconds, 2)},
        "device": devices.describe(),
    }
    return attributes, manifest


def _run(
    config: ClassifyConfig,
    scan_dir: bytes,
    predictor: prediction.Predictor,
    card: model_lib.ModelCard,
    image_size: int,
    writer: output_writer.OutputWriter,
    journal: decode_journal.DecodeJournal,
) -> Summary:
    """Classifies the files after the writer's last committed one, committing as it goes."""
    summary = Summary()
    total = _count_in_background(scan_dir, config)
    dataset = scan_input.scan_dataset(
        scan_dir,
        image_size=image_size,
        mode=card.preprocessing,
        batch_size=config.batch_size,
        max_decode_side=config.max_decode_side,
        num_shards=config.num_shards,
        shard_index=config.shard_index,
        include_hidden=config.include_hidden,
        resume_after=writer.last_path,
        load_scan=journal.load,
        # Scans a killed run left behind are read by the journaled reader only.
        python_only=frozenset(journal.blamed) | frozenset(journal.suspects),
    )
    batches_per_commit = max(1, -(-config.commit_every // config.batch_size))

    def commit(pending: list[outputs.Segment]) -> None:
        writer.commit(outputs.concatenate(pending))
        try:
            journal.compact()
        except OSError as error:
            raise ClassifyError(f"cannot write {journal.path}: {error.strerror}") from None

    started = time.perf_counter()
    pending: list[outputs.Segment] = []
    with tqdm(
        initial=writer.rows_done,
        unit="img",
        disable=not config.progress,
        dynamic_ncols=True,
        desc="classify",
    ) as bar:
        for batch, probabilities, cams in predictor.predict(dataset):
            segment = batch_segment(batch, probabilities, cams, card)
            pending.append(segment)
            summary.session_rows += len(segment)
            if len(pending) >= batches_per_commit:
                commit(pending)
                pending = []
            if "total" in total and bar.total is None:
                bar.total = total["total"]
            bar.update(len(segment))
        if pending:
            commit(pending)
    summary.seconds = time.perf_counter() - started
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
