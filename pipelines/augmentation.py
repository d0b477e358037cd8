"""Training-time augmentation aimed at the real shifts between labs.

The plane of a section does not depend on how it was stained, imaged, mounted
or cut out, so each augmentation below randomizes one of those nuisances:

  hemisect   cut a quarter of the sections at their midline, one half kept
             (hemisections, see hemisection.py)
  polarity   invert the raw image (bright-field <-> dark-field)
  stain      hue rotation, saturation and channel mixing, or plain gray
  rotate     any in-plane angle (slides are mounted at any rotation)
  flip       mirror images (left/right, and with rotation every mirror)
  partial    hemisections and missing pieces (torn or half sections)
  zoom       loose or tight framing, off-centre tissue
  resolution coarse sampling (200 um slices) up to fine
  tone       gamma, contrast, random tone curves, inverted tissue contrast
             (Nissl density vs. autofluorescence vs. MRI contrast)
  blur_noise blur and noise at several scales, background haze

`RandomAugmenter` plugs them into the one preprocessing function
(`preprocessing.preprocess`, through its `Augmenter` hooks) at the stage where
each nuisance arises: on the raw image (polarity, stain), on the normalized
tissue signal (rotate, partial, resolution), after the alignment (the
alignment's rotation jitter, flip), in the framing (zoom), and on the framed
signal (tone, blur_noise). With no augmentation the path is exactly the
inference path.

`remount` is the evaluation-time counterpart: the raw scan turned and maybe
mirrored as if mounted anew, to test robustness to how slides are mounted.

Randomness is stateless: each example carries its own seed, so a run with
`--deterministic` is reproducible.
"""

from __future__ import annotations

import math

import tensorflow as tf

from brainview import hemisection, preprocessing

# With mode "aligned", sections are rotated onto their principal axis after
# any random rotation; this jitter covers the axis estimate's uncertainty.
ALIGNED_JITTER = math.radians(12)

# Each augmentation's seed is split from the example's seed by its position here; new
# ones go last so that the others' draws stay what they were.
AUGMENTATIONS = (
    "polarity",
    "stain",
    "rotate",
    "flip",
    "partial",
    "zoom",
    "resolution",
    "tone",
    "blur_noise",
    "hemisect",
)
# Named sets for flagfiles. "none" is the original study's recipe; "robust" the
# default, the groups that raised cross-dataset macro-F1 in the README's
# ablation (flips and the appearance group). "geometry" (rotation jitter on top
# of the alignment, and zoom), "partial" and "degrade" lowered or did not move
# it at the budget measured, so they stay available but off by default.
RECIPES = {
    "none": (),
    "robust": ("polarity", "stain", "flip", "tone"),
    "all": AUGMENTATIONS,
    "geometry": ("rotate", "flip", "zoom"),
    "appearance": ("polarity", "stain", "tone"),
    "degrade": ("resolution", "blur_noise"),
}


