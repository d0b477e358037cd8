"""Benchmark: classify_dir's input path before and after issue 12, per piece, per core.

"Before" is the baseline commit (BASELINE_COMMIT, where the branch for issue
12's fast decode path, chunked walk and whole-slide reading started; its
preprocessing already works at a bounded working size), extracted with `git
archive` into the work folder and put first on PYTHONPATH; "after" is this
checkout. Both run in the same benchmark run, in separate processes
(bench/input_path_worker.py) pinned with taskset to 1 core and to 2 cores,
interleaved repeat by repeat: before and after, 1 and 2 cores, then again.

Per format (8-bit gray PNG, JPEG quality 90, 16-bit gray TIFF) and scan size
(512, 1024, 2048 px, square): img/s of the decode piece, the preprocessing
piece and the whole input path (scan_input.scan_dataset), model 128 px
(working size 512), mode "aligned". Then classify_dir against the classifier
alone (2 cores, 1024 px PNG + JPEG), and a 20,000 px pyramidal TIFF against a
2,000 px one (read as classify_dir reads a file: seconds and peak RSS of a
process doing only that).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from bench import common, data

BASELINE_COMMIT = "94c8f14bf3573fc3eb61799f653a4e73a93285c9"
FORMATS = ("png", "jpg", "tif16")
FORMAT_LABELS = {"png": "PNG 8-bit gray", "jpg": "JPEG gray q90", "tif16": "TIFF 16-bit gray"}
IMAGE_SIZE = 128


@dataclasses.dataclass(frozen=True)
class Settings:
    sides: tuple[int, ...]
    counts: dict  # scans per folder, by side
    cores: tuple[int, ...]
    repeats: int
    batch_size: int
    in_memory_images: int  # decoded scans held for the preprocessing piece
    classify_images: int
    classify_batch: int
    pyramid_sides: tuple[int, int]  # (small, large)
    pyramid_reads: int


def settings_for(ctx: common.Context) -> Settings:
    cores = (1, 2) if (os.cpu_count() or 1) >= 2 else (1,)
    if ctx.quick:
        return Settings(
            sides=(256, 512),
            counts={256: 8, 512: 8},
            cores=cores[-1:],
            repeats=ctx.repeats(quick=1, full=1),
            batch_size=4,
            in_memory_images=4,
            classify_images=24,
            classify_batch=8,
            pyramid_sides=(600, 2400),
            pyramid_reads=1,
        )
    return Settings(
        sides=(512, 1024, 2048),
        counts={512: 160, 1024: 96, 2048: 64},
        cores=cores,
        repeats=ctx.repeats(quick=1, full=2),
        batch_size=16,
        in_memory_images=8,
        classify_images=192,
        classify_batch=32,
        pyramid_sides=(2000, 20000),
        pyramid_reads=3,
    )


# --- The two versions ---------------------------------------------------------------------------


def _baseline_path(ctx: common.Context) -> str | None:
    """A folder whose `brainview` package is the baseline commit's pipelines/ (None: no git)."""
    target = ctx.path("baseline")
    package = os.path.join(target, "brainview")
    if os.path.isdir(package):
        return target
    os.makedirs(target, exist_ok=True)
    try:
        archive = subprocess.run(
            ["git", "archive", BASELINE_COMMIT, "pipelines"],
            cwd=common.REPO_ROOT,
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        shutil.rmtree(target, ignore_errors=True)
        return None
    os.rename(os.path.join(target, "pipelines"), package)
    return target


def _environment(baseline: str | None) -> dict[str, str]:
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    if baseline:
        environment["PYTHONPATH"] = os.pathsep.join(
            [baseline, *filter(None, [os.environ.get("PYTHONPATH")])]
        )
    return environment


def _pinned(cores: int) -> list[str]:
    if shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:cores])]


