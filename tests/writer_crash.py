"""Crashes and write failures injected into classify_dir's output writer, at every step.

The writer (brainview.classify.output_writer) promises that a kill or a failed write at
any point leaves outputs that `--resume` completes into exactly the files of an
uninterrupted run. `failing_io(n, action)` makes the n-th file-system step the
writer takes (opening a file for writing, each write, fsync, rename, removal,
mkdir, creating an HDF5 file) fail: "kill" ends the process there (os._exit, as
SIGKILL would: no cleanup, no flush; a write is cut in half first), "enospc"
raises the error a full disk gives (after writing half). Nothing else is
replaced: the steps themselves are the real ones.

No TensorFlow is imported.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import shutil

import h5py

from brainview.classify import cam_file, output_lock, output_readers, output_writer, outputs
from tests import classify_helpers

KILLED = 137
# The modules the writer is made of: the file opens of each are steps.
WRITER_MODULES = (outputs, output_lock, cam_file, output_readers, output_writer)
# Raw names in walk order, awkward ones included (CR, LF, quotes, a byte that is not UTF-8).
SCENARIO_PATHS = [
    b"a\rcarriage.png",
    b"b\r\nwindows.png",
    b'c "quoted", comma.png',
    b"d\nline.png",
    b"e\xff\xfebytes.png",
    b"f/inner.png",
    b"g.png",
    b"h\tt.png",
    b"i\xc2\x85nel.png",
    b"j.png",
]
SEGMENT_ROWS = 4


def scenario_files(out_dir: str) -> tuple[str, str]:
    return os.path.join(out_dir, "out.csv"), os.path.join(out_dir, "cams.h5")


def write_scenario(out_dir: str, first_row: int = 0, writer=None) -> None:
    """The test run: rows first_row.. of SCENARIO_PATHS, committed SEGMENT_ROWS at a time."""
    csv_path, cams_path = scenario_files(out_dir)
    if writer is None:
        writer = output_writer.OutputWriter(
            csv_path,
            cams_path,
            classify_helpers.writer_signature(),
            resume=False,
            overwrite=False,
        )
    try:
        if writer.already_complete:
            return
        for start in range(first_row, len(SCENARIO_PATHS), SEGMENT_ROWS):
            paths = SCENARIO_PATHS[start : start + SEGMENT_ROWS]
            writer.commit(classify_helpers.writer_segment(paths))
        writer.finish({"model_sha256": "0123456789abcdef"}, {}, classify_helpers.WRITER_CAM_SHAPE)
    finally:
        writer.close()


def resume_scenario(out_dir: str) -> None:
    """What `--resume` does after the crash: reopen, and commit the rows after the last one."""
    csv_path, cams_path = scenario_files(out_dir)
    writer = output_writer.OutputWriter(
        csv_path, cams_path, classify_helpers.writer_signature(), resume=True, overwrite=False
    )
    first_row = writer.rows_done
    if first_row:
        assert writer.last_path == SCENARIO_PATHS[first_row - 1], (first_row, writer.last_path)
    write_scenario(out_dir, first_row, writer)


class _Steps:
    def __init__(self, fail_at: int, action: str):
        self.fail_at = fail_at
        self.action = action
        self.count = 0

    def step(self, kind: str) -> bool:
        """Counts a step; True if this one must fail."""
        if self.action == "enospc" and kind == "remove":
            return False  # deleting does not fail on a full disk
        self.count += 1
        return self.count == self.fail_at

    def fail(self) -> None:
        if self.action == "kill":
            os._exit(KILLED)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _WriteFile:
    """A real file opened for writing whose writes are steps."""

    def __init__(self, file, steps: _Steps):
        self._file = file
        self._steps = steps

    def write(self, data: bytes) -> int:
        if self._steps.step("write"):
            self._file.write(data[: len(data) // 2])
            self._file.flush()
            self._steps.fail()
        return self._file.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.__exit__(*exc_info)

    def __getattr__(self, name):
        return getattr(self._file, name)


@contextlib.contextmanager
def failing_io(fail_at: int, action: str):
    """The writer's file-system steps, the `fail_at`-th failing (see the module docstring).

    Yields the step counter (its `count` says how many steps the run took).
    """
    steps = _Steps(fail_at, action)
    real = {
        "replace": os.replace,
        "fsync": os.fsync,
        "remove": os.remove,
        "makedirs": os.makedirs,
        "rmtree": shutil.rmtree,
        "h5py_file": h5py.File,
    }

    def stepped(name: str, kind: str):
        def call(*args, **kwargs):
            if steps.step(kind):
                steps.fail()
            return real[name](*args, **kwargs)

        return call

    def opened(path, mode="r", *args, **kwargs):
        if not any(flag in mode for flag in "wa+"):
            return builtins.open(path, mode, *args, **kwargs)
        if steps.step("open"):
            steps.fail()
        return _WriteFile(builtins.open(path, mode, *args, **kwargs), steps)

    def h5py_file(path, mode="r", *args, **kwargs):
        if mode != "r" and kwargs.get("driver") != "core" and steps.step("hdf5"):
            if steps.action == "kill":
                real["h5py_file"](path, mode, *args, **kwargs)  # created, never closed
            steps.fail()
        return real["h5py_file"](path, mode, *args, **kwargs)

    os.replace = stepped("replace", "rename")
    os.fsync = stepped("fsync", "fsync")
    os.remove = stepped("remove", "remove")
    os.makedirs = stepped("makedirs", "mkdir")
    shutil.rmtree = stepped("rmtree", "remove")
    h5py.File = h5py_file
    for module in WRITER_MODULES:
        module.open = opened
    try:
        yield steps
    finally:
        os.replace, os.fsync, os.remove = real["replace"], real["fsync"], real["remove"]
        os.makedirs, shutil.rmtree, h5py.File = real["makedirs"], real["rmtree"], real["h5py_file"]
        for module in WRITER_MODULES:
            del module.open
