"""Synth360: the embedded default dataset, generated offline from scikit-image's photographs.

Real 360° IQA datasets cannot be downloaded here, so this module builds one on which scanpaths
matter: natural-looking panoramas, distorted globally *and* inside small spherical caps that a
scanpath has to find, labelled with a pseudo-MOS computed on the very viewports the env offers.

Scenes
------
Every reference ("content") is composed on the sphere from a seed, so the yaw seam and the poles
are continuous:

* a sky (clear, dusk, overcast or night): a colour gradient in pitch, a sun glow, and a cloud
  layer (tileable 1/f noise) -- or the Hubble deep field for night -- mapped onto a plane above
  the camera, so clouds shrink towards the horizon as real ones do;
* a ground plane below the camera textured with ``grass``, ``gravel``, ``brick`` or ``moon``
  (perspective-correct, mip-mapped to avoid aliasing towards the horizon) and fading into haze;
* a skyline on the horizon (fractal mountains, a city of blocks, or none);
* 3-6 photo billboards (``astronaut``, ``coffee``, ``chelsea``, ``rocket``, ``motorcycle``,
  ``camera``, ``coins``, ``clock``, ``page``, ``text``, ``hubble``) at random yaws near the
  horizon, random crops and sizes, rendered by inverse gnomonic mapping (each is a flat
  rectangle facing the camera, so it looks like a flat picture in every viewport).

Random choices come from ``np.random.default_rng([seed, content, stream, ...])``: content ``i``
is the same whatever ``n_refs`` is, and the scene's random draws never depend on the width (the
local caps do, through the rendered reference they are placed on: output is deterministic per
seed *and* width).

Distortions
-----------
Each content gets ``combos_per_ref`` (kind, scope) combinations with distinct kinds, balanced over
the whole set (least-used combination first), each at ``levels`` (default 1, 3, 5) from
:mod:`rl_scaniqa.envs.data.distortions`. ``local`` applies the distortion only inside a feathered
spherical cap (radius 25-40°, feather 10°), whose centre is drawn with probability proportional
to the reference's local gradient energy times ``cos(pitch)`` (so the damage lands on structure,
where it is visible, not on a flat sky) and down-weighted 4x within 45° of the front direction
(yaw 0, pitch 0), where the env's default start viewport looks (viewport 11, yaw -22.5°,
pitch +22.5°): on seed 0, 4 % of caps are centred nearest to it and 8 % nearest to any of the four
front viewports, so a scanpath almost always has to go and find the damage. Local stitching puts
its seam through the cap centre. All levels of one combination use identically seeded generators
(same noise field, same seams, same cap), so only the magnitude grows with the level.

Pseudo-MOS
----------
For a distorted image ``X`` of reference ``R``:

1. both are resized (``INTER_AREA``) to an ERP of width ``4 * s`` with ``s = 128`` (so the ERP
   has the pixel density of the viewports, no aliasing) and the ``8 x 4`` viewports of the env's
   default grid (FOV 90°) are rendered at ``s x s`` by :func:`extract_viewports` -- 128 instead of
   the env's 224 px for speed; the grid centres and FOV are the env's;
2. ``q_v`` = SSIM (Wang et al. 2004: grey BT.601 luma, Gaussian window sigma 1.5 truncated to
   11 x 11, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2, mean of the map) of viewport ``v`` of ``X``
   against that of ``R``; damage ``d_v = max(0, 1 - q_v)``;
3. equator prior ``w_v = exp(-0.5 * |pitch_v|)`` (pitch in radians; the env's reward uses the
   same prior), equator-weighted damage ``e_v = w_v / max(w) * d_v``;
4. pooled damage ``D = (1 - rho) * sum(w_v d_v) / sum(w_v) + rho * mean(top-k of e_v)`` with
   ``rho = 0.7`` and ``k = 2`` (the two worst viewports);
5. ``MOS = 1 + 4 * exp(-(D / tau) ** gamma)`` with ``tau = 0.2``, ``gamma = 0.6``: the
   reference has ``D = 0`` and MOS 5, the top of its group, and MOS falls strictly towards 1 as
   damage grows. ``gamma < 1`` spreads the small damages of mild and local distortions over the
   scale (as human raters do: the first visible artefact costs the most), and ``tau`` centres the
   distorted images of the default set on the scale (seed 0: mean 3.45, median 3.58, std 0.93,
   range 1.35-4.90; median of global levels 1/3/5: 4.20/2.84/1.99, of local: 4.60/3.87/3.09).

Because the worst-viewport term sees a local cap at full strength while the mean term dilutes
it, a local distortion lowers the MOS much more than its area share -- which is exactly the
information a scanpath has to collect.

Sizes and timing
----------------
The default is 40 contents x (4 combinations x 3 levels + 1 reference) = 520 images, about the
size of CVIQD (544), at 1024 x 512: a 90° viewport spans 256 ERP pixels there, at least the
224 px the env renders, so viewports are never upsampled (no interpolation blur that would mask
mild blur or compression), while images stay small enough (about 0.5 MB of PNG each, 270 MB in
all) that the feature cache for the whole set (33 backbone calls and 3 augmented views per image)
and PPO training fit the 15-minute demo on 2 cores. 2048 x 1024 would quadruple generation and
caching time and only add detail that the 224 px viewports cannot show. ``quick=True`` makes
6 contents x (3 x 3 + 1) = 60 images (32 MB). Measured in one process on the shared 2-core
development machine (load average about 4): default 40 s wall (26 s CPU), quick 6 s wall (4 s
CPU); about 50 ms per image, JPEG2000 (about 0.25 s) being the slowest kind.

Output layout
-------------
``out_dir/images/<content>_ref.png``, ``out_dir/images/<content>_<kind>_<scope>_<level>.png``,
``out_dir/labels.csv`` (columns ``path,mos,ref,distortion,level,scope`` read by the ``csv``
loader, plus ``cap_yaw,cap_pitch,cap_radius`` in degrees for local distortions -- empty
otherwise -- so analyses can check whether a scanpath found the damage; references have
distortion ``reference``, level 0, scope ``none``) and ``out_dir/synth360.json`` (the manifest:
version, seed, sizes, distortion and MOS parameters). Every file is written atomically and
``labels.csv`` last, so a folder with a matching manifest and a complete ``labels.csv`` is
finished: generating again with the same arguments does nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from rl_scaniqa.envs.data import distortions as dist
from rl_scaniqa.envs.data.geometry import ViewportGrid, extract_viewports
from rl_scaniqa.envs.data.datasets.generated import (
    LABEL_COLUMNS,
    LABELS_NAME,
    GeneratedLayout,
    LabelRow,
    load_generated,
    prepare_folder,
    write_distortion_group,
    write_labels,
)
from rl_scaniqa.envs.data.datasets.records import PanoramaRecord, PathLike
from rl_scaniqa.envs.progress import progress_bar
from rl_scaniqa.envs.storage import atomic_write_json

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_N_REFS",
    "DEFAULT_WIDTH",
    "LABEL_COLUMNS",
    "MANIFEST_NAME",
    "QUICK_N_REFS",
    "ReferenceViews",
    "SCOPES",
    "SYNTH360_VERSION",
    "DistortionSpec",
    "MosFormula",
    "distort",
    "generate_synth360",
    "plan_distortions",
    "pseudo_mos",
    "render_reference",
    "viewport_ssim",
]

#: Bumped whenever the generated pixels or labels change for the same arguments.
SYNTH360_VERSION = 1
DEFAULT_N_REFS = 40
QUICK_N_REFS = 6
DEFAULT_COMBOS = 4
QUICK_COMBOS = 3
DEFAULT_WIDTH = 1024
DEFAULT_LEVELS: tuple[int, ...] = (1, 3, 5)
SCOPES: tuple[str, ...] = ("global", "local")
MANIFEST_NAME = "synth360.json"
IMAGES_DIR = "images"

# Independent random streams per content (the third entry of the seed sequence).
_STREAM_SCENE, _STREAM_CAP, _STREAM_DISTORTION, _STREAM_PLAN = 0, 1, 2, 3
# Cap geometry for local distortions, degrees.
_CAP_RADIUS_RANGE = (25.0, 40.0)
_CAP_FEATHER = 10.0
_FRONT_AVOID_DEG = 45.0
_FRONT_WEIGHT = 0.25
LAYOUT = GeneratedLayout(
    dataset="synth360", title="Synth360", manifest_name=MANIFEST_NAME,
    image_pattern=re.compile(r"^c\d{3,}_(ref|[a-z0-9]+_(global|local)_[1-5])\.png$"),
    generate_hint="generate one with rl-scaniqa synth")


# --------------------------------------------------------------------------------------------
# Pseudo-MOS
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MosFormula:
    """Parameters of the pseudo-MOS (see the module docstring for the formula)."""

    render_size: int = 128
    equator_decay: float = 0.5
    worst_k: int = 2
    worst_weight: float = 0.7
    tau: float = 0.2
    gamma: float = 0.6
    mos_low: float = 1.0
    mos_high: float = 5.0

    @property
    def grid(self) -> ViewportGrid:
        """The env's default grid (8 x 4, FOV 90°) rendered at ``render_size``."""
        return ViewportGrid(size=self.render_size)

    def equator_weights(self) -> np.ndarray:
        """``w_v = exp(-decay * |pitch_v|)`` for every viewport of :attr:`grid`."""
        pitch = np.radians(self.grid.centers_deg[:, 1])
        return np.exp(-self.equator_decay * np.abs(pitch))

    def pool(self, ssim: np.ndarray) -> float:
        """Pooled damage ``D`` from per-viewport SSIM values."""
        damage = np.maximum(0.0, 1.0 - np.asarray(ssim, dtype=np.float64))
        weights = self.equator_weights()
        mean_term = float(np.sum(weights * damage) / np.sum(weights))
        weighted = weights / weights.max() * damage
        worst_term = float(np.mean(np.sort(weighted)[-self.worst_k:]))
        return (1.0 - self.worst_weight) * mean_term + self.worst_weight * worst_term

    def mos(self, damage: float) -> float:
        """Map pooled damage to the MOS scale: ``low + (high - low) * exp(-(D / tau) ** gamma)``."""
        return self.mos_low + (self.mos_high - self.mos_low) * math.exp(-((damage / self.tau) ** self.gamma))


