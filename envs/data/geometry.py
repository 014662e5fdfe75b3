"""Viewport geometry on the sphere: the candidate grid, gnomonic extraction and coverage.

Conventions
-----------
Directions are (yaw, pitch) pairs in degrees.

* **yaw** (longitude), wrapping with period 360, reported in [-180, 180): 0 is the middle of
  the ERP and yaw grows with the ERP column. In continuous ERP coordinates (pixel ``i`` spans
  ``[i, i + 1)``) the column is ``u = (yaw + 180) / 360 * W``; in the pixel-centre coordinates
  used by ``cv2.remap`` and for drawing (pixel ``i`` centred on ``i``) it is ``u - 0.5``.
* **pitch** (latitude) in [-90, 90]: +90 is the top row of the ERP, -90 the bottom row;
  ``v = (90 - pitch) / 180 * H`` (again minus 0.5 for pixel centres).
* **3-D unit vectors** (world frame) from :func:`lonlat_to_xyz`:
  ``x = cos(pitch) sin(yaw)``, ``y = sin(pitch)`` (up), ``z = cos(pitch) cos(yaw)``;
  yaw 0 / pitch 0 is +z, yaw +90 is +x.
* **Viewport camera** looking at (yaw, pitch): the camera looking along +z is tilted up by
  ``pitch`` (about x), then turned by ``yaw`` (about the vertical y axis); no roll. Its image has
  up at row 0 and yaw increasing to the right, i.e. what a viewer inside the sphere sees (not
  mirrored). The ``size x size`` pixel centres sample the image plane ``z = 1`` at
  ``tan(fov / 2) * (2 j / (size - 1) - 1)``, so the outer pixel centres lie exactly on the
  square frustum ``|x|, |y| <= tan(fov / 2) z`` that :func:`coverage_matrix` tests against.
* **py360convert**: ``extract_viewport(erp, yaw, pitch, fov, size)`` reproduces
  ``py360convert.e2p(erp, fov, u_deg=yaw, v_deg=pitch, out_hw=(size, size))`` (bilinear; its
  ``u_deg`` > 0 looks right = towards larger columns, ``v_deg`` > 0 looks up, and it samples the
  same plane positions). The one systematic difference lies within half an ERP row of each pole:
  we clamp to the first/last row there, py360convert reads the row across the pole.

Index order of :class:`ViewportGrid`
------------------------------------
Row-major from the top row: ``index = row * n_lon + col`` with
``pitch(row) = 90 - 180 / n_lat * (row + 0.5)`` and ``yaw(col) = -180 + 360 / n_lon * (col + 0.5)``.
For the default 8 x 4 grid (FOV 90, 224 px)::

    row 0, pitch +67.5: indices  0.. 7, yaw -157.5, -112.5, -67.5, -22.5, 22.5, 67.5, 112.5, 157.5
    row 1, pitch +22.5: indices  8..15, same yaws
    row 2, pitch -22.5: indices 16..23
    row 3, pitch -67.5: indices 24..31

Sampling density
----------------
Features must not depend on how many pixels a panorama happens to have. The cache, the env's
data and the scorer therefore render every viewport from :func:`canonical_erp`: the ERP
area-resampled to :attr:`ViewportGrid.erp_width` (896 x 448 for the default grid), where an ERP
pixel spans about the angle of a viewport pixel. :func:`extract_viewports` itself renders
whatever ERP it is given, so that it stays comparable with py360convert.

Performance
-----------
:func:`extract_viewports` renders all V viewports with one ``cv2.remap`` call on a
``(V * size, size)`` map stacked from the per-viewport maps (split into several calls only where
``V * size`` reaches cv2's limit of 32766 rows, e.g. 24 x 12 viewports of 224 px). The maps are
built once per (ERP height, ERP width, grid), converted to OpenCV's fixed-point format
(``CV_16SC2``, 1/32 px; faster than float maps and within rounding of them) and kept in a small
LRU cache. Yaw wraps via ``BORDER_WRAP``; rows are clamped inside the image, so the wrap never
reaches across the poles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral, Real

import cv2
import numpy as np

__all__ = [
    "ViewportGrid",
    "canonical_erp",
    "coverage_matrix",
    "extract_viewport",
    "extract_viewports",
    "lonlat_to_xyz",
    "sphere_points",
    "viewport_outline",
    "xyz_to_lonlat",
]

# Remap tables for the default grid on one ERP size take ~10 MB; a dataset rarely mixes more
# than a handful of ERP sizes, so a few entries avoid rebuilding without hoarding memory.
_GRID_MAP_CACHE_SIZE = 8
# Single viewports are small (~0.3 MB at 224 px) and callers may revisit many directions.
_SINGLE_MAP_CACHE_SIZE = 64
# cv2.remap needs source and destination sides below SHRT_MAX (its fixed-point maps are int16).
_MAX_REMAP_SIDE = np.iinfo(np.int16).max - 1
# Tolerance, in cosine of the angular distance, under which two viewports count as tied.
_TIE_TOLERANCE = 1e-12


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {number}")
    return number


def _check_fov(fov_deg: object) -> float:
    if isinstance(fov_deg, bool) or not isinstance(fov_deg, Real) or not math.isfinite(fov_deg):
        raise ValueError(f"fov_deg must be a finite number of degrees, got {fov_deg!r}")
    fov = float(fov_deg)
    if not 0.0 < fov < 180.0:
        # A gnomonic image plane cannot hold a field of view of 180 degrees or more.
        raise ValueError(f"fov_deg must lie in (0, 180) degrees, got {fov}")
    return fov


def _check_direction(yaw_deg: object, pitch_deg: object) -> tuple[float, float]:
    """Validate a direction and return it with yaw wrapped into [-180, 180)."""
    degrees = []
    for name, value in (("yaw_deg", yaw_deg), ("pitch_deg", pitch_deg)):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of degrees, got {value!r}")
        degrees.append(float(value))
    yaw, pitch = degrees
    if not -90.0 <= pitch <= 90.0:
        raise ValueError(f"pitch_deg must lie in [-90, 90] degrees, got {pitch}")
    return (yaw + 180.0) % 360.0 - 180.0, pitch


@dataclass(frozen=True)
class ViewportGrid:
    """The regular grid of candidate viewports: ``n_lon`` yaws x ``n_lat`` pitches.

    Args:
        n_lon: Viewports per row, evenly spaced in yaw (>= 1).
        n_lat: Rows, evenly spaced in pitch (>= 1).
        fov_deg: Horizontal and vertical field of view of each square viewport, in (0, 180).
        size: Side of each rendered viewport in pixels (>= 1).

    See the module docstring for the index order and the centre positions.
    """

    n_lon: int = 8
    n_lat: int = 4
    fov_deg: float = 90.0
    size: int = 224

    def __post_init__(self) -> None:
        # Normalise the types so equal grids hash equally and key() is stable (e.g. numpy ints).
        object.__setattr__(self, "n_lon", _check_int("n_lon", self.n_lon, 1))
        object.__setattr__(self, "n_lat", _check_int("n_lat", self.n_lat, 1))
        object.__setattr__(self, "fov_deg", _check_fov(self.fov_deg))
        object.__setattr__(self, "size", _check_int("size", self.size, 1, _MAX_REMAP_SIDE))

    @property
    def n_viewports(self) -> int:
        """Number of viewports V = n_lon * n_lat."""
        return self.n_lon * self.n_lat

    @property
    def centers_deg(self) -> np.ndarray:
        """(V, 2) float64 viewport centres ``[yaw, pitch]`` in index order (a fresh copy)."""
        yaws = -180.0 + 360.0 / self.n_lon * (np.arange(self.n_lon) + 0.5)
        pitches = 90.0 - 180.0 / self.n_lat * (np.arange(self.n_lat) + 0.5)
        return np.stack(
            [np.tile(yaws, self.n_lat), np.repeat(pitches, self.n_lon)], axis=1
        )

    @property
    def erp_width(self) -> int:
        """Width of the canonical ERP (:func:`canonical_erp`): one ERP pixel spans ``fov / size``
        degrees, the mean angle of a viewport pixel (896 px for the default 8 x 4, 90°, 224 px grid).

        Even, so the height is exactly half; capped at cv2.remap's side limit.
        """
        half = max(round(180.0 * self.size / self.fov_deg), 1)
        return 2 * min(half, _MAX_REMAP_SIDE // 2)

    def key(self) -> str:
        """Stable identifier for cache keys, e.g. ``"lon8-lat4-fov90-s224"``."""
        # repr() round-trips floats exactly, so distinct FOVs never share a key.
        fov = repr(self.fov_deg).removesuffix(".0")
        return f"lon{self.n_lon}-lat{self.n_lat}-fov{fov}-s{self.size}"

    def nearest(self, yaw_deg: float, pitch_deg: float) -> int:
        """Index of the viewport whose centre is angularly closest to (yaw, pitch).

        Distances are great-circle angles, so yaw wraps (190 == -170) and all yaws are
        equivalent at the poles. Ties (within floating-point noise) go to the lowest index.
        """
        yaw, pitch = _check_direction(yaw_deg, pitch_deg)
        centers = self.centers_deg
        cosines = lonlat_to_xyz(centers[:, 0], centers[:, 1]) @ lonlat_to_xyz(yaw, pitch)
        return int(np.flatnonzero(cosines >= cosines.max() - _TIE_TOLERANCE)[0])

    @property
    def front(self) -> int:
        """The viewport facing yaw 0 on the equator (``nearest(0, 0)``): where paths start by default."""
        return self.nearest(0.0, 0.0)

    def equator_indices(self) -> np.ndarray:
        """Indices (ascending, int64) of the row or rows whose pitch is closest to the equator."""
        row_pitch = np.abs(90.0 - 180.0 / self.n_lat * (np.arange(self.n_lat) + 0.5))
        rows = np.flatnonzero(np.isclose(row_pitch, row_pitch.min()))
        return (rows[:, None] * self.n_lon + np.arange(self.n_lon)).ravel().astype(np.int64)


def lonlat_to_xyz(yaw_deg: np.ndarray | float, pitch_deg: np.ndarray | float) -> np.ndarray:
    """Unit vectors (..., 3) in the world frame of the module docstring for yaw/pitch in degrees."""
    yaw = np.radians(np.asarray(yaw_deg, dtype=np.float64))
    pitch = np.radians(np.asarray(pitch_deg, dtype=np.float64))
    cos_pitch = np.cos(pitch)
    return np.stack([cos_pitch * np.sin(yaw), np.sin(pitch), cos_pitch * np.cos(yaw)], axis=-1)


def xyz_to_lonlat(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(yaw, pitch) in degrees of direction vectors (..., 3); they need not be unit length."""
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    return np.degrees(np.arctan2(x, z)), np.degrees(np.arctan2(y, np.hypot(x, z)))


