"""Shared fixtures: where the real data is, and datasets built once per session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

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