_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2


def _mos_viewports(erp: np.ndarray, formula: MosFormula) -> np.ndarray:
    """Grey float32 viewports stacked as channels ``(s, s, V)`` (OpenCV filters them in one call).

    ERPs wider than ``4 * s`` are first area-downsampled to that width; narrower ones (tests,
    thumbnails) are used as they are.
    """
    target_width = 4 * formula.render_size
    if erp.shape[1] > target_width:
        erp = cv2.resize(erp, (target_width, target_width // 2), interpolation=cv2.INTER_AREA)
    views = extract_viewports(erp, formula.grid)
    grey = views.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(grey, 0, -1))


def _gauss(x: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)


class ReferenceViews:
    """A reference's viewports and their SSIM statistics, computed once per content."""

    def __init__(self, reference: np.ndarray, formula: MosFormula) -> None:
        self.formula = formula
        self.views = _mos_viewports(reference, formula)
        self.mu = _gauss(self.views)
        self.var = _gauss(self.views * self.views) - self.mu * self.mu

    def ssim(self, distorted: np.ndarray) -> np.ndarray:
        """Per-viewport SSIM ``(V,)`` of ``distorted`` against the reference."""
        other = _mos_viewports(distorted, self.formula)
        mu = _gauss(other)
        var = _gauss(other * other) - mu * mu
        cov = _gauss(self.views * other) - self.mu * mu
        ssim_map = ((2 * self.mu * mu + _SSIM_C1) * (2 * cov + _SSIM_C2)) / (
            (self.mu**2 + mu**2 + _SSIM_C1) * (self.var + var + _SSIM_C2))
        return ssim_map.reshape(-1, ssim_map.shape[-1]).mean(axis=0).astype(np.float64)


def viewport_ssim(reference: np.ndarray, distorted: np.ndarray, *,
                  formula: MosFormula = MosFormula()) -> np.ndarray:
    """SSIM of every viewport of the default grid, ``float64 (V,)``, in the grid's index order."""
    _check_pair(reference, distorted)
    return ReferenceViews(reference, formula).ssim(distorted)


def pseudo_mos(reference: np.ndarray, distorted: np.ndarray, *, formula: MosFormula = MosFormula()) -> float:
    """The Synth360 pseudo-MOS (1..5) of ``distorted`` against ``reference`` (module docstring)."""
    return formula.mos(formula.pool(viewport_ssim(reference, distorted, formula=formula)))


def _check_pair(reference: np.ndarray, distorted: np.ndarray) -> None:
    for name, image in (("reference", reference), ("distorted", distorted)):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}: expected a uint8 (H, W, 3) ERP, got {getattr(image, 'shape', type(image))}")
    if reference.shape != distorted.shape:
        raise ValueError(f"reference {reference.shape} and distorted {distorted.shape} differ in shape")


