"""Generated inputs for the benchmarks: scan folders, a random-weight model, datasets.

Content hardly matters for speed, but it must not be constant (a constant
image compresses and decodes unrealistically fast, and the preprocessing
would find no tissue), so every scan is a bright, textured ellipse with
darker holes on a noisy dark background, drawn from a pool of distinct
images. Writing the pool's encoded bytes round-robin makes folders of
thousands of files in seconds.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np
from PIL import Image

SCAN_VIEW_FOLDERS = ("coronal", "horizontal", "sagittal")  # class subfolders
POOL_SIZE = 48


def section_image(rng: np.random.Generator, side: int) -> np.ndarray:
    """A side x side uint8 gray image of a section-like blob (tissue bright on dark)."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.4, 0.6, 2)
    ry, rx = rng.uniform(0.2, 0.4, 2)
    u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
    inside = (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    coarse = Image.fromarray(rng.uniform(0, 255, (12, 12)).astype(np.uint8))
    texture = np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), np.float32)
    image = np.where(inside, 90.0 + 0.5 * texture, 15.0)
    for _ in range(int(rng.integers(1, 4))):  # ventricle-like holes
        hy, hx = cy + rng.uniform(-0.1, 0.1), cx + rng.uniform(-0.1, 0.1)
        hole = ((y - hy) ** 2 + (x - hx) ** 2) <= rng.uniform(0.02, 0.06) ** 2
        image[hole] = 30.0
    image += rng.normal(0.0, 6.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _encoded(pixels: np.ndarray, file_format: str) -> bytes:
    """`pixels` as "png", "jpg" (quality 90) or "tif16" (16-bit gray TIFF, a camera's 12 bits)."""
    buffer = io.BytesIO()
    if file_format == "jpg":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    elif file_format == "tif16":
        Image.fromarray(pixels.astype(np.uint16) * 16 + 40).save(buffer, format="TIFF")
    else:
        Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def _pool(side: int, file_format: str, seed: int) -> tuple[bytes, ...]:
    rng = np.random.default_rng(seed)
    return tuple(_encoded(section_image(rng, side), file_format) for _ in range(POOL_SIZE))


def write_scan_folder(
    root: str, count: int, side: int, formats: tuple[str, ...] = ("png", "jpg"), seed: int = 0
) -> str:
    """`count` gray side x side scans below root/<view>/, formats alternating; returns root.

    Class subfolders suit every reader (keras' image_dataset_from_directory
    infers labels from them; classify_dir and the original approach walk
    recursively). An existing complete folder is reused.
    """
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return root
    for view in SCAN_VIEW_FOLDERS:
        os.makedirs(os.path.join(root, view), exist_ok=True)
    for index in range(count):
        file_format = formats[index % len(formats)]
        pool = _pool(side, file_format, seed)
        view = SCAN_VIEW_FOLDERS[index % len(SCAN_VIEW_FOLDERS)]
        suffix = "tif" if file_format == "tif16" else file_format
        path = os.path.join(root, view, f"scan_{index:06d}.{suffix}")
        with open(path, "wb") as file:
            file.write(pool[(index // len(formats)) % len(pool)])
    open(marker, "w").close()  # hidden: classify_dir skips it by default, keras ignores it
    return root


def write_pyramid_tiff(path: str, side: int, tile: int = 512, seed: int = 0) -> str:
    """A side x side RGB bright-field slide as a tiled, JPEG-compressed pyramidal BigTIFF.

    Levels halve down to the first at most 512 px, in sub-IFDs as slide
    scanners and OME-TIFF store them. Tiles come from a small pool (dark
    texture inside an ellipse, light slide outside), so a 20,000 px slide is
    written in seconds; the content matters only for the JPEG sizes.
    """
    import tifffile

    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    tint = np.array([0.95, 0.8, 1.0])
    textures = [
        np.clip(255 - section_image(rng, tile)[..., None] * tint, 0, 255).astype(np.uint8)
        for _ in range(8)
    ]
    slide = np.clip(rng.normal(232, 3, (tile, tile, 3)), 0, 255).astype(np.uint8)
    sides = [side]
    while sides[-1] > 512:
        sides.append(-(-sides[-1] // 2))

    def tiles(level_side: int):
        count = -(-level_side // tile)
        for row in range(count):
            for column in range(count):
                y, x = (row + 0.5) / count - 0.5, (column + 0.5) / count - 0.5
                inside = (x / 0.42) ** 2 + (y / 0.3) ** 2 <= 1.0
                yield textures[(row * 7 + column) % len(textures)] if inside else slide

    options = {"tile": (tile, tile), "compression": "jpeg", "photometric": "rgb"}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for index, level_side in enumerate(sides):
            level = {"subifds": len(sides) - 1} if index == 0 else {"subfiletype": 1}
            writer.write(
                tiles(level_side),
                shape=(level_side, level_side, 3),
                dtype=np.uint8,
                **options,
                **level,
            )
    return path


def folder_bytes(root: str) -> int:
    return sum(
        os.path.getsize(os.path.join(folder, name))
        for folder, _, names in os.walk(root)
        for name in names
    )


def random_model(path: str, image_size: int, seed: int = 0) -> str:
    """An untrained EfficientNet-B0 classifier saved like bin/train saves one (+ its card)."""
    if os.path.exists(path):
        return path
    import keras

    from brainview import model as model_lib

    keras.utils.set_random_seed(seed)
    model = model_lib.build_classifier(image_size, "none")
    card = model_lib.ModelCard(image_size=image_size, recipe="bench: random weights")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model_lib.save_model(model, card, path)
    return path


def phantom_data_dir(data_dir: str, config: str) -> str:
    """A TFDS data_dir holding brain_phantom/<config> (built once, then reused)."""
    from brainview_tfds import build

    build.build(build.BuildRequest("brain_phantom", config), data_dir=data_dir)
    return data_dir
