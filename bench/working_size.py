"""Before -> after of preprocessing at a working size (issue 12, item 1); not part of run_all.

"Before" is the same code with the reduction switched off (preprocessing.working_side
patched to return a side no image reaches): for images that fit the working side the
function is unchanged, so that is exactly the previous behaviour.

    taskset -c 0 python -m bench.working_size --model=runs/demo/holdout/model.keras \
        --brainmaps_dir=../shared/data/brainmaps --golden_dir=/tmp/golden/scans

Prints, before -> after (--parts=timing or --parts=probabilities for one half):
  * preprocess alone (decoded images in memory, one tf.data thread), img/s at 512, 1024
    and 2048 px: square scans made from BrainMaps images (upscaled, padded with
    background); before and after interleaved pass by pass, the best of --repeats;
  * the classify_dir input path (scan_input: decode + preprocess, PNG and JPEG files);
  * with the model: the largest change of any probability and the number of changed
    views and statuses, on the golden folder, the shared BrainMaps images and the
    1024 / 2048 px scans; and, for scale, the same between the PNG and the JPEG file
    and between the 1024 and the 2048 px scan of each section, before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from PIL import Image

IMAGE_SIZE = 128  # the default model input; the working side is then 512


@contextlib.contextmanager
def reduction(enabled: bool):
    """Preprocessing with (after) or without (before) the working-size reduction."""
    from brainview import preprocessing

    original = preprocessing.working_side
    if not enabled:
        preprocessing.working_side = lambda image_size: 1 << 30
    try:
        yield
    finally:
        preprocessing.working_side = original


def brainmaps_images(brainmaps_dir: str, count: int) -> list[np.ndarray]:
    """`count` BrainMaps images, alternating views, decoded as classify_dir decodes them."""
    from brainview import image_files

    files = []
    for view in ("coronal", "horizontal", "sagittal"):
        names = sorted(os.listdir(os.path.join(brainmaps_dir, view)))
        files.append([os.path.join(brainmaps_dir, view, n) for n in names])
    chosen = [files[i % 3][i // 3] for i in range(count)]
    return [np.asarray(image_files.read_image(path).pixels) for path in chosen]


def as_scan(pixels: np.ndarray, side: int) -> np.ndarray:
    """The section enlarged so its longer side is 80% of `side`, centred on a side x side
    slide of its own background colour."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = tuple(int(v) for v in np.median(border, axis=0))
    image = Image.fromarray(pixels)
    scale = 0.8 * side / max(image.size)
    image = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
    )
    slide = Image.new("RGB", (side, side), background)
    slide.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(slide)


def preprocess_dataset(images: list[np.ndarray]):
    """preprocessing.preprocess alone over decoded images in memory (one tf.data thread).

    The map is traced when the dataset is built: build it inside `reduction(...)`.
    """
    import tensorflow as tf

    from brainview import image_files, preprocessing

    means = [np.float32(image_files.mean_gray(image)) for image in images]
    return tf.data.Dataset.from_generator(
        lambda: zip(images, means, strict=True),
        output_signature=(
            tf.TensorSpec([None, None, 3], tf.uint8),
            tf.TensorSpec([], tf.float32),
        ),
    ).map(
        lambda image, mean: (
            preprocessing.preprocess(image, IMAGE_SIZE, "aligned", mean_intensity=mean).model_input
        )
    )


def input_path_dataset(scan_dir: str):
    """classify_dir's input path (walk, decode, preprocess, batch), no model; built (and
    traced) inside `reduction(...)`."""
    from brainview import image_files
    from brainview.classify import scan_input

    return scan_input.scan_dataset(
        os.fsencode(scan_dir),
        image_size=IMAGE_SIZE,
        mode="aligned",
        batch_size=16,
        max_decode_side=image_files.MAX_DECODE_SIDE,
    )


def images_in(batch) -> int:
    """Images in one element: a preprocessed image, or a padded scan batch."""
    return int(np.sum(batch["valid"])) if isinstance(batch, dict) else 1


def costs(make_dataset, repeats: int) -> dict[bool, tuple[float, float]]:
    """{reduction enabled: (img/s, CPU ms per image)}, the best of `repeats` passes each.

    Before and after are interleaved pass by pass, so that a change of load on a
    shared machine hits both alike; the CPU time (all of this process's threads)
    is the steadier figure when other jobs share the cores.
    """
    datasets = {}
    for enabled in (False, True):
        with reduction(enabled):
            datasets[enabled] = make_dataset()
            next(iter(datasets[enabled]))  # start-up outside the timing
    best = {False: (0.0, float("inf")), True: (0.0, float("inf"))}
    for _ in range(repeats):
        for enabled, dataset in datasets.items():
            wall, cpu = time.perf_counter(), time.process_time()
            count = sum(images_in(element) for element in dataset)
            rate = count / (time.perf_counter() - wall)
            cpu_ms = 1000 * (time.process_time() - cpu) / count
            best[enabled] = (max(best[enabled][0], rate), min(best[enabled][1], cpu_ms))
    return best


def format_costs(best: dict[bool, tuple[float, float]]) -> str:
    (rate_before, cpu_before), (rate_after, cpu_after) = best[False], best[True]
    return (
        f"{rate_before:.1f} -> {rate_after:.1f} img/s (x{rate_after / rate_before:.2f}), "
        f"CPU {cpu_before:.1f} -> {cpu_after:.1f} ms/img (x{cpu_before / cpu_after:.2f})"
    )


