"""Models shipped inside the package, picked by name: `--model=plane-v1`.

A released model is a folder `models/<name>/` of this package holding what
`model.load_model` reads (`model.keras` and its card `model.json`, which
records the weights' sha256) and `MODEL_CARD.md` for people: recipe, data,
metrics, calibration, input size, hash and date. `pip install` brings it, so
classify_dir works without training and without a download.

`--model` takes a name from `available()` or a path to a model.keras written
by bin/train; a value is a name when it contains no path separator and does
not end in `.keras`.
"""

from __future__ import annotations

import os

RELEASED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
DEFAULT_MODEL = "plane-v1"
MODEL_FILE = "model.keras"


class UnknownModelError(ValueError):
    """--model names no shipped model and is not a path."""


def available() -> list[str]:
    """Names of the models shipped with this installation."""
    if not os.path.isdir(RELEASED_DIR):
        return []
    return sorted(
        name
        for name in os.listdir(RELEASED_DIR)
        if os.path.exists(os.path.join(RELEASED_DIR, name, MODEL_FILE))
    )


def is_name(spec: str) -> bool:
    return os.sep not in spec and "/" not in spec and not spec.endswith(".keras")


def resolve(spec: str) -> str:
    """The model.keras path for `spec`: a shipped model's name, or a path (returned as is)."""
    if not is_name(spec):
        return spec
    if spec in available():
        return os.path.join(RELEASED_DIR, spec, MODEL_FILE)
    shipped = ", ".join(available()) or "none"
    raise UnknownModelError(
        f"--model={spec}: no shipped model of that name (shipped: {shipped}); pass a shipped "
        "name or the path of a model.keras written by bin/train"
    )


def model_card_path(name: str) -> str:
    """The human-readable card of a shipped model."""
    return os.path.join(RELEASED_DIR, name, "MODEL_CARD.md")
