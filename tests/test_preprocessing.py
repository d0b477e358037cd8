"""The shared preprocessing path: what the model sees, in training and at inference.

Synthetic sections are drawn in coordinates relative to the tissue (an ellipse
with a side lobe and banded texture), so a moved, scaled, tilted or
re-stained copy is the same section and must preprocess to the same signal.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from brainview import image_files, preprocessing

SIZE = 48


def tissue_density(shape, center, radii, tilt=0.0):
    """Density 0..1 of an asymmetric section: an ellipse with a lobe, banded inside.

    `tilt` (radians, image coordinates, y down) turns the major axis from the x axis
    towards +y. Inside the tissue the density stays >= 0.4, well above the tissue threshold.
    """
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dy, dx = ys - center[0], xs - center[1]
    along = dx * math.cos(tilt) + dy * math.sin(tilt)
    across = -dx * math.sin(tilt) + dy * math.cos(tilt)
    u, v = across / radii[0], along / radii[1]
    ellipse = u**2 + v**2 < 1.0
    lobe = (u - 0.35) ** 2 + (v - 0.95) ** 2 < 0.3**2
    bands = 0.4 + 0.6 * (0.5 + 0.5 * np.cos(5.0 * u) * np.cos(3.0 * v + 0.7))
    return np.where(ellipse | lobe, bands, 0.0)


def dark_field(density, noise=1.5, seed=0):
    """Bright tissue on a dark background, slightly tinted, uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    tint = np.array([0.8, 1.0, 0.6])
    image = (
        12.0 + 190.0 * density[..., None] * tint + rng.normal(0, noise, density.shape)[..., None]
    )
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def bright_field(density, noise=1.5, seed=0):
    """Dark, pink-stained tissue on a light background (absorption), uint8 HxWx3."""
    rng = np.random.default_rng(seed)
    absorption = np.array([110.0, 190.0, 140.0])
    image = 238.0 - density[..., None] * absorption + rng.normal(0, noise, density.shape)[..., None]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def tissue_bbox(density):
    """[y0, x0, y1, x1] (end-exclusive) of the drawn tissue, in source pixels."""
    rows, cols = np.nonzero(density > 0)
    return np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], float)


def preprocessed(image, mode="section", size=SIZE):
    """The inference path: the one preprocessing function, without augmentation."""
    return preprocessing.preprocess(
        tf.constant(image), size, mode, mean_intensity=image_files.mean_gray(image)
    )


def run(image, mode="section", size=SIZE):
    model_input, frame, blank = preprocessed(image, mode, size)
    return model_input.numpy(), frame.numpy(), bool(blank.numpy())


def framed_signal(image, mode="section", size=SIZE):
    return run(image, mode, size)[0][..., 0] / 255.0


def test_section_mode_gives_float32_gray_model_input_on_0_to_255():
    """EfficientNet expects SxSx3 float32 on 0..255; section mode is gray (3 equal channels)."""
    image = dark_field(tissue_density((120, 160), (60, 80), (30, 50)))
    model_input, frame, blank = run(image)
    assert model_input.shape == (SIZE, SIZE, 3)
    assert model_input.dtype == np.float32
    assert model_input.min() >= 0.0 and model_input.max() <= 255.0
    assert model_input.max() > 250.0  # the signal is stretched to the full range
    np.testing.assert_array_equal(model_input[..., 0], model_input[..., 1])
    np.testing.assert_array_equal(model_input[..., 0], model_input[..., 2])
    assert frame.shape == (4,) and frame.dtype == np.float32
    assert blank is False


def test_normalized_signal_is_float32_on_0_to_1_with_full_scale():
    image = dark_field(tissue_density((120, 160), (60, 80), (30, 50)))
    signal = preprocessing.normalize_section(tf.constant(image)).numpy()
    assert signal.shape == (120, 160) and signal.dtype == np.float32
    assert signal.min() == 0.0 and signal.max() == 1.0


def test_bright_field_and_dark_field_of_one_section_normalize_alike():
    """Polarity and stain colour are lab nuisances: both renderings give the same signal."""
    density = tissue_density((120, 160), (60, 80), (30, 50))
    dark = preprocessing.normalize_section(tf.constant(dark_field(density, seed=1))).numpy()
    bright = preprocessing.normalize_section(tf.constant(bright_field(density, seed=2))).numpy()
    assert np.abs(dark - bright).mean() < 0.02
    tissue = density > 0
    # Not trivially equal (e.g. both zero): the tissue is bright in both.
    assert dark[tissue].mean() > 0.4 and bright[tissue].mean() > 0.4
    np.testing.assert_array_equal(
        preprocessing.tissue_box(tf.constant(dark)).numpy(),
        preprocessing.tissue_box(tf.constant(bright)).numpy(),
    )


