"""Dummy source data generated on the fly for tests: tiny NRRD volumes and image folders.

Nothing copyrighted is committed: every dummy file is rendered from the
phantom generator, deterministically, into a temporary folder.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from brainview_tfds.brain_phantom import phantom_volumes, rendering
from brainview_tfds.core import volumes

DUMMY_VOLUME_SHAPE = (28, 18, 24)
DUMMY_RESOLUTION_UM = 200.0


def write_volume_nrrd(
    path: str,
    shape: tuple[int, int, int] = DUMMY_VOLUME_SHAPE,
    resolution_um: float = DUMMY_RESOLUTION_UM,
    seed: int = 0,
    dtype: type = np.uint16,
) -> str:
    """A phantom brain as a gzip NRRD in Allen axis order, like the Allen files."""
    import nrrd

    density, _, _ = phantom_volumes.make_specimen(seed, shape)
    rng = np.random.default_rng(seed)
    voxels = density * 500.0 + rng.normal(0.0, 4.0, shape) * (density > 0)
    voxels = np.clip(voxels, 0, None).astype(dtype)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([resolution_um] * 3),
        "encoding": "gzip",
    }
    nrrd.write(path, voxels, header=header)
    return path


def write_label_volume_nrrd(
    path: str,
    shape: tuple[int, int, int] = DUMMY_VOLUME_SHAPE,
    resolution_um: float = DUMMY_RESOLUTION_UM,
    seed: int = 0,
) -> str:
    """A phantom brain's density bands as a uint32 label NRRD, like the Allen annotation."""
    import nrrd

    density, _, _ = phantom_volumes.make_specimen(seed, shape)
    levels = np.quantile(density[density > 0.02], [0.25, 0.5, 0.75])
    labels = np.where(density > 0.02, 1 + np.digitize(density, levels), 0) * 1000
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([resolution_um] * 3),
        "encoding": "gzip",
    }
    nrrd.write(path, labels.astype(np.uint32), header=header)
    return path


def _bright_field_sections(view: str, count: int, seed: int) -> list[np.ndarray]:
    """`count` Nissl-like renders of evenly spaced slices of one phantom."""
    density, _, appearance = phantom_volumes.make_specimen(seed, (40, 24, 34))
    total = volumes.num_slices(density, view)
    indices = np.linspace(0.25 * total, 0.75 * total, count).astype(int)
    rng = np.random.default_rng(seed)
    return [
        rendering.render_section(volumes.display_slice(density, view, int(i)), appearance, rng)
        for i in indices
    ]


def write_section_folder(root: str, images_per_view: int = 4, seed: int = 0) -> dict[str, int]:
    """A BrainMaps-like folder: coronal/ horizontal/ sagittal/ with real-world quirks.

    Per view: a flat run of PNGs named like BrainMaps ("horizotal_" typo kept),
    one JPEG with an upper-case suffix, one 16-bit TIFF, one image in a
    specimen subfolder, and a stray non-image file that must be skipped.
    Returns the number of images written per view.
    """
    counts = {}
    for number, view in enumerate(("coronal", "horizontal", "sagittal")):
        folder = os.path.join(root, view.capitalize() if view == "sagittal" else view)
        os.makedirs(os.path.join(folder, "mouse 2"), exist_ok=True)
        prefix = "horizotal" if view == "horizontal" else view
        sections = _bright_field_sections(view, images_per_view + 3, seed + number)
        for i, pixels in enumerate(sections[:images_per_view]):
            Image.fromarray(pixels).save(os.path.join(folder, f"{prefix}_{i}.png"))
        Image.fromarray(sections[-3]).save(os.path.join(folder, "scan, copy.JPG"), quality=92)
        gray16 = (sections[-2].mean(axis=2) * 16).astype(np.uint16)
        Image.fromarray(gray16).save(os.path.join(folder, "section 16bit.tif"))
        Image.fromarray(sections[-1]).save(os.path.join(folder, "mouse 2", "slide_01.png"))
        with open(os.path.join(folder, "notes.txt"), "w", encoding="utf-8") as notes:
            notes.write("not an image\n")
        counts[view] = images_per_view + 3
    return counts


@functools.cache
def dummy_data_dir(dataset: str) -> str:
    """A temporary manual_dir for `dataset`, generated once per process."""
    root = tempfile.mkdtemp(prefix=f"brainview_dummy_{dataset}_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    if dataset == "allen_ccfv3":
        write_volume_nrrd(os.path.join(root, "average_template_200.nrrd"))
        write_volume_nrrd(os.path.join(root, "average_template_100.nrrd"), resolution_um=100.0)
    elif dataset == "allen_ccfv3_outlines":
        write_label_volume_nrrd(os.path.join(root, "annotation_200.nrrd"))
    elif dataset == "allen_nissl":
        write_volume_nrrd(
            os.path.join(root, "ara_nissl_100.nrrd"), resolution_um=100.0, dtype=np.float32
        )
    elif dataset == "brainmaps":
        write_section_folder(root)
    elif dataset in ("brain_phantom", "brain_phantom_outlines"):
        pass  # generated by the builder itself; TFDS's test case still wants a folder
    else:
        raise ValueError(f"no dummy data for {dataset!r}")
    return root
