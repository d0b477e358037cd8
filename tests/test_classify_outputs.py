"""classify_dir's output files without a model: the writer, its lock, resume and collisions.

The issue ("nothing lost, nothing stale") found ways to lose or corrupt results with
exit code 0; each has a test here that failed on the code before the fix. The writer
is exercised in-process and in child processes, with the real file system, h5py and
locks; only predictions are made up (tests.classify_helpers.writer_segment), which the
writer does not look at. No TensorFlow.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from brainview.classify import output_lock, output_readers, output_writer, outputs
from tests import writer_crash
from tests.classify_helpers import (
    REPO_ROOT,
    read_cam_file,
    read_csv_rows,
    write_outputs,
    writer_segment,
    writer_signature,
)


def read_bytes(path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "\r" not in message, message
    return message


# --- Names: any byte round-trips, rows stay aligned ------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a\rb.png",
        "a\r\nb.png",
        "\r",
        "a\nb.png",
        'q"uote.png',
        "c,omma.png",
        " sp .png",
        "\x85\u2028",
    ],
)
def test_csv_line_round_trips_any_name(name):
    """A carriage return was written unquoted: the csv module and pandas read one scan
    as two records, and the CSV no longer lined up with the HDF5 rows."""
    fields = [name, "coronal", "", "x\ry"]
    line = outputs.csv_line(fields)
    assert list(csv.reader(io.StringIO(line.decode("utf-8"), newline=""))) == [fields]
    frame = pd.read_csv(io.BytesIO(line), header=None, keep_default_na=False, dtype=str)
    assert frame.values.tolist() == [fields]


def test_every_name_gets_one_csv_row_aligned_with_its_cam_row(tmp_path):
    """The whole writer, with the scenario's awkward names: the csv module and pandas
    each read exactly one row per scan, in the HDF5's order."""
    csv_path, cams_path = str(tmp_path / "out.csv"), str(tmp_path / "cams.h5")
    write_outputs(csv_path, cams_path, writer_crash.SCENARIO_PATHS)
    expected = [p.decode("utf-8", "backslashreplace") for p in writer_crash.SCENARIO_PATHS]
    assert [row["path"] for row in read_csv_rows(csv_path)] == expected
    frame = pd.read_csv(csv_path, keep_default_na=False, dtype=str)
    assert frame["path"].tolist() == expected
    data, _ = read_cam_file(cams_path)
    assert data["paths"].tolist() == expected
    assert frame["status"].tolist() == data["statuses"].tolist()


# --- Colliding outputs, refused before anything is written ---------------------------------------


@pytest.mark.parametrize(
    ("cams_name", "fragment"),
    [
        ("out.csv", "the CSV and the CAM file would be the same file"),
        ("out.run.json", "the run manifest and the CAM file would be the same file"),
        ("out.csv.progress.json", "the progress file and the CAM file"),
        ("./sub/../out.csv", "the CSV and the CAM file would be the same file"),
    ],
)
def test_colliding_outputs_are_refused_before_anything_is_written(tmp_path, cams_name, fragment):
    """--cams=OUT.csv renamed the finished HDF5 over the CSV: the predictions were gone."""
    (tmp_path / "sub").mkdir()
    csv_path = str(tmp_path / "out.csv")
    with pytest.raises(outputs.OutputError) as error:
        output_writer.OutputWriter(
            csv_path, str(tmp_path / cams_name), writer_signature(), resume=False, overwrite=True
        )
    assert fragment in one_line(error)
    assert sorted(os.listdir(tmp_path)) == ["sub"]


def test_outputs_inside_the_scan_directory_are_refused(tmp_path):
    """They were walked as scans: error rows for the CSV, the progress file and the CAM
    parts, which ones depending on timing."""
    scans = tmp_path / "scans"
    (scans / "nested").mkdir(parents=True)
    outside = str(tmp_path / "out.csv")
    outputs.check_output_paths(outside, str(tmp_path / "cams.h5"), str(scans))
    for csv_path, cams_path in [
        (str(scans / "out.csv"), None),
        (outside, str(scans / "nested" / "cams.h5")),
    ]:
        with pytest.raises(outputs.OutputError) as error:
            outputs.check_output_paths(csv_path, cams_path, str(scans))
        assert "is inside the scan directory" in one_line(error)
    link = tmp_path / "link_to_scans"
    link.symlink_to(scans)
    with pytest.raises(outputs.OutputError):
        outputs.check_output_paths(str(link / "out.csv"), None, str(scans))


