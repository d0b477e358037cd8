"""Shipped models by name, and the sha256 check that guards every model file."""

from __future__ import annotations

import os
import shutil

import pytest

from brainview import model as model_lib
from brainview import released_models

SIZE = 32


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("model") / "model.keras")
    model_lib.save_model(
        model_lib.build_classifier(SIZE), model_lib.ModelCard(image_size=SIZE), path
    )
    return path


def test_saved_card_records_the_weights_hash(saved_model):
    card = model_lib.ModelCard.load(model_lib.card_path(saved_model))
    assert card.weights_sha256 == model_lib.file_digest(saved_model, length=64)
    model_lib.load_model(saved_model)  # the hash matches: loads


def test_a_changed_weights_file_is_refused(saved_model, tmp_path):
    damaged = tmp_path / "model.keras"
    shutil.copy(saved_model, damaged)
    shutil.copy(model_lib.card_path(saved_model), tmp_path / "model.json")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(model_lib.ModelFileError, match="changed or damaged"):
        model_lib.load_model(str(damaged))


def test_names_and_paths():
    assert released_models.is_name("plane-v1")
    assert not released_models.is_name("runs/demo/holdout/model.keras")
    assert not released_models.is_name("model.keras")
    assert released_models.resolve("runs/x/model.keras") == "runs/x/model.keras"
    with pytest.raises(released_models.UnknownModelError, match="no shipped model"):
        released_models.resolve("plane-v0-nonexistent")


def test_default_model_is_shipped_and_loads():
    """The package carries its default model, and its files match their recorded hash."""
    assert released_models.DEFAULT_MODEL in released_models.available()
    path = released_models.resolve(released_models.DEFAULT_MODEL)
    assert os.path.getsize(path) <= 20 * 1024 * 1024
    model, card = model_lib.load_model(path)
    assert card.weights_sha256 and model.count_params() > 0
    assert os.path.exists(released_models.model_card_path(released_models.DEFAULT_MODEL))
    with open(released_models.model_card_path(released_models.DEFAULT_MODEL)) as file:
        assert card.weights_sha256 in file.read()