def write_scans(images: list[np.ndarray], directory: str, file_format: str) -> str:
    os.makedirs(directory, exist_ok=True)
    for i, image in enumerate(images):
        options = {"quality": 90} if file_format == "jpg" else {}
        Image.fromarray(image).save(
            os.path.join(directory, f"scan_{i:04d}.{file_format}"), **options
        )
    return directory


def predictions(scan_dir: str, model_path: str) -> dict[str, np.ndarray]:
    """Calibrated probabilities, blank flags and frames of every scan, as classify_dir computes
    them (the model card's preprocessing, image size and TTA)."""
    import tensorflow as tf

    from brainview import image_files, metrics
    from brainview import model as model_lib
    from brainview.classify import prediction, scan_input

    model, card = model_lib.load_model(model_path)
    predictor = prediction.Predictor(model, tf.distribute.get_strategy(), False, card.tta)
    dataset = scan_input.scan_dataset(
        os.fsencode(scan_dir),
        image_size=card.image_size,
        mode=card.preprocessing,
        batch_size=32,
        max_decode_side=image_files.MAX_DECODE_SIDE,
    )
    columns: dict[str, list] = {"p": [], "blank": [], "frame": [], "error": []}
    for batch, probabilities, _ in predictor.predict(dataset):
        valid = batch["valid"]
        columns["p"].append(metrics.apply_temperature(probabilities[valid], card.temperature))
        columns["blank"].append(batch["blank"][valid])
        columns["frame"].append(batch["frame"][valid])
        columns["error"].append(batch["error"][valid] != b"")
    return {key: np.concatenate(values) for key, values in columns.items()}


def compare(before: dict, after: dict, scale: float = 1.0) -> str:
    """How `after` differs from `before` (whose frames are `scale` times smaller)."""
    ok = ~before["error"]
    change = np.abs(before["p"][ok] - after["p"][ok])
    views = int(np.sum(before["p"][ok].argmax(1) != after["p"][ok].argmax(1)))
    blanks = int(np.sum(before["blank"][ok] != after["blank"][ok]))
    side_change = np.abs(after["frame"][ok, 2] / (scale * before["frame"][ok, 2]) - 1)
    return (
        f"n={int(ok.sum())}: max |dp| {change.max():.4f} (mean {change.mean():.4f}), "
        f"views changed {views}, blank flags changed {blanks}, "
        f"frame side change max {side_change.max():.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brainmaps_dir", required=True)
    parser.add_argument("--model", required=True, help="a model.keras, e.g. make demo's")
    parser.add_argument("--golden_dir", default=None, help="the golden test's scan folder")
    parser.add_argument("--count", type=int, default=48, help="BrainMaps images per size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--parts", type=lambda text: text.split(","), default=["timing", "probabilities"]
    )
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="working_size_")
    originals = brainmaps_images(args.brainmaps_dir, args.count)
    folders = {}
    for side in (512, 1024, 2048):
        scans = [as_scan(image, side) for image in originals]
        for file_format in ("png", "jpg"):
            folder = write_scans(scans, os.path.join(work, f"{side}_{file_format}"), file_format)
            if side > 512:  # 512 px scans fit the working side: timing reference only
                folders[f"{side} px {file_format}"] = folder
        if "timing" not in args.parts:
            continue
        best = costs(lambda scans=scans: preprocess_dataset(scans), args.repeats)
        print(f"preprocess alone, {side} px: {format_costs(best)}")
        for file_format in ("png", "jpg"):
            folder = os.path.join(work, f"{side}_{file_format}")
            best = costs(lambda folder=folder: input_path_dataset(folder), args.repeats)
            print(f"input path, {side} px {file_format}: {format_costs(best)}")
    if "probabilities" not in args.parts:
        return

    sets = {"BrainMaps (native)": args.brainmaps_dir, **folders}
    if args.golden_dir:
        sets = {"golden folder": args.golden_dir, **sets}
    results = {}
    for name, folder in sets.items():
        for enabled in (False, True):
            with reduction(enabled):
                results[name, enabled] = predictions(folder, args.model)
        before, after = results[name, False], results[name, True]
        print(f"probabilities, {name}, before -> after: {compare(before, after)}")
    # For scale: how much the same sections' results already differed between their PNG
    # and JPEG (quality 90) files, and between a 1024 and a 2048 px scan of them (same
    # file names, same order), with either code.
    for side in (1024, 2048):
        for enabled in (False, True):
            png, jpg = (
                results[f"{side} px {file_format}", enabled] for file_format in ("png", "jpg")
            )
            label = "after" if enabled else "before"
            print(f"probabilities, {side} px png vs jpg, {label}: {compare(png, jpg)}")
    for file_format in ("png", "jpg"):
        for enabled in (False, True):
            small, large = (results[f"{side} px {file_format}", enabled] for side in (1024, 2048))
            label = "after" if enabled else "before"
            print(
                f"probabilities, {file_format} 1024 vs 2048 px, {label}: {compare(small, large, 2.0)}"
            )


if __name__ == "__main__":
    main()