def test_csv_names_that_would_share_a_manifest_are_refused(tmp_path):
    """out.csv.0 and out.csv.1 shared out.csv.run.json: each run deleted the other's, so
    the first shard looked unfinished to the merge."""
    first, second = str(tmp_path / "out.csv.0"), str(tmp_path / "out.csv.1")
    write_outputs(first, None, [b"a.png", b"b.png"])
    manifest = read_bytes(outputs.manifest_path(first))
    with pytest.raises(outputs.OutputError) as error:
        output_writer.OutputWriter(
            second, None, writer_signature(cams=False), resume=False, overwrite=True
        )
    assert "would share its run manifest" in one_line(error)
    assert read_bytes(outputs.manifest_path(first)) == manifest
    assert not os.path.exists(second)


def test_missing_output_folders_are_made(tmp_path):
    """`classify_dir scans runs/mine/out.csv` works before runs/mine/ exists."""
    csv_path = str(tmp_path / "runs" / "mine" / "out.csv")
    cams_path = str(tmp_path / "cams" / "deep" / "cams.h5")
    write_outputs(csv_path, cams_path, [b"a.png", b"b.png"])
    assert os.path.exists(csv_path) and os.path.exists(cams_path)


# --- Resume and rerun semantics --------------------------------------------------------------------


def test_resuming_a_finished_run_with_other_settings_is_refused(tmp_path):
    """`--resume` of a finished run never compared settings: another scan directory (as
    `make classify` does), model, shard or --cams printed "already complete" and left
    the old predictions."""
    csv_path, cams_path = str(tmp_path / "out.csv"), str(tmp_path / "cams.h5")
    write_outputs(csv_path, cams_path, [b"a.png", b"b.png", b"c.png"])
    before = read_bytes(csv_path)
    same = output_writer.OutputWriter(
        csv_path, cams_path, writer_signature(), resume=True, overwrite=False
    )
    same.close()
    assert same.already_complete and same.resume_point.rows == 3
    for change in (
        {"scan_dir": "/other/scans"},
        {"model_sha256": "fedcba9876543210"},
        {"shard_index": 1, "num_shards": 2},
    ):
        with pytest.raises(outputs.OutputError) as error:
            output_writer.OutputWriter(
                csv_path, cams_path, writer_signature(**change), resume=True, overwrite=False
            )
        message = one_line(error)
        assert "finished run made with different settings" in message
        assert all(key in message for key in change) and "--overwrite" in message
    with pytest.raises(outputs.OutputError, match=r"different settings \(cams\)"):
        output_writer.OutputWriter(
            csv_path, None, writer_signature(cams=False), resume=True, overwrite=False
        )
    assert read_bytes(csv_path) == before


def test_resume_point_is_the_last_committed_path_and_a_digest_of_all(tmp_path):
    """Resume continues after the last committed path, not after a count of files; the
    digest lets classify_dir notice a directory whose committed files changed."""
    csv_path = str(tmp_path / "out.csv")
    paths = [b"a.png", b"b\xff.png", b"c/d.png"]
    writer = output_writer.OutputWriter(
        csv_path, None, writer_signature(cams=False), resume=False, overwrite=False
    )
    writer.commit(writer_segment(paths))
    writer.close()
    resumed = output_writer.OutputWriter(
        csv_path, None, writer_signature(cams=False), resume=True, overwrite=False
    )
    resumed.close()
    digest = ""
    for path in paths:
        digest = outputs.path_digest(digest, path)
    assert resumed.resume_point == output_writer.ResumePoint(3, b"c/d.png", digest)
    assert outputs.path_digest("", b"ab") != outputs.path_digest(
        outputs.path_digest("", b"a"), b"b"
    )


# --- Kills and full disks inside every commit step ------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[bytes, dict]:
    """The scenario's CSV bytes and CAM datasets, written without interruption."""
    out_dir = str(tmp_path_factory.mktemp("uninterrupted"))
    writer_crash.write_scenario(out_dir)
    csv_path, cams_path = writer_crash.scenario_files(out_dir)
    return read_bytes(csv_path), read_cam_file(cams_path)[0]


def assert_complete_and_clean(out_dir: str, uninterrupted) -> None:
    expected_csv, expected_cams = uninterrupted
    csv_path, cams_path = writer_crash.scenario_files(out_dir)
    assert read_bytes(csv_path) == expected_csv
    data, _ = read_cam_file(cams_path)
    assert data.keys() == expected_cams.keys()
    for name, values in expected_cams.items():
        np.testing.assert_array_equal(data[name], values, err_msg=name)
    assert sorted(os.listdir(out_dir)) == ["cams.h5", "out.csv", "out.run.json"]
    assert output_readers.read_manifest(csv_path)["rows"] == len(writer_crash.SCENARIO_PATHS)


