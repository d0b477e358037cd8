"""The original study's way to classify a folder, as the baseline classify_dir replaces.

Every image is opened with PIL in a Python loop, converted to RGB, resized to
the model's input and appended to a list as float32 (what keras'
`img_to_array` returns); the list becomes one array and `model.predict` runs
on it. Memory therefore grows with the number of images, and nothing overlaps
reading with inference.

Run as a program (the memory benchmark measures it in a subprocess):
  python -m bench.original_study SCAN_DIR MODEL.keras [--batch_size=64]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def image_paths(scan_dir: str) -> list[str]:
    """Every image file below scan_dir, in a deterministic order."""
    paths = []
    for folder, subfolders, names in os.walk(scan_dir):
        subfolders.sort()
        paths.extend(
            os.path.join(folder, name)
            for name in sorted(names)
            if name.lower().endswith(IMAGE_SUFFIXES)
        )
    return paths


def load_all(paths: list[str], image_size: int) -> np.ndarray:
    """(N, S, S, 3) float32 on 0..255: the whole folder in memory at once."""
    images = []
    for path in paths:
        with Image.open(path) as image:
            resized = image.convert("RGB").resize(
                (image_size, image_size), Image.Resampling.BILINEAR
            )
            images.append(np.asarray(resized, dtype=np.float32))
    return np.array(images)


def classify(scan_dir: str, model, image_size: int, batch_size: int) -> np.ndarray:
    """Probabilities (N, 3) for every image below scan_dir."""
    images = load_all(image_paths(scan_dir), image_size)
    return model.predict(images, batch_size=batch_size, verbose=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan_dir")
    parser.add_argument("model_path")
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from brainview import model as model_lib

    model, card = model_lib.load_model(args.model_path)
    probabilities = classify(args.scan_dir, model, card.image_size, args.batch_size)
    print(f"classified {len(probabilities)} images")


if __name__ == "__main__":
    main()
