"""Dataset builders on Apache Beam: the same examples and splits as the local build.

Every builder generates with Beam when `download_and_prepare` is given Beam
pipeline options (brainview_tfds/core/beam_generation.py): from Python
(`build.build(..., beam_options=...)`), from `bin/build_datasets
--beam_pipeline_options=...` and from `tfds build --beam_pipeline_options=...`.
The builds run on Beam's in-process local runner (FnApiRunner: what the
DirectRunner runs when Prism is not available, as here, without its attempt to
download Prism) and are compared with local builds example by example, in
order, every feature. Skipped without apache_beam, unless BRAINVIEW_REQUIRE_BEAM=1
(CI), where they fail.
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import pkgutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import brainview_tfds
from brainview_tfds import build, testing
from brainview_tfds.brain_phantom.brain_phantom_dataset_builder import PhantomConfig
from brainview_tfds.core import beam_generation, volume_builder, volumes
from tests.conftest import REPO_ROOT, require_beam

require_beam("the Beam path needs the beam extra")

# Tier: TFDS builds and binaries on generated sources (see conftest.py).
pytestmark = pytest.mark.integration

LOCAL_RUNNER = "runner=FnApiRunner"
# Half of brain_phantom/tiny's shape: every fold still holds a specimen, in half the time.
SMALL_PHANTOM = PhantomConfig(name="small", num_specimens=5, shape=(20, 12, 17))
# Every dataset folder of brainview_tfds (a new builder is checked without being listed).
BUILDERS = sorted(
    module.name
    for module in pkgutil.iter_modules(brainview_tfds.__path__)
    if module.ispkg and module.name != "core"
)


def beam_options():
    from brainview.beam import options

    return options.pipeline_options(LOCAL_RUNNER)


def assert_same_examples(local: tfds.core.DatasetBuilder, other: tfds.core.DatasetBuilder):
    """Same splits, and in every split the same examples in the same order."""
    assert sorted(local.info.splits) == sorted(other.info.splits)
    for split in local.info.splits:
        expected = list(tfds.as_numpy(local.as_dataset(split=split, shuffle_files=False)))
        actual = list(tfds.as_numpy(other.as_dataset(split=split, shuffle_files=False)))
        assert len(actual) == len(expected) > 0, split
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert want.keys() == got.keys()
            for feature in want:
                assert np.array_equal(want[feature], got[feature]), (split, index, feature)


@pytest.mark.parametrize(
    ("name", "config", "manual"),
    [
        ("brain_phantom", "tiny", None),
        pytest.param(
            "brain_phantom_outlines", SMALL_PHANTOM, None, id="brain_phantom_outlines-small"
        ),
        ("brainmaps", None, "brainmaps"),
        ("allen_ccfv3", "200um", "allen_ccfv3"),
        ("allen_ccfv3_outlines", "200um", "allen_ccfv3_outlines"),
        ("allen_nissl", "100um", "allen_nissl"),
    ],
)
def test_beam_build_equals_the_local_build_example_by_example(
    tmp_path, caplog, name, config, manual
):
    request = build.BuildRequest(name, config, manual and testing.dummy_data_dir(manual))
    with caplog.at_level(logging.INFO):
        local = build.build(request, data_dir=str(tmp_path / "local"))
        assert "BeamWriter" not in caplog.text
        with_beam = build.build(
            request, data_dir=str(tmp_path / "beam"), beam_options=beam_options()
        )
        assert "using BeamWriter" in caplog.text  # TFDS's log line: the splits went through Beam
    assert_same_examples(local, with_beam)


def test_every_builder_can_generate_with_beam():
    """A builder without the mixin, or one whose `_generate_examples` is a generator,
    would build locally and silently ignore the Beam options it was given."""
    assert len(BUILDERS) >= 6, BUILDERS
    for name in BUILDERS:
        builder_cls = tfds.builder_cls(name)
        assert issubclass(builder_cls, beam_generation.BeamGenerationMixin), name
        assert not inspect.isgeneratorfunction(builder_cls._generate_examples), name


def test_volume_work_items_reread_the_volume_on_workers():
    """Beam pickles the slice generator without the voxels; a worker reads the file again
    and yields exactly what the launching process would have."""
    path = os.path.join(testing.dummy_data_dir("allen_ccfv3"), "average_template_200.nrrd")
    volume = volumes.read_nrrd(path)
    slabs = {
        view: np.arange(volumes.num_slices(volume.voxels, view)) for view in volumes.AXIS_VIEWS
    }
    local = volume_builder.SliceExamples(
        volume=volume,
        resolution_um=200.0,
        intensity=volumes.intensity_range(volume.voxels),
        slabs=slabs,
        origin="allen_ccfv3",
        specimen="s",
        stain="t",
    )
    shipped = pickle.dumps(local)
    assert len(shipped) < volume.voxels.nbytes / 4  # the voxels stay behind
    worker = pickle.loads(shipped)
    assert worker.volume is None
    item = ("sagittal", (3, 4, 11))
    for (want_key, want), (got_key, got) in zip(local(item), worker(item), strict=True):
        assert want_key == got_key
        assert np.array_equal(want["image"], got["image"]) and want["group"] == got["group"]


def test_build_datasets_binary_passes_beam_pipeline_options(tmp_path, phantom_data_dir):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO_ROOT, "bin", "build_datasets"),
            f"--data_dir={tmp_path}",
            "--datasets=brain_phantom/tiny",
            f"--beam_pipeline_options={LOCAL_RUNNER}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "== building brain_phantom/tiny with Apache Beam on FnApiRunner" in result.stdout
    assert "brain_phantom/tiny  all" in result.stdout
    assert_same_examples(
        tfds.builder("brain_phantom/tiny", data_dir=phantom_data_dir),
        tfds.builder("brain_phantom/tiny", data_dir=str(tmp_path)),
    )


def test_build_datasets_refuses_unknown_beam_options_before_building(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO_ROOT, "bin", "build_datasets"),
            f"--data_dir={tmp_path}",
            "--datasets=brain_phantom/tiny",
            "--beam_pipeline_options=runner=FnApiRunner,num_wokers=4",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    assert "unknown Beam pipeline option(s): --num_wokers=4" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "brain_phantom")


def test_tfds_build_cli_with_beam_pipeline_options(tmp_path, phantom_data_dir):
    tfds_cli = os.path.join(os.path.dirname(sys.executable), "tfds")
    result = subprocess.run(
        [
            tfds_cli,
            "build",
            os.path.join(REPO_ROOT, "brainview_tfds", "brain_phantom"),
            "--config=tiny",
            f"--data_dir={tmp_path}",
            f"--beam_pipeline_options={LOCAL_RUNNER}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # TFDS's log line (on stdout or stderr, by where absl sends it): the splits went
    # through Beam, not silently through the generator (tfds drops the options if it
    # cannot import apache_beam).
    assert "using BeamWriter" in result.stdout + result.stderr
    assert_same_examples(
        tfds.builder("brain_phantom/tiny", data_dir=phantom_data_dir),
        tfds.builder("brain_phantom/tiny", data_dir=str(tmp_path)),
    )