def _run_worker(spec: dict, cores: int | None, baseline: str | None, scratch: str) -> dict:
    spec_path = os.path.join(scratch, "spec.json")
    out_path = os.path.join(scratch, "result.json")
    common.write_json(spec_path, spec)
    command = [
        *(_pinned(cores) if cores else []),
        sys.executable,
        "-m",
        "bench.input_path_worker",
        f"--spec={spec_path}",
        f"--out={out_path}",
    ]
    completed = subprocess.run(
        command,
        cwd=common.REPO_ROOT,
        env=_environment(baseline),
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    with open(out_path, encoding="utf-8") as file:
        result = json.load(file)
    expected = os.path.join(baseline, "brainview") if baseline else common.REPO_ROOT
    if not os.path.abspath(result["brainview"]).startswith(os.path.abspath(expected)):
        raise RuntimeError(f"{spec['code']} imported brainview from {result['brainview']}")
    return result


# --- The run ------------------------------------------------------------------------------------


def run(ctx: common.Context) -> dict:
    settings = settings_for(ctx)
    folders = [
        {
            "format": file_format,
            "side": side,
            "count": settings.counts[side],
            "dir": data.write_scan_folder(
                ctx.path(f"input_{file_format}_{side}"),
                settings.counts[side],
                side,
                formats=(file_format,),
            ),
        }
        for side in settings.sides
        for file_format in FORMATS
    ]
    classify_side = 1024 if 1024 in settings.sides else settings.sides[0]
    classify_spec = {
        "dir": data.write_scan_folder(
            ctx.path(f"input_classify_{classify_side}"), settings.classify_images, classify_side
        ),
        "model": data.random_model(ctx.path(f"model_{IMAGE_SIZE}", "model.keras"), IMAGE_SIZE),
        "batch_size": settings.classify_batch,
        "model_batches": 6,
        "out_dir": ctx.path("input_classify_out"),
    }
    worker_settings = {
        "image_size": IMAGE_SIZE,
        "mode": "aligned",
        "batch_size": settings.batch_size,
        "in_memory_images": settings.in_memory_images,
    }
    baseline = _baseline_path(ctx)
    codes = {"before": baseline, "after": None} if baseline else {"after": None}
    runs: dict = {code: {cores: [] for cores in settings.cores} for code in codes}
    classify: dict = {code: [] for code in codes}
    with tempfile.TemporaryDirectory(dir=ctx.work_dir) as scratch:
        for _ in range(settings.repeats):
            for cores in settings.cores:
                for code, path in codes.items():
                    spec = {"code": code, "folders": folders, "settings": worker_settings}
                    if cores == settings.cores[-1]:
                        spec["classify"] = classify_spec
                    result = _run_worker(spec, cores, path, scratch)
                    runs[code][cores].append(result["folders"])
                    if "classify" in result:
                        classify[code].append(result["classify"])
        pyramids = _pyramids(ctx, settings, codes, scratch)
    rates = _median_rates(runs)
    return _report(settings, rates, classify, pyramids, baseline is not None)


def _pyramids(ctx: common.Context, settings: Settings, codes: dict, scratch: str) -> dict:
    """Seconds per read and peak RSS of one process reading each pyramid, per version."""
    results: dict = {}
    for side in settings.pyramid_sides:
        path = data.write_pyramid_tiff(ctx.path(f"pyramid_{side}.tif"), side)
        for code, baseline in codes.items():
            # The baseline decodes the full level: one read of the large slide is enough.
            reads = 1 if code == "before" and side == max(settings.pyramid_sides) else None
            spec = {
                "code": code,
                "pyramid": {
                    "path": path,
                    "reads": reads or settings.pyramid_reads,
                    "target_side": 512,
                },
            }
            spec_path = os.path.join(scratch, f"pyramid_{code}_{side}.json")
            out_path = os.path.join(scratch, f"pyramid_{code}_{side}_out.json")
            common.write_json(spec_path, spec)
            memory = common.run_measuring_memory(
                [
                    sys.executable,
                    "-m",
                    "bench.input_path_worker",
                    f"--spec={spec_path}",
                    f"--out={out_path}",
                ],
                env={"PYTHONPATH": os.pathsep.join(filter(None, [baseline, common.REPO_ROOT]))},
            )
            with open(out_path, encoding="utf-8") as file:
                measured = json.load(file)["pyramid"]
            results.setdefault(code, {})[str(side)] = {
                **measured,
                "peak_rss_mb": memory["peak_rss_mb"],
                "file_mb": round(os.path.getsize(path) / 2**20, 1),
            }
    return results


def _median_rates(runs: dict) -> dict:
    """code -> cores -> format -> side -> piece -> median img/s over repeats."""
    rates: dict = {}
    for code, by_cores in runs.items():
        for cores, repeats in by_cores.items():
            for index, folder in enumerate(repeats[0]):
                pieces = {
                    piece: round(statistics.median(r[index]["rates"][piece] for r in repeats), 2)
                    for piece in folder["rates"]
                }
                rates.setdefault(code, {}).setdefault(str(cores), {}).setdefault(
                    folder["format"], {}
                )[str(folder["side"])] = pieces
    return rates


def _report(settings, rates: dict, classify: dict, pyramids: dict, has_baseline: bool) -> dict:
    after = rates["after"]
    one, most = str(settings.cores[0]), str(settings.cores[-1])
    small, large = str(min(settings.sides)), str(max(settings.sides))
    middle = "1024" if "1024" in after[one]["png"] else small

    def whole(code: str, cores: str, file_format: str, side: str, key: str = "whole"):
        return rates.get(code, {}).get(cores, {}).get(file_format, {}).get(side, {}).get(key)

    def per_core(code: str, file_format: str, side: str) -> float | None:
        """img/s one core sustains: 1000 / CPU ms per image, on 1 core (see the worker)."""
        cpu_ms = whole(code, one, file_format, side, "whole_cpu_ms")
        return round(1000 / cpu_ms, 1) if cpu_ms else None

    ratios: dict = {}
    for file_format in FORMATS:
        label = FORMAT_LABELS[file_format]
        ratios[f"{label}: {large} px cost / {small} px cost (CPU per image)"] = common.ratio(
            whole("after", one, file_format, large, "whole_cpu_ms"),
            whole("after", one, file_format, small, "whole_cpu_ms"),
        )
        if most != one:
            ratios[f"{label} {middle} px: {most} cores / {one} core"] = common.ratio(
                whole("after", most, file_format, middle), whole("after", one, file_format, middle)
            )
        if has_baseline:
            for side in (str(s) for s in settings.sides):
                ratios[f"{label} {side} px: after / before, per core"] = common.ratio(
                    per_core("after", file_format, side), per_core("before", file_format, side)
                )
    classify_medians = {
        code: {key: round(statistics.median(r[key] for r in values), 3) for key in values[0]}
        for code, values in classify.items()
        if values
    }
    small_pyramid, large_pyramid = (str(s) for s in settings.pyramid_sides)
    pyramid_after = pyramids["after"]
    pyramid_ratio = common.ratio(
        pyramid_after[large_pyramid]["seconds_per_read"],
        pyramid_after[small_pyramid]["seconds_per_read"],
    )
    ratios[f"pyramid {large_pyramid} px / {small_pyramid} px time"] = pyramid_ratio
    targets = []
    for file_format in ("png", "jpg"):
        label = FORMAT_LABELS[file_format]
        targets.append(
            common.target(
                f"whole input path >= 150 img/s per core (1000 / CPU ms), {middle} px {label}",
                per_core("after", file_format, middle),
                150.0,
            )
        )
        if most != one:
            targets.append(
                common.target(
                    f"1 -> {most} cores >= 1.8x, {middle} px {label}",
                    ratios[f"{label} {middle} px: {most} cores / {one} core"],
                    1.8,
                )
            )
        targets.append(
            common.target(
                f"a {large} px scan costs <= 1.3x a {small} px one, {label}",
                ratios[f"{label}: {large} px cost / {small} px cost (CPU per image)"],
                1.3,
                higher_is_better=False,
            )
        )
    targets.append(
        common.target(
            f"{large_pyramid} px pyramidal TIFF <= 2x the time of a {small_pyramid} px one",
            pyramid_ratio,
            2.0,
            higher_is_better=False,
        )
    )
    per_core_rates = {
        code: {
            file_format: {
                str(side): per_core(code, file_format, str(side)) for side in settings.sides
            }
            for file_format in FORMATS
        }
        for code in rates
    }
    return {
        "per_core_images_per_second": per_core_rates,
        "settings": {
            **dataclasses.asdict(settings),
            "counts": {str(k): v for k, v in settings.counts.items()},
            "baseline_commit": BASELINE_COMMIT if has_baseline else None,
            "image_size": IMAGE_SIZE,
            "working_side": 512,
            "mode": "aligned",
            "formats": FORMAT_LABELS,
        },
        "images_per_second": rates,
        "classify": classify_medians,
        "pyramids": pyramids,
        "ratios": ratios,
        "targets": targets,
    }
