"""Making a release: files copied and verified, a model card built from the runs' own metrics."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from brainview import evaluation, metrics, release, released_models
from brainview import model as model_lib

SIZE = 32


def _metrics_file(path, seed: int, name: str) -> dict:
    """A metrics.json as bin/train writes it, from real (random) predictions."""
    rng = np.random.default_rng(seed)
    count = 60
    labels = rng.integers(0, 3, count)
    probabilities = rng.dirichlet(np.ones(3), count)
    probabilities[np.arange(count), labels] += 1.0  # mostly right
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predictions = evaluation.Predictions(
        probabilities=probabilities,
        labels=labels,
        origins=np.array(["brainmaps", "allen_ccfv3"] * (count // 2)),
        specimens=np.array(["s"] * count),
        groups=np.array(["g"] * count),
        slice_indices=np.zeros(count, int),
        source_files=np.array(["f"] * count),
    )
    result = evaluation.report(predictions, 1.3)
    result["remounted"] = evaluation.report(predictions, 1.3)
    result["hemisections"] = evaluation.report(predictions, 1.3)
    result["selective"] = metrics.selective_metrics(labels, probabilities, 0.6)
    result["uncertain_below"] = 0.6
    result["run"] = {
        "name": name,
        "train_sources": ["brain_phantom"],
        "train_split": "fold0",
        "test_sources": ["brainmaps", "allen_ccfv3/200um"],
        "test_split": "fold4",
    }
    path.write_text(json.dumps(result))
    return result


@pytest.fixture()
def release_run(tmp_path):
    run_dir = tmp_path / "release" / "release"
    run_dir.mkdir(parents=True)
    model_lib.save_model(
        model_lib.build_classifier(SIZE),
        model_lib.ModelCard(image_size=SIZE, recipe="test", trained_on=("brainmaps:all",)),
        str(run_dir / "model.keras"),
    )
    (run_dir / "metrics.json").write_text(json.dumps({"train_examples": 123}))
    (tmp_path / "release" / "flags.txt").write_text("--epochs=1\n--image_size=32\n")
    holdout = _metrics_file(tmp_path / "holdout.json", 0, "holdout")
    _metrics_file(tmp_path / "cross.json", 1, "brainmaps_to_allen_ccfv3")
    return run_dir, holdout


def test_release_ships_verified_files_and_a_card_of_the_runs_numbers(release_run, tmp_path):
    run_dir, holdout = release_run
    evidence = release.Evidence(
        holdout=str(tmp_path / "holdout.json"), cross=(str(tmp_path / "cross.json"),)
    )
    target = release.make_release(
        "plane-test",
        str(run_dir),
        str(run_dir.parent / "flags.txt"),
        evidence,
        released_dir=str(tmp_path / "released"),
    )
    model, card = model_lib.load_model(os.path.join(target, "model.keras"))  # hash verified
    assert model.count_params() > 0
    with open(os.path.join(target, "MODEL_CARD.md"), encoding="utf-8") as file:
        text = file.read()
    assert card.weights_sha256 in text
    assert "123 examples" in text and "--epochs=1" in text
    assert f"{holdout['overall']['f1_macro']:.3f}" in text
    assert f"{holdout['by_origin']['brainmaps']['f1_macro']:.3f}" in text
    # The calibration is the holdout run's.
    assert card.temperature == holdout["temperature"] == 1.3
    assert card.uncertain_below == holdout["uncertain_below"]
    assert "brainmaps_to_allen_ccfv3" in text
    assert not os.path.exists(target + ".tmp")


def test_card_only_adds_later_evidence_and_leaves_the_weights(release_run, tmp_path):
    run_dir, _ = release_run
    flags_path = str(run_dir.parent / "flags.txt")
    released = str(tmp_path / "released")
    holdout_only = release.Evidence(holdout=str(tmp_path / "holdout.json"))
    with pytest.raises(release.ReleaseError, match="release the model first"):
        release.make_release(
            "p", str(run_dir), flags_path, holdout_only, released_dir=released, card_only=True
        )
    target = release.make_release("p", str(run_dir), flags_path, holdout_only, released)
    shipped = os.path.join(target, "model.keras")
    before = (model_lib.file_digest(shipped, 64), os.path.getmtime(shipped))
    with open(os.path.join(target, "MODEL_CARD.md"), encoding="utf-8") as file:
        assert "brainmaps_to_allen_ccfv3" not in file.read()

    later = dataclasses.replace(holdout_only, cross=(str(tmp_path / "cross.json"),))
    release.make_release("p", str(run_dir), flags_path, later, released, card_only=True)

    assert (model_lib.file_digest(shipped, 64), os.path.getmtime(shipped)) == before
    with open(os.path.join(target, "MODEL_CARD.md"), encoding="utf-8") as file:
        assert "Cross-dataset: brainmaps_to_allen_ccfv3" in file.read()


def test_release_refuses_a_damaged_model_and_missing_runs(release_run, tmp_path):
    run_dir, _ = release_run
    evidence = release.Evidence(holdout=str(tmp_path / "holdout.json"))
    with pytest.raises(release.ReleaseError, match="not found"):
        release.make_release("x", str(tmp_path / "nowhere"), "flags.txt", evidence)
    card = model_lib.ModelCard.load(str(run_dir / "model.json"))
    dataclasses.replace(card, weights_sha256="0" * 64).save(str(run_dir / "model.json"))
    with pytest.raises(model_lib.ModelFileError):
        release.make_release(
            "x",
            str(run_dir),
            str(run_dir.parent / "flags.txt"),
            evidence,
            released_dir=str(tmp_path / "released"),
        )


def test_released_dir_is_inside_the_package():
    assert released_models.RELEASED_DIR.endswith(os.path.join("brainview", "models")) or (
        released_models.RELEASED_DIR.endswith(os.path.join("pipelines", "models"))
    )