# --------------------------------------------------------------------------------------------
# Scene rendering
# --------------------------------------------------------------------------------------------

_BILLBOARD_PHOTOS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "motorcycle", "hubble",
    "camera", "coins", "clock", "page", "text",
)
# Colour photographs are drawn twice as often as the grey ones.
_BILLBOARD_WEIGHTS = np.array([2.0] * 6 + [1.0] * 5) / 17.0
_GROUND_TEXTURES: tuple[str, ...] = ("grass", "gravel", "brick", "moon")
_SKIES: tuple[str, ...] = ("clear", "dusk", "overcast", "night")
_SKY_WEIGHTS = np.array([0.35, 0.25, 0.25, 0.15])
_SKYLINES: tuple[str, ...] = ("mountains", "city", "none")

# (zenith, horizon) RGB in [0, 1] per sky kind; a per-content jitter is added.
_SKY_COLOURS = {
    "clear": ((0.18, 0.38, 0.78), (0.72, 0.82, 0.93)),
    "dusk": ((0.20, 0.22, 0.45), (0.98, 0.62, 0.35)),
    "overcast": ((0.55, 0.57, 0.60), (0.80, 0.80, 0.80)),
    "night": ((0.01, 0.01, 0.04), (0.10, 0.10, 0.16)),
}
# Scene light multiplying the ground and skyline.
_SKY_LIGHT = {"clear": 1.0, "dusk": 0.75, "overcast": 0.85, "night": 0.45}
# (dark, light) RGB tints mapping a grey texture to colour.
_GROUND_TINTS = {
    "grass": ((0.06, 0.16, 0.03), (0.50, 0.70, 0.25)),
    "gravel": ((0.16, 0.14, 0.12), (0.78, 0.72, 0.64)),
    "brick": ((0.20, 0.08, 0.05), (0.80, 0.48, 0.36)),
    "moon": ((0.08, 0.08, 0.08), (0.80, 0.78, 0.75)),
}


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """An RGB uint8 photograph from ``skimage.data`` (files shipped with scikit-image)."""
    from skimage import data

    if name == "motorcycle":
        image = data.stereo_motorcycle()[0]
    elif name == "hubble":
        image = data.hubble_deep_field()
    else:
        image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    image = np.ascontiguousarray(image[:, :, :3])
    image.setflags(write=False)
    return image


@lru_cache(maxsize=None)
def _photo_pyramid(name: str) -> tuple[np.ndarray, ...]:
    """A photograph as float32 RGB in [0, 1] with its mip-map levels."""
    return _pyramid(_photo(name).astype(np.float32) / 255.0)


@lru_cache(maxsize=None)
def _texture_pyramid(name: str) -> tuple[np.ndarray, ...]:
    """Grey texture in [0, 1], contrast-normalised, with its ``pyrDown`` levels (mip-map)."""
    from skimage import data

    grey = getattr(data, name)().astype(np.float32)
    low, high = np.percentile(grey, (1, 99))
    level = np.clip((grey - low) / max(high - low, 1.0), 0.0, 1.0).astype(np.float32)
    return _pyramid(level)


def _pyramid(image: np.ndarray, min_side: int = 8) -> tuple[np.ndarray, ...]:
    levels = [image]
    while min(levels[-1].shape[:2]) >= 2 * min_side:
        levels.append(cv2.pyrDown(levels[-1]))
    for item in levels:
        item.setflags(write=False)
    return tuple(levels)


