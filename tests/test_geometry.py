"""Tests for rl_scaniqa.envs.data.geometry: grid layout, projection correctness, coverage, outlines."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.data

from rl_scaniqa.envs.data import geometry
from rl_scaniqa.envs.data.geometry import (
    ViewportGrid,
    coverage_matrix,
    extract_viewport,
    extract_viewports,
    lonlat_to_xyz,
    sphere_points,
    viewport_outline,
    xyz_to_lonlat,
)


def _analytic_colour(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """A colour that is a smooth function of the direction, continuous across seam and poles."""
    return np.stack([128.0 + 100.0 * x, 128.0 + 100.0 * y, 128.0 + 100.0 * z], axis=-1)


def _smooth_erp(width: int) -> np.ndarray:
    height = width // 2
    yaw = np.radians((np.arange(width) + 0.5) / width * 360.0 - 180.0)[None, :]
    pitch = np.radians(90.0 - (np.arange(height) + 0.5) / height * 180.0)[:, None]
    colour = _analytic_colour(
        np.cos(pitch) * np.sin(yaw), np.sin(pitch) * np.ones_like(yaw), np.cos(pitch) * np.cos(yaw)
    )
    return np.round(colour).astype(np.uint8)


def _natural_erp(width: int) -> np.ndarray:
    """Photographs tiled 4 x 2 into an ERP (natural statistics, distinct content at the seam)."""
    height = width // 2
    names = ("astronaut", "coffee", "chelsea", "rocket")
    photos = [getattr(skimage.data, name)() for name in names]
    tile = (width // 4, height // 2)
    top = [cv2.resize(p, tile, interpolation=cv2.INTER_AREA) for p in photos]
    bottom = [cv2.resize(p[::-1], tile, interpolation=cv2.INTER_AREA) for p in reversed(photos)]
    return np.ascontiguousarray(np.concatenate([np.hstack(top), np.hstack(bottom)], axis=0))


def _pixel_directions(
    yaw_deg: float, pitch_deg: float, fov_deg: float, size: int
) -> tuple[np.ndarray, ...]:
    """World directions of a viewport's pixels, written out from the documented camera model."""
    half = math.tan(math.radians(fov_deg) / 2.0)
    plane = np.linspace(-half, half, size)
    x, y = np.meshgrid(plane, plane[::-1])
    z = np.ones_like(x)
    p, t = math.radians(pitch_deg), math.radians(yaw_deg)
    # Tilt up by the pitch about the x axis, then turn by the yaw about the vertical axis.
    y, z = y * math.cos(p) + z * math.sin(p), -y * math.sin(p) + z * math.cos(p)
    x, z = x * math.cos(t) + z * math.sin(t), -x * math.sin(t) + z * math.cos(t)
    norm = np.sqrt(x * x + y * y + z * z)
    return x / norm, y / norm, z / norm


# --- grid -------------------------------------------------------------------------------------


def test_default_grid_centres_and_index_order() -> None:
    grid = ViewportGrid()
    assert (grid.n_lon, grid.n_lat, grid.fov_deg, grid.size) == (8, 4, 90.0, 224)
    assert grid.n_viewports == 32
    centers = grid.centers_deg
    assert centers.shape == (32, 2) and centers.dtype == np.float64
    yaws = -157.5 + 45.0 * np.arange(8)
    for row, pitch in enumerate([67.5, 22.5, -22.5, -67.5]):
        np.testing.assert_allclose(centers[row * 8 : row * 8 + 8, 0], yaws)
        np.testing.assert_allclose(centers[row * 8 : row * 8 + 8, 1], pitch)
    assert grid.key() == "lon8-lat4-fov90-s224"
    np.testing.assert_array_equal(grid.equator_indices(), np.arange(8, 24))
    centers[0] = 0.0  # the property hands out a copy
    assert grid.centers_deg[0, 0] == -157.5


def test_custom_grid() -> None:
    grid = ViewportGrid(n_lon=12, n_lat=6, fov_deg=60, size=16)
    assert grid.n_viewports == 72
    assert grid.key() == "lon12-lat6-fov60-s16"
    centers = grid.centers_deg
    np.testing.assert_allclose(centers[:12, 0], -165.0 + 30.0 * np.arange(12))
    np.testing.assert_allclose(centers[::12, 1], [75, 45, 15, -15, -45, -75])
    np.testing.assert_array_equal(grid.equator_indices(), np.arange(24, 48))
    odd = ViewportGrid(n_lon=5, n_lat=5)
    np.testing.assert_array_equal(odd.equator_indices(), np.arange(10, 15))
    assert extract_viewports(_smooth_erp(128), grid).shape == (72, 16, 16, 3)