def parse_augmentations(spec: str) -> tuple[str, ...]:
    """'robust', 'none', 'rotate,flip', 'robust-partial-tone' -> augmentation names.

    A recipe name may be followed by '-name' to drop augmentations (ablation)
    or '+name' to add them.
    """
    names: list[str] = []
    for token in _tokens(spec):
        sign, expanded = token[0], RECIPES.get(token[1:], (token[1:],))
        unknown = sorted(set(expanded) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(
                f"unknown augmentation(s) {unknown}; choose from recipes {sorted(RECIPES)} "
                f"or {list(AUGMENTATIONS)}"
            )
        if sign == "-":
            names = [name for name in names if name not in expanded]
        else:
            names.extend(name for name in expanded if name not in names)
    return tuple(name for name in AUGMENTATIONS if name in names)


def _tokens(spec: str) -> list[str]:
    tokens, current = [], "+"
    for part in spec.replace(",", "+").replace(" ", ""):
        if part in "+-":
            if current[1:]:
                tokens.append(current)
            current = part
        else:
            current += part
    if current[1:]:
        tokens.append(current)
    return tokens


def _uniform(seed: tf.Tensor, low: float, high: float, shape=()) -> tf.Tensor:
    return tf.random.stateless_uniform(shape, seed, low, high)


def _chance(seed: tf.Tensor, probability: float) -> tf.Tensor:
    return tf.random.stateless_uniform((), seed) < probability


# -- raw image (uint8 HxWx3) ---------------------------------------------------


HEMISECTION_PROBABILITY = 0.25


def random_hemisection(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    return tf.cond(
        _chance(seeds[0], HEMISECTION_PROBABILITY),
        lambda: hemisection.random_hemisection(image, seeds[1]),
        lambda: image,
    )


def invert_polarity(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.cond(_chance(seed, 0.5), lambda: 255 - image, lambda: image)


def jitter_stain(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random hue/saturation/channel mix; 20% of images become gray."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    rgb = tf.cast(image, tf.float32) / 255.0
    mix = tf.eye(3) + _uniform(seeds[0], -0.25, 0.25, (3, 3))
    rgb = tf.clip_by_value(tf.reshape(tf.reshape(rgb, [-1, 3]) @ mix, tf.shape(rgb)), 0.0, 1.0)
    rgb = tf.image.stateless_random_hue(rgb, 0.5, seeds[1])
    rgb = tf.image.stateless_random_saturation(rgb, 0.3, 1.7, seeds[2])
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(rgb))
    rgb = tf.where(_chance(seeds[3], 0.2), gray, rgb)
    return tf.cast(tf.round(tf.clip_by_value(rgb, 0.0, 1.0) * 255.0), tf.uint8)


# -- tissue signal (float32 HxW, 0 = background) --------------------------------


def random_rotate(signal: tf.Tensor, seed: tf.Tensor, max_angle: float = math.pi) -> tf.Tensor:
    return preprocessing.rotate(signal, _uniform(seed, -max_angle, max_angle))


def random_flip(signal: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    seeds = tf.random.experimental.stateless_split(seed, 2)
    signal = tf.cond(_chance(seeds[0], 0.5), lambda: signal[:, ::-1], lambda: signal)
    return tf.cond(_chance(seeds[1], 0.5), lambda: signal[::-1, :], lambda: signal)


def cut_partial(signal: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """30% of the time, one of: a hemisection (a half-plane through the tissue
    removed) or up to three missing pieces (elliptical holes at the edge)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    height, width = tf.shape(signal)[0], tf.shape(signal)[1]
    box = preprocessing.tissue_box(signal)
    ys = tf.cast(tf.range(height), tf.float32)[:, None]
    xs = tf.cast(tf.range(width), tf.float32)[None, :]
    cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    size = tf.maximum(box[2] - box[0], box[3] - box[1])

    def hemisection() -> tf.Tensor:
        angle = _uniform(seeds[1], 0.0, 2 * math.pi)
        offset = _uniform(seeds[2], -0.1, 0.1) * size
        keep = (ys - cy) * tf.cos(angle) + (xs - cx) * tf.sin(angle) > offset
        return signal * tf.cast(keep, tf.float32)

    def missing_pieces() -> tf.Tensor:
        params = _uniform(seeds[2], 0.0, 1.0, (3, 4))
        keep = tf.ones_like(signal)
        for i in range(3):
            angle = params[i, 0] * 2 * math.pi
            radius = (0.1 + 0.25 * params[i, 1]) * size
            hole_y = cy + 0.5 * size * tf.sin(angle)
            hole_x = cx + 0.5 * size * tf.cos(angle)
            inside = ((ys - hole_y) ** 2 + (xs - hole_x) ** 2) < radius**2
            keep *= tf.where(inside & (params[i, 2] < 0.7), 0.0, 1.0)
        return signal * keep

    choice = _uniform(seeds[3], 0.0, 1.0)
    return tf.case(
        [(choice < 0.15, hemisection), (choice < 0.3, missing_pieces)],
        default=lambda: signal,
    )


def coarsen_resolution(signal: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Resamples the tissue to 24..96 px on its longer side and back, sometimes."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    shape = tf.cast(tf.shape(signal), tf.float32)
    target = _uniform(seeds[0], 24.0, 96.0)
    factor = tf.minimum(1.0, target / tf.reduce_max(shape))
    small = tf.cast(tf.maximum(tf.round(shape * factor), 2.0), tf.int32)

    def coarsen() -> tf.Tensor:
        resized = tf.image.resize(signal[..., None], small, antialias=True)
        return tf.image.resize(resized, tf.shape(signal), method="bilinear")[..., 0]

    return tf.cond(_chance(seeds[1], 0.3), coarsen, lambda: signal)


def jittered_frame(signal: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The inference frame, scaled by 0.85..1.3 and shifted by up to 8%."""
    params = _uniform(seed, 0.0, 1.0, (3,))
    frame = preprocessing.square_frame(preprocessing.tissue_box(signal))
    side = frame[2] - frame[0]
    scale = 0.85 + 0.45 * params[0]
    shift = (params[1:] - 0.5) * 0.16 * side
    cy = (frame[0] + frame[2]) / 2 + shift[0]
    cx = (frame[1] + frame[3]) / 2 + shift[1]
    half = side * scale / 2
    return tf.stack([cy - half, cx - half, cy + half, cx + half])


# -- framed signal (float32 SxS in 0..1) -----------------------------------------


def random_tone(signal: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Gamma and contrast; sometimes a random tone curve or inverted tissue contrast.

    The background (0) stays 0 in all of them, so the silhouette is kept.
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    tissue = tf.cast(signal > preprocessing.TISSUE_THRESHOLD, tf.float32)
    gamma = tf.exp(_uniform(seeds[0], math.log(0.5), math.log(2.0)))
    toned = tf.pow(signal, gamma)
    # A random monotone-or-not 4-knot tone curve inside the tissue.
    knots = _uniform(seeds[1], 0.15, 1.0, (4,))
    position = toned * 3.0
    lower = tf.cast(tf.clip_by_value(tf.floor(position), 0, 2), tf.int32)
    weight = position - tf.cast(lower, tf.float32)
    curved = tf.gather(knots, lower) * (1 - weight) + tf.gather(knots, lower + 1) * weight
    toned = tf.where(_chance(seeds[2], 0.25), tissue * curved + (1 - tissue) * toned, toned)
    inverted = tissue * (1.0 - toned) * 0.85 + 0.15 * tissue
    toned = tf.where(_chance(seeds[3], 0.2), inverted, toned)
    contrast = _uniform(seeds[4], 0.7, 1.0)
    return tf.clip_by_value(toned * contrast, 0.0, 1.0)


def gaussian_blur(signal: tf.Tensor, sigma: tf.Tensor, radius: int = 4) -> tf.Tensor:
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(taps**2) / (2.0 * tf.maximum(sigma, 1e-3) ** 2))
    kernel /= tf.reduce_sum(kernel)
    image = signal[None, :, :, None]
    image = tf.nn.conv2d(image, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "SAME")
    image = tf.nn.conv2d(image, tf.reshape(kernel, [1, -1, 1, 1]), 1, "SAME")
    return image[0, :, :, 0]


def blur_and_noise(signal: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Blur (sigma 0..1.5 px), pixel noise, coarse noise and background haze."""
    seeds = tf.random.experimental.stateless_split(seed, 7)
    size = tf.shape(signal)
    sigma = _uniform(seeds[0], 0.0, 1.5)
    signal = tf.cond(_chance(seeds[1], 0.5), lambda: gaussian_blur(signal, sigma), lambda: signal)
    fine = tf.random.stateless_normal(size, seeds[2]) * _uniform(seeds[3], 0.0, 0.05)
    coarse_grid = tf.random.stateless_normal([8, 8, 1], seeds[4])
    coarse = tf.image.resize(coarse_grid, size, method="bicubic")[..., 0]
    coarse *= _uniform(seeds[5], 0.0, 0.04)
    haze = tf.where(_chance(seeds[6], 0.2), 0.1 * tf.abs(coarse_grid[0, 0, 0]), 0.0)
    return tf.clip_by_value(signal + fine + coarse + haze, 0.0, 1.0)


# -- the training path ----------------------------------------------------------


class RandomAugmenter(preprocessing.Augmenter):
    """The named augmentations, as hooks of `preprocessing.preprocess`.

    `preprocess(image, size, mode, mean_intensity=..., augmenter=RandomAugmenter(
    names, seed))` is the training input; with `names=()` it is exactly the
    inference input. Every augmentation draws from its own seed, split from
    `seed` (shape [2]), so adding one leaves the others' draws unchanged.
    """

    def __init__(self, augmentations: tuple[str, ...], seed: tf.Tensor):
        unknown = sorted(set(augmentations) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {AUGMENTATIONS}")
        self.augmentations = frozenset(augmentations)
        seeds = tf.random.experimental.stateless_split(seed, len(AUGMENTATIONS))
        self.seeds = dict(zip(AUGMENTATIONS, tf.unstack(seeds), strict=True))

    def _uses(self, name: str) -> bool:
        return name in self.augmentations

    def raw_image(self, image: tf.Tensor) -> tf.Tensor:
        if self._uses("hemisect"):
            image = random_hemisection(image, self.seeds["hemisect"])
        if self._uses("polarity"):
            image = invert_polarity(image, self.seeds["polarity"])
        if self._uses("stain"):
            image = jitter_stain(image, self.seeds["stain"])
        return image

    def plain_input(self, model_input: tf.Tensor) -> tf.Tensor:
        # The original study's look: geometry only, on the RGB image.
        if self._uses("flip"):
            model_input = tf.image.stateless_random_flip_left_right(model_input, self.seeds["flip"])
        return model_input

    def tissue_signal(self, signal: tf.Tensor) -> tf.Tensor:
        if self._uses("partial"):
            signal = cut_partial(signal, self.seeds["partial"])
        if self._uses("resolution"):
            signal = coarsen_resolution(signal, self.seeds["resolution"])
        if self._uses("rotate"):
            signal = random_rotate(signal, self.seeds["rotate"])
        return signal

    def oriented_signal(self, signal: tf.Tensor, aligned: bool) -> tf.Tensor:
        if aligned and self._uses("rotate"):  # the alignment's own uncertainty
            signal = random_rotate(signal, self.seeds["rotate"], ALIGNED_JITTER)
        if self._uses("flip"):
            signal = random_flip(signal, self.seeds["flip"])
        return signal

    def frame_box(self, signal: tf.Tensor) -> tf.Tensor:
        if self._uses("zoom"):
            return jittered_frame(signal, self.seeds["zoom"])
        return super().frame_box(signal)

    def framed_signal(self, framed: tf.Tensor) -> tf.Tensor:
        if self._uses("tone"):
            framed = random_tone(framed, self.seeds["tone"])
        if self._uses("blur_noise"):
            framed = blur_and_noise(framed, self.seeds["blur_noise"])
        return framed


# -- evaluation: remounted scans --------------------------------------------------


def remount(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The raw scan turned by a random angle and maybe mirrored, as if mounted anew.

    The canvas grows to fit; new corners repeat the border (the background).
    """
    seeds = tf.random.experimental.stateless_split(seed, 2)
    angle = tf.random.stateless_uniform((), seeds[0], 0.0, 2 * math.pi)
    turned = preprocessing.rotate(tf.cast(image, tf.float32), angle, fill_mode="NEAREST")
    turned = tf.cast(tf.round(tf.clip_by_value(turned, 0.0, 255.0)), tf.uint8)
    mirror = tf.random.stateless_uniform((), seeds[1]) < 0.5
    return tf.cond(mirror, lambda: turned[:, ::-1], lambda: turned)
