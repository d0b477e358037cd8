"""Training-time augmentation: its recipe syntax, determinism, and that each augmentation
randomizes only its nuisance (shape, dtype, range and a black background are kept)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from brainview import augmentation, image_files, preprocessing

SIZE = 32


def section_image(height=80, width=120):
    """A noise-free dark-field section (background exactly black), left/right and
    up/down asymmetric so that flips are visible."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = (ys - height * 0.5) / (height * 0.3), (xs - width * 0.5) / (width * 0.36)
    body = u**2 + v**2 < 1
    lobe = (u - 0.5) ** 2 + (v - 0.9) ** 2 < 0.3**2
    density = np.where(body | lobe, 0.45 + 0.5 * (0.5 + 0.5 * np.cos(4 * u + 1) * np.cos(3 * v)), 0)
    gray = np.round(10 + 200 * density).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


IMAGE = tf.constant(section_image())
# The same section in colour (stain and plain mode work on RGB).
COLOUR_IMAGE = tf.constant((section_image() * np.array([1.0, 0.5, 0.8])).astype(np.uint8))


def seed(a, b=7):
    return tf.constant([a, b], tf.int64)


def augmented(augmentations, seed_value, mode="section", image=IMAGE, size=SIZE):
    """The training input: the one preprocessing function with augmentation hooks."""
    return preprocessing.preprocess(
        image,
        size,
        mode,
        mean_intensity=image_files.mean_gray(image.numpy()),
        augmenter=augmentation.RandomAugmenter(tuple(augmentations), seed_value),
    ).model_input.numpy()


def framed_signal_of(image=IMAGE, size=SIZE):
    """The normalized signal framed as the model sees it (no augmentation)."""
    signal = signal_of(image)
    box = preprocessing.square_frame(preprocessing.tissue_box(signal))
    return preprocessing.crop_to_frame(signal, box, size)


def signal_of(image=IMAGE):
    return preprocessing.normalize_section(image)


# -- parse_augmentations ---------------------------------------------------------------


def test_recipes_expand_to_their_augmentations():
    assert augmentation.parse_augmentations("none") == ()
    assert augmentation.parse_augmentations("") == ()
    assert augmentation.parse_augmentations("all") == augmentation.AUGMENTATIONS
    assert augmentation.parse_augmentations("robust") == ("polarity", "stain", "flip", "tone")
    assert augmentation.parse_augmentations("appearance+degrade") == (
        "polarity",
        "stain",
        "resolution",
        "tone",
        "blur_noise",
    )
    assert augmentation.parse_augmentations("geometry") == ("rotate", "flip", "zoom")


def test_minus_drops_and_plus_adds_augmentations():
    """'-name' ablates from a recipe, '+name' adds; the result is in canonical order."""
    assert augmentation.parse_augmentations("all-partial-tone") == (
        "polarity",
        "stain",
        "rotate",
        "flip",
        "zoom",
        "resolution",
        "blur_noise",
        "hemisect",
    )
    assert augmentation.parse_augmentations("geometry+tone-zoom") == ("rotate", "flip", "tone")
    assert augmentation.parse_augmentations("none+rotate") == ("rotate",)
    assert augmentation.parse_augmentations("all-geometry") == (
        "polarity",
        "stain",
        "partial",
        "resolution",
        "tone",
        "blur_noise",
        "hemisect",
    )
    # Commas add, spaces are ignored, order and repeats do not matter.
    assert augmentation.parse_augmentations("flip, rotate,flip") == ("rotate", "flip")
    assert augmentation.parse_augmentations(" all - tone ") == tuple(
        name for name in augmentation.AUGMENTATIONS if name != "tone"
    )


@pytest.mark.parametrize("spec", ["rotate,sharpen", "robust-sharpen", "fancy", "geometry+Zoom"])
def test_unknown_augmentation_names_raise(spec):
    with pytest.raises(ValueError, match="unknown augmentation"):
        augmentation.parse_augmentations(spec)


# -- the training path ------------------------------------------------------------------


@pytest.mark.parametrize("mode", preprocessing.PREPROCESSING_MODES)
def test_without_augmentation_training_input_is_exactly_the_inference_input(mode):
    """No train/serve skew: with no augmentation the training path is the inference path."""
    expected = preprocessing.preprocess(
        IMAGE, SIZE, mode, mean_intensity=image_files.mean_gray(IMAGE.numpy())
    ).model_input
    for seed_value in (seed(0), seed(123, 9)):
        np.testing.assert_array_equal(augmented((), seed_value, mode), expected.numpy())