def test_fine_grid_beyond_one_remap_call() -> None:
    # 24 x 12 x 120 px stacks 34560 rows, past cv2.remap's 32766: the maps are split in two calls.
    grid = ViewportGrid(n_lon=24, n_lat=12, fov_deg=30, size=120)
    erp = _smooth_erp(256)
    views = extract_viewports(erp, grid)
    assert views.shape == (288, 120, 120, 3)
    for index in (0, 272, 273, 287):  # first chunk holds viewports 0..272
        yaw, pitch = grid.centers_deg[index]
        np.testing.assert_array_equal(views[index], extract_viewport(erp, yaw, pitch, 30, 120))


def test_grid_normalises_types_and_keys() -> None:
    grid = ViewportGrid(n_lon=np.int64(8), n_lat=4, fov_deg=np.float32(90), size=224)
    assert grid == ViewportGrid() and hash(grid) == hash(ViewportGrid())
    assert type(grid.n_lon) is int and type(grid.fov_deg) is float
    assert ViewportGrid(fov_deg=67.5).key() == "lon8-lat4-fov67.5-s224"
    assert ViewportGrid(fov_deg=90.0000001).key() != ViewportGrid().key()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_lon": 0}, "n_lon must be >= 1"),
        ({"n_lat": -2}, "n_lat must be >= 1"),
        ({"n_lon": 2.5}, "n_lon must be an integer"),
        ({"n_lat": True}, "n_lat must be an integer"),
        ({"fov_deg": 0.0}, r"fov_deg must lie in \(0, 180\)"),
        ({"fov_deg": 180}, r"fov_deg must lie in \(0, 180\)"),
        ({"fov_deg": float("nan")}, "fov_deg must be a finite number"),
        ({"fov_deg": "90"}, "fov_deg must be a finite number"),
        ({"size": 0}, "size must be >= 1"),
        ({"size": 40000}, "size must be <= 32766"),
    ],
)
def test_grid_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ViewportGrid(**kwargs)


def test_nearest_round_trip_wrap_and_ties() -> None:
    for grid in (ViewportGrid(), ViewportGrid(12, 6, 60)):
        for index, (yaw, pitch) in enumerate(grid.centers_deg):
            assert grid.nearest(yaw, pitch) == index
            assert grid.nearest(yaw + 360.0, pitch) == index
            assert grid.nearest(yaw - 720.0 + 1.0, pitch - 1.0) == index
    grid = ViewportGrid()
    assert grid.nearest(179.0, 30.0) == 15 and grid.nearest(-179.0, 30.0) == 8
    # At the pole every yaw is equally far: the lowest index of the top row wins.
    assert grid.nearest(123.0, 90.0) == 0 and grid.nearest(0.0, -90.0) == 24
    # (0, 0) is equidistant from viewports 11, 12, 19 and 20.
    assert grid.nearest(0.0, 0.0) == 11 == grid.front
    assert ViewportGrid(12, 6, 60).front == ViewportGrid(12, 6, 60).nearest(0.0, 0.0)
    # Ties that floating-point rounding would otherwise break towards the higher index.
    assert grid.nearest(45.0, 0.0) == 12 and grid.nearest(-45.0, 45.0) == 2
    assert ViewportGrid(12, 6, 60).nearest(-120.0, 0.0) == 25
    with pytest.raises(ValueError, match="pitch_deg must lie in"):
        grid.nearest(0.0, 95.0)
    with pytest.raises(ValueError, match="yaw_deg must be a finite"):
        grid.nearest(float("inf"), 0.0)


def test_lonlat_xyz_round_trip() -> None:
    yaw = np.array([-180.0, -90.0, 0.0, 45.0, 179.0])
    pitch = np.array([0.0, 30.0, -60.0, 89.0, -10.0])
    xyz = lonlat_to_xyz(yaw, pitch)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1.0)
    np.testing.assert_allclose(lonlat_to_xyz(90.0, 0.0), [1.0, 0.0, 0.0], atol=1e-12)
    back_yaw, back_pitch = xyz_to_lonlat(3.0 * xyz)
    np.testing.assert_allclose(back_pitch, pitch, atol=1e-9)
    np.testing.assert_allclose((back_yaw - yaw + 180.0) % 360.0 - 180.0, 0.0, atol=1e-9)


# --- projection -------------------------------------------------------------------------------


