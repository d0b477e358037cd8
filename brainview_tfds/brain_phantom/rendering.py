"""Randomized microscope renderings of phantom sections (the phantom's appearance).

The second half of the phantom (`anatomy.py` builds the brain): a specimen's
`Appearance` is how it was stained and imaged (bright-field stains,
fluorescence, MRI-like contrast, noise, blur, uneven illumination, dust), and
`render_section` turns a 2-D density slice into the RGB image a scanner would
record. Appearances vary far more than any one lab's, so a classifier cannot
rely on colour, contrast or noise to tell the planes apart.

Numpy only and deterministic given the random generator passed in.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from brainview_tfds.brain_phantom import anatomy

BRIGHT_FIELD = "bright-field"  # dark, tinted tissue on a light background (transmitted light)
DARK_FIELD = "dark-field"  # bright tissue on a dark background (fluorescence, MRI)


@dataclasses.dataclass(frozen=True)
class Appearance:
    """How one specimen was stained and imaged; shared by all its sections.

    Bright-field images follow Beer-Lambert absorption (`tint_rgb` is the optical density
    per channel at full stain), dark-field ones are emissive (`tint_rgb` is the emitted
    colour at full stain). Intensities are in [0, 1] before conversion to uint8.
    """

    polarity: str  # BRIGHT_FIELD or DARK_FIELD
    stain: str  # human-readable name of the simulated modality, e.g. "nissl", "gfp", "mri"
    tint_rgb: tuple[float, float, float]
    background_rgb: tuple[float, float, float]
    invert_tissue_contrast: bool  # cell-poor tissue strongest (myelin stains, some MRI)
    tissue_floor: float  # stain of the palest tissue, so tissue never vanishes into background
    contrast_gain: float
    gamma: float
    stain_unevenness: float  # amplitude of smooth multiplicative stain variation
    illumination_gradient: float  # linear brightness ramp across the field, relative
    gradient_angle_rad: float
    vignetting: float  # relative darkening towards the corners
    noise_sigma: float  # additive per-pixel Gaussian noise
    speckle_sigma: float  # multiplicative per-pixel noise
    blotch_sigma: float  # multiplicative noise a few pixels wide (uneven section thickness)
    blur_sigma_px: float  # optical blur; 0 disables it
    dust_rate: float  # expected number of dust specks / debris per section

    def describe(self) -> str:
        """Short label for dataset metadata, e.g. 'bright-field nissl' or 'dark-field mri, inverted'."""
        inverted = ", inverted" if self.invert_tissue_contrast else ""
        return f"{self.polarity} {self.stain}{inverted}"


@dataclasses.dataclass(frozen=True)
class _Stain:
    """A family of real-world looks that `sample_appearance` jitters around."""

    name: str
    polarity: str
    tint_rgb: tuple[float, float, float]
    weight: float  # relative frequency within its polarity
    invert_probability: float = 0.0


# Bright-field tints are optical densities (absorbance per channel): cresyl violet absorbs
# green most (purple), DAB absorbs blue (brown), eosin green (pink). Dark-field tints are
# emission colours.
_STAINS = (
    _Stain("nissl", BRIGHT_FIELD, (1.0, 1.3, 0.45), 4.0),
    _Stain("thionin", BRIGHT_FIELD, (1.3, 1.0, 0.35), 1.5),
    _Stain("dab", BRIGHT_FIELD, (0.5, 0.9, 1.5), 2.0),
    _Stain("h&e", BRIGHT_FIELD, (0.5, 1.1, 0.45), 1.0),
    _Stain("gray brightfield", BRIGHT_FIELD, (1.0, 1.0, 1.0), 1.0),
    _Stain("myelin", BRIGHT_FIELD, (1.0, 1.05, 1.1), 0.5, invert_probability=1.0),
    _Stain("autofluorescence", DARK_FIELD, (1.0, 1.0, 1.0), 2.5),
    _Stain("green fluorescence", DARK_FIELD, (0.25, 1.0, 0.3), 1.5),
    _Stain("red fluorescence", DARK_FIELD, (1.0, 0.25, 0.2), 1.0),
    _Stain("blue fluorescence", DARK_FIELD, (0.3, 0.5, 1.0), 1.0),
    _Stain("mri", DARK_FIELD, (1.0, 1.0, 1.0), 1.5, invert_probability=0.5),
)


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """Draws a stain/imaging look: half bright-field, half dark-field, all knobs jittered.

    Ranges are deliberately wider than any single lab's: the point is that a classifier
    must not be able to rely on colour, contrast or noise to tell the planes apart.
    """
    polarity = BRIGHT_FIELD if rng.random() < 0.5 else DARK_FIELD
    stains = [stain for stain in _STAINS if stain.polarity == polarity]
    weights = np.array([stain.weight for stain in stains])
    stain = stains[rng.choice(len(stains), p=weights / weights.sum())]
    strength = rng.uniform(0.6, 1.8) if polarity == BRIGHT_FIELD else rng.uniform(0.6, 1.2)
    tint = np.array(stain.tint_rgb) * rng.uniform(0.8, 1.2, 3) * strength
    return Appearance(
        polarity=polarity,
        stain=stain.name,
        tint_rgb=anatomy.as_floats(tint),
        background_rgb=_sample_background(polarity, rng),
        invert_tissue_contrast=bool(rng.random() < stain.invert_probability),
        tissue_floor=float(rng.uniform(0.1, 0.35)),
        contrast_gain=float(rng.uniform(0.6, 1.1)),
        gamma=float(rng.uniform(0.6, 1.6)),
        stain_unevenness=float(rng.uniform(0.0, 0.15)),
        illumination_gradient=float(rng.uniform(0.0, 0.15)),
        gradient_angle_rad=float(rng.uniform(0, 2 * math.pi)),
        vignetting=float(rng.uniform(0.0, 0.2)),
        # Cubed uniforms: mostly clean images (real scanners add 1-3 gray levels of
        # noise), with a tail of poor ones; training adds more noise as augmentation.
        noise_sigma=float(0.04 * rng.random() ** 3),
        speckle_sigma=float(0.06 * rng.random() ** 3),
        blotch_sigma=float(0.06 * rng.random() ** 3),
        blur_sigma_px=float(2.0 * rng.random() ** 2),
        dust_rate=float(rng.choice([0.0, 0.0, 1.0, 4.0])),
    )


def _sample_background(polarity: str, rng: np.random.Generator) -> tuple[float, float, float]:
    """Slightly warm or cool white glass for bright-field; near black for dark-field."""
    if polarity == BRIGHT_FIELD:
        return anatomy.as_floats(
            np.clip(rng.uniform(0.8, 0.98) + rng.uniform(-0.04, 0.04, 3), 0, 1)
        )
    return anatomy.as_floats(np.clip(rng.uniform(0.0, 0.1) + rng.uniform(-0.02, 0.02, 3), 0, 1))


def render_section(
    density: np.ndarray, appearance: Appearance, rng: np.random.Generator
) -> np.ndarray:
    """2-D density slice (HxW float32 in [0,1]) -> HxWx3 uint8 image as a microscope/scanner would record it.

    Order follows the physics: stain uptake (contrast curve, uneven staining), optics (blur),
    light transport (absorption or emission, illumination field), then the sensor (noise)
    and dirt on the slide. `rng` only draws this section's noise and dust.
    """
    height, width = density.shape
    stain = _stain_amount(density, appearance)
    stain *= 1 + appearance.stain_unevenness * anatomy.smooth_noise(
        rng, (height, width), (12.0, 12.0)
    )
    stain = _gaussian_blur(np.clip(stain, 0, None), appearance.blur_sigma_px)
    tint = np.array(appearance.tint_rgb, np.float32)
    background = np.array(appearance.background_rgb, np.float32)
    if appearance.polarity == BRIGHT_FIELD:
        image = background * np.exp(-stain[..., None] * tint)
    else:
        image = background + stain[..., None] * tint
    image *= _illumination(height, width, appearance)[..., None]
    image = _add_sensor_noise(image, appearance, rng)
    image = _add_dust(image, appearance, rng)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _stain_amount(density: np.ndarray, appearance: Appearance) -> np.ndarray:
    """Density -> amount of stain (0 off the section), through a contrast curve.

    Every bit of tissue takes up at least `tissue_floor`, so the section outline stays
    visible even when the contrast is inverted (cell-poor tissue stained strongest).
    """
    density = np.clip(density.astype(np.float32), 0, 1)
    section = np.clip(density / anatomy.MIN_TISSUE_DENSITY, 0, 1)
    signal = 1 - density if appearance.invert_tissue_contrast else density
    curve = appearance.contrast_gain * signal**appearance.gamma
    return section * (appearance.tissue_floor + (1 - appearance.tissue_floor) * curve)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding; sigma below ~0.3 px changes nothing visible."""
    if sigma < 0.3:
        return image
    radius = math.ceil(3 * sigma)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(image, pad, mode="edge")
        size = image.shape[axis]
        image = sum(
            tap * np.take(padded, np.arange(offset, offset + size), axis=axis)
            for offset, tap in enumerate(taps)
        )
    return image