def test_same_seed_gives_identical_output_and_different_seeds_differ():
    """Stateless randomness: a --deterministic run is reproducible, examples still vary."""
    robust = augmentation.AUGMENTATIONS
    first = augmented(robust, seed(5))
    np.testing.assert_array_equal(first, augmented(robust, seed(5)))
    others = [augmented(robust, seed(s)) for s in (6, 7, 8)]
    for other in others:
        assert np.abs(first - other).mean() > 1.0


KEEP_BLACK_CORNERS = ("polarity", "stain", "rotate", "flip", "partial", "resolution", "tone")


@pytest.mark.parametrize("name", augmentation.AUGMENTATIONS)
def test_each_augmentation_keeps_shape_dtype_range_and_gray_channels(name):
    for s in range(4):
        output = augmented((name,), seed(s))
        assert output.shape == (SIZE, SIZE, 3) and output.dtype == np.float32
        assert output.min() >= 0.0 and output.max() <= 255.0
        assert output.max() > 100.0  # the section is still there
        np.testing.assert_array_equal(output[..., 0], output[..., 1])
        np.testing.assert_array_equal(output[..., 0], output[..., 2])
        if name in KEEP_BLACK_CORNERS:
            # The frame's corners lie outside the (elliptical) tissue: background stays black.
            corners = output[[0, 0, -1, -1], [0, -1, 0, -1], 0]
            np.testing.assert_array_equal(corners, 0.0)


def test_plain_mode_augmentation_stays_rgb_and_in_range():
    for s in range(3):
        output = augmented(augmentation.AUGMENTATIONS, seed(s), mode="plain", image=COLOUR_IMAGE)
        assert output.shape == (SIZE, SIZE, 3) and output.dtype == np.float32
        assert output.min() >= 0.0 and output.max() <= 255.0


# -- individual augmentations -------------------------------------------------------------


def test_polarity_inversion_is_undone_by_normalization():
    """Inverting the raw image (bright-field <-> dark-field) barely changes the model input."""
    reference = augmented((), seed(0))
    inverted_any = False
    for s in range(6):
        raw = augmentation.invert_polarity(IMAGE, seed(s)).numpy()
        inverted_any |= bool(np.array_equal(raw, 255 - IMAGE.numpy()))
        assert np.abs(augmented(("polarity",), seed(s)) - reference).mean() < 0.02 * 255
    assert inverted_any


def test_flips_are_exact_mirror_images_and_all_four_occur():
    signal = signal_of()
    base = signal.numpy()
    expected = {
        base[:, ::-1].tobytes(),
        base[::-1, :].tobytes(),
        base[::-1, ::-1].tobytes(),
        base.tobytes(),
    }
    seen = set()
    for s in range(24):
        flipped = augmentation.random_flip(signal, seed(s)).numpy()
        assert flipped.tobytes() in expected
        seen.add(flipped.tobytes())
    assert seen == expected, f"only {len(seen)} of 4 mirror images in 24 draws"


def test_rotation_by_a_quarter_turn_is_rot90_of_the_signal():
    """Positive angles turn clockwise on screen (y down); a quarter turn needs no
    resampling and a canvas of exactly the transposed size."""
    signal = np.random.default_rng(0).uniform(0, 1, (40, 60)).astype(np.float32)
    quarter = preprocessing.rotate(tf.constant(signal), tf.constant(math.pi / 2)).numpy()
    assert quarter.shape == (60, 40)
    np.testing.assert_allclose(quarter, np.rot90(signal, k=-1), atol=1e-4)
    half = preprocessing.rotate(tf.constant(signal), tf.constant(math.pi)).numpy()
    assert half.shape == (40, 60)
    np.testing.assert_allclose(half, np.rot90(signal, k=2), atol=1e-4)