def test_centre_pixel_is_centre_direction() -> None:
    grid = ViewportGrid(fov_deg=90.0, size=33)  # odd size: pixel 16 lies on the optical axis
    views = extract_viewports(_smooth_erp(512), grid)
    centre = views[:, 16, 16].astype(np.float64)
    expected = _analytic_colour(*lonlat_to_xyz(grid.centers_deg[:, 0], grid.centers_deg[:, 1]).T)
    np.testing.assert_allclose(centre, expected, atol=1.5)

    # Directions that hit ERP pixel centres must read exactly that pixel (no half-pixel shift).
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 128, 3), dtype=np.uint8)
    for row, col in [(0, 0), (10, 127), (31, 64), (40, 3), (63, 100)]:
        yaw = (col + 0.5) / 128 * 360.0 - 180.0
        pitch = 90.0 - (row + 0.5) / 64 * 180.0
        view = extract_viewport(noise, yaw, pitch, fov_deg=30.0, size=9)
        np.testing.assert_array_equal(view[4, 4], noise[row, col])


@pytest.mark.parametrize(
    ("yaw", "pitch", "fov"),
    [
        (0.0, 0.0, 90.0),
        (180.0, 10.0, 90.0),
        (-157.5, 67.5, 90.0),
        (30.0, 90.0, 100.0),
        (-60.0, -90.0, 60.0),
    ],
)
def test_every_pixel_follows_documented_camera(yaw: float, pitch: float, fov: float) -> None:
    view = extract_viewport(_smooth_erp(1024), yaw, pitch, fov_deg=fov, size=41).astype(np.float64)
    expected = _analytic_colour(*_pixel_directions(yaw, pitch, fov, 41))
    error = np.abs(view - expected)
    assert error.max() <= 2.0, error.max()
    assert error.mean() <= 0.6, error.mean()


def test_yaw_seam_has_no_artefact() -> None:
    # Left half of the ERP (yaw < 0) red, right half (yaw >= 0) blue: seen from yaw 180 the
    # viewport's left half must be blue and its right half red, with only the two middle
    # columns blended (even size: the seam falls between them).
    erp = np.zeros((128, 256, 3), dtype=np.uint8)
    erp[:, :128, 0] = 255
    erp[:, 128:, 2] = 255
    for pitch in (0.0, 20.0):
        for yaw in (180.0, -180.0):
            view = extract_viewport(erp, yaw, pitch, 90.0, 64)
            assert np.all(view[:, :31] == [0, 0, 255])
            assert np.all(view[:, 33:] == [255, 0, 0])

    # Same viewport with the seam in the middle of the ERP instead: a coarse ERP magnifies the
    # half-pixel band at the seam, where a non-wrapping border would read the wrong column.
    natural = _natural_erp(256)
    at_seam = extract_viewport(natural, 180.0, 5.0, 90.0, 96).astype(np.int16)
    rolled = extract_viewport(np.roll(natural, 128, axis=1), 0.0, 5.0, 90.0, 96).astype(np.int16)
    difference = np.abs(at_seam - rolled)
    assert difference.mean() < 0.05 and difference.max() <= 2


def test_matches_py360convert_on_natural_content() -> None:
    py360convert = pytest.importorskip("py360convert")
    erp = _natural_erp(1024)
    grid = ViewportGrid()
    ours = extract_viewports(erp, grid).astype(np.float64)
    out_hw = (grid.size, grid.size)
    theirs = np.stack(
        [py360convert.e2p(erp, grid.fov_deg, yaw, pitch, out_hw) for yaw, pitch in grid.centers_deg]
    )
    per_viewport = np.abs(ours - theirs).mean(axis=(1, 2, 3))
    assert per_viewport.max() <= 1.0, per_viewport
    # A fixed-point/rounding level of agreement, far below what a half-pixel shift would give.
    assert per_viewport.mean() <= 0.1


def test_single_viewport_equals_grid_viewport_and_caches() -> None:
    erp = _natural_erp(512)
    grid = ViewportGrid(size=48)
    geometry._grid_maps.cache_clear()
    views = extract_viewports(erp, grid)
    assert views.dtype == np.uint8 and views.shape == (32, 48, 48, 3)
    for index in (0, 7, 13, 30):
        yaw, pitch = grid.centers_deg[index]
        np.testing.assert_array_equal(extract_viewport(erp, yaw, pitch, 90.0, 48), views[index])
    np.testing.assert_array_equal(extract_viewports(erp, grid), views)
    info = geometry._grid_maps.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    # Non-contiguous views of an ERP are accepted (e.g. a BGR<->RGB flip).
    np.testing.assert_array_equal(extract_viewports(erp[..., ::-1], grid), views[..., ::-1])