def _fractal_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Tileable 1/f^beta noise ``(size, size)`` scaled to [0, 1] (natural-image spectrum)."""
    freq = np.fft.fftfreq(size)
    radius = np.hypot(freq[:, None], freq[None, :])
    radius[0, 0] = 1.0
    spectrum = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))) / radius**beta
    spectrum[0, 0] = 0.0
    field = np.real(np.fft.ifft2(spectrum))
    field = (field - field.min()) / (field.max() - field.min())
    return field.astype(np.float32)


def _mirror(coord: np.ndarray, n: int) -> np.ndarray:
    """Fold texture coordinates into ``[0, n - 1]`` by mirrored tiling (seamless for any texture)."""
    period = 2.0 * (n - 1)
    folded = np.mod(coord, period)
    return np.where(folded <= n - 1, folded, period - folded).astype(np.float32)


def _sample(texture: np.ndarray, u: np.ndarray, v: np.ndarray, periodic: bool) -> np.ndarray:
    """Bilinear lookup of a tiled texture at float texel coordinates.

    ``periodic`` textures (our FFT noise) repeat as they are; photographs are not periodic and
    are tiled mirrored, which hides the seams at the cost of visible symmetry.
    """
    height, width = texture.shape[:2]
    if periodic:
        return cv2.remap(texture, np.mod(u, width).astype(np.float32), np.mod(v, height).astype(np.float32),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return cv2.remap(texture, _mirror(u, width), _mirror(v, height), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def _sample_plane(pyramid: Sequence[np.ndarray], u: np.ndarray, v: np.ndarray, footprint: np.ndarray, *,
                  periodic: bool = False) -> np.ndarray:
    """Mip-mapped lookup: each row picks (and blends) the pyramid levels matching its footprint.

    ``footprint`` (rows, 1) is the texel size of one ERP pixel on that row; sampling level
    ``log2(footprint)`` instead of level 0 avoids the aliasing that makes distant ground shimmer.
    """
    level = np.clip(np.log2(np.maximum(footprint[:, 0], 1.0)), 0.0, len(pyramid) - 1.0)
    out = np.zeros(u.shape + pyramid[0].shape[2:], dtype=np.float32)
    for index, texture in enumerate(pyramid):
        weight = np.clip(1.0 - np.abs(level - index), 0.0, 1.0)
        rows = np.flatnonzero(weight > 0)
        if rows.size == 0:
            continue
        scale = 0.5**index
        values = _sample(texture, u[rows] * scale, v[rows] * scale, periodic)
        w = weight[rows].reshape((-1,) + (1,) * (values.ndim - 1)).astype(np.float32)
        out[rows] += w * values
    return out


@dataclass
class _Canvas:
    """The ERP being painted (float32 RGB in [0, 1]) with its per-pixel angles."""

    image: np.ndarray
    yaw: np.ndarray     # (W,) radians, pixel centres
    pitch: np.ndarray   # (H,) radians, pixel centres

    @classmethod
    def blank(cls, width: int) -> _Canvas:
        height = width // 2
        yaw = np.radians((np.arange(width) + 0.5) / width * 360.0 - 180.0)
        pitch = np.radians(90.0 - (np.arange(height) + 0.5) / height * 180.0)
        return cls(np.zeros((height, width, 3), np.float32), yaw, pitch)

    @property
    def pixel_angle(self) -> float:
        """Angular size of one ERP pixel, radians."""
        return math.pi / self.image.shape[0]


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> np.ndarray:
    """``colour`` plus independent uniform noise of +-``amount`` per channel, clipped to [0, 1]."""
    return np.clip(np.asarray(colour) + rng.uniform(-amount, amount, 3), 0.0, 1.0).astype(np.float32)


def _paint_sky(canvas: _Canvas, rng: np.random.Generator, sky: str, haze: np.ndarray) -> None:
    zenith = _jitter(rng, _SKY_COLOURS[sky][0], 0.03)
    rows = np.flatnonzero(canvas.pitch >= 0)
    pitch = canvas.pitch[rows]
    blend = (np.sin(pitch) ** 0.5)[:, None, None].astype(np.float32)
    region = haze * (1 - blend) + zenith * blend
    region = np.broadcast_to(region, (len(rows), canvas.image.shape[1], 3)).copy()

    # Cloud layer (or star field) on a plane at height 1 above the camera.
    cot = (np.cos(pitch) / np.maximum(np.sin(pitch), 1e-3))[:, None]
    heading = rng.uniform(0, 2 * np.pi)
    x = cot * np.sin(canvas.yaw + heading)[None, :]
    z = cot * np.cos(canvas.yaw + heading)[None, :]
    footprint_per_unit = canvas.pixel_angle / np.maximum(np.sin(pitch), 1e-3) ** 2
    visibility = np.exp(-cot / rng.uniform(4.0, 8.0))[:, :, None].astype(np.float32)
    if sky == "night":
        stars = _photo_pyramid("hubble")
        texels = rng.uniform(250.0, 450.0)
        field = _sample_plane(stars, x * texels, z * texels, (footprint_per_unit * texels)[:, None])
        region += 1.6 * field * visibility
    else:
        noise = _pyramid(_fractal_noise(rng, 256, beta=rng.uniform(1.1, 1.4)))
        texels = rng.uniform(60.0, 140.0)
        density = _sample_plane(noise, x * texels, z * texels, (footprint_per_unit * texels)[:, None],
                                periodic=True)
        cover = {"clear": 0.62, "dusk": 0.55, "overcast": 0.25}[sky] + rng.uniform(-0.08, 0.08)
        alpha = np.clip((density - cover) / 0.18, 0.0, 1.0)[:, :, None] * visibility
        shade = (0.75 + 0.3 * density)[:, :, None]
        cloud = _jitter(rng, (0.95, 0.93, 0.92) if sky != "dusk" else (0.98, 0.75, 0.65), 0.04)
        region = region * (1 - alpha) + np.clip(cloud * shade, 0, 1) * alpha
        # Sun glow: a tight disc plus a wide halo, from a direction above the horizon.
        sun_yaw, sun_pitch = rng.uniform(-np.pi, np.pi), np.radians(rng.uniform(5, 50))
        if sky != "overcast":
            cos_angle = (np.sin(pitch)[:, None] * np.sin(sun_pitch)
                         + np.cos(pitch)[:, None] * np.cos(sun_pitch) * np.cos(canvas.yaw - sun_yaw)[None, :])
            angle = np.degrees(np.arccos(np.clip(cos_angle, -1, 1)))
            glow = (np.exp(-angle / 1.5) + 0.3 * np.exp(-angle / 18.0))[:, :, None]
            region += glow.astype(np.float32) * np.array([1.0, 0.9, 0.7], np.float32)
    canvas.image[rows] = region


def _paint_ground(canvas: _Canvas, rng: np.random.Generator, ground: str, haze: np.ndarray, light: float) -> None:
    rows = np.flatnonzero(canvas.pitch < 0)
    down = -np.sin(canvas.pitch[rows])
    cot = (np.cos(canvas.pitch[rows]) / np.maximum(down, 1e-3))[:, None]
    heading = rng.uniform(0, 2 * np.pi)
    x = cot * np.sin(canvas.yaw + heading)[None, :]
    z = cot * np.cos(canvas.yaw + heading)[None, :]
    texels = rng.uniform(90.0, 220.0)  # texels per unit of ground (camera height = 1)
    offset = rng.uniform(0, 1000, 2)
    footprint = (canvas.pixel_angle / np.maximum(down, 1e-3) ** 2 * texels)[:, None]
    detail = _sample_plane(_texture_pyramid(ground), x * texels + offset[0], z * texels + offset[1], footprint)
    # Large patches of brighter/darker ground (a second, coarser scale of the same 1/f statistics).
    patches = _pyramid(_fractal_noise(rng, 128, beta=1.6))
    patch_texels = rng.uniform(4.0, 10.0)
    variation = _sample_plane(patches, x * patch_texels, z * patch_texels, footprint * patch_texels / texels,
                              periodic=True)
    dark, bright = (_jitter(rng, c, 0.05) for c in _GROUND_TINTS[ground])
    value = np.clip(detail * (0.7 + 0.6 * variation), 0, 1)[:, :, None]
    colour = (dark + (bright - dark) * value) * light
    visibility = np.exp(-cot / rng.uniform(10.0, 25.0))[:, :, None].astype(np.float32)
    canvas.image[rows] = colour * visibility + haze * (1 - visibility)


def _paint_skyline(canvas: _Canvas, rng: np.random.Generator, skyline: str, haze: np.ndarray, light: float) -> None:
    if skyline == "none":
        return
    yaw = canvas.yaw
    if skyline == "mountains":
        # Periodic fractal profile: a sum of harmonics with 1/k^1.3 amplitudes.
        k = np.arange(1, 33)
        phases = rng.uniform(0, 2 * np.pi, k.size)[:, None]
        profile = np.sum(k[:, None] ** -1.3 * np.sin(k[:, None] * yaw[None, :] + phases), axis=0)
        profile = (profile - profile.min()) / (profile.max() - profile.min())
        elevation = 1.0 + profile * rng.uniform(6.0, 16.0)
        texture = _texture_pyramid("gravel")
        tint = _jitter(rng, (0.35, 0.38, 0.45), 0.05)
    else:
        # Blocks of random width and height with gaps, built along yaw.
        edges, heights = [0.0], []
        while edges[-1] < 360.0:
            edges.append(edges[-1] + rng.uniform(3.0, 10.0))
            heights.append(0.0 if rng.random() < 0.15 else rng.uniform(2.0, 14.0))
        start = rng.uniform(0, 360)
        position = np.mod(np.degrees(yaw) + 180.0 - start, 360.0)
        elevation = np.asarray(heights)[np.searchsorted(edges, position, side="right") - 1]
        texture = _texture_pyramid("brick")
        tint = _jitter(rng, (0.55, 0.5, 0.48), 0.08)
    pitch_deg = np.degrees(canvas.pitch)
    rows = np.flatnonzero((pitch_deg >= -1.0) & (pitch_deg <= elevation.max() + 1.0))
    pixel_deg = math.degrees(canvas.pixel_angle)
    # Anti-aliased coverage: a one-pixel ramp along the profile.
    coverage = np.clip((elevation[None, :] - pitch_deg[rows, None]) / pixel_deg + 0.5, 0.0, 1.0)
    coverage[pitch_deg[rows] < 0] = 0.0  # the ground in front hides the skyline's foot
    texels_per_deg = rng.uniform(6.0, 12.0)
    u = np.broadcast_to(np.degrees(yaw)[None, :] * texels_per_deg, coverage.shape)
    v = np.broadcast_to(-pitch_deg[rows, None] * texels_per_deg, coverage.shape)
    value = _sample_plane(texture, u, v, np.full((len(rows), 1), pixel_deg * texels_per_deg))
    distance_haze = rng.uniform(0.25, 0.5)
    colour = (tint * (0.45 + 0.8 * value[:, :, None])) * light
    colour = colour * (1 - distance_haze) + haze * distance_haze
    alpha = coverage[:, :, None].astype(np.float32)
    canvas.image[rows] = canvas.image[rows] * (1 - alpha) + colour * alpha


def _paint_billboards(canvas: _Canvas, rng: np.random.Generator) -> None:
    count = int(rng.integers(3, 7))
    # Jittered even spacing keeps most billboards apart while leaving the layout random.
    base = rng.uniform(0, 360)
    for slot in range(count):
        yaw_deg = base + 360.0 * (slot + rng.uniform(-0.3, 0.3)) / count
        pitch_deg = rng.uniform(-5.0, 20.0)
        name = _BILLBOARD_PHOTOS[rng.choice(len(_BILLBOARD_PHOTOS), p=_BILLBOARD_WEIGHTS)]
        photo = _photo(name)
        # Random crop of 55-100 % of each side; a random mirror, except for text, which would
        # then read backwards.
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.55, 1.0)), int(w * rng.uniform(0.55, 1.0))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = photo[top:top + ch, left:left + cw]
        if rng.random() < 0.5 and name not in ("page", "text"):
            crop = crop[:, ::-1]
        angular_width = rng.uniform(25.0, 55.0)
        frame_colour = _jitter(rng, (0.15, 0.15, 0.15), 0.12)
        _draw_billboard(canvas, crop, yaw_deg, pitch_deg, angular_width, frame_colour)


def _draw_billboard(canvas: _Canvas, photo: np.ndarray, yaw_deg: float, pitch_deg: float,
                    angular_width: float, frame_colour: np.ndarray) -> None:
    """Paint a framed flat picture facing the camera by inverse gnomonic mapping."""
    half_x = math.tan(math.radians(angular_width) / 2)
    half_y = half_x * photo.shape[0] / photo.shape[1]
    frame = 0.05 * half_x
    outer_x, outer_y = half_x + frame, half_y + frame
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    forward = np.array([math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])
    right = np.array([math.cos(yaw), 0.0, -math.sin(yaw)])
    up = np.array([-math.sin(pitch) * math.sin(yaw), math.cos(pitch), -math.sin(pitch) * math.cos(yaw)])
    # Only rows within the rectangle's angular radius of its centre can be inside it.
    reach = math.degrees(math.atan(math.hypot(outer_x, outer_y))) + 1.0
    pitch_deg_rows = np.degrees(canvas.pitch)
    rows = np.flatnonzero(np.abs(pitch_deg_rows - pitch_deg) <= reach)
    cp, sp = np.cos(canvas.pitch[rows])[:, None], np.sin(canvas.pitch[rows])[:, None]
    sy, cy = np.sin(canvas.yaw)[None, :], np.cos(canvas.yaw)[None, :]

    def dot(axis: np.ndarray) -> np.ndarray:
        return cp * sy * axis[0] + sp * axis[1] + cp * cy * axis[2]

    depth = dot(forward)
    in_front = depth > 0.05
    safe = np.where(in_front, depth, 1.0)
    px, py = dot(right) / safe, dot(up) / safe
    # Plane units per ERP pixel grow as 1/depth^2 away from the centre; used for soft edges.
    pixel = canvas.pixel_angle / safe**2

    def inside(half_w: float, half_h: float) -> np.ndarray:
        edge = np.minimum(half_w - np.abs(px), half_h - np.abs(py)) / pixel + 0.5
        return np.where(in_front, np.clip(edge, 0.0, 1.0), 0.0).astype(np.float32)[:, :, None]

    # Pre-shrink the photo to about its on-screen size so the lookup does not alias.
    target_w = max(8, int(round(2 * half_x / canvas.pixel_angle * 1.2)))
    target_h = max(8, int(round(target_w * photo.shape[0] / photo.shape[1])))
    interpolation = cv2.INTER_AREA if target_w < photo.shape[1] else cv2.INTER_LINEAR
    picture = cv2.resize(np.ascontiguousarray(photo), (target_w, target_h), interpolation=interpolation)
    picture = picture.astype(np.float32) / 255.0
    map_x = ((px / half_x + 1) / 2 * target_w - 0.5).astype(np.float32)
    map_y = ((1 - py / half_y) / 2 * target_h - 0.5).astype(np.float32)
    content = cv2.remap(picture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    outer, inner = inside(outer_x, outer_y), inside(half_x, half_y)
    region = canvas.image[rows]
    region = region * (1 - outer) + frame_colour * outer
    canvas.image[rows] = region * (1 - inner) + content * inner


def render_reference(content_index: int, *, width: int = DEFAULT_WIDTH, seed: int = 0) -> np.ndarray:
    """Render reference panorama ``content_index`` of the dataset with ``seed``.

    Returns:
        ``uint8 (width // 2, width, 3)`` RGB ERP. The same arguments always give the same pixels.

    Raises:
        ValueError: a negative index or seed, or a width that is odd or below 64.
    """
    _check_index_and_seed(content_index, seed)
    _check_width(width)
    rng = np.random.default_rng([seed, content_index, _STREAM_SCENE])
    sky = _SKIES[rng.choice(len(_SKIES), p=_SKY_WEIGHTS)]
    ground = _GROUND_TEXTURES[rng.integers(len(_GROUND_TEXTURES))]
    skyline = _SKYLINES[rng.integers(len(_SKYLINES))]
    canvas = _Canvas.blank(width)
    haze = _jitter(rng, _SKY_COLOURS[sky][1], 0.03)
    light = _SKY_LIGHT[sky]
    _paint_sky(canvas, rng, sky, haze)
    _paint_ground(canvas, rng, ground, haze, light)
    _paint_skyline(canvas, rng, skyline, haze, light)
    _paint_billboards(canvas, rng)
    # A mild per-content white balance, as between real cameras.
    canvas.image *= rng.uniform(0.92, 1.08, 3).astype(np.float32)
    return np.rint(np.clip(canvas.image, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Distortion plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistortionSpec:
    """One distorted image: what to apply to which content, and where (for ``local``).

    ``cap`` is ``(yaw_deg, pitch_deg, radius_deg, feather_deg)`` for local distortions and None
    for global ones; ``seed`` seeds the distortion's generator (shared by all levels of a
    combination, so the damage is nested).
    """

    content_index: int
    kind: str
    scope: str
    level: int
    seed: tuple[int, ...]
    cap: tuple[float, float, float, float] | None = None

    @property
    def content(self) -> str:
        return _content_name(self.content_index)

    @property
    def file_name(self) -> str:
        return f"{self.content}_{self.kind}_{self.scope}_{self.level}.png"


def _content_name(index: int) -> str:
    return f"c{index:03d}"


def _combinations(seed: int, n_refs: int, combos_per_ref: int) -> list[list[tuple[str, str]]]:
    """Balanced (kind, scope) choices: each content takes the least-used combinations so far.

    Kinds are distinct within a content; ties are broken by a seeded shuffle. Content ``i``'s
    choice depends only on the seed and contents ``0..i``, so growing ``n_refs`` keeps it.
    """
    rng = np.random.default_rng([seed, 0, _STREAM_PLAN])
    all_combos = [(kind, scope) for kind in dist.DISTORTIONS for scope in SCOPES]
    usage = dict.fromkeys(all_combos, 0)
    plan = []
    for _ in range(n_refs):
        shuffled = [all_combos[i] for i in rng.permutation(len(all_combos))]
        ranked = sorted(range(len(shuffled)), key=lambda pos: (usage[shuffled[pos]], pos))
        chosen: list[tuple[str, str]] = []
        for pos in ranked:
            combo = shuffled[pos]
            if combo[0] not in {kind for kind, _ in chosen}:
                chosen.append(combo)
                usage[combo] += 1
            if len(chosen) == combos_per_ref:
                break
        plan.append(sorted(chosen, key=lambda c: (dist.DISTORTIONS.index(c[0]), SCOPES.index(c[1]))))
    return plan


def _sample_cap(reference: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """A cap centre drawn ∝ gradient energy x cos(pitch), down-weighted near the front."""
    thumb = cv2.resize(reference, (128, 64), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    energy = cv2.GaussianBlur(energy, (0, 0), 3.0) + 1e-3
    yaw = (np.arange(128) + 0.5) / 128 * 360.0 - 180.0
    pitch = 90.0 - (np.arange(64) + 0.5) / 64 * 180.0
    weight = energy * np.cos(np.radians(pitch))[:, None]
    front = (np.degrees(np.arccos(np.clip(np.cos(np.radians(pitch))[:, None] * np.cos(np.radians(yaw))[None, :],
                                           -1, 1))) < _FRONT_AVOID_DEG)
    weight = np.where(front, weight * _FRONT_WEIGHT, weight).astype(np.float64).ravel()
    pick = int(rng.choice(weight.size, p=weight / weight.sum()))
    row, col = divmod(pick, 128)
    # Jitter within the thumbnail cell so the centre is not quantised to 2.8° steps.
    centre_yaw = float(yaw[col] + rng.uniform(-1.4, 1.4))
    centre_pitch = float(np.clip(pitch[row] + rng.uniform(-1.4, 1.4), -89.0, 89.0))
    radius = float(rng.uniform(*_CAP_RADIUS_RANGE))
    return centre_yaw, centre_pitch, radius, _CAP_FEATHER


def plan_distortions(reference: np.ndarray, content_index: int, combos: Sequence[tuple[str, str]], *,
                     seed: int = 0, levels: Sequence[int] = DEFAULT_LEVELS) -> list[DistortionSpec]:
    """The distorted images of one content: every (kind, scope) in ``combos`` at every level."""
    specs = []
    for slot, (kind, scope) in enumerate(combos):
        if kind not in dist.DISTORTIONS or scope not in SCOPES:
            raise ValueError(f"unknown combination {(kind, scope)!r}")
        cap = None
        if scope == "local":
            cap = _sample_cap(reference, np.random.default_rng([seed, content_index, _STREAM_CAP, slot]))
        for level in levels:
            specs.append(DistortionSpec(content_index, kind, scope, int(level),
                                        (seed, content_index, _STREAM_DISTORTION, slot), cap))
    return specs


def distort(reference: np.ndarray, spec: DistortionSpec) -> np.ndarray:
    """Apply ``spec`` to its reference; deterministic (the generator is re-seeded from the spec)."""
    rng = np.random.default_rng(list(spec.seed))
    if spec.cap is None:
        return dist.apply_distortion(reference, spec.kind, spec.level, rng)
    yaw, pitch, radius, feather = spec.cap
    if spec.kind == "stitching":
        damaged = dist.stitching_misalignment(reference, spec.level, rng, [yaw])
    else:
        damaged = dist.apply_distortion(reference, spec.kind, spec.level, rng)
    mask = dist.local_mask(reference.shape[0], reference.shape[1], yaw, pitch, radius, feather)
    return dist.apply_local(reference, damaged, mask)


# --------------------------------------------------------------------------------------------
# Dataset generation
# --------------------------------------------------------------------------------------------


def _check_index_and_seed(content_index: int, seed: int) -> None:
    if not isinstance(content_index, (int, np.integer)) or content_index < 0:
        raise ValueError(f"content index must be a non-negative integer, got {content_index!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _check_width(width: int) -> None:
    if not isinstance(width, (int, np.integer)) or isinstance(width, bool) or width < 64 or width % 2:
        raise ValueError(f"width must be an even integer >= 64, got {width!r}")


def _manifest(*, seed: int, n_refs: int, width: int, quick: bool, levels: Sequence[int],
              combos_per_ref: int, formula: MosFormula) -> dict:
    """Everything that determines the generated files; a folder is reused only on an exact match."""
    return {
        "dataset": "synth360",
        "version": SYNTH360_VERSION,
        "seed": int(seed),
        "n_refs": int(n_refs),
        "width": int(width),
        "height": int(width) // 2,
        "quick": bool(quick),
        "levels": [int(level) for level in levels],
        "combos_per_ref": int(combos_per_ref),
        "n_images": int(n_refs * (1 + combos_per_ref * len(levels))),
        "label_columns": list(LABEL_COLUMNS),
        "mos_formula": asdict(formula),
        "distortion_parameters": distortion_parameters(),
    }


def distortion_parameters() -> dict:
    """The distortion generator's parameters, recorded in every generated manifest."""
    return {
        "jpeg_quality": list(dist.JPEG_QUALITY),
        "jpeg2000_rate_x1000": list(dist.JPEG2000_RATE_X1000),
        "blur_sigma_deg": list(dist.BLUR_SIGMA_DEG),
        "noise_sigma": list(dist.NOISE_SIGMA),
        "overexposure_stops": list(dist.OVEREXPOSURE_STOPS),
        "underexposure_stops": list(dist.UNDEREXPOSURE_STOPS),
        "underexposure_black": dist.UNDEREXPOSURE_BLACK,
        "stitch_shift_deg": list(dist.STITCH_SHIFT_DEG),
        "stitch_zone_deg": list(dist.STITCH_ZONE_DEG),
        "cap_radius_deg": list(_CAP_RADIUS_RANGE),
        "cap_feather_deg": _CAP_FEATHER,
    }