def test_rotation_by_45_degrees_grows_the_canvas_and_keeps_the_tissue():
    signal = signal_of()
    height, width = signal.shape
    rotated = preprocessing.rotate(signal, tf.constant(math.pi / 4)).numpy()
    side = math.ceil((height + width) / math.sqrt(2))
    assert rotated.shape == (side, side)
    # Nothing is cut off: the tissue's total signal survives the (bilinear) resampling.
    assert rotated.sum() == pytest.approx(float(tf.reduce_sum(signal)), rel=0.02)
    np.testing.assert_array_equal(rotated[[0, 0, -1, -1], [0, -1, 0, -1]], 0.0)


def test_random_rotation_varies_and_keeps_zero_corners():
    signal = signal_of()
    shapes = set()
    for s in range(6):
        rotated = augmentation.random_rotate(signal, seed(s)).numpy()
        shapes.add(rotated.shape)
        assert rotated.min() >= 0.0 and rotated.max() <= 1.0 + 1e-6
        np.testing.assert_array_equal(rotated[[0, 0, -1, -1], [0, -1, 0, -1]], 0.0)
    assert len(shapes) > 1  # different angles, different canvases


def test_partial_sections_only_remove_tissue():
    """Hemisections and missing pieces cut tissue away; they never add signal."""
    signal = signal_of()
    total = float(tf.reduce_sum(signal))
    removed = []
    for s in range(40):
        cut = augmentation.cut_partial(signal, seed(s)).numpy()
        assert cut.shape == signal.shape
        assert np.all(cut <= signal.numpy())
        assert np.all((cut == 0) | (cut == signal.numpy()))  # a mask, not a new texture
        removed.append(1 - cut.sum() / total)
    removed = np.array(removed)
    # Applied to about 30% of examples: some are cut substantially, most are untouched.
    assert (removed > 0.1).sum() >= 3
    assert (removed == 0).sum() >= 20


def test_zoom_jitters_the_frame_within_its_documented_bounds():
    signal = signal_of()
    box = preprocessing.square_frame(preprocessing.tissue_box(signal)).numpy()
    side = box[2] - box[0]
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    scales = []
    for s in range(20):
        frame = augmentation.jittered_frame(signal, seed(s)).numpy()
        frame_side = frame[2] - frame[0]
        assert frame_side == pytest.approx(frame[3] - frame[1], rel=1e-5)  # still square
        scales.append(frame_side / side)
        shift = np.array([(frame[0] + frame[2]) / 2, (frame[1] + frame[3]) / 2]) - centre
        assert np.all(np.abs(shift) <= 0.08 * side + 1e-3)
    assert min(scales) >= 0.85 - 1e-6 and max(scales) <= 1.3 + 1e-6
    assert max(scales) - min(scales) > 0.2


def test_resolution_coarsening_keeps_shape_and_mean_but_removes_detail():
    signal = signal_of()
    base = signal.numpy()
    coarsened = 0
    for s in range(20):
        out = augmentation.coarsen_resolution(signal, seed(s)).numpy()
        assert out.shape == base.shape
        if not np.array_equal(out, base):
            coarsened += 1
            assert out.mean() == pytest.approx(base.mean(), rel=0.05)
    assert coarsened >= 2


def test_tone_keeps_the_background_at_zero_and_the_silhouette():
    """Tone curves change tissue contrast only: black stays black, tissue stays visible."""
    framed = framed_signal_of()
    base = framed.numpy()
    changed = 0
    for s in range(12):
        toned = augmentation.random_tone(framed, seed(s)).numpy()
        assert toned.min() >= 0.0 and toned.max() <= 1.0
        np.testing.assert_array_equal(toned[base == 0], 0.0)
        assert np.all(toned[base > preprocessing.TISSUE_THRESHOLD] > 0.0)
        changed += not np.allclose(toned, base)
    assert changed == 12


def test_blur_and_noise_stay_in_range():
    framed = framed_signal_of()
    for s in range(6):
        noisy = augmentation.blur_and_noise(framed, seed(s)).numpy()
        assert noisy.shape == (SIZE, SIZE) and noisy.dtype == np.float32
        assert noisy.min() >= 0.0 and noisy.max() <= 1.0
        assert not np.array_equal(noisy, framed.numpy())


def test_stain_jitter_keeps_uint8_rgb():
    for s in range(4):
        jittered = augmentation.jitter_stain(COLOUR_IMAGE, seed(s))
        assert jittered.dtype == tf.uint8 and jittered.shape == COLOUR_IMAGE.shape
        assert not np.array_equal(jittered.numpy(), COLOUR_IMAGE.numpy())