@pytest.mark.parametrize("render", [dark_field, bright_field])
def test_background_is_removed_to_black(render):
    """Background level and its noise are subtracted: the border is ~0, never tissue."""
    density = tissue_density((120, 160), (60, 80), (30, 50))
    signal = preprocessing.normalize_section(tf.constant(render(density, noise=2.5))).numpy()
    background = signal[density == 0]
    assert background.mean() < 0.01
    assert (background > preprocessing.TISSUE_THRESHOLD).sum() == 0
    border = np.concatenate([signal[:5].ravel(), signal[-5:].ravel(), signal[:, :5].ravel()])
    assert border.max() < 0.1


def test_framing_is_invariant_to_tissue_position_and_scale():
    """A section small in a corner or large in the middle of a big canvas frames the same."""
    placements = [
        ((200, 300), (70, 90), (30, 45)),  # small, upper left
        ((500, 600), (320, 380), (90, 135)),  # 3x larger, lower right of a larger canvas
        ((240, 320), (55, 240), (40, 60)),  # near the top edge: the frame leaves the canvas
    ]
    outputs = [
        framed_signal(dark_field(tissue_density(shape, center, radii), seed=i))
        for i, (shape, center, radii) in enumerate(placements)
    ]
    for other in outputs[1:]:
        assert np.abs(outputs[0] - other).mean() < 0.04
    # The comparison discriminates: a different section shape does not pass it.
    round_section = framed_signal(dark_field(tissue_density((200, 300), (100, 150), (50, 55))))
    assert np.abs(outputs[0] - round_section).mean() > 0.08


@pytest.mark.parametrize(
    ("shape", "center", "radii"),
    [
        ((200, 300), (70, 90), (30, 45)),
        ((500, 600), (320, 380), (90, 135)),  # above the working side: scaled back
        ((1500, 2000), (900, 700), (270, 405)),
    ],
)
def test_frame_maps_back_to_the_tissue_bounding_box_in_source_pixels(shape, center, radii):
    """The frame [cy, cx, side, angle] is the tissue box's centre and its longer side plus
    the margin on each side: CAMs are drawn back onto the scan with it."""
    density = tissue_density(shape, center, radii)
    y0, x0, y1, x1 = tissue_bbox(density)
    _, frame, _ = run(dark_field(density))
    cy, cx, side, angle = frame
    longer = max(y1 - y0, x1 - x0)
    tolerance = 0.015 * longer + 0.5
    assert abs(cy - (y0 + y1) / 2) <= tolerance
    assert abs(cx - (x0 + x1) / 2) <= tolerance
    assert side == pytest.approx(longer * (1 + 2 * preprocessing.FRAME_MARGIN), rel=0.03)
    assert angle == 0.0


def framed_extent(signal):
    """(height, width) of the tissue in a framed signal."""
    rows, cols = np.nonzero(signal > preprocessing.TISSUE_THRESHOLD)
    return rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()


@pytest.mark.parametrize(("radii", "wide"), [((20, 75), True), ((75, 20), False)])
def test_aspect_ratio_is_kept(radii, wide):
    """The section's aspect ratio is a cue for the plane: a wide section stays wide."""
    density = tissue_density((220, 260), (110, 120), radii, tilt=0.0)
    # Without the lobe's contribution the drawn extent is the ellipse's, so read it off.
    y0, x0, y1, x1 = tissue_bbox(density)
    expected_ratio = (x1 - x0) / (y1 - y0)
    height, width = framed_extent(framed_signal(dark_field(density), size=64))
    assert (width > height) == wide
    assert width / height == pytest.approx(expected_ratio, rel=0.12)
    # The longer side fills the frame, less its margins.
    assert max(height, width) == pytest.approx(64 / (1 + 2 * preprocessing.FRAME_MARGIN), abs=3)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 80, 3), np.uint8),  # all black
        np.full((64, 80, 3), 128, np.uint8),  # uniform gray
        np.full((90, 70, 3), 255, np.uint8),  # uniform white (an empty bright-field slide)
        np.full((64, 64, 3), (200, 150, 170), np.uint8),  # uniform tinted
        np.full((1100, 1400, 3), 255, np.uint8),  # white, above the working side
    ],
    ids=["black", "gray", "white", "tinted", "large white"],
)
def test_blank_images_give_zeros_and_look_blank(image):
    model_input, _, blank = run(image)
    np.testing.assert_array_equal(model_input, np.zeros((SIZE, SIZE, 3), np.float32))
    assert blank is True


