"""classify_dir on Apache Beam: a scan folder or file pattern -> classify_dir's CSV + CAMs.

    sources.ListScans        walk the folder / match the pattern, spread the files
      -> sources.PrepareScans  decode (image_files) + preprocess (preprocessing)
      -> RunInference          inference.ClassifierHandler, batched by Beam
      -> sinks.to_row          classify_dir's statuses and row formatting
      -> GroupByKey(shard) -> sinks.write_shard   sorted CSV (+ HDF5) shards
      -> ToList -> sinks.join_shards              OUT.csv (+ CAMs) in walk order, OUT.run.json

The same rows as `bin/classify_dir` for the same folder and model (probabilities
agree to ~1e-6: Beam chooses its own batch sizes, and CPU kernels round the last
digits differently per batch size). Everything that can be checked before the
pipeline starts is (`plan`): the input exists, outputs do not (unless
--overwrite) and are not inside the input, the model and its card load, the
pipeline options are known — so a mistake costs seconds, not a cluster job.
Not here: --resume (a failed Beam job is rerun whole; its runner retries
failed bundles itself) and --num_shards (the runner spreads the work).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import StandardOptions

from brainview import __version__, image_files, released_models
from brainview import model as model_lib
from brainview.beam import inference, options, sinks, sources
from brainview.classify import classify_dir, outputs
from brainview.labels import VIEWS

DEFAULT_RUNNER = "DirectRunner"


class BeamClassifyError(Exception):
    """A problem found before the pipeline starts; the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class BeamClassifyConfig:
    scans: str  # a local folder, or a file pattern / folder on any Beam filesystem
    output_csv: str
    model_path: str
    cams_path: str | None = None
    tta: bool | None = None  # None: the model card's choice
    batch_size: int = 64  # images per model call; Beam forms the batches
    max_decode_side: int = image_files.MAX_DECODE_SIDE
    include_hidden: bool = False
    output_shards: int = 16
    keep_shards: bool = False
    overwrite: bool = False
    runner: str | None = None  # None: from pipeline_options, else DEFAULT_RUNNER
    pipeline_options: str | None = None  # "name=value,..." as for `tfds build`


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked run: what to read, the model's card, Beam options, the output plan."""

    scan_input: sources.ScanInput
    card: model_lib.ModelCard
    tta: bool
    beam_options: beam.options.pipeline_options.PipelineOptions
    outputs: sinks.OutputPlan


def with_model_path(config: BeamClassifyConfig) -> BeamClassifyConfig:
    """`config` with a shipped model's name (`plane-v1`) replaced by its model.keras path."""
    try:
        path = released_models.resolve(config.model_path)
    except released_models.UnknownModelError as error:
        raise BeamClassifyError(str(error)) from None
    return dataclasses.replace(config, model_path=path)


def plan(config: BeamClassifyConfig) -> Plan:
    """Checks everything a run needs before any work; BeamClassifyError if something is off.

    `config.model_path` is a model.keras path or a shipped model's name, as for classify_dir;
    the outputs name a shipped model by its name.
    """
    model_name = config.model_path if released_models.is_name(config.model_path) else ""
    config = with_model_path(config)
    try:
        scan_input = sources.ScanInput.parse(config.scans, config.include_hidden)
    except sources.InputError as error:
        raise BeamClassifyError(str(error)) from None
    beam_options = _beam_options(config)
    targets = [config.output_csv, *([config.cams_path] if config.cams_path else [])]
    if len(set(targets)) != len(targets):
        raise BeamClassifyError("--cams must differ from the output CSV")
    for target in targets:
        if scan_input.contains(target):
            raise BeamClassifyError(
                f"{target} is inside the scan input {scan_input.description}: a later run would "
                "classify it; write outputs elsewhere"
            )
    _check_outputs(config, targets)
    card, cam_shape, cam_layer, model_digest = _check_model(config.model_path)
    tta = card.tta if config.tta is None else config.tta
    signature = {
        "scan_dir": scan_input.description,
        "model_sha256": model_digest,
        "image_size": card.image_size,
        "tta": tta,
        "num_shards": 1,
        "shard_index": 0,
        "cams": bool(config.cams_path),
        "include_hidden": config.include_hidden,
        "max_decode_side": config.max_decode_side,
    }
    runner = beam_options.view_as(StandardOptions).runner
    model_path = model_name or (
        os.path.abspath(config.model_path)
        if sinks.is_local(config.model_path)
        else (config.model_path)
    )
    cam_attributes = {
        "class_names": np.array(VIEWS, dtype=object),
        "image_size": card.image_size,
        "model": model_path,
        "model_sha256": model_digest,
        "temperature": card.temperature,
        "preprocessing": card.preprocessing,
        "test_time_augmentation": "mean over 4 mirror images" if tta else "none",
        "cam_layer": cam_layer,
        "cam_method": "Grad-CAM of the predicted view's pre-softmax score, per image, float32",
        "scan_dir": scan_input.description,
        "num_shards": 1,
        "shard_index": 0,
        "brainview_version": __version__,
        "engine": f"Apache Beam {beam.__version__}, {runner}",
    }
    manifest = {
        "scan_dir": scan_input.description,
        "model": model_path,
        "model_sha256": model_digest,
        "cams": config.cams_path,
        "num_shards": 1,
        "shard_index": 0,
        "signature": signature,
        "engine": {"apache_beam": beam.__version__, "runner": runner},
    }
    return Plan(
        scan_input=scan_input,
        card=card,
        tta=tta,
        beam_options=beam_options,
        outputs=sinks.OutputPlan(
            output_csv=config.output_csv,
            cams_path=config.cams_path,
            num_shards=config.output_shards,
            cam_shape=cam_shape,
            cam_attributes=cam_attributes,
            manifest=manifest,
            keep_shards=config.keep_shards,
        ),
    )


