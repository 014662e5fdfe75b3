"""Tests for rl_scaniqa.envs.data.distortions: graded levels, determinism, local caps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from rl_scaniqa.envs.data.distortions import (
    DISTORTIONS,
    LEVELS,
    STITCH_SHIFT_DEG,
    STITCH_ZONE_DEG,
    apply_distortion,
    apply_local,
    local_mask,
    stitching_misalignment,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A natural colour photograph at ERP proportions (512 x 256)."""
    return cv2.resize(data.coffee(), (512, 256), interpolation=cv2.INTER_AREA)


def test_kinds_match_the_contract() -> None:
    assert DISTORTIONS == ("jpeg", "jpeg2000", "blur", "noise", "overexposure", "underexposure", "stitching")
    assert LEVELS == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("kind", DISTORTIONS)
def test_damage_grows_strictly_with_level(photo: np.ndarray, kind: str) -> None:
    ssim, psnr = [], []
    for level in LEVELS:
        out = apply_distortion(photo, kind, level, np.random.default_rng(7))
        assert out.shape == photo.shape and out.dtype == np.uint8
        ssim.append(structural_similarity(photo, out, channel_axis=2))
        psnr.append(peak_signal_noise_ratio(photo, out))
    assert np.all(np.diff(ssim) < 0), f"{kind}: SSIM by level {ssim}"
    assert np.all(np.diff(psnr) < 0), f"{kind}: PSNR by level {psnr}"
    assert ssim[0] < 1.0


@pytest.mark.parametrize("kind", DISTORTIONS)
def test_same_generator_state_gives_same_output_and_input_is_untouched(photo: np.ndarray, kind: str) -> None:
    before = photo.copy()
    first = apply_distortion(photo, kind, 3, np.random.default_rng(11))
    second = apply_distortion(photo, kind, 3, np.random.default_rng(11))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(photo, before)


@pytest.mark.parametrize("kind", ["noise", "stitching"])
def test_random_kinds_depend_on_the_generator(photo: np.ndarray, kind: str) -> None:
    first = apply_distortion(photo, kind, 3, np.random.default_rng(1))
    second = apply_distortion(photo, kind, 3, np.random.default_rng(2))
    assert not np.array_equal(first, second)


def test_jpeg2000_goes_through_the_codec(photo: np.ndarray) -> None:
    out = apply_distortion(photo, "jpeg2000", 5, np.random.default_rng(0))
    ok, buffer = cv2.imencode(".jp2", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR),
                              [cv2.IMWRITE_JPEG2000_COMPRESSION_X1000, 5])
    assert ok
    expected = cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(out, expected)


def test_exposure_clips_highlights_and_darkens(photo: np.ndarray) -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))[:, :, None].repeat(3, axis=2)
    over = apply_distortion(ramp, "overexposure", 3, np.random.default_rng(0))
    under = apply_distortion(ramp, "underexposure", 3, np.random.default_rng(0))
    for out in (over, under):
        assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0), "tone curve must stay monotone"
    assert over[0, 200, 0] == 255 and over[0, 0, 0] == 0  # highlights clipped, black stays black
    assert np.all(under <= ramp) and under[0, 10, 0] == 0  # darker, shadows crushed
    assert np.mean(under) < np.mean(ramp) < np.mean(over)


def test_blur_wraps_across_the_yaw_seam() -> None:
    image = np.zeros((64, 128, 3), np.uint8)
    image[:, -2:] = 255  # bright stripe at the right edge (yaw just below +180)
    out = apply_distortion(image, "blur", 5, np.random.default_rng(0))
    assert out[:, 0].mean() > 10, "blur must leak across the seam into yaw -180"


def test_stitching_only_touches_the_seam_zones(photo: np.ndarray) -> None:
    width = photo.shape[1]
    out = stitching_misalignment(photo, 5, np.random.default_rng(0), [0.0])
    changed = np.flatnonzero(np.any(out != photo, axis=(0, 2)))
    seam = width / 2
    zone = STITCH_ZONE_DEG[-1] * width / 360.0
    assert changed.size > 0
    assert changed.min() >= seam - zone - 1 and changed.max() <= seam + zone + 1
    # The displaced side is a shifted copy, not noise: a milder level moves less.
    mild = stitching_misalignment(photo, 1, np.random.default_rng(0), [0.0])
    assert np.abs(mild.astype(int) - photo).sum() < np.abs(out.astype(int) - photo).sum()
    assert STITCH_SHIFT_DEG[0] < STITCH_SHIFT_DEG[-1]


