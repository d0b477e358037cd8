"""Shared fixtures for every test: the real data, datasets and models built once per session.

Test tiers, by marker (pyproject.toml registers them):

    (none)        unit: in-process, small generated inputs, seconds
    integration   real components end to end on small generated data: the
                  binaries as subprocesses, TFDS builds (make test-fast runs it)
    slow          end-to-end runs: training, classify_dir subprocesses, the
                  quick benchmarks (make test; CI runs every tier)

    pytest -m "not integration and not slow"   the unit tier alone
    pytest -m "not slow"                       unit + integration (make test-fast)
"""

from __future__ import annotations

import importlib
import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from tests import classify_helpers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir() -> str:
    """../shared/data beside the repository, or $BRAINVIEW_SHARED_DATA."""
    return os.environ.get("BRAINVIEW_SHARED_DATA") or os.path.join(
        os.path.dirname(REPO_ROOT), "shared", "data"
    )


def require_shared(*parts: str) -> str:
    """The path below the shared data folder, or skip the test with the reason."""
    path = os.path.join(shared_data_dir(), *parts)
    if not os.path.exists(path):
        pytest.skip(f"real data not available: {path} (see ../shared/data/README.md)")
    return path


def require_beam(reason: str) -> types.ModuleType:
    """apache_beam, or skip the calling module's tests with `reason` when it is missing.

    With BRAINVIEW_REQUIRE_BEAM=1 (.ci/run) a missing apache_beam fails them
    instead: CI installs the beam extra, and losing it must not turn every
    Beam test into a skip that passes unnoticed.
    """
    if os.environ.get("BRAINVIEW_REQUIRE_BEAM") != "1":
        return pytest.importorskip("apache_beam", reason=reason)
    try:
        return importlib.import_module("apache_beam")
    except ImportError as error:
        pytest.fail(
            f"BRAINVIEW_REQUIRE_BEAM=1 but apache_beam does not import ({error}): {reason}",
            pytrace=False,
        )


# --- Every test ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def stop_started_tools():
    """After each test, kills the binaries it started in the background that still run."""
    yield
    classify_helpers.stop_started_tools()


@pytest.fixture(autouse=True)
def dtype_policy_unchanged():
    """Fails the test that leaves Keras' global dtype policy changed (it would change the
    numbers of every later test), instead of a later test in whatever order they run."""
    yield
    keras = sys.modules.get("keras")  # only if the test imported Keras at all
    if keras is not None:
        policy = keras.mixed_precision.global_policy().name
        assert policy == "float32", f"the test left the global dtype policy at {policy}"


# --- Datasets -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def phantom_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir holding brain_phantom/tiny (built once per test session)."""
    from brainview_tfds import build

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    build.build(build.BuildRequest("brain_phantom", "tiny"), data_dir=data_dir)
    return data_dir


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory) -> str:
    """A TFDS data_dir with allen_ccfv3/200um and brainmaps built from ../shared/data."""
    from brainview_tfds import build

    ccf_dir = require_shared("allen_ccfv3_200um")
    brainmaps_dir = require_shared("brainmaps")
    data_dir = str(tmp_path_factory.mktemp("tfds_real"))
    build.build(build.BuildRequest("allen_ccfv3", "200um", ccf_dir), data_dir=data_dir)
    build.build(build.BuildRequest("brainmaps", None, brainmaps_dir), data_dir=data_dir)
    return data_dir


# --- classify_dir: models, the golden folder and one run over it --------------------------------


@pytest.fixture(scope="session")
def classifier_model(tmp_path_factory) -> str:
    """Path of the deterministic test model (built once per session, ~20 s): an untrained
    EfficientNet-B0 at 64 px whose outputs depend strongly on the input."""
    path = str(tmp_path_factory.mktemp("model") / "model.keras")
    classify_helpers.build_test_model(path)
    return path


@pytest.fixture(scope="session")
def other_classifier_model(tmp_path_factory) -> str:
    """A second model (other head bias, so another model_sha256), for refused resumes."""
    path = str(tmp_path_factory.mktemp("other_model") / "model.keras")
    classify_helpers.build_test_model(path, bias=(0.5, 0.0, -0.5))
    return path


@pytest.fixture(scope="session")
def golden_scans(tmp_path_factory) -> str:
    """The golden folder (classify_helpers.write_golden_scans)."""
    directory = str(tmp_path_factory.mktemp("golden") / "scans")
    classify_helpers.write_golden_scans(directory)
    return directory


@pytest.fixture(scope="session")
def golden_run(tmp_path_factory, golden_scans, classifier_model) -> classify_helpers.Run:
    """One complete bin/classify_dir run over the golden folder, with CAMs; reused by the
    golden, shard and render_cams tests."""
    out = tmp_path_factory.mktemp("golden_run")
    csv_path, cams_path = str(out / "predictions.csv"), str(out / "cams.h5")
    result = classify_helpers.run_tool(
        classify_helpers.CLASSIFY_DIR,
        *classify_helpers.classify_args(
            golden_scans, csv_path, classifier_model, cams_path, "--batch_size=8"
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return classify_helpers.Run(golden_scans, csv_path, cams_path, classifier_model, result.stdout)