def test_dark_image_looks_blank_even_with_some_tissue():
    """The original study's filter: mean gray <= 0.6 is blank whatever is on it."""
    image = np.zeros((100, 100, 3), np.uint8)
    image[40:52, 40:52] = 40  # mean = 144 * 40 / 10000 = 0.576 <= 0.6
    assert image.mean() <= 0.6
    assert run(image)[2] is True
    image[40:52, 40:52] = 42  # mean = 144 * 42 / 10000 = 0.605 > 0.6: a (small) section
    assert run(image)[2] is False


@pytest.mark.parametrize("side", [200, 2000])
def test_a_speck_on_an_empty_slide_looks_blank(side):
    image = np.full((side, side, 3), 40, np.uint8)
    speck = 3 * side // 200  # 9 px of 40000 at 200 px: < 0.2% tissue
    image[side // 2 : side // 2 + speck, side // 2 : side // 2 + speck] = 255
    assert run(image)[2] is True


@pytest.mark.parametrize("render", [dark_field, bright_field])
def test_a_section_is_not_blank(render):
    assert run(render(tissue_density((120, 160), (60, 80), (30, 50))))[2] is False


def test_plain_mode_letterboxes_the_rgb_image():
    """Mode plain (the original study's look) keeps colour and aspect, pads with black."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[...] = (200, 50, 10)
    model_input, frame, _ = run(image, mode="plain", size=64)
    assert model_input.shape == (64, 64, 3) and model_input.dtype == np.float32
    # 80 px wide -> 64: the 40 px height becomes 32, centred with 16 black rows above and below.
    np.testing.assert_array_equal(model_input[:16], 0.0)
    np.testing.assert_array_equal(model_input[48:], 0.0)
    np.testing.assert_allclose(model_input[17:47], np.broadcast_to([200, 50, 10], (30, 64, 3)))
    np.testing.assert_allclose(frame, [20.0, 40.0, 80.0, 0.0])


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        preprocessing.preprocess(tf.zeros((8, 8, 3), tf.uint8), 8, mode="fancy", mean_intensity=0)


def test_principal_angle_finds_the_major_axis():
    for tilt in (0.0, 0.5, -1.0, 1.3):
        signal = tissue_density((200, 200), (100, 100), (25, 70), tilt=tilt).astype(np.float32)
        angle = float(preprocessing.principal_angle(tf.constant(signal)))
        # An axis, not a direction: equal modulo pi. The lobe tilts it by a few degrees.
        difference = (angle - tilt + math.pi / 2) % math.pi - math.pi / 2
        assert abs(difference) < math.radians(6), (tilt, angle)


def test_aligned_mode_undoes_the_mounting_rotation():
    """A tilted copy of a section, aligned, frames like the untilted section up to the
    180-degree turn and mirror that alignment cannot resolve; the frame records the angle."""
    straight = framed_signal(dark_field(tissue_density((240, 240), (120, 120), (25, 75))))
    tilt = 0.6
    tilted_density = tissue_density((260, 280), (130, 150), (25, 75), tilt=tilt)
    model_input, frame, _ = run(dark_field(tilted_density, seed=3), mode="aligned")
    aligned = model_input[..., 0] / 255.0
    candidates = [aligned, aligned[::-1], aligned[:, ::-1], aligned[::-1, ::-1]]
    assert min(np.abs(straight - c).mean() for c in candidates) < 0.05
    cy, cx, side, angle = frame
    # The box centre maps back near the ellipse centre (the lobe shifts it a little).
    assert abs(cy - 130) < 12 and abs(cx - 150) < 12
    assert side == pytest.approx(2 * 75 * (1 + 2 * preprocessing.FRAME_MARGIN), rel=0.12)
    assert abs((angle + tilt + math.pi / 2) % math.pi - math.pi / 2) < math.radians(6)


def test_a_small_section_on_a_large_slide_frames_like_a_large_one():
    """Size on the slide should not matter (module docstring): a section covering 0.7% of a
    400x400 scan should frame like the same section covering 7% of a smaller one."""
    reference = framed_signal(dark_field(tissue_density((200, 300), (70, 90), (30, 45))))
    small_density = tissue_density((400, 400), (200, 200), (15, 22.5))
    assert (small_density > 0).mean() < 0.01
    model_input, _, blank = run(dark_field(small_density))
    assert blank is False
    assert np.abs(model_input[..., 0] / 255.0 - reference).mean() < 0.08


@pytest.mark.parametrize("shape", [(300, 400), (1536, 2048)])
def test_a_noisy_empty_slide_is_blank(shape):
    """Sensor noise alone must not be normalized up into 'tissue' (also after the
    working-size reduction has averaged it down, with the contrast it could show)."""
    rng = np.random.default_rng(3)
    noisy = np.clip(200 + rng.normal(0, 3, (*shape, 3)), 0, 255).astype(np.uint8)
    signal = preprocessing.normalize_section(tf.constant(noisy))
    assert float(tf.reduce_max(signal)) == 0.0
    _, _, blank = preprocessed(noisy, size=64)
    assert bool(blank)


def test_aligned_input_carries_the_asymmetry_maps():
    """Channel 1 is |s - mirror_lr(s)|, channel 2 |s - mirror_ud(s)|: dark for a section
    symmetric about that axis, bright for an asymmetric one."""
    yy, xx = np.mgrid[0:120, 0:200]
    ellipse = ((xx - 100) / 80.0) ** 2 + ((yy - 60) / 40.0) ** 2 < 1
    symmetric = np.where(ellipse, 200, 20).astype(np.uint8)
    lopsided = symmetric.copy()
    lopsided[(xx > 130) & ellipse] = 90  # one end darker: no left-right symmetry
    for image, left_right_symmetric in ((symmetric, True), (lopsided, False)):
        rgb = np.repeat(image[..., None], 3, axis=2)
        model_input = preprocessed(rgb, "aligned", 64).model_input
        channels = model_input.numpy() / 255.0
        lr_asymmetry = channels[..., 1].mean() / max(channels[..., 0].mean(), 1e-6)
        assert (lr_asymmetry < 0.05) == left_right_symmetric, lr_asymmetry
        assert np.allclose(
            channels[..., 1], np.abs(channels[..., 0] - channels[:, ::-1, 0]), atol=1e-4
        )
        assert np.allclose(
            channels[..., 2], np.abs(channels[..., 0] - channels[::-1, :, 0]), atol=1e-4
        )


# -- the working size ----------------------------------------------------------------------


def test_working_side_is_four_model_inputs_and_at_least_512():
    assert preprocessing.working_side(32) == preprocessing.MIN_WORKING_SIDE == 512
    assert preprocessing.working_side(128) == 512
    assert preprocessing.working_side(224) == 896
    assert preprocessing.working_side(512) == 2048


@pytest.mark.parametrize("shape", [(1200, 1600), (2048, 1536), (3, 2048), (512, 400), (90, 70)])
def test_only_images_above_the_working_side_are_reduced(shape):
    """The cost of preprocessing is bounded: what it computes on is never larger than the
    working side, and an image that fits is used as it is."""
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    working, to_source = preprocessing.to_working_size(tf.constant(image), SIZE)
    working, to_source = working.numpy(), to_source.numpy()
    side = preprocessing.working_side(SIZE)
    if max(shape) <= side:
        np.testing.assert_array_equal(working, image)
        np.testing.assert_array_equal(to_source, [1, 1, 1, 1])
    else:
        assert max(working.shape[:2]) == side
        np.testing.assert_allclose(to_source[:2] * working.shape[:2], shape, rtol=1e-6)
        assert to_source[2] == pytest.approx(max(shape) / side)


@pytest.mark.parametrize("mode", ["section", "aligned", "plain"])
def test_a_scan_at_1024_and_at_2048_px_preprocesses_alike(mode):
    """Training images are stored at most 1024 px, scans decoded at most 2048 px: both are
    looked at at the working size, so the same section gives the same model input, the
    same frame (in each image's own pixels) and the same blank check."""
    results = []
    for scale in (1, 2):
        density = tissue_density(
            (768 * scale, 1024 * scale), (380 * scale, 500 * scale), (180 * scale, 300 * scale)
        )
        model_input, frame, blank = run(dark_field(density, noise=3.0, seed=scale), mode, 64)
        results.append((model_input, frame / [scale, scale, scale, 1], blank))
    (input_1024, frame_1024, blank_1024), (input_2048, frame_2048, blank_2048) = results
    assert np.abs(input_1024 - input_2048).mean() < 0.01 * 255
    np.testing.assert_allclose(frame_1024, frame_2048, rtol=0.01, atol=2.0)
    assert blank_1024 is blank_2048 is False
