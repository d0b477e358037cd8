"""Tests for the procedural mouse-brain phantom (brainview_tfds.brain_phantom: anatomy, rendering).

The phantom is the default dataset and a domain-randomization source, so these tests pin
what a plane classifier relies on: determinism, a brain that sits inside the volume with
background around it, bilateral symmetry in coronal and horizontal cuts but front-back
asymmetry in sagittal ones, and renders whose polarity matches their appearance.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from brainview_tfds.brain_phantom import anatomy as brain_anatomy
from brainview_tfds.brain_phantom import phantom_volumes, rendering

SEEDS = (0, 1, 2, 3, 4, 5)
TISSUE = 0.02  # density above which a voxel counts as brain


@functools.cache
def specimen(seed: int) -> tuple[np.ndarray, brain_anatomy.Anatomy, rendering.Appearance]:
    """Each default-size specimen takes ~0.5 s to build, so build it once per session."""
    return phantom_volumes.make_specimen(seed)


def central_slice(volume: np.ndarray, axis: int) -> np.ndarray:
    """The slice through the brain's centre of mass along `axis`."""
    center = np.argwhere(volume > TISSUE).mean(axis=0)
    return np.take(volume, round(center[axis]), axis=axis)


def crop_to_tissue(section: np.ndarray) -> np.ndarray:
    """Bounding box of the tissue, so mirroring is about the brain, not the image centre."""
    rows, cols = np.nonzero(section > TISSUE)
    return section[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def mirror_correlation(section: np.ndarray, axis: int) -> float:
    """Pearson correlation of the cropped section with itself flipped along `axis`."""
    cropped = crop_to_tissue(section)
    return float(np.corrcoef(cropped.ravel(), np.flip(cropped, axis=axis).ravel())[0, 1])


def appearance_with(polarity: str, seed: int = 0) -> rendering.Appearance:
    """A sampled appearance of the requested polarity (the sampler picks polarity itself)."""
    rng = np.random.default_rng(seed)
    while True:
        appearance = rendering.sample_appearance(rng)
        if appearance.polarity == polarity:
            return appearance


def border_pixels(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


# ---------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_bit_identical_volume_anatomy_and_appearance() -> None:
    volume, anatomy, appearance = phantom_volumes.make_specimen(7)
    again_volume, again_anatomy, again_appearance = phantom_volumes.make_specimen(7)
    np.testing.assert_array_equal(volume, again_volume)
    assert anatomy == again_anatomy
    assert appearance == again_appearance


def test_same_rng_seed_gives_identical_renders() -> None:
    volume, _, appearance = specimen(0)
    section = central_slice(volume, axis=0)
    first = rendering.render_section(section, appearance, np.random.default_rng(3))
    second = rendering.render_section(section, appearance, np.random.default_rng(3))
    np.testing.assert_array_equal(first, second)


def test_different_seeds_give_different_specimens() -> None:
    volume_a, anatomy_a, _ = specimen(0)
    volume_b, anatomy_b, _ = specimen(1)
    assert anatomy_a != anatomy_b
    assert np.mean(np.abs(volume_a - volume_b)) > 0.01


def test_different_render_rngs_give_different_noise() -> None:
    volume, _, appearance = specimen(0)
    noisy = dataclasses.replace(appearance, noise_sigma=0.03)
    section = central_slice(volume, axis=0)
    first = rendering.render_section(section, noisy, np.random.default_rng(1))
    second = rendering.render_section(section, noisy, np.random.default_rng(2))
    assert not np.array_equal(first, second)


# ---------------------------------------------------------------------------------------
# Volume


@pytest.mark.parametrize("seed", SEEDS)
def test_volume_is_float32_in_unit_range_with_requested_shape(seed: int) -> None:
    volume, _, _ = specimen(seed)
    assert volume.shape == (80, 48, 68)
    assert volume.dtype == np.float32
    assert volume.min() >= 0.0
    assert volume.max() <= 1.0


def test_custom_shape_samples_the_same_brain() -> None:
    """`shape` sets the sampling only: the brain's share of the volume does not change."""
    _, anatomy, _ = specimen(2)
    coarse = brain_anatomy.make_density_volume(anatomy, (40, 24, 34))
    fine, _, _ = specimen(2)
    assert coarse.shape == (40, 24, 34)
    assert np.mean(coarse > TISSUE) == pytest.approx(np.mean(fine > TISSUE), rel=0.1)


@pytest.mark.parametrize("seed", SEEDS)
def test_background_is_exactly_zero_near_every_face(seed: int) -> None:
    volume, _, _ = specimen(seed)
    margin = 2
    for axis in range(3):
        near_faces = np.concatenate(
            [
                np.take(volume, range(margin), axis=axis),
                np.take(volume, range(-margin, 0), axis=axis),
            ],
            axis=axis,
        )
        assert np.all(near_faces == 0.0), f"tissue within {margin} voxels of a face, axis {axis}"


@pytest.mark.parametrize("seed", SEEDS)
def test_brain_occupies_a_sensible_fraction_of_the_volume(seed: int) -> None:
    """A ~10.5 x 6 x 9.5 mm mouse brain fills roughly a fifth of the 13.2 x 8 x 11.4 mm box."""
    volume, _, _ = specimen(seed)
    assert 0.1 < np.mean(volume > TISSUE) < 0.35


@pytest.mark.parametrize("seed", SEEDS)
def test_brain_extent_matches_adult_mouse_proportions(seed: int) -> None:
    """Longest along AP, widest LR, flattest SI, as in the Allen template."""
    volume, _, _ = specimen(seed)
    voxels = np.argwhere(volume > TISSUE)
    extent_mm = (voxels.max(axis=0) - voxels.min(axis=0) + 1) * (
        np.array(brain_anatomy.VOLUME_EXTENT_MM) / volume.shape
    )
    ap_mm, si_mm, lr_mm = extent_mm
    assert 8.0 < ap_mm < 12.5
    assert 4.5 < si_mm < 7.5
    assert 6.5 < lr_mm < 11.0
    assert ap_mm > si_mm
    assert lr_mm > si_mm


def test_tissue_density_is_mostly_well_above_background() -> None:
    """Ventricles and white matter are pale, but most of the brain reads as stained tissue."""
    volume, _, _ = specimen(0)
    tissue = volume[volume > 0]
    assert tissue.size > 0
    assert np.median(tissue) > 0.3


# ---------------------------------------------------------------------------------------
# Plane-specific symmetry: what tells the three planes apart


@pytest.mark.parametrize("seed", SEEDS)
def test_coronal_mid_slice_is_left_right_symmetric(seed: int) -> None:
    volume, _, _ = specimen(seed)
    coronal = central_slice(volume, axis=0)  # rows SI, cols LR
    assert mirror_correlation(coronal, axis=1) > 0.6


@pytest.mark.parametrize("seed", SEEDS)
def test_horizontal_mid_slice_is_left_right_symmetric(seed: int) -> None:
    volume, _, _ = specimen(seed)
    horizontal = central_slice(volume, axis=1)  # rows AP, cols LR
    assert mirror_correlation(horizontal, axis=1) > 0.6


@pytest.mark.parametrize("seed", SEEDS)
def test_sagittal_mid_slice_is_not_front_back_symmetric(seed: int) -> None:
    volume, _, _ = specimen(seed)
    sagittal = central_slice(volume, axis=2)  # rows AP, cols SI
    assert mirror_correlation(sagittal, axis=0) < 0.55


@pytest.mark.parametrize("seed", SEEDS)
def test_sagittal_is_less_symmetric_than_coronal_and_horizontal(seed: int) -> None:
    volume, _, _ = specimen(seed)
    sagittal = mirror_correlation(central_slice(volume, axis=2), axis=0)
    coronal = mirror_correlation(central_slice(volume, axis=0), axis=1)
    horizontal = mirror_correlation(central_slice(volume, axis=1), axis=1)
    assert sagittal + 0.15 < min(coronal, horizontal)


@pytest.mark.parametrize("seed", SEEDS)
def test_paired_bulbs_in_front_single_medulla_behind(seed: int) -> None:
    """Front end: two olfactory bulbs with a midline gap; back end: one medulla on the midline.

    Also the front is much smaller than the middle of the brain. Together these pin the
    anterior-posterior orientation that the Allen axis order promises.
    """
    volume, _, _ = specimen(seed)
    tissue = volume > TISSUE
    occupied = np.nonzero(tissue.any(axis=(1, 2)))[0]
    first, last = occupied[0], occupied[-1]
    length = last - first
    midline = round(np.argwhere(tissue)[:, 2].mean())

    def midline_share(coronal_index: int) -> float:
        per_column = tissue[coronal_index].sum(axis=0)
        return per_column[midline - 1 : midline + 2].min() / per_column.max()

    assert midline_share(first + round(0.06 * length)) < 0.6
    assert midline_share(last - round(0.06 * length)) > 0.8
    area = tissue.sum(axis=(1, 2))
    assert area[first + length // 10] < 0.5 * area[first + length // 2]


# ---------------------------------------------------------------------------------------
# Appearance and rendering


def test_appearance_sampler_covers_both_polarities() -> None:
    rng = np.random.default_rng(0)
    polarities = [rendering.sample_appearance(rng).polarity for _ in range(200)]
    bright_share = polarities.count(rendering.BRIGHT_FIELD) / len(polarities)
    assert set(polarities) == {rendering.BRIGHT_FIELD, rendering.DARK_FIELD}
    assert 0.35 < bright_share < 0.65


@pytest.mark.parametrize("shape", [(48, 68), (80, 48), (33, 21)])
def test_render_is_uint8_rgb_with_the_section_shape(shape: tuple[int, int]) -> None:
    density = np.zeros(shape, np.float32)
    density[shape[0] // 4 : 3 * shape[0] // 4, shape[1] // 4 : 3 * shape[1] // 4] = 0.7
    image = rendering.render_section(
        density, appearance_with(rendering.BRIGHT_FIELD), np.random.default_rng(0)
    )
    assert image.shape == (*shape, 3)
    assert image.dtype == np.uint8


@pytest.mark.parametrize("seed", range(5))
def test_bright_field_renders_have_light_borders_and_darker_tissue(seed: int) -> None:
    volume, _, _ = specimen(0)
    section = central_slice(volume, axis=0)
    image = rendering.render_section(
        section, appearance_with(rendering.BRIGHT_FIELD, seed), np.random.default_rng(seed)
    )
    border = border_pixels(image).mean()
    tissue = image[section > 0.3].mean()
    assert border > 150
    assert tissue < border - 20


@pytest.mark.parametrize("seed", range(5))
def test_dark_field_renders_have_dark_borders_and_brighter_tissue(seed: int) -> None:
    volume, _, _ = specimen(0)
    section = central_slice(volume, axis=0)
    image = rendering.render_section(
        section, appearance_with(rendering.DARK_FIELD, seed), np.random.default_rng(seed)
    )
    border = border_pixels(image).mean()
    tissue = image[section > 0.3].mean()
    assert border < 60
    assert tissue > border + 20


def test_inverted_contrast_keeps_polarity_but_flips_tissue_ranking() -> None:
    """MRI-like inversion: cell-poor tissue brightest, yet still brighter than background."""
    section = np.zeros((40, 40), np.float32)
    section[10:30, 10:20] = 0.9  # cell-dense
    section[10:30, 20:30] = 0.2  # cell-poor
    plain = dataclasses.replace(
        appearance_with(rendering.DARK_FIELD),
        invert_tissue_contrast=False,
        blur_sigma_px=0.0,
        noise_sigma=0.0,
        speckle_sigma=0.0,
        blotch_sigma=0.0,
        dust_rate=0.0,
    )
    inverted = dataclasses.replace(plain, invert_tissue_contrast=True)
    for appearance, dense_brighter in ((plain, True), (inverted, False)):
        image = rendering.render_section(section, appearance, np.random.default_rng(0)).mean(axis=2)
        dense, sparse = image[12:28, 12:18].mean(), image[12:28, 22:28].mean()
        assert (dense > sparse) == dense_brighter
        assert min(dense, sparse) > image[:5].mean()


def test_blur_softens_edges_but_keeps_mean() -> None:
    section = np.zeros((40, 40), np.float32)
    section[:, 20:] = 0.8
    sharp = dataclasses.replace(
        appearance_with(rendering.DARK_FIELD),
        blur_sigma_px=0.0,
        noise_sigma=0.0,
        speckle_sigma=0.0,
        blotch_sigma=0.0,
        stain_unevenness=0.0,
        dust_rate=0.0,
    )
    blurred = dataclasses.replace(sharp, blur_sigma_px=2.0)
    sharp_image = rendering.render_section(section, sharp, np.random.default_rng(0)).astype(float)
    blurred_image = rendering.render_section(section, blurred, np.random.default_rng(0)).astype(
        float
    )
    sharp_step = np.abs(np.diff(sharp_image[20, :, 1])).max()
    blurred_step = np.abs(np.diff(blurred_image[20, :, 1])).max()
    assert blurred_step < 0.6 * sharp_step
    assert blurred_image.mean() == pytest.approx(sharp_image.mean(), rel=0.05)


def test_empty_section_renders_as_plain_background() -> None:
    appearance = dataclasses.replace(appearance_with(rendering.BRIGHT_FIELD), dust_rate=0.0)
    image = rendering.render_section(
        np.zeros((48, 68), np.float32), appearance, np.random.default_rng(0)
    )
    expected = np.array(appearance.background_rgb) * 255
    assert np.all(np.abs(image.reshape(-1, 3).mean(axis=0) - expected) < 40)


def test_describe_names_polarity_and_stain() -> None:
    appearance = appearance_with(rendering.DARK_FIELD)
    assert appearance.describe().startswith(f"{rendering.DARK_FIELD} {appearance.stain}")
