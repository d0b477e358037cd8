"""Procedural 3-D mouse-brain phantoms: the anatomy (what is there, as a density volume).

This is the first half of brainview's embedded default dataset, the phantom
(`rendering.py` is the second: how a microscope would image a section of it).
It needs no download, builds in seconds, and doubles as a domain-randomization
source: a classifier trained on slices of these phantoms has to recognise the
cutting plane of *real* sections from other labs, so the anatomy is built to be
plausible in all three planes (bilateral symmetry, olfactory bulbs in front,
foliated cerebellum behind, layered cortex, ventricles, hippocampus...) while
proportions vary between specimens.

Everything is numpy only and deterministic: `sample_anatomy(rng)` draws the
proportions, `make_density_volume(anatomy, shape)` paints the volume (its
textures come from `anatomy.texture_seed`).

Geometry is written in a brain-centred millimetre frame. Positions of parts are given as
fractions of the brain's bounding box (`t` anterior->posterior, `s` dorsal->ventral, both
0..1, and `w` left->right, -0.5..0.5) so that one set of textbook proportions serves
every sampled brain size. Parts are solid ellipsoids (or tapered tubes), combined through
approximate signed distances so that layers can follow surfaces and edges antialias.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

VOLUME_AXES = ("anterior-posterior", "superior-inferior", "left-right")  # Allen CCF axis order

# Physical extent (mm) the volume always spans, whatever its shape: `shape` only sets the
# sampling. Like the Allen template, it leaves background around the brain.
VOLUME_EXTENT_MM = (13.2, 8.0, 11.4)

# Adult mouse brain bounding box (AP incl. olfactory bulbs and medulla, SI, LR), in mm.
NOMINAL_BRAIN_MM = (10.5, 6.0, 9.5)

# Minimum background kept between the (rotated) brain and each face of the volume.
MARGIN_MM = 0.5

# Actual brain extent / Anatomy.brain_size_mm, at most: the forebrain taper and the
# left-right asymmetry widen the widest point by up to ~5%.
_EXTENT_ALLOWANCE = np.array([1.0, 1.0, 1.06])

Vec3 = tuple[float, float, float]  # (AP, SI, LR) in mm
# Semi-axes in mm; an array entry varies per voxel (e.g. a flatter ventral half).
Semiaxes = tuple[float | np.ndarray, float | np.ndarray, float | np.ndarray]

# Relative cortical depth (0 = pia, 1 = white matter) -> Nissl-like cell density. Layer 1
# is cell-poor, 2/3 and 6 are packed, 5 is looser: the banding seen in real sections.
_CORTEX_DEPTHS = (0.0, 0.08, 0.13, 0.3, 0.42, 0.5, 0.62, 0.7, 0.95, 1.0)
_CORTEX_DENSITY = (0.3, 0.4, 0.92, 0.85, 0.85, 0.68, 0.68, 0.85, 0.8, 0.55)

# Olfactory bulb normalized radius (0 = core, 1 = surface) -> density. Concentric layers:
# core, granule cells (dense), mitral cells (thin dense), external plexiform (pale),
# glomeruli, nerve layer (pale).
_BULB_RADII = (0.0, 0.18, 0.25, 0.56, 0.6, 0.63, 0.66, 0.77, 0.8, 0.9, 0.93, 1.0)
_BULB_DENSITY = (0.45, 0.45, 0.9, 0.9, 0.35, 0.9, 0.3, 0.3, 0.6, 0.6, 0.3, 0.3)

_SUBCORTICAL_DENSITY = 0.62
_WHITE_MATTER_DENSITY = 0.18
_VENTRICLE_DENSITY = 0.03  # CSF: nearly empty, but still inside the brain
MIN_TISSUE_DENSITY = 0.02  # keeps "tissue > 0" true after texturing


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """The sampled proportions of one phantom brain.

    Sizes are in mm; part scales are multipliers (1 = textbook proportion) so a reader can
    see at a glance how unusual a specimen is. `texture_seed` makes the cell-like textures
    reproducible without `make_density_volume` needing its own random generator.
    """

    brain_size_mm: tuple[float, float, float]  # AP length, SI height, LR width
    center_offset_mm: tuple[float, float, float]  # brain centre minus volume centre (AP, SI, LR)
    rotation_deg: tuple[float, float, float]  # about the AP (roll), SI (yaw), LR (pitch) axes
    left_right_asymmetry: float  # > 0: right half slightly larger than the left
    forebrain_taper: float  # how much narrower the cerebrum is in front than behind
    cortex_thickness_scale: float
    white_matter_mm: float
    ventricle_mm: float
    olfactory_bulb_scale: float
    striatum_scale: float
    hippocampus_scale: float
    cerebellum_scale: float
    brainstem_scale: float
    cerebellar_lobules: int  # lobules across the ~270 degree fan of the vermis
    cerebellar_phase: float  # where along the fan the fissures fall (fraction of a lobule)
    cortical_layer_contrast: float  # 0 = uniform cortex, 1 = full textbook layering
    speckle_strength: float  # voxel-scale "cell" noise, relative
    low_frequency_strength: float  # smooth regional density variation, relative
    texture_seed: int


# ----------------------------------------------------------------------------------------
# Anatomy sampling


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draws one plausible brain; the whole rotated brain always fits inside the volume."""
    rotation_deg = (rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-5, 5))
    brain_size = np.array(NOMINAL_BRAIN_MM) * rng.uniform(0.9, 1.08) * rng.uniform(0.85, 1.15, 3)
    brain_size, center_offset = _fit_into_volume(brain_size, rotation_deg, rng)
    return Anatomy(
        brain_size_mm=as_floats(brain_size),
        center_offset_mm=as_floats(center_offset),
        rotation_deg=as_floats(rotation_deg),
        left_right_asymmetry=float(rng.uniform(-0.04, 0.04)),
        forebrain_taper=float(rng.uniform(0.08, 0.22)),
        cortex_thickness_scale=float(rng.uniform(0.85, 1.15)),
        white_matter_mm=float(rng.uniform(0.12, 0.25)),
        ventricle_mm=float(rng.uniform(0.06, 0.2)),
        olfactory_bulb_scale=float(rng.uniform(0.85, 1.15)),
        striatum_scale=float(rng.uniform(0.85, 1.15)),
        hippocampus_scale=float(rng.uniform(0.85, 1.15)),
        cerebellum_scale=float(rng.uniform(0.88, 1.12)),
        brainstem_scale=float(rng.uniform(0.85, 1.15)),
        cerebellar_lobules=int(rng.integers(8, 12)),
        cerebellar_phase=float(rng.uniform(0, 1)),
        cortical_layer_contrast=float(rng.uniform(0.3, 1.0)),
        speckle_strength=float(rng.uniform(0.03, 0.15)),
        low_frequency_strength=float(rng.uniform(0.03, 0.15)),
        texture_seed=int(rng.integers(2**63 - 1)),
    )