def _beam_options(config: BeamClassifyConfig):
    try:
        beam_options = options.pipeline_options(config.pipeline_options)
    except ValueError as error:
        raise BeamClassifyError(str(error)) from None
    standard = beam_options.view_as(StandardOptions)
    if config.runner:
        if standard.runner and standard.runner != config.runner:
            raise BeamClassifyError(
                f"--runner={config.runner} contradicts runner={standard.runner} in "
                "--beam_pipeline_options; give it once"
            )
        standard.runner = config.runner
    standard.runner = standard.runner or DEFAULT_RUNNER
    return beam_options


def _check_outputs(config: BeamClassifyConfig, targets: list[str]) -> None:
    """Refuses existing outputs unless --overwrite, which removes them now."""
    leftovers = [
        *targets,
        outputs.manifest_path(config.output_csv),
        sinks.shards_dir(config.output_csv),
    ]
    existing = [path for path in leftovers if FileSystems.exists(path)]
    if existing and not config.overwrite:
        raise BeamClassifyError(f"{existing[0]} exists: pass --overwrite to replace it")
    if existing:
        FileSystems.delete(existing)
    for target in targets:  # object stores (gs://, s3://) have no folders to check
        directory = os.path.dirname(target)
        if sinks.is_local(target) and directory and not os.path.isdir(directory):
            raise BeamClassifyError(f"output folder not found: {directory}")


def _check_model(model_path: str) -> tuple[model_lib.ModelCard, tuple[int, int], str, str]:
    """(card, CAM shape, CAM layer, sha256) of a model that loads; the workers load the same
    file. The CAM layer is named as classify_dir names it (B0 and Lite0 differ)."""
    for path in (model_path, model_lib.card_path(model_path)):
        if not FileSystems.exists(path):
            raise BeamClassifyError(
                f"model not found: {path} (bin/train writes model.keras and model.json)"
            )
    try:
        local = inference.local_model_copy(model_path)
        model, card = model_lib.load_model(local)
    except Exception as error:  # e.g. zipfile.BadZipFile for a file that is not a .keras archive
        raise BeamClassifyError(f"cannot load model {model_path}: {error}") from None
    _, head = model_lib.backbone_and_head(model)
    cam_shape = tuple(int(d) for d in head.input.shape[1:3])
    return card, cam_shape, model_lib.cam_layer_name(model), model_lib.file_digest(local)


def build(pipeline: beam.Pipeline, config: BeamClassifyConfig, checked: Plan) -> None:
    """Adds the classification to `pipeline` (run it to write the outputs)."""
    handler = inference.ClassifierHandler(
        config.model_path,
        tta=checked.tta,
        with_cams=bool(config.cams_path),
        batch_size=config.batch_size,
    )
    shards = (
        pipeline
        | "ListScans" >> sources.ListScans(checked.scan_input)
        | "Prepare"
        >> beam.ParDo(
            sources.PrepareScans(
                checked.scan_input,
                checked.card.image_size,
                checked.card.preprocessing,
                config.max_decode_side,
            )
        )
        | "Classify" >> RunInference(KeyedModelHandler(handler))
        | "Rows" >> beam.Map(sinks.to_row, card=checked.card, num_shards=config.output_shards)
        | "GroupShards" >> beam.GroupByKey()
        | "WriteShards" >> beam.Map(sinks.write_shard, plan=checked.outputs)
    )
    _ = (
        shards
        | "AllShards" >> beam.combiners.ToList()
        | "Join" >> beam.Map(sinks.join_shards, plan=checked.outputs)
    )


def classify(config: BeamClassifyConfig) -> classify_dir.Summary:
    """Plans, runs the pipeline to completion and summarizes the outputs."""
    checked = plan(config)
    config = with_model_path(config)
    FileSystems.mkdirs(checked.outputs.shards_dir)
    started = time.perf_counter()
    with beam.Pipeline(options=checked.beam_options) as pipeline:
        build(pipeline, config, checked)
    seconds = time.perf_counter() - started
    with FileSystems.open(outputs.manifest_path(config.output_csv)) as file:
        manifest = json.load(file)
    return classify_dir.Summary(
        rows=manifest["rows"],
        by_view=collections.Counter(manifest["by_view"]),
        by_status=collections.Counter(manifest["by_status"]),
        session_rows=manifest["rows"],
        seconds=seconds,
    )
