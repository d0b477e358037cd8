"""What every benchmark needs: the machine's description, timings, peak memory, targets.

The machines these run on are often shared, so no single timing means much.
Every comparison is therefore measured within one process run, with the
approaches interleaved repeat by repeat (a load change hits all of them
alike), and reported as the median of the repeats and as ratios of medians.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Context:
    """How a benchmark should run: quick (CI smoke) or full, where its data goes."""

    quick: bool
    work_dir: str  # generated data; a temporary folder, deleted afterwards
    repeats_override: int | None = None  # --repeats, for every benchmark
    image_sizes: tuple[int, ...] | None = None  # --image_sizes, for the image_size benchmark

    def path(self, *parts: str) -> str:
        return os.path.join(self.work_dir, *parts)

    def repeats(self, quick: int, full: int) -> int:
        """--repeats if given, else the benchmark's own choice for this mode.

        Each benchmark picks what fits the time budget: a full builder pass
        takes minutes here, an in-memory model pass a second.
        """
        return self.repeats_override or (quick if self.quick else full)


# --- The machine --------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    """The stripped output of `git args` in the repository (raises if git fails)."""
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _git_revision() -> str:
    """The commit benchmarked, with '+dirty' when the checkout has uncommitted changes."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: how busy the machine was (it may be shared)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def describe_machine() -> dict:
    """Where and with what the numbers were measured, for the JSON and the table header."""
    import keras
    import numpy as np
    import PIL
    import tensorflow as tf

    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "git": _git_revision(),
        "load_average_at_start": load_average(),
    }


# --- Timing -------------------------------------------------------------------------------------


def seconds_of(function: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def interleaved(
    measurements: dict[str, Callable[[], float]], repeats: int
) -> dict[str, list[float]]:
    """Runs every measurement once per repeat, in turn; each returns the seconds it timed.

    Interleaving (a b c a b c ...) rather than (a a a b b b ...) spreads the
    load changes of a shared machine over all approaches.
    """
    results: dict[str, list[float]] = {name: [] for name in measurements}
    for _ in range(repeats):
        for name, measure in measurements.items():
            results[name].append(measure())
    return results


def rate(count: int, seconds: Sequence[float]) -> dict:
    """Items per second: the median over repeats, and every repeat's value."""
    rates = [count / s for s in seconds if s > 0]
    return {
        "count": count,
        "per_second": _significant(statistics.median(rates)) if rates else None,
        "repeats_per_second": [_significant(r) for r in rates],
        "repeats_seconds": [round(s, 3) for s in seconds],
    }


def _significant(value: float, digits: int = 4) -> float:
    """`value` rounded to a few significant digits (rates range from 0.1 to 1000s)."""
    return float(f"{value:.{digits}g}")


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def batch_end_clock():
    """A Keras callback recording the time of every on_train_batch_end of a fit.

    Steady-state training rates come from these times with the first step
    (tracing, iterator start) left out.
    """
    import keras

    class BatchEndClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch, logs=None) -> None:
            self.times.append(time.perf_counter())

    return BatchEndClock()


# --- Targets ------------------------------------------------------------------------------------


def target(name: str, value: float | None, threshold: float, higher_is_better: bool = True) -> dict:
    """A goal from the project's plan and whether this run met it (never asserted in tests)."""
    if value is None:
        met = None
    else:
        met = value >= threshold if higher_is_better else value <= threshold
    return {
        "name": name,
        "value": value,
        "threshold": threshold,
        "comparison": ">=" if higher_is_better else "<=",
        "met": met,
    }


# --- Peak memory of a subprocess ----------------------------------------------------------------

# Forks and execs the command, then reports the child's rusage. Measuring
# through this small process matters: a child exec'd straight from the
# benchmark process (fork, vfork or posix_spawn) starts with ru_maxrss at
# least the benchmark's own peak, because Linux keeps the high-water mark of
# the memory image that exec replaces. This wrapper's image is ~10 MB.
_MEASURING_WRAPPER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    json.dump({"maxrss_kib": usage.ru_maxrss}, report)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measuring_memory(
    command: Sequence[str], env: dict[str, str] | None = None, timeout: float = 3600
) -> dict:
    """Runs `command` to completion; its peak resident set size (MB) and wall time.

    The peak is the kernel's high-water mark for that process (ru_maxrss from
    wait4), so no sampling can miss a short spike.
    """
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **(env or {}))
    with tempfile.TemporaryDirectory() as scratch:
        report_path = os.path.join(scratch, "rusage.json")
        output_path = os.path.join(scratch, "output.txt")
        with open(output_path, "wb") as output:
            started = time.perf_counter()
            completed = subprocess.run(
                [sys.executable, "-S", "-c", _MEASURING_WRAPPER, report_path, *command],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
                timeout=timeout,
                check=False,
            )
            seconds = time.perf_counter() - started
        if completed.returncode != 0:
            with open(output_path, encoding="utf-8", errors="replace") as output:
                tail = output.read()[-3000:]
            raise RuntimeError(f"{' '.join(command)} exited with {completed.returncode}:\n{tail}")
        with open(report_path, encoding="utf-8") as report:
            maxrss_kib = json.load(report)["maxrss_kib"]
    return {"peak_rss_mb": round(maxrss_kib / 1024, 1), "seconds": round(seconds, 2)}


def write_json(path: str, content: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        json.dump(content, file, indent=2)
        file.write("\n")
