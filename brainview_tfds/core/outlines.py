"""Outline-only renderings of a section: silhouettes and label maps.

Many images a lab feeds to an atlas tool carry no stain texture at all: tissue
masks, registered label images (one flat colour per brain region), atlas
plates drawn as region boundaries. Their plane is in the shape alone, and a
classifier that learned texture calls them at random. These renderings of
label volumes (the Allen CCFv3 annotation, the phantom's tissue) teach the
shape.

Two kinds per slice, each in a randomly drawn style:

* `silhouette`: the brain mask as a filled shape (white on black, black on
  white, or a tint) or as its contour line only;
* `label_map`: one flat colour (or gray level) per region, on a black or white
  background, sometimes with the region boundaries drawn in.

Small label slices (a 200 um volume gives 40-66 px) are enlarged before
rendering: the mask with a bilinear filter and a threshold (smooth edges, not
voxel staircases), the labels by nearest neighbour inside that mask.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

OUTLINE_KINDS = ("silhouette", "label_map")
MIN_RENDER_SIDE = 256  # slices are enlarged to at least this many pixels on the longer side


def _enlarge(labels: np.ndarray, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mask) enlarged by an integer factor so the longer side reaches `min_side`."""
    factor = max(1, int(np.ceil(min_side / max(labels.shape))))
    height, width = labels.shape[0] * factor, labels.shape[1] * factor
    mask = Image.fromarray(((labels > 0) * 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    mask = np.asarray(mask) >= 128
    codes, inverse = np.unique(labels, return_inverse=True)
    index = Image.fromarray(inverse.reshape(labels.shape).astype(np.int32), mode="I").resize(
        (width, height), Image.Resampling.NEAREST
    )
    enlarged = codes[np.asarray(index)]
    # Pixels the smooth mask added take their nearest labelled neighbour's code, and
    # pixels it removed become background.
    if (enlarged > 0).any():
        nearest = ndimage.distance_transform_edt(
            enlarged == 0, return_distances=False, return_indices=True
        )
        enlarged = enlarged[nearest[0], nearest[1]]
    return np.where(mask, enlarged, 0), mask


def _boundaries(labels: np.ndarray, width: int) -> np.ndarray:
    """True where a pixel's label differs from a neighbour's, thickened to `width` px."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    if width > 1:
        edge = (
            np.asarray(
                Image.fromarray(edge.astype(np.uint8) * 255).filter(
                    ImageFilter.MaxFilter(2 * (width // 2) + 1)
                )
            )
            > 0
        )
    return edge


def _background_and_ink(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A background colour and a contrasting foreground ('ink') colour."""
    if rng.random() < 0.5:
        background, ink = np.zeros(3), np.full(3, 255.0)
    else:
        background, ink = np.full(3, 255.0), np.zeros(3)
    if rng.random() < 0.3:  # a tinted fill instead of pure black/white
        tint = rng.uniform(40, 215, size=3)
        ink = tint if abs(tint.mean() - background.mean()) > 60 else 255 - background
    return background, ink


def render_silhouette(
    labels: np.ndarray, rng: np.random.Generator, min_side: int = MIN_RENDER_SIDE
) -> np.ndarray:
    """uint8 HxWx3: the brain mask filled, or (30 %) its contour line only."""
    _, mask = _enlarge(labels, min_side)
    background, ink = _background_and_ink(rng)
    if rng.random() < 0.3:
        shape = _boundaries(mask.astype(np.int32), width=int(rng.integers(2, 6)))
    else:
        shape = mask
    image = np.where(shape[..., None], ink, background)
    return image.astype(np.uint8)


def render_label_map(
    labels: np.ndarray, rng: np.random.Generator, min_side: int = MIN_RENDER_SIDE
) -> np.ndarray:
    """uint8 HxWx3: one random colour (or gray level) per label, boundaries sometimes drawn."""
    enlarged, mask = _enlarge(labels, min_side)
    codes, inverse = np.unique(enlarged, return_inverse=True)
    inverse = inverse.reshape(enlarged.shape)
    if rng.random() < 0.3:
        gray = rng.uniform(30, 255, size=(codes.size, 1))
        palette = np.repeat(gray, 3, axis=1)
    else:
        palette = rng.uniform(0, 255, size=(codes.size, 3))
    background = np.zeros(3) if rng.random() < 0.6 else np.full(3, 255.0)
    image = palette[inverse]
    image[~mask] = background
    if rng.random() < 0.4:
        line = np.zeros(3) if background.mean() > 127 or rng.random() < 0.5 else np.full(3, 255.0)
        image[_boundaries(enlarged, width=int(rng.integers(1, 4)))] = line
    return image.astype(np.uint8)


def render(kind: str, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Renders a 2-D integer label slice (0 = background) as `kind`."""
    if kind == "silhouette":
        return render_silhouette(labels, rng)
    if kind == "label_map":
        return render_label_map(labels, rng)
    raise ValueError(f"unknown outline kind {kind!r}; expected one of {OUTLINE_KINDS}")


def quantize_density(density: np.ndarray, levels: int, threshold: float) -> np.ndarray:
    """Phantom density slice -> integer labels: 0 outside tissue, 1..levels by density.

    The phantom has no region atlas; bands of similar density (cortex layers,
    white matter, ventricles, bulbs) stand in for regions. The density is
    smoothed first, so its cell-like texture does not break regions into specks.
    """
    tissue = density > threshold
    smooth = ndimage.gaussian_filter(density.astype(np.float32), sigma=1.5)
    inside = smooth[tissue]
    if inside.size == 0:
        return np.zeros(density.shape, dtype=np.int32)
    bins = np.quantile(inside, np.linspace(0, 1, levels + 1)[1:-1])
    return np.where(tissue, 1 + np.digitize(smooth, bins), 0).astype(np.int32)