def load_synth360(root: PathLike, *, labels: PathLike = LABELS_NAME,
                  allow_outside_root: bool | str = False) -> list[PanoramaRecord]:
    """Load a Synth360 folder: the csv layout, checked to be one this generator wrote.

    Raises:
        DatasetError: ``root`` has no readable Synth360 manifest (``synth360.json``), i.e. it is
            not a Synth360 folder; plus whatever :func:`load_csv_folder` raises.
    """
    return load_generated(root, LAYOUT, labels=labels, allow_outside_root=allow_outside_root)


def generate_synth360(
    out_dir: str | Path,
    *,
    n_refs: int | None = None,
    width: int | None = None,
    seed: int = 0,
    quick: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    levels: Sequence[int] = DEFAULT_LEVELS,
    combos_per_ref: int | None = None,
) -> Path:
    """Generate the Synth360 dataset into ``out_dir`` (layout in the module docstring).

    Args:
        out_dir: destination folder; created if missing. Must be new, empty, or a Synth360 folder.
        n_refs: number of reference contents (default 40, or 6 with ``quick``).
        width: ERP width in pixels, even, >= 64 (default 1024; height is ``width // 2``).
        seed: non-negative seed; the same arguments give byte-identical files.
        quick: a small set for smoke tests (6 contents, 3 combinations each).
        progress: show a rich progress bar.
        overwrite: replace a Synth360 folder generated with other settings.
        levels: distortion levels generated for every combination, from 1..5.
        combos_per_ref: (kind, scope) combinations per content, distinct kinds (default 4, quick 3).

    Returns:
        ``out_dir`` as a Path (pass it to ``load_dataset("synth360", out_dir)``).

    Raises:
        ValueError: invalid arguments.
        DatasetError: ``out_dir`` holds other data or another Synth360 configuration.
    """
    root = Path(out_dir)
    n_refs = (QUICK_N_REFS if quick else DEFAULT_N_REFS) if n_refs is None else n_refs
    width = DEFAULT_WIDTH if width is None else width
    combos_per_ref = (QUICK_COMBOS if quick else DEFAULT_COMBOS) if combos_per_ref is None else combos_per_ref
    if not isinstance(n_refs, (int, np.integer)) or isinstance(n_refs, bool) or n_refs < 1:
        raise ValueError(f"n_refs must be a positive integer, got {n_refs!r}")
    _check_width(width)
    _check_index_and_seed(0, seed)
    if not levels or any(isinstance(level, bool) or level not in dist.LEVELS for level in levels):
        raise ValueError(f"levels must be a non-empty selection of 1..5, got {levels!r}")
    levels = tuple(sorted({int(level) for level in levels}))
    if (not isinstance(combos_per_ref, (int, np.integer)) or isinstance(combos_per_ref, bool)
            or not 1 <= combos_per_ref <= len(dist.DISTORTIONS)):
        raise ValueError(f"combos_per_ref must be in 1..{len(dist.DISTORTIONS)}, got {combos_per_ref!r}")

    formula = MosFormula()
    manifest = _manifest(seed=seed, n_refs=n_refs, width=width, quick=quick, levels=levels,
                         combos_per_ref=combos_per_ref, formula=formula)
    if prepare_folder(root, manifest, overwrite, LAYOUT):
        return root
    images = root / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / MANIFEST_NAME, manifest)

    plan = _combinations(seed, n_refs, combos_per_ref)
    rows: list[LabelRow] = []
    with progress_bar("Synth360", manifest["n_images"], unit="img", enabled=progress) as bar:
        for index, combos in enumerate(plan):
            name = _content_name(index)
            reference = render_reference(index, width=width, seed=seed)
            specs = plan_distortions(reference, index, combos, seed=seed, levels=levels)
            rows += write_distortion_group(images, name, name, reference, specs, formula, bar)
    write_labels(root, LABEL_COLUMNS, rows)
    return root