def test_extraction_validation() -> None:
    grid = ViewportGrid(size=8)
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        extract_viewports(np.zeros((16, 32), np.uint8), grid)
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\)"):
        extract_viewports(np.zeros((16, 32, 4), np.uint8), grid)
    with pytest.raises(ValueError, match="must be uint8"):
        extract_viewports(np.zeros((16, 32, 3), np.float32), grid)
    with pytest.raises(ValueError, match="numpy array"):
        extract_viewports([[0, 0, 0]], grid)
    with pytest.raises(ValueError, match="sides must lie in"):
        extract_viewports(np.zeros((16, 40000, 3), np.uint8), grid)
    erp = np.zeros((16, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="pitch_deg"):
        extract_viewport(erp, 0.0, -91.0)
    with pytest.raises(ValueError, match="fov_deg"):
        extract_viewport(erp, 0.0, 0.0, fov_deg=200.0)
    with pytest.raises(ValueError, match="size must be >= 1"):
        extract_viewport(erp, 0.0, 0.0, size=0)


# --- sphere sampling and coverage -------------------------------------------------------------


def test_sphere_points_are_uniform_unit_vectors() -> None:
    points = sphere_points(4096)
    assert points.shape == (4096, 3)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.0)
    np.testing.assert_array_equal(points, sphere_points(4096))
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=2e-3)
    # Equal area: any hemisphere and any band hold their share of the points.
    for axis in range(3):
        assert abs((points[:, axis] > 0).mean() - 0.5) < 0.01
    band = np.abs(points[:, 1]) < 0.5  # |latitude| < 30 degrees is half of the sphere's area
    assert abs(band.mean() - 0.5) < 0.01
    with pytest.raises(ValueError, match="n must be >= 1"):
        sphere_points(0)


def _frustum_fraction(fov_deg: float) -> float:
    half = math.radians(fov_deg) / 2.0
    return 4.0 * math.asin(math.sin(half) ** 2) / (4.0 * math.pi)


def test_coverage_matches_solid_angle() -> None:
    grid = ViewportGrid()
    coverage = coverage_matrix(grid)
    assert coverage.shape == (32, 4096) and coverage.dtype == np.bool_
    np.testing.assert_allclose(coverage.mean(axis=1), _frustum_fraction(90.0), rtol=0.02)
    assert coverage.any(axis=0).mean() >= 0.99
    # Each viewport sees its own centre direction and not the opposite one.
    points = sphere_points(4096)
    centres = lonlat_to_xyz(grid.centers_deg[:, 0], grid.centers_deg[:, 1])
    closest = np.argmax(points @ centres.T, axis=0)
    farthest = np.argmin(points @ centres.T, axis=0)
    assert coverage[np.arange(32), closest].all() and not coverage[np.arange(32), farthest].any()

    fine = coverage_matrix(ViewportGrid(12, 6, 60), n_points=16384)
    np.testing.assert_allclose(fine.mean(axis=1), _frustum_fraction(60.0), rtol=0.02)


def test_coverage_is_cached_and_read_only() -> None:
    grid = ViewportGrid(4, 2, 120)
    first = coverage_matrix(grid, 512)
    assert coverage_matrix(ViewportGrid(4, 2, 120.0), 512) is first
    with pytest.raises(ValueError):
        first[0, 0] = not first[0, 0]
    with pytest.raises(ValueError, match="ViewportGrid"):
        coverage_matrix("lon8-lat4")  # type: ignore[arg-type]


# --- outlines ---------------------------------------------------------------------------------


def test_outline_without_seam_is_one_closed_loop() -> None:
    (outline,) = viewport_outline(0.0, 0.0, 90.0, 1024, 512, n_per_side=8)
    assert outline.shape == (33, 2)
    np.testing.assert_allclose(outline[0], outline[-1])
    # yaw and pitch span +-45 degrees at the centre lines of a 90 degree viewport at the equator.
    np.testing.assert_allclose([outline[:, 0].min(), outline[:, 0].max()], [383.5, 639.5])
    np.testing.assert_allclose(outline[4], [511.5, 127.5])  # top-centre point, pitch +45


def test_outline_is_split_at_the_seam() -> None:
    width = 1024
    pieces = viewport_outline(180.0, 0.0, 90.0, width, 512)
    assert len(pieces) == 2
    for piece in pieces:
        assert np.all((piece[:, 0] >= -0.5) & (piece[:, 0] <= width - 0.5))
        assert np.abs(np.diff(piece[:, 0])).max() < width / 4
    ends = sorted(x for piece in pieces for x in (piece[0, 0], piece[-1, 0]))
    np.testing.assert_allclose(ends, [-0.5, -0.5, width - 0.5, width - 0.5])

    # A viewport around the pole wraps all the way round: one piece from edge to edge.
    (polar,) = viewport_outline(157.5, 67.5, 90.0, width, 512)
    np.testing.assert_allclose(sorted([polar[0, 0], polar[-1, 0]]), [-0.5, width - 0.5])
    assert np.abs(np.diff(polar[:, 0])).max() < width / 4
