"""One measuring process of bench/input_path.py: classify_dir's input path, piece by piece.

bench/input_path.py starts this module pinned to 1 or 2 cores (taskset) and
with either this checkout's `brainview` or the baseline commit's on
PYTHONPATH ("before"), and reads the JSON it writes. Measured per scan folder
(one format and size each):

  decode      file -> decoded pixels and mean gray (the pipeline's first half)
  preprocess  decoded pixels, held in memory -> model input (its second half)
  whole       scan_input.scan_dataset: walk, decode, preprocess, padded batches

Each is timed over the whole iteration, first element included: the map
functions are traced when the dataset is built (not timed), and leaving out a
first batch would leave out the work the pipeline did ahead for the next ones
(up to dozens of images in flight), which flatters the faster pipeline.

plus, with --classify, classify_dir against the classifier alone, and with
--pyramid, reading one whole-slide TIFF as classify_dir reads a file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MAX_DECODE_SIDE = 2048  # image_files.MAX_DECODE_SIDE at both commits


def _rate(dataset, count_of) -> tuple[float, float]:
    """(items per second, CPU ms per item) over one whole iteration of `dataset`.

    CPU time is the whole process's (every thread): on a shared machine it
    says what an item costs a core even when other jobs take the wall clock.
    """
    started, cpu_started, count = time.perf_counter(), time.process_time(), 0
    for element in dataset:
        count += count_of(element)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    if not (seconds > 0 and count):
        return float("nan"), float("nan")
    return count / seconds, 1000 * cpu_seconds / count


def _decode_stage(code: str, scan_dir: bytes, image_size: int):
    """The decode half of classify_dir's pipeline, as each version builds it."""
    import numpy as np
    import tensorflow as tf

    from brainview import preprocessing
    from brainview.classify import scan_files, scan_input

    if code == "after":
        return scan_input.decoded_scans(
            scan_dir,
            max_decode_side=MAX_DECODE_SIDE,
            target_side=preprocessing.working_side(image_size),
        )

    # Before: scan_input.scan_dataset's first half at the baseline commit, verbatim in effect:
    # a generator over the walk, then Pillow in a numpy_function.
    def entries():
        for entry in scan_files.walk(scan_dir):
            yield entry.relative_path, entry.listing_error

    def load(relative_path: bytes, listing_error: bytes):
        entry = scan_files.ScanEntry(relative_path, listing_error.decode())
        scan = scan_files.load(scan_dir, entry, MAX_DECODE_SIDE)
        return (
            scan.pixels,
            np.int32(scan.width),
            np.int32(scan.height),
            np.float32(scan.mean_intensity),
        )

    def read(relative_path, listing_error):
        pixels, width, height, mean = tf.numpy_function(
            load,
            [relative_path, listing_error],
            [tf.uint8, tf.int32, tf.int32, tf.float32],
            stateful=False,
        )
        pixels.set_shape([None, None, 3])
        return {
            "path": relative_path,
            "pixels": pixels,
            "width": tf.reshape(width, []),
            "height": tf.reshape(height, []),
            "mean_intensity": tf.reshape(mean, []),
        }

    spec = tf.TensorSpec((), tf.string)
    paths = tf.data.Dataset.from_generator(entries, output_signature=(spec, spec))
    return paths.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _preprocess_stage(code: str, scans: list[dict], count: int, image_size: int, mode: str):
    """In-memory decoded scans (repeated up to `count`) through the preprocessing half."""
    import numpy as np
    import tensorflow as tf

    from brainview import preprocessing

    columns = {key: np.stack([scan[key] for scan in scans]) for key in scans[0]}
    dataset = tf.data.Dataset.from_tensor_slices(columns).repeat(-(-count // len(scans)))
    if code == "after":
        from brainview.classify import scan_input

        def prepare(scan):
            scan = dict(scan, error=tf.constant(b""), decoder=tf.constant(b""))
            return scan_input.prepare_scan(scan, image_size, mode)["image"]
    else:

        def prepare(scan):
            return preprocessing.preprocess(
                scan["pixels"], image_size, mode, mean_intensity=scan["mean_intensity"]
            )[0]

    prepared = dataset.take(count).map(
        prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return prepared.prefetch(2)


def _whole(scan_dir: bytes, image_size: int, mode: str, batch_size: int):
    from brainview.classify import scan_input

    return scan_input.scan_dataset(
        scan_dir,
        image_size=image_size,
        mode=mode,
        batch_size=batch_size,
        max_decode_side=MAX_DECODE_SIDE,
    )


def measure_folder(code: str, folder: dict, settings: dict) -> dict:
    import numpy as np

    scan_dir = os.fsencode(folder["dir"])
    image_size, mode = settings["image_size"], settings["mode"]
    count = folder["count"]
    decoded = _decode_stage(code, scan_dir, image_size)
    rates = {"decode": _rate(decoded.prefetch(2), lambda _: 1)}
    held = []
    for scan in decoded.take(settings["in_memory_images"]):  # traced once, iterated again
        held.append(
            {
                key: scan[key].numpy()
                for key in ("path", "pixels", "width", "height", "mean_intensity")
            }
        )
    pipeline = _preprocess_stage(code, held, count, image_size, mode)
    rates["preprocess"] = _rate(pipeline, lambda _: 1)
    whole = _whole(scan_dir, image_size, mode, settings["batch_size"])
    rates["whole"] = _rate(whole, lambda batch: int(np.sum(batch["valid"].numpy())))
    measured = {name: round(rate, 2) for name, (rate, _) in rates.items()}
    measured.update({f"{name}_cpu_ms": round(cpu, 2) for name, (_, cpu) in rates.items()})
    return measured


def measure_classify(code: str, spec: dict, settings: dict) -> dict:
    """classify_dir's steady rate and the classifier's alone, on the same scans."""
    from bench import classify_throughput, common
    from brainview import model as model_lib
    from brainview.predict import make_predict

    del code
    batch = spec["batch_size"]
    model, _ = model_lib.load_model(spec["model"])
    whole = _whole(os.fsencode(spec["dir"]), settings["image_size"], settings["mode"], batch)
    in_memory = [element["image"] for element in whole.take(spec["model_batches"])]
    predict = make_predict(model)
    predict(in_memory[0]).numpy()  # trace
    started = time.perf_counter()
    for images in in_memory:
        predict(images).numpy()
    model_only = len(in_memory) * batch / (time.perf_counter() - started)
    ctx = common.Context(quick=False, work_dir=spec["out_dir"])
    result = classify_throughput._classify_dir(ctx, spec["dir"], spec["model"], False, batch)
    classify = result["count"] / result["seconds"]
    return {
        "model_only": round(model_only, 2),
        "classify_dir": round(classify, 2),
        "classify_dir / model_only": round(classify / model_only, 3),
    }


def measure_pyramid(path: str, reads: int, target_side: int) -> dict:
    """Seconds per read of one file as classify_dir's Python reader reads it, and RSS."""
    import inspect

    from brainview.classify import scan_files

    directory, name = os.path.split(os.fsencode(path))
    entry = scan_files.ScanEntry(name)
    accepts_target = "target_side" in inspect.signature(scan_files.load).parameters
    baseline_mb = _rss_mb()
    seconds = []
    for _ in range(reads):
        started = time.perf_counter()
        if accepts_target:
            scan = scan_files.load(directory, entry, MAX_DECODE_SIDE, target_side)
        else:
            scan = scan_files.load(directory, entry, MAX_DECODE_SIDE)
        seconds.append(time.perf_counter() - started)
        if scan.error:
            raise RuntimeError(f"{path}: {scan.error}")
    return {
        "seconds_per_read": round(statistics.median(seconds), 3),
        "decoded_shape": list(scan.pixels.shape),
        "rss_after_imports_mb": baseline_mb,
    }


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="JSON: what to measure.")
    parser.add_argument("--out", required=True, help="Where the JSON result goes.")
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as file:
        spec = json.load(file)
    import brainview

    code = spec["code"]
    result = {"code": code, "brainview": os.path.dirname(brainview.__file__)}
    if "pyramid" in spec:
        result["pyramid"] = measure_pyramid(**spec["pyramid"])
    else:
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        result["cores"] = len(os.sched_getaffinity(0))
        result["folders"] = [
            {**folder, "rates": measure_folder(code, folder, spec["settings"])}
            for folder in spec["folders"]
        ]
        if spec.get("classify"):
            result["classify"] = measure_classify(code, spec["classify"], spec["settings"])
    with open(args.out, "w", encoding="utf-8") as file:
        json.dump(result, file, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