def _killed_run(out_dir: str, step: int) -> int:
    """Runs the scenario in a forked child killed at `step`; its exit code (0: not reached)."""
    pid = os.fork()
    if pid == 0:  # the child: no cleanup of any kind on the way out
        try:
            with writer_crash.failing_io(step, "kill"):
                writer_crash.write_scenario(out_dir)
        except BaseException:
            os._exit(3)
        os._exit(0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            assert code in (0, writer_crash.KILLED), code
            return code
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise TimeoutError(f"the writer killed at step {step} did not end")


def test_a_kill_inside_any_commit_step_resumes_to_the_uninterrupted_files(tmp_path, uninterrupted):
    """The writer killed (os._exit, no cleanup) at each of its file-system steps in turn,
    writes cut in half, HDF5 files left open: --resume gives the uninterrupted CSV bytes
    and CAM datasets, and no leftovers. (The end-to-end kill test only kills between
    commits.)"""
    step = 0
    while True:
        step += 1
        out_dir = str(tmp_path / f"step{step:03d}")
        os.makedirs(out_dir)
        if _killed_run(out_dir, step) == 0:
            break  # the run has fewer steps: all were covered
        writer_crash.resume_scenario(out_dir)
        assert_complete_and_clean(out_dir, uninterrupted)
    assert step > 40  # every step of the start, three commits and the finish


def test_a_full_disk_at_any_step_is_one_line_and_resumable(tmp_path, uninterrupted):
    """Disk full escaped as a traceback. Now each failing step is an OutputError of one
    line, and the same run resumed later completes to the uninterrupted files."""
    step = 0
    while True:
        step += 1
        out_dir = str(tmp_path / f"step{step:03d}")
        os.makedirs(out_dir)
        with writer_crash.failing_io(step, "enospc") as steps:
            try:
                writer_crash.write_scenario(out_dir)
            except outputs.OutputError as error:
                message = str(error)
                assert "No space left on device" in message and "\n" not in message, message
            else:
                assert steps.count < step
                break
        writer_crash.resume_scenario(out_dir)
        assert_complete_and_clean(out_dir, uninterrupted)
    assert step > 30


_FILE_SIZE_LIMITED = """
import resource, signal, sys
from brainview.classify import outputs
from tests import writer_crash
limit = int(sys.argv[2])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    writer_crash.write_scenario(sys.argv[1])
except outputs.OutputError as error:
    print(error)
    sys.exit(2)
"""


@pytest.mark.integration
@pytest.mark.parametrize("limit", [800, 12000])  # a CAM part fails; the final CAM file fails
def test_a_real_write_failure_in_hdf5_or_csv_is_resumable(tmp_path, uninterrupted, limit):
    """Real write failures, raised by the kernel inside h5py's C library or Python's file
    writes: a file-size limit (RLIMIT_FSIZE, EFBIG) stands in for a full disk."""
    out_dir = str(tmp_path)
    child = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMITED, out_dir, str(limit)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 2, (child.stdout, child.stderr[-2000:])  # not a crash (SIGSEGV)
    lines = child.stdout.splitlines()
    assert len(lines) == 1 and "File too large" in lines[0] and "--resume" in lines[0], lines
    assert "Traceback" not in child.stderr
    writer_crash.resume_scenario(out_dir)
    assert_complete_and_clean(out_dir, uninterrupted)


# --- The lock: one live run per set of outputs ---------------------------------------------------

_HOLD_LOCK = """
import sys, time
from brainview.classify import output_lock
lock = output_lock.OutputLock(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
print("locked", flush=True)
time.sleep(600)
"""


def _hold_lock(*paths: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, *paths], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_live_runs_outputs_are_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    """No lock: two runs on the same outputs interleaved their rows. A run killed with
    -9 leaves its lock file behind; the next run takes it over."""
    csv_path, cams_path = str(tmp_path / "out.csv.0"), str(tmp_path / "cams.h5")
    holder = _hold_lock(csv_path, cams_path)
    try:
        with pytest.raises(outputs.OutputError) as error:
            output_writer.OutputWriter(
                csv_path, cams_path, writer_signature(), resume=True, overwrite=True
            )
        message = one_line(error)
        assert f"pid {holder.pid}" in message and "being written by another" in message
        with pytest.raises(outputs.OutputError, match=r"--cams=.*cams\.h5 is being written"):
            output_lock.OutputLock(str(tmp_path / "other.csv"), cams_path)
        # out.csv.1 would share out.csv.run.json with out.csv.0: the same lock.
        with pytest.raises(outputs.OutputError, match="would share its run manifest"):
            output_lock.OutputLock(str(tmp_path / "out.csv.1"))
        assert not os.path.exists(csv_path)
    finally:
        holder.kill()  # by pid, as the OOM killer or a time limit would
        holder.wait(timeout=60)
    assert os.path.exists(outputs.lock_path(csv_path))  # left behind by the dead run
    write_outputs(csv_path, cams_path, [b"a.png"])
    assert not os.path.exists(outputs.lock_path(csv_path))
    assert not os.path.exists(cams_path + ".lock")