def _illumination(height: int, width: int, appearance: Appearance) -> np.ndarray:
    """Relative brightness of the light field: a linear ramp times corner vignetting."""
    rows = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    cols = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    angle = appearance.gradient_angle_rad
    ramp = 1 + appearance.illumination_gradient * (math.cos(angle) * cols + math.sin(angle) * rows)
    return ramp * (1 - appearance.vignetting * 0.5 * (rows * rows + cols * cols))


def _add_sensor_noise(
    image: np.ndarray, appearance: Appearance, rng: np.random.Generator
) -> np.ndarray:
    """Multiplicative noise at pixel and few-pixel scales plus additive read noise."""
    height, width, _ = image.shape
    pixel = appearance.speckle_sigma * rng.standard_normal((height, width, 1), dtype=np.float32)
    blotches = appearance.blotch_sigma * anatomy.smooth_noise(rng, (height, width), (3.0, 3.0))
    image = image * (1 + pixel + blotches[..., None])
    return image + appearance.noise_sigma * rng.standard_normal(image.shape, dtype=np.float32)


def _add_dust(image: np.ndarray, appearance: Appearance, rng: np.random.Generator) -> np.ndarray:
    """Small opaque specks (bright-field) or glowing debris (dark-field), Poisson in number."""
    count = rng.poisson(appearance.dust_rate)
    if count == 0:
        return image
    height, width, _ = image.shape
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]
    speck_value = 0.1 if appearance.polarity == BRIGHT_FIELD else 0.9
    for _ in range(count):
        row, col = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.4, 1.8)
        distance = np.sqrt((rows - row) ** 2 + (cols - col) ** 2)
        cover = np.clip(radius + 0.5 - distance, 0, 1)[..., None]
        image = image + cover * (speck_value * rng.uniform(0.5, 1.0) - image)
    return image