def as_floats(values: Iterable[float]) -> tuple[float, ...]:
    """Plain Python floats keep the frozen dataclasses hashable and printable."""
    return tuple(float(v) for v in values)


def _rotation_matrix(rotation_deg: tuple[float, float, float]) -> np.ndarray:
    """Maps brain-frame vectors (AP, SI, LR) to volume-frame vectors."""
    roll, yaw, pitch = np.deg2rad(rotation_deg)
    about_ap = np.array(
        [[1, 0, 0], [0, math.cos(roll), -math.sin(roll)], [0, math.sin(roll), math.cos(roll)]]
    )
    about_si = np.array(
        [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]]
    )
    about_lr = np.array(
        [[math.cos(pitch), -math.sin(pitch), 0], [math.sin(pitch), math.cos(pitch), 0], [0, 0, 1]]
    )
    return about_ap @ about_si @ about_lr


def _fit_into_volume(
    brain_size: np.ndarray, rotation_deg: tuple[float, float, float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shrinks the brain (keeping its aspect) until its rotated box fits, then jitters its centre.

    The rotated bounding box of the brain's box is a conservative bound for the brain itself.
    """
    room = np.array(VOLUME_EXTENT_MM) - 2 * MARGIN_MM
    rotated_box = np.abs(_rotation_matrix(rotation_deg)) @ (brain_size * _EXTENT_ALLOWANCE)
    shrink = min(1.0, float(np.min(room / rotated_box)))
    slack = np.maximum(room - rotated_box * shrink, 0.0) / 2
    center_offset = rng.uniform(-0.5, 0.5, 3) * slack
    return brain_size * shrink, center_offset


# ----------------------------------------------------------------------------------------
# Geometry helpers


@dataclasses.dataclass(frozen=True)
class _BrainFrame:
    """Voxel coordinates in the brain's own frame (mm, brain centre at the origin).

    `ap` grows posteriorly, `si` ventrally, `lr` towards the right; all three are full
    volume-shaped arrays because the specimen is rotated relative to the voxel grid.
    """

    ap: np.ndarray
    si: np.ndarray
    lr: np.ndarray
    size_mm: tuple[float, float, float]
    voxel_mm: float  # mean voxel edge, the width of antialiased edges

    def point(self, t: float, s: float, w: float) -> tuple[float, float, float]:
        """Bounding-box fractions (t: 0 front..1 back, s: 0 top..1 bottom, w: -0.5..0.5) -> mm."""
        length, height, width = self.size_mm
        return ((t - 0.5) * length, (s - 0.5) * height, w * width)

    def span(self, t: float, s: float, w: float) -> tuple[float, float, float]:
        """Semi-axes given as fractions of the brain's length, height and width -> mm."""
        length, height, width = self.size_mm
        return (t * length, s * height, w * width)


def _brain_frame(anatomy: Anatomy, shape: tuple[int, int, int]) -> _BrainFrame:
    """Places the rotated, off-centre, slightly asymmetric brain on the voxel grid."""
    voxel = np.array(VOLUME_EXTENT_MM) / np.array(shape)
    axes = [
        ((np.arange(n, dtype=np.float32) + 0.5) * voxel[i] - VOLUME_EXTENT_MM[i] / 2)
        - anatomy.center_offset_mm[i]
        for i, n in enumerate(shape)
    ]
    grid = (axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :])
    to_brain = _rotation_matrix(anatomy.rotation_deg).T.astype(np.float32)
    ap, si, lr = (sum(to_brain[row, col] * grid[col] for col in range(3)) for row in range(3))
    # A smooth sign keeps the midline continuous while one side is scaled up.
    side = np.tanh(lr / 0.5)
    lr = lr / (1 + anatomy.left_right_asymmetry * side)
    return _BrainFrame(ap, si, lr, anatomy.brain_size_mm, float(voxel.mean()))


def _ellipsoid_sdf(
    ap: np.ndarray,
    si: np.ndarray,
    lr: np.ndarray,
    center: Vec3,
    semi: Semiaxes,
    exponent: float = 2.0,
) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to a (super-)ellipsoid.

    With r the normalized radius, (r - 1) / |grad r| is exact on the surface and good
    nearby, which is all that shells, layers and antialiasing need. An exponent above 2
    squares the shape off (a coronal brain outline is closer to a rounded box than to an
    ellipse). Semi-axes may be arrays, which lets callers flatten one side of a shape.
    """
    scaled = [np.abs(c - c0) / r for c, c0, r in zip((ap, si, lr), center, semi, strict=True)]
    if exponent == 2.0:
        radius = np.sqrt(sum(x * x for x in scaled))
        slopes = [x / r for x, r in zip(scaled, semi, strict=True)]
    else:
        powered = [x ** (exponent - 1) for x in scaled]
        radius = sum(q * x for q, x in zip(powered, scaled, strict=True)) ** (1 / exponent)
        slopes = [q / r for q, r in zip(powered, semi, strict=True)]
    gradient = np.sqrt(sum(g * g for g in slopes)) / np.maximum(radius, 1e-6) ** (exponent - 1)
    return (radius - 1) / np.maximum(gradient, 1e-6)


def _ellipsoid_radius(
    ap: np.ndarray, si: np.ndarray, lr: np.ndarray, center: Vec3, semi: Semiaxes
) -> np.ndarray:
    """Normalized radius: 0 at the centre, 1 on the surface (for concentric layering)."""
    scaled = [(c - c0) / r for c, c0, r in zip((ap, si, lr), center, semi, strict=True)]
    return np.sqrt(sum(x * x for x in scaled))


def _inside(sdf: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Antialiased indicator: 1 deep inside, 0 outside, linear over one voxel at the surface."""
    return np.clip(0.5 - sdf / voxel_mm, 0.0, 1.0)


def _smooth_step(x: np.ndarray, edge0: float, edge1: float) -> np.ndarray:
    """0 below edge0, 1 above edge1, smooth between: soft limits on where a part applies."""
    u = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return u * u * (3 - 2 * u)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], cell: tuple[float, ...]
) -> np.ndarray:
    """Unit-variance noise whose blobs are about `cell` samples wide along each axis.

    Random values on a coarse lattice are interpolated with a smoothstep, axis by axis,
    which costs a few passes over the output instead of a large convolution.
    """
    field = rng.standard_normal([math.ceil(n / c) + 2 for n, c in zip(shape, cell, strict=True)])
    for axis, (n, c) in enumerate(zip(shape, cell, strict=True)):
        position = np.arange(n) / c + rng.random()
        lower = np.floor(position).astype(int)
        frac = position - lower
        frac = frac * frac * (3 - 2 * frac)
        broadcast = [1] * len(shape)
        broadcast[axis] = n
        frac = frac.reshape(broadcast)
        below = np.take(field, lower, axis=axis)
        above = np.take(field, lower + 1, axis=axis)
        field = below + (above - below) * frac
    field = field - field.mean()
    return (field / max(float(field.std()), 1e-6)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class _Textures:
    """Shared noise fields (unit variance) that parts turn into their own textures."""

    regional: np.ndarray  # ~2.5 mm blobs: smooth density drift across the brain
    nuclear: np.ndarray  # ~0.6 mm blobs: nuclei, striatal patches, glomeruli
    cellular: np.ndarray  # per-voxel: cell-like speckle


def _make_textures(anatomy: Anatomy, shape: tuple[int, int, int]) -> _Textures:
    rng = np.random.default_rng(anatomy.texture_seed)
    voxel = np.array(VOLUME_EXTENT_MM) / np.array(shape)
    return _Textures(
        regional=smooth_noise(rng, shape, tuple(2.5 / voxel)),
        nuclear=smooth_noise(rng, shape, tuple(np.maximum(0.6 / voxel, 1.5))),
        cellular=rng.standard_normal(shape, dtype=np.float32),
    )


class _Painter:
    """Accumulates the density volume by painting parts in order, later parts on top.

    `tissue` is the antialiased brain mask; `density` the stain density inside it.
    """

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.density = np.zeros(shape, np.float32)
        self.tissue = np.zeros(shape, np.float32)

    def add(self, coverage: np.ndarray, value: float | np.ndarray) -> None:
        """Adds tissue of the given density where coverage > 0 (enlarging the brain)."""
        self.paint(coverage, value)
        np.maximum(self.tissue, coverage, out=self.tissue)

    def paint(self, coverage: np.ndarray, value: float | np.ndarray) -> None:
        """Repaints existing tissue without changing the brain's outline."""
        self.density += coverage * (value - self.density)

    def carve(self, coverage: np.ndarray) -> None:
        """Removes tissue (fissures, gaps between lobules)."""
        self.tissue *= 1 - coverage

    def result(self, textures: _Textures, anatomy: Anatomy) -> np.ndarray:
        """Applies the shared textures and the brain mask; background is exactly 0."""
        density = self.density * (1 + anatomy.low_frequency_strength * textures.regional)
        density *= 1 + anatomy.speckle_strength * textures.cellular
        density = np.clip(density, MIN_TISSUE_DENSITY, 1.0) * self.tissue
        return density.astype(np.float32)


# ----------------------------------------------------------------------------------------
# Brain parts. Each function paints one part; proportions are textbook fractions.


@dataclasses.dataclass(frozen=True)
class _Cerebrum:
    """Distances shared by the forebrain parts, in a frame tapered towards the front."""

    lr: np.ndarray  # left-right coordinate stretched so the tapered forebrain is an ellipsoid
    hemisphere_sdf: np.ndarray  # union of both hemispheres
    inner_sdf: np.ndarray  # surface just beneath the cortex (callosum / external capsule)


def _cerebrum(frame: _BrainFrame, anatomy: Anatomy) -> _Cerebrum:
    """Two hemispheres, flattened ventrally and narrower in front, plus the sub-cortical core.

    `inner_sdf` is an ellipsoid spanning both hemispheres; the cortex is what lies between
    it and the hemisphere surface, and the corpus callosum is a thin shell on it.
    """
    center_ap, _, _ = frame.point(0.44, 0.45, 0.0)
    semi_ap = frame.span(0.31, 0, 0)[0]
    taper = 1 + anatomy.forebrain_taper * np.clip((frame.ap - center_ap) / semi_ap, -1, 1)
    lr = frame.lr / taper
    hemispheres = []
    for side in (-1, 1):
        center = frame.point(0.44, 0.45, side * 0.2)
        dorsal, ventral = frame.span(0, 0.45, 0)[1], frame.span(0, 0.36, 0)[1]
        semi_si = np.where(frame.si > center[1], ventral, dorsal).astype(np.float32)
        semi = (semi_ap, semi_si, frame.span(0, 0, 0.3)[2])
        hemispheres.append(_ellipsoid_sdf(frame.ap, frame.si, lr, center, semi, exponent=2.25))
    shrink = anatomy.cortex_thickness_scale
    inner_semi = frame.span(0.25, 0.34 - 0.06 * (shrink - 1), 0.37 - 0.08 * (shrink - 1))
    inner = _ellipsoid_sdf(frame.ap, frame.si, lr, frame.point(0.45, 0.58, 0.0), inner_semi)
    return _Cerebrum(lr, np.minimum(*hemispheres), inner)


def _subcortical_density(textures: _Textures) -> np.ndarray:
    """Grey matter of nuclei: mid density with blotches where nuclei abut."""
    return (_SUBCORTICAL_DENSITY + 0.1 * np.tanh(textures.nuclear)).astype(np.float32)


def _paint_cortex(
    painter: _Painter,
    frame: _BrainFrame,
    cerebrum: _Cerebrum,
    anatomy: Anatomy,
    textures: _Textures,
) -> None:
    """Layered cortical mantle over the whole hemisphere, then the sub-cortical interior.

    Relative depth runs from the pia (0) to the callosal surface (1) so the layers follow
    both, thinning where the mantle is thin, like real cortex.
    """
    depth = -cerebrum.hemisphere_sdf
    thickness = np.clip(depth + cerebrum.inner_sdf, 0.3, 1.8)
    relative_depth = np.clip(depth / thickness, 0, 1)
    layered = np.interp(relative_depth, _CORTEX_DEPTHS, _CORTEX_DENSITY).astype(np.float32)
    mean = float(np.mean(_CORTEX_DENSITY))
    cortex = mean + anatomy.cortical_layer_contrast * (layered - mean)
    painter.add(_inside(cerebrum.hemisphere_sdf, frame.voxel_mm), cortex)
    painter.paint(_inside(cerebrum.inner_sdf, frame.voxel_mm), _subcortical_density(textures))


def _paint_fissure(painter: _Painter, frame: _BrainFrame, cerebrum: _Cerebrum) -> None:
    """Dorsal midline gap between the hemispheres, down to the corpus callosum."""
    half_width = max(0.06, 0.45 * frame.voxel_mm)
    gap = _inside(np.abs(cerebrum.lr) - half_width, frame.voxel_mm)
    above_callosum = _smooth_step(cerebrum.inner_sdf, 0.0, 2 * frame.voxel_mm)
    _, floor_si, _ = frame.point(0, 0.55, 0)
    dorsal = 1 - _smooth_step(frame.si, floor_si, floor_si + frame.voxel_mm)
    painter.carve(gap * above_callosum * dorsal)


def _paint_white_matter(
    painter: _Painter, frame: _BrainFrame, cerebrum: _Cerebrum, anatomy: Anatomy
) -> None:
    """Corpus callosum and external capsule: a pale shell on the cortex's inner surface.

    It crosses the midline under the fissure (adding tissue there) and fades out ventrally.
    """
    shell = _inside(cerebrum.inner_sdf - anatomy.white_matter_mm, frame.voxel_mm) - _inside(
        cerebrum.inner_sdf, frame.voxel_mm
    )
    _, fade_si, _ = frame.point(0, 0.5, 0)
    dorsal = 1 - _smooth_step(frame.si, fade_si, fade_si + frame.span(0, 0.15, 0)[1])
    painter.add(np.clip(shell, 0, 1) * dorsal, _WHITE_MATTER_DENSITY)


def _paint_striatum_and_ventricles(
    painter: _Painter,
    frame: _BrainFrame,
    cerebrum: _Cerebrum,
    anatomy: Anatomy,
    textures: _Textures,
) -> None:
    """Mottled striatum (pale fibre bundles in grey matter) with a crescent ventricle medially."""
    scale = anatomy.striatum_scale
    semi = frame.span(0.14 * scale, 0.21 * scale, 0.13 * scale)
    for side in (-1, 1):
        center = frame.point(0.37, 0.52, side * 0.17)
        sdf = _ellipsoid_sdf(frame.ap, frame.si, cerebrum.lr, center, semi)
        bundles = np.where(textures.cellular > 1.2, 0.3, 0.72).astype(np.float32)
        painter.paint(_inside(sdf, frame.voxel_mm), bundles)
        medial = _smooth_step(-side * (cerebrum.lr - center[2]), 0.0, semi[2] * 0.3)
        dorsal = 1 - _smooth_step(frame.si, center[1], center[1] + semi[1] * 0.4)
        crescent = _inside(sdf - anatomy.ventricle_mm, frame.voxel_mm) - _inside(
            sdf, frame.voxel_mm
        )
        painter.paint(np.clip(crescent, 0, 1) * medial * dorsal, _VENTRICLE_DENSITY)


def _paint_diencephalon_and_midbrain(
    painter: _Painter, frame: _BrainFrame, anatomy: Anatomy, textures: _Textures
) -> None:
    """Thalamus, basal forebrain, hypothalamus, midbrain with colliculi, pons: the midline core.

    Thalamic nuclei get a blotchy texture; a thin third ventricle splits the core.
    """
    nuclei = (0.68 + 0.12 * np.tanh(textures.nuclear)).astype(np.float32)
    thalamus = _ellipsoid_sdf(
        frame.ap, frame.si, frame.lr, frame.point(0.58, 0.6, 0), frame.span(0.12, 0.2, 0.19)
    )
    painter.add(_inside(thalamus, frame.voxel_mm), nuclei)
    basal_forebrain = _ellipsoid_sdf(
        frame.ap, frame.si, frame.lr, frame.point(0.33, 0.7, 0), frame.span(0.14, 0.14, 0.17)
    )
    painter.add(_inside(basal_forebrain, frame.voxel_mm), 0.62)
    hypothalamus = _ellipsoid_sdf(
        frame.ap, frame.si, frame.lr, frame.point(0.52, 0.8, 0), frame.span(0.11, 0.14, 0.11)
    )
    painter.add(_inside(hypothalamus, frame.voxel_mm), 0.78)
    midbrain = _ellipsoid_sdf(
        frame.ap, frame.si, frame.lr, frame.point(0.68, 0.58, 0), frame.span(0.1, 0.27, 0.17)
    )
    painter.add(_inside(midbrain, frame.voxel_mm), 0.55)
    for t, s, value in ((0.68, 0.33, 0.75), (0.745, 0.37, 0.62)):  # superior, inferior colliculi
        for side in (-1, 1):
            colliculus = _ellipsoid_sdf(
                frame.ap,
                frame.si,
                frame.lr,
                frame.point(t, s, side * 0.06),
                frame.span(0.04, 0.09, 0.07),
            )
            painter.add(_inside(colliculus, frame.voxel_mm), value)
    pons = _ellipsoid_sdf(
        frame.ap,
        frame.si,
        frame.lr,
        frame.point(0.72, 0.86, 0),
        frame.span(0.07, 0.12, 0.14 * anatomy.brainstem_scale),
    )
    painter.add(_inside(pons, frame.voxel_mm), 0.5)
    third_ventricle = _ellipsoid_sdf(
        frame.ap,
        frame.si,
        frame.lr,
        frame.point(0.53, 0.74, 0),
        (*frame.span(0.05, 0.08, 0)[:2], 0.1),
    )
    painter.paint(_inside(third_ventricle, frame.voxel_mm), _VENTRICLE_DENSITY)


def _paint_hippocampus(
    painter: _Painter, frame: _BrainFrame, cerebrum: _Cerebrum, anatomy: Anatomy
) -> None:
    """Curved hippocampal sheet arching over the thalamus under the callosum.

    Within the sheet, relative depth gives two dense cell bands (pyramidal layer, dentate
    granule layer) separated by pale neuropil: the nested C shapes of real sections.
    """
    scale = anatomy.hippocampus_scale
    semi = frame.span(0.13 * scale, 0.26 * scale, 0.2 * scale)
    thickness = 0.35 * min(semi)
    under_callosum = _inside(cerebrum.inner_sdf + 0.5 * anatomy.white_matter_mm, frame.voxel_mm)
    for side in (-1, 1):
        center = frame.point(0.6, 0.62, side * 0.14)
        sdf = _ellipsoid_sdf(frame.ap, frame.si, cerebrum.lr, center, semi)
        relative_depth = np.clip(-sdf / thickness, 0, 1)
        layers = np.interp(
            relative_depth,
            (0.0, 0.15, 0.2, 0.3, 0.35, 0.62, 0.68, 0.8, 0.86, 1.0),
            (0.35, 0.35, 0.95, 0.95, 0.3, 0.3, 0.95, 0.95, 0.45, 0.45),
        ).astype(np.float32)
        sheet = _inside(sdf, frame.voxel_mm) - _inside(sdf + thickness, frame.voxel_mm)
        # Dorsal arch in front, curling down into the ventral hippocampus behind.
        dorsal = 1 - _smooth_step(frame.si, center[1], center[1] + 0.3 * semi[1])
        posterior = _smooth_step(frame.ap, center[0] - 0.1 * semi[0], center[0] + 0.2 * semi[0])
        extent = np.maximum(dorsal, posterior)
        painter.paint(np.clip(sheet, 0, 1) * extent * under_callosum, layers)


def _paint_olfactory_bulbs(
    painter: _Painter, frame: _BrainFrame, anatomy: Anatomy, textures: _Textures
) -> None:
    """Two concentric-layered ellipsoids at the front; glomeruli are blobs in their layer.

    The bulbs press against each other; each is kept to its own side of a thin midline gap.
    """
    scale = anatomy.olfactory_bulb_scale
    semi = frame.span(0.12 * scale, 0.25 * scale, 0.105 * scale)
    glomeruli = np.clip(0.6 + 0.35 * textures.nuclear, 0.3, 1.0)
    for side in (-1, 1):
        front, center_si, center_lr = frame.point(0, 0.57, side * 0.09)
        center = (front + semi[0], center_si, center_lr)
        radius = _ellipsoid_radius(frame.ap, frame.si, frame.lr, center, semi)
        layers = np.interp(radius, _BULB_RADII, _BULB_DENSITY).astype(np.float32)
        in_glomerular_layer = (radius > 0.8) & (radius < 0.9)
        layers = np.where(in_glomerular_layer, glomeruli, layers)
        sdf = _ellipsoid_sdf(frame.ap, frame.si, frame.lr, center, semi)
        own_side = _inside(0.4 * frame.voxel_mm - side * frame.lr, frame.voxel_mm)
        painter.add(_inside(sdf, frame.voxel_mm) * own_side, layers)


def _paint_cerebellum(
    painter: _Painter, frame: _BrainFrame, anatomy: Anatomy, textures: _Textures
) -> None:
    """Foliated cerebellum: lobules fan out from a white-matter hub (the arbor vitae).

    Each lobule has a pale white-matter centre, a dense granular layer around it and a pale
    molecular layer outside; fissures between lobules cut in from the surface. The fan
    angle is taken in the sagittal plane around a hub near the fourth ventricle, so coronal
    and horizontal cuts show stacked stripes; the hub bends back in the hemispheres and the
    folia wander a little (regional noise), as real ones do.
    """
    scale = anatomy.cerebellum_scale
    dorsal, ventral = frame.span(0, 0.28 * scale, 0)[1], frame.span(0, 0.36 * scale, 0)[1]
    center = frame.point(0.83, 0.42, 0)
    semi_ap, _, semi_lr = frame.span(0.115 * scale, 0, 0.33 * scale)
    semi = (semi_ap, np.where(frame.si > center[1], ventral, dorsal).astype(np.float32), semi_lr)
    envelope = _ellipsoid_sdf(frame.ap, frame.si, frame.lr, center, semi)
    # The hub sits at the front of the cerebellum (where the peduncles enter), so coronal
    # cuts behind it cross the lobules and show stripes; it bends back in the hemispheres.
    hub_ap, hub_si, _ = frame.point(0.745, 0.62, 0)
    lateral = (frame.lr / semi_lr) ** 2
    d_ap = frame.ap - (hub_ap + 0.3 * semi_ap * lateral)
    d_si = frame.si - (hub_si - 0.2 * dorsal * lateral)
    radius_mm = np.sqrt(d_ap * d_ap + d_si * d_si)
    pitch = 1.5 * math.pi / anatomy.cerebellar_lobules  # angle per lobule over a 270 degree fan
    wander = 0.3 * textures.regional
    phase = np.arctan2(d_si, d_ap) / pitch + wander + anatomy.cerebellar_phase
    lobule = np.floor(phase)
    offset = np.abs(phase - lobule - 0.5)  # 0 at a lobule's centre line, 0.5 on a fissure
    to_centre_mm = offset * pitch * radius_mm
    to_fissure_mm = (0.5 - offset) * pitch * radius_mm
    relative_radius = _ellipsoid_radius(frame.ap, frame.si, frame.lr, center, semi)
    fissure_start = 0.35 + 0.25 * (0.5 + 0.5 * np.cos(lobule * 2.4))  # deep and shallow fissures
    fissure = (to_fissure_mm < max(0.05, 0.35 * frame.voxel_mm)) & (relative_radius > fissure_start)
    molecular_mm = 0.12
    white = (to_centre_mm < 0.12 * np.clip(1.2 - relative_radius, 0, 1)) | (relative_radius < 0.25)
    granular = (to_fissure_mm > molecular_mm) & (-envelope > molecular_mm)
    folia = np.where(white, 0.22, np.where(granular, 1.0, 0.35)).astype(np.float32)
    inside = _inside(envelope, frame.voxel_mm)
    painter.add(inside, folia)
    painter.carve(fissure * inside)
    for side in (-1, 1):  # paraflocculi: lateral knobs of the cerebellar hemispheres
        knob = _ellipsoid_sdf(
            frame.ap,
            frame.si,
            frame.lr,
            frame.point(0.84, 0.6, side * 0.33),
            frame.span(0.05, 0.08, 0.05),
        )
        painter.add(_inside(knob, frame.voxel_mm), 0.85)


def _paint_brainstem(
    painter: _Painter, frame: _BrainFrame, anatomy: Anatomy, textures: _Textures
) -> None:
    """Medulla: an elliptical tube under the cerebellum that tapers towards the spinal cord."""
    start, end = frame.point(0.68, 0, 0)[0], frame.point(1.0, 0, 0)[0]
    along = np.clip((frame.ap - start) / (end - start), 0, 1)
    center_si = (
        frame.point(0, 0.74, 0)[1]
        + (frame.point(0, 0.64, 0)[1] - frame.point(0, 0.74, 0)[1]) * along
    )
    scale = anatomy.brainstem_scale
    semi_si = frame.span(0, 0.17, 0)[1] * (1 - 0.45 * along) * scale
    semi_lr = frame.span(0, 0, 0.2)[2] * (1 - 0.5 * along) * scale
    cross_section = np.sqrt(((frame.si - center_si) / semi_si) ** 2 + (frame.lr / semi_lr) ** 2)
    cross_sdf = (cross_section - 1) * np.minimum(semi_si, semi_lr)
    end_sdf = np.maximum(start - frame.ap, frame.ap - end)
    sdf = np.maximum(cross_sdf, end_sdf)
    nuclei = (0.55 + 0.1 * np.tanh(textures.nuclear)).astype(np.float32)
    painter.add(_inside(sdf, frame.voxel_mm), nuclei)


# ----------------------------------------------------------------------------------------
# Volume


def make_density_volume(anatomy: Anatomy, shape: tuple[int, int, int] = (80, 48, 68)) -> np.ndarray:
    """float32 array in [0, 1], axis order (AP, SI, LR) like the Allen files: vol[k] is a coronal slice
    (rows superior->inferior, cols left->right), vol[:, k] a horizontal slice (rows anterior->posterior),
    vol[:, :, k] a sagittal slice (rows anterior->posterior, cols superior->inferior).
    0 = outside the brain (background); tissue > 0 ('stain density' like a Nissl/cell-density map).

    The volume always spans VOLUME_EXTENT_MM; `shape` only sets the sampling density.
    """
    frame = _brain_frame(anatomy, shape)
    textures = _make_textures(anatomy, shape)
    painter = _Painter(shape)
    cerebrum = _cerebrum(frame, anatomy)
    _paint_cortex(painter, frame, cerebrum, anatomy, textures)
    _paint_striatum_and_ventricles(painter, frame, cerebrum, anatomy, textures)
    _paint_diencephalon_and_midbrain(painter, frame, anatomy, textures)
    _paint_hippocampus(painter, frame, cerebrum, anatomy)
    _paint_white_matter(painter, frame, cerebrum, anatomy)
    _paint_fissure(painter, frame, cerebrum)
    _paint_olfactory_bulbs(painter, frame, anatomy, textures)
    _paint_cerebellum(painter, frame, anatomy, textures)
    _paint_brainstem(painter, frame, anatomy, textures)
    return painter.result(textures, anatomy)