def test_stitching_seam_wraps_at_the_erp_edge(photo: np.ndarray) -> None:
    out = stitching_misalignment(photo, 5, np.random.default_rng(3), [179.9])
    changed = np.flatnonzero(np.any(out != photo, axis=(0, 2)))
    width = photo.shape[1]
    assert np.any(changed < 10) and np.any(changed > width - 10)


@pytest.mark.parametrize(
    ("image", "kind", "level"),
    [
        (np.zeros((8, 8), np.uint8), "blur", 1),
        (np.zeros((8, 8, 3), np.float32), "blur", 1),
        (np.zeros((8, 8, 3), np.uint8), "sharpen", 1),
        (np.zeros((8, 8, 3), np.uint8), "blur", 0),
        (np.zeros((8, 8, 3), np.uint8), "blur", 6),
        (np.zeros((8, 8, 3), np.uint8), "blur", 2.0),
        (np.zeros((8, 8, 3), np.uint8), "blur", True),
    ],
)
def test_bad_arguments_are_rejected(image: np.ndarray, kind: str, level: object) -> None:
    with pytest.raises(ValueError):
        apply_distortion(image, kind, level, np.random.default_rng(0))


def _angular_distance(height: int, width: int, yaw: float, pitch: float) -> np.ndarray:
    lon = np.radians((np.arange(width) + 0.5) / width * 360 - 180)[None, :]
    lat = np.radians(90 - (np.arange(height) + 0.5) / height * 180)[:, None]
    c_pitch = np.radians(pitch)
    c = np.sin(lat) * np.sin(c_pitch) + np.cos(lat) * np.cos(c_pitch) * np.cos(lon - np.radians(yaw))
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


@pytest.mark.parametrize(("yaw", "pitch"), [(0.0, 0.0), (175.0, 10.0), (-60.0, 80.0), (120.0, -85.0)])
def test_local_mask_is_a_feathered_spherical_cap(yaw: float, pitch: float) -> None:
    height, width, radius, feather = 90, 180, 20.0, 10.0
    mask = local_mask(height, width, yaw, pitch, radius, feather)
    assert mask.shape == (height, width) and mask.dtype == np.float32
    distance = _angular_distance(height, width, yaw, pitch)
    assert np.all(mask[distance <= radius] == 1.0)
    assert np.all(mask[distance >= radius + feather] == 0.0)
    # Strictly between 0 and 1 inside the feather (a margin keeps float32 rounding out).
    ramp = (distance > radius + 0.05) & (distance < radius + feather - 0.05)
    assert np.all((mask[ramp] > 0) & (mask[ramp] < 1))
    halfway = np.abs(distance - (radius + feather / 2)) < 0.5
    assert np.allclose(mask[halfway], 0.5, atol=0.1)
    # Monotone in distance: the feather never rises again.
    order = np.argsort(distance.ravel())
    assert np.all(np.diff(mask.ravel()[order]) <= 1e-6)


def test_local_mask_crosses_the_seam_and_covers_the_pole() -> None:
    mask = local_mask(90, 180, 178.0, 0.0, 10.0, 0.0)
    assert mask[45, 0] == 1.0 and mask[45, -1] == 1.0  # both sides of the ±180° seam
    polar = local_mask(90, 180, 0.0, 85.0, 10.0, 0.0)
    assert np.all(polar[0] == 1.0), "a cap over the pole covers the whole top row"
    assert polar[20].max() == 0.0


def test_local_mask_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError):
        local_mask(10, 20, 0, 0, 0.0, 5.0)
    with pytest.raises(ValueError):
        local_mask(10, 20, 0, 0, 10.0, -1.0)
    with pytest.raises(ValueError):
        local_mask(0, 20, 0, 0, 10.0, 1.0)


def test_apply_local_keeps_clean_pixels_exact(photo: np.ndarray) -> None:
    distorted = apply_distortion(photo, "noise", 5, np.random.default_rng(0))
    mask = local_mask(photo.shape[0], photo.shape[1], 90.0, 0.0, 30.0, 10.0)
    out = apply_local(photo, distorted, mask)
    np.testing.assert_array_equal(out[mask == 0], photo[mask == 0])
    np.testing.assert_array_equal(out[mask == 1], distorted[mask == 1])
    with pytest.raises(ValueError):
        apply_local(photo, distorted, mask[:-1])