def _camera_bases(centers_deg: np.ndarray) -> np.ndarray:
    """(V, 3, 3) rotations whose columns are each camera's right, up and forward world axes."""
    yaw = np.radians(centers_deg[:, 0])
    pitch = np.radians(centers_deg[:, 1])
    sy, cy, sp, cp = np.sin(yaw), np.cos(yaw), np.sin(pitch), np.cos(pitch)
    zero = np.zeros_like(yaw)
    right = np.stack([cy, zero, -sy], axis=-1)
    up = np.stack([-sp * sy, cp, -sp * cy], axis=-1)
    forward = np.stack([cp * sy, sp, cp * cy], axis=-1)
    return np.stack([right, up, forward], axis=-1)


def _plane_coordinates(fov_deg: float, size: int) -> np.ndarray:
    """Image-plane positions (z = 1) of the pixel centres along one side, left/bottom first."""
    half = math.tan(math.radians(fov_deg) / 2.0)
    if size == 1:
        # linspace would put a lone sample on the left edge; it belongs on the optical axis.
        return np.zeros(1)
    return np.linspace(-half, half, size)


def _erp_pixel(
    yaw_deg: np.ndarray, pitch_deg: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """ERP pixel-centre coordinates (x, y) of directions; pixel i is centred on i."""
    x = (np.asarray(yaw_deg) + 180.0) / 360.0 * width - 0.5
    y = (90.0 - np.asarray(pitch_deg)) / 180.0 * height - 0.5
    return x, y


# One remap call per chunk of viewports: cv2.remap output must stay below SHRT_MAX rows.
_RemapChunks = tuple[tuple[np.ndarray, np.ndarray], ...]


def _build_maps(
    height: int, width: int, centers_deg: np.ndarray, fov_deg: float, size: int
) -> _RemapChunks:
    """Fixed-point remap maps rendering every centre, viewports stacked by rows.

    Returns ``(xy, fraction)`` map pairs of shape ``(k * size, size)``, each covering the next
    ``k`` viewports; a single pair unless ``V * size`` exceeds cv2's row limit.
    """
    plane = _plane_coordinates(fov_deg, size)
    plane_x = plane[None, :, None]
    plane_y = plane[::-1, None, None]  # row 0 is the top of the viewport
    bases = _camera_bases(centers_deg)
    map_x = np.empty((len(bases) * size, size), dtype=np.float32)
    map_y = np.empty_like(map_x)
    # One viewport at a time keeps the float64 temporaries small for large grids.
    for index, (right, up, forward) in enumerate(np.moveaxis(bases, -1, 1)):
        directions = plane_x * right + plane_y * up + forward
        yaw, pitch = xyz_to_lonlat(directions)
        x, y = _erp_pixel(yaw, pitch, width, height)
        rows = slice(index * size, (index + 1) * size)
        map_x[rows] = x
        # Clamping keeps the row inside the image so BORDER_WRAP only ever wraps yaw.
        map_y[rows] = np.clip(y, 0.0, height - 1.0)
    rows_per_chunk = (_MAX_REMAP_SIDE // size) * size
    chunks = []
    for start in range(0, map_x.shape[0], rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        xy, fraction = cv2.convertMaps(map_x[rows], map_y[rows], cv2.CV_16SC2)
        # The maps are shared through the caches; make accidental in-place edits fail loudly.
        xy.setflags(write=False)
        fraction.setflags(write=False)
        chunks.append((xy, fraction))
    return tuple(chunks)


@lru_cache(maxsize=_GRID_MAP_CACHE_SIZE)
def _grid_maps(height: int, width: int, grid: ViewportGrid) -> _RemapChunks:
    return _build_maps(height, width, grid.centers_deg, grid.fov_deg, grid.size)


@lru_cache(maxsize=_SINGLE_MAP_CACHE_SIZE)
def _single_maps(
    height: int, width: int, yaw_deg: float, pitch_deg: float, fov_deg: float, size: int
) -> _RemapChunks:
    return _build_maps(height, width, np.array([[yaw_deg, pitch_deg]]), fov_deg, size)


def _check_erp(erp: object) -> np.ndarray:
    if not isinstance(erp, np.ndarray):
        raise ValueError(f"erp must be a numpy array, got {type(erp).__name__}")
    if erp.ndim != 3 or erp.shape[2] != 3:
        raise ValueError(f"erp must have shape (H, W, 3), got {erp.shape}")
    if erp.dtype != np.uint8:
        raise ValueError(f"erp must be uint8, got {erp.dtype}")
    height, width = erp.shape[:2]
    if not (1 <= height <= _MAX_REMAP_SIDE and 1 <= width <= _MAX_REMAP_SIDE):
        raise ValueError(
            f"erp sides must lie in [1, {_MAX_REMAP_SIDE}] pixels (cv2.remap limit), "
            f"got {height}x{width}"
        )
    # cv2 rejects negative strides (e.g. an RGB<->BGR view); this is free when already contiguous.
    return np.ascontiguousarray(erp)


def _remap(erp: np.ndarray, chunks: _RemapChunks, n_viewports: int, size: int) -> np.ndarray:
    """Render stacked viewports straight into one (V, size, size, 3) array."""
    out = np.empty((n_viewports * size, size, 3), dtype=np.uint8)
    start = 0
    for xy, fraction in chunks:
        stop = start + xy.shape[0]
        cv2.remap(
            erp, xy, fraction, cv2.INTER_LINEAR, dst=out[start:stop], borderMode=cv2.BORDER_WRAP
        )
        start = stop
    return out.reshape(n_viewports, size, size, 3)


def canonical_erp(erp: np.ndarray, grid: ViewportGrid) -> np.ndarray:
    """``erp`` resampled to the grid's canonical sampling density, ``(erp_width / 2, erp_width, 3)``.

    Every feature (viewports, global view, panorama statistics) is computed from this ERP, so a
    panorama gives the same features at any width. Remapping a much wider ERP straight into
    viewports reads 2 x 2 pixels of each 4 x 4 that a viewport pixel covers (aliasing, and
    sharper, noisier viewports the wider the input); area resampling first averages all of them.
    A narrower ERP is upsampled bilinearly, as the remap would have sampled it.
    See :attr:`ViewportGrid.erp_width`.
    """
    erp = _check_erp(erp)
    width = grid.erp_width
    if erp.shape[:2] == (width // 2, width):
        return erp
    shrinking = erp.shape[1] > width
    return cv2.resize(erp, (width, width // 2), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def extract_viewports(erp: np.ndarray, grid: ViewportGrid) -> np.ndarray:
    """Render every viewport of ``grid`` from an ERP image by gnomonic projection.

    Args:
        erp: uint8 (H, W, 3) equirectangular image (any channel order; it is preserved).
        grid: The viewport grid.

    Returns:
        uint8 (V, size, size, 3) viewports in the grid's index order.

    Raises:
        ValueError: If ``erp`` is not a uint8 (H, W, 3) array or a side exceeds 32766 pixels
            (cv2.remap's limit).
    """
    erp = _check_erp(erp)
    chunks = _grid_maps(erp.shape[0], erp.shape[1], grid)
    return _remap(erp, chunks, grid.n_viewports, grid.size)


def extract_viewport(
    erp: np.ndarray, yaw_deg: float, pitch_deg: float, fov_deg: float = ViewportGrid.fov_deg,
    size: int = ViewportGrid.size,
) -> np.ndarray:
    """Render one square viewport centred on (yaw, pitch), projected like :func:`extract_viewports`.

    Returns:
        uint8 (size, size, 3).

    Raises:
        ValueError: On a bad ERP array, a non-finite yaw, a pitch outside [-90, 90], a FOV
            outside (0, 180) or a size outside [1, 32766].
    """
    erp = _check_erp(erp)
    yaw, pitch = _check_direction(yaw_deg, pitch_deg)
    size = _check_int("size", size, 1, _MAX_REMAP_SIDE)
    chunks = _single_maps(erp.shape[0], erp.shape[1], yaw, pitch, _check_fov(fov_deg), size)
    return _remap(erp, chunks, 1, size)[0]


def sphere_points(n: int = 4096) -> np.ndarray:
    """``n`` near-equally spaced unit vectors (n, 3) on the sphere (Fibonacci lattice).

    Point i sits at height ``y = 1 - (2 i + 1) / n`` (equal-area bands) and turns by the golden
    angle around the vertical axis, so every point stands for ~4 pi / n steradians. Deterministic.
    """
    n = _check_int("n", n, 1)
    index = np.arange(n, dtype=np.float64)
    y = 1.0 - (2.0 * index + 1.0) / n
    radius = np.sqrt(1.0 - y * y)
    angle = index * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([radius * np.sin(angle), y, radius * np.cos(angle)], axis=1)


@lru_cache(maxsize=16)
def _coverage(grid: ViewportGrid, n_points: int) -> np.ndarray:
    points = sphere_points(n_points)
    # Camera-frame coordinates of every point for every viewport: (V, N, 3) = right, up, forward.
    local = np.einsum("nk,vkc->vnc", points, _camera_bases(grid.centers_deg))
    half = math.tan(math.radians(grid.fov_deg) / 2.0)
    forward = local[..., 2]
    # Both bounds force forward >= 0, so the mirrored frustum behind the camera is excluded.
    inside = (np.abs(local[..., 0]) <= half * forward) & (np.abs(local[..., 1]) <= half * forward)
    inside.setflags(write=False)
    return inside


def coverage_matrix(grid: ViewportGrid, n_points: int = 4096) -> np.ndarray:
    """Which points of :func:`sphere_points` each viewport sees.

    Returns:
        Read-only bool (V, n_points); True where the point lies inside viewport v's square
        gnomonic frustum. Row means are fractions of the sphere (one row of the default grid
        sees ~1/6 of it), so coverage and overlap of paths are measured on the sphere, not in
        viewport counts. Cached per (grid, n_points).
    """
    if not isinstance(grid, ViewportGrid):
        raise ValueError(f"grid must be a ViewportGrid, got {type(grid).__name__}")
    return _coverage(grid, _check_int("n_points", n_points, 1))


def viewport_outline(
    yaw_deg: float,
    pitch_deg: float,
    fov_deg: float,
    width: int,
    height: int,
    n_per_side: int = 16,
) -> list[np.ndarray]:
    """Border of a viewport as polylines in ERP pixel-centre coordinates, for drawing.

    The square border is walked clockwise from its top-left corner with ``n_per_side`` segments
    per side. Where it crosses the yaw seam the polyline is cut, with both ends interpolated onto
    the image edge (x = -0.5 or W - 0.5), so no segment jumps across the image. An outline that
    does not cross the seam is one closed polyline (last point = first point); one that crosses
    it twice gives two pieces; one around a pole crosses once and gives one piece spanning the
    full width.

    Returns:
        List of float64 (k, 2) arrays of (x, y) points; pixel i is centred on coordinate i.
    """
    yaw, pitch = _check_direction(yaw_deg, pitch_deg)
    fov = _check_fov(fov_deg)
    width = _check_int("width", width, 1)
    height = _check_int("height", height, 1)
    n_per_side = _check_int("n_per_side", n_per_side, 1)

    half = math.tan(math.radians(fov) / 2.0)
    ramp = np.linspace(-half, half, n_per_side + 1)[:-1]
    border = np.concatenate(
        [
            np.stack([ramp, np.full_like(ramp, half)], axis=1),  # top, left to right
            np.stack([np.full_like(ramp, half), -ramp], axis=1),  # right, top to bottom
            np.stack([-ramp, np.full_like(ramp, -half)], axis=1),  # bottom, right to left
            np.stack([np.full_like(ramp, -half), ramp], axis=1),  # left, bottom to top
        ]
    )
    border = np.concatenate([border, border[:1]])  # close the loop
    right, up, forward = np.moveaxis(_camera_bases(np.array([[yaw, pitch]]))[0], -1, 0)
    yaws, pitches = xyz_to_lonlat(border[:, :1] * right + border[:, 1:] * up + forward)
    # Unwrapped yaw changes smoothly, so each 360-wide tile it passes through is one piece.
    unwrapped = np.unwrap(yaws, period=360.0)
    tiles = np.floor((unwrapped + 180.0) / 360.0)

    pieces: list[list[tuple[float, float]]] = [[(unwrapped[0] - 360.0 * tiles[0], pitches[0])]]
    for i in range(1, len(unwrapped)):
        if tiles[i] != tiles[i - 1]:
            seam = -180.0 + 360.0 * max(tiles[i], tiles[i - 1])
            t = (seam - unwrapped[i - 1]) / (unwrapped[i] - unwrapped[i - 1])
            seam_pitch = pitches[i - 1] + t * (pitches[i] - pitches[i - 1])
            pieces[-1].append((seam - 360.0 * tiles[i - 1], seam_pitch))
            pieces.append([(seam - 360.0 * tiles[i], seam_pitch)])
        pieces[-1].append((unwrapped[i] - 360.0 * tiles[i], pitches[i]))
    if len(pieces) > 1:
        # The loop's start is not a seam, so the last piece continues into the first one.
        pieces[0] = pieces.pop() + pieces[0][1:]

    polylines = []
    for piece in pieces:
        piece_yaw, piece_pitch = np.asarray(piece, dtype=np.float64).T
        x, y = _erp_pixel(piece_yaw, piece_pitch, width, height)
        polylines.append(np.stack([x, y], axis=1))
    return polylines
