"""Runs brainview's benchmarks; writes one JSON per benchmark, a summary and a README table.

  python -m bench.run_all                 full (make bench)
  python -m bench.run_all --quick         CI smoke: small data, a few minutes (make bench-quick)
  python -m bench.run_all --only=builder  one or more benchmarks (comma-separated)
  python -m bench.run_all --skip=image_size

Results go to bench/results/ (full) or bench/results/quick/ (quick):
<benchmark>.json, summary.json (machine, settings, every result, targets) and
README_table.md. Generated data goes to a temporary folder that is deleted
afterwards (--keep_data keeps it). A benchmark that fails is recorded with
its error and the others still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common, report

BENCHMARKS = (
    "classify_throughput",
    "memory_scaling",
    "training_input",
    "builder",
    "input_path",
    "image_size",
    "classify_beam",
    "released_model",
)
RESULTS_DIR = os.path.join(common.REPO_ROOT, "bench", "results")
SKIP_NOTES = {
    "image_size": "--skip: it trains at 128-512 px, hours on a 2-core CPU; "
    "run it alone with --only=image_size",
}


def _names(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}"
        )
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Small data: a CI smoke run.")
    parser.add_argument("--only", type=_names, default=None, help="Run only these benchmarks.")
    parser.add_argument("--skip", type=_names, default=[], help="Leave these benchmarks out.")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="Repeats for every benchmark (default: each its own, see the JSON).",
    )
    parser.add_argument(
        "--image_sizes",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        default=None,
        help="Sizes for the image_size benchmark (default: 128,224,320,512; quick: 64,96).",
    )
    parser.add_argument("--results_dir", default=None, help="Where the JSON and the table go.")
    parser.add_argument("--work_dir", default=None, help="Generated data (default: a temp dir).")
    parser.add_argument("--keep_data", action="store_true", help="Keep the generated data.")
    return parser.parse_args(argv)


def run_one(name: str, ctx: common.Context) -> dict:
    """One benchmark's result, or its error; with how long it took."""
    started = time.perf_counter()
    print(f"[bench] {name} ...", flush=True)
    try:
        result = importlib.import_module(f"bench.{name}").run(ctx)
    except Exception:
        result = {"error": traceback.format_exc()}
        print(f"[bench] {name} FAILED:\n{result['error']}", file=sys.stderr, flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["load_average_after"] = common.load_average()
    print(f"[bench] {name} done in {result['seconds']} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    results_dir = args.results_dir or (
        os.path.join(RESULTS_DIR, "quick") if args.quick else RESULTS_DIR
    )
    selected = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    skipped = {n: SKIP_NOTES.get(n, "--skip") for n in BENCHMARKS if n in args.skip}
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="brainview_bench_")
    os.makedirs(work_dir, exist_ok=True)
    ctx = common.Context(
        quick=args.quick,
        work_dir=work_dir,
        repeats_override=args.repeats,
        image_sizes=args.image_sizes,
    )
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()  # TFDS's bars and TF's warnings would bury the report
    tf.get_logger().setLevel("ERROR")
    summary = {
        "mode": mode,
        "command": "python -m bench.run_all " + " ".join(sys.argv[1:] if argv is None else argv),
        "repeats_override": args.repeats,
        "machine": common.describe_machine(),
        "results": {},
        "skipped": skipped,
    }
    started = time.perf_counter()
    try:
        for name in selected:
            result = run_one(name, ctx)
            summary["results"][name] = result
            common.write_json(
                os.path.join(results_dir, f"{name}.json"),
                {"benchmark": name, "mode": mode, "machine": summary["machine"], **result},
            )
    finally:
        if not args.keep_data and not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    common.write_json(os.path.join(results_dir, "summary.json"), summary)
    table = report.markdown(summary)
    with open(os.path.join(results_dir, "README_table.md"), "w", encoding="utf-8") as file:
        file.write(table)
    print(table)
    print(f"[bench] {mode} run took {summary['seconds']} s; results in {results_dir}")
    return 1 if any("error" in r for r in summary["results"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
