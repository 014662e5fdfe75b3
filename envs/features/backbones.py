"""Feature backbones: a batch of RGB images in, one float32 feature vector per image out.

The environment never touches pixels: every viewport and every panorama's global view is turned
into a vector once, by a :class:`Backbone`, and cached. Three backbones exist:

* ``nss`` (:class:`NSSBackbone`) — the embedded default. Hand-crafted, distortion-aware
  natural-scene statistics; needs no weights and no network, a few milliseconds per viewport.
  ``nss-pano`` adds statistics of the whole native panorama to the global descriptor.
* ``dinov2`` (:class:`DinoV2Backbone`) — the paper's frozen DINOv2 ViT, through
  ``transformers`` (hub id or local folder).
* ``nss+dinov2`` (:class:`FusionBackbone`) — both, concatenated: a frozen DINOv2 is a semantic
  feature and not the most distortion-sensitive one, NSS adds the distortion cues.

:func:`make_backbone` builds one from a spec string. Every backbone's ``name`` is a valid spec
(``make_backbone(b.name)`` rebuilds ``b``) and identifies its features, so it keys feature caches.
"""

from __future__ import annotations

import abc
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from rl_scaniqa.envs.errors import RLScanIQAError

if TYPE_CHECKING:  # torch is imported lazily so that the NSS path stays light
    import torch

__all__ = [
    "Backbone",
    "BackboneLoadError",
    "DinoV2Backbone",
    "FusionBackbone",
    "NSSBackbone",
    "check_device",
    "global_view",
    "grey_entropy",
    "make_backbone",
    "resolve_device",
]

DEFAULT_DINOV2 = "facebook/dinov2-small"


class BackboneLoadError(RLScanIQAError, OSError):
    """A backbone's weights could not be loaded (no network, wrong folder, wrong model type)."""


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


#: Device types a backbone or policy can run on; torch knows more (``meta``, ``xla``, ...), but
#: none of them can run this package's models.
DEVICE_TYPES = ("cpu", "cuda", "mps")


def check_device(device: str) -> str:
    """``device`` unchanged when it names a device this machine has; else a ``ValueError``.

    ``"auto"`` always passes (:func:`resolve_device` picks then). ``"cuda"``/``"cuda:N"`` need a
    torch build that sees a GPU (index N below its count), ``"mps"`` an available Apple GPU; any
    other type (``"tpu"``, a typo) is refused. Checked up front so that a run fails before any
    work rather than at the first tensor moved to a missing device.
    """
    if device in ("auto", "cpu"):
        return device  # no torch import: keeps ``--help`` and the CPU path instant
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise ValueError(f"unknown device {device!r}; expected auto, cpu, cuda, cuda:N or mps")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: this torch build ({torch.__version__}) sees no "
                             "CUDA GPU; use --device cpu or auto")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {device!r}: only {count} CUDA GPU(s) visible "
                             f"(cuda:0..cuda:{count - 1})")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: no Apple MPS GPU is available here")
    return device


def _check_batch(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"backbone input must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(
            f"backbone input must be uint8 of shape (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"backbone input has empty images: shape {images.shape}")
    return np.ascontiguousarray(images)


class Backbone(abc.ABC):
    """A frozen feature extractor.

    Attributes:
        name: stable identifier of the feature definition (goes into cache keys) and a valid
            :func:`make_backbone` spec.
        dim: length of each feature vector.
        device: where the computation runs (``"cpu"`` for NSS).
        batch_size: images per forward pass; ``__call__`` splits larger inputs.
        parallel_safe: whether copies of the backbone may run in separate processes (the feature
            cache's parallel build pickles it into spawned workers). False unless a subclass
            opts in: a GPU model would be loaded once per worker, and not every model pickles.
    """

    name: str
    dim: int
    device: str
    batch_size: int
    parallel_safe: bool = False

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of ``images``, uint8 ``(N, H, W, 3)`` RGB of any size -> float32 ``(N, dim)``."""
        images = _check_batch(images)
        if len(images) == 0:
            return np.zeros((0, self.dim), np.float32)
        step = self.batch_size
        chunks = [self._embed(images[i : i + step]) for i in range(0, len(images), step)]
        return np.concatenate(chunks, axis=0).astype(np.float32, copy=False)

    @abc.abstractmethod
    def _embed(self, images: np.ndarray) -> np.ndarray:
        """Features of one batch of at most ``batch_size`` validated, contiguous images."""

    def global_features(self, erp: np.ndarray, size: int) -> np.ndarray:
        """The global descriptor of a whole ERP, float32 ``(dim,)``.

        The default embeds :func:`global_view` like any other image. Backbones with statistics of
        the whole panorama override this; the feature cache and the scorer call it with the
        canonical-density ERP (``canonical_erp``), so ``erp`` has the same size whatever the input.
        """
        return self(global_view(erp, size)[None])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device!r})"


def global_view(erp: np.ndarray, size: int) -> np.ndarray:
    """The whole ERP resized to ``(size, 2*size, 3)`` for the global descriptor.

    ``INTER_AREA`` averages the pixels that fall into each output pixel, so downscaling a large
    panorama does not alias fine texture or noise into spurious high-frequency content.
    """
    if not isinstance(erp, np.ndarray) or erp.dtype != np.uint8 or erp.ndim != 3 or erp.shape[2] != 3:
        got = f"{erp.dtype} {erp.shape}" if isinstance(erp, np.ndarray) else type(erp).__name__
        raise ValueError(f"global_view expects a uint8 (H, W, 3) ERP, got {got}")
    if size < 1:
        raise ValueError(f"global_view size must be positive, got {size}")
    return cv2.resize(erp, (2 * size, size), interpolation=cv2.INTER_AREA)


def grey_entropy(images: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits (0..8) of the 256-level grey histogram of each image.

    Grey is OpenCV's ``COLOR_RGB2GRAY`` (BT.601 luma, rounded to uint8). Input uint8
    ``(N, H, W, 3)``, output float64 ``(N,)``.
    """
    images = _check_batch(images)
    n, height, width, _ = images.shape
    grey = cv2.cvtColor(images.reshape(n * height, width, 3), cv2.COLOR_RGB2GRAY).reshape(n, -1)
    return _entropy_from_histograms(_histograms(grey))


def _histograms(grey8: np.ndarray) -> np.ndarray:
    """256-bin histograms of each row of ``grey8`` (uint8, (N, P)) with one bincount call."""
    n = grey8.shape[0]
    offsets = (np.arange(n, dtype=np.int64) * 256)[:, None]
    return np.bincount((grey8 + offsets).ravel(), minlength=256 * n).reshape(n, 256)


def _entropy_from_histograms(hist: np.ndarray) -> np.ndarray:
    p = hist / hist.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log2(p), 0.0)
    return terms.sum(axis=1)


# ---------------------------------------------------------------------------------------------
# NSS: natural-scene statistics
# ---------------------------------------------------------------------------------------------

# Moment-ratio function of the generalised Gaussian, f(a) = G(2/a)^2 / (G(1/a) G(3/a)), on the
# shape grid BRISQUE searches (0.2..10 step 0.001). f rises monotonically from ~0 to 3/4, so
# np.interp inverts it for a whole batch at once; out-of-range ratios clamp to the grid ends.
_ALPHA_GRID = np.arange(0.2, 10.0 + 1e-9, 0.001)
_LOG_G1 = np.array([math.lgamma(1.0 / a) for a in _ALPHA_GRID])
_LOG_G2 = np.array([math.lgamma(2.0 / a) for a in _ALPHA_GRID])
_LOG_G3 = np.array([math.lgamma(3.0 / a) for a in _ALPHA_GRID])
_RATIO_GRID = np.exp(2.0 * _LOG_G2 - _LOG_G1 - _LOG_G3)
# Gamma-function factors needed for the AGGD mean, tabulated on the same grid.
_SQRT_G1_OVER_G3 = np.exp(0.5 * (_LOG_G1 - _LOG_G3))
_G2_OVER_G1 = np.exp(_LOG_G2 - _LOG_G1)

_EPS = 1e-12
_MSCN_C = 1.0  # BRISQUE's stabilising constant for 0..255 intensities
_MSCN_SIGMA = 7.0 / 6.0  # BRISQUE's Gaussian window (7x7)
_MAX_CHANNELS = 256  # OpenCV matrices hold at most 512 channels; NSS batches are stacked as channels

_PRODUCTS = ("h", "v", "d1", "d2")
_LUMA_QUANTILES = (1, 10, 50, 90, 99)  # percent
_N_BANDS = 4  # DoG bands at full, 1/2, 1/4, 1/8 resolution
_TILE_STATS = ("r01", "r12", "e1", "noise", "lum", "high", "low")
_PANORAMA_FEATURES = ("pano_block_h", "pano_block_v", "pano_block_tile_max", "pano_block_tile_median") + tuple(
    f"pano_tile_{stat}_{red}" for stat in _TILE_STATS for red in ("median", "above", "below"))


def _nss_feature_names() -> tuple[str, ...]:
    names: list[str] = []
    for scale in ("s1", "s2"):
        names += [f"{scale}_mscn_alpha", f"{scale}_mscn_var"]
        for product in _PRODUCTS:
            names += [f"{scale}_{product}_{p}" for p in ("alpha", "mean", "lvar", "rvar")]
    names += ["sharpness", "rms_contrast", "colourfulness", "entropy", "mean_luminance",
              "hf_ratio", "noise_sigma", "highlight_fraction", "shadow_fraction"]
    names += ["band_ratio_01", "band_ratio_12", "band_ratio_23", "band_energy_3",
              "band_kurtosis_0", "band_kurtosis_1", "band_kurtosis_2", "chroma_hf_ratio", "noise_rel"]
    names += [f"lum_p{q}" for q in _LUMA_QUANTILES]
    names += ["rgb_clip_high", "rgb_clip_low"]
    return tuple(names)


def _invert_ratio(ratio: np.ndarray) -> np.ndarray:
    """Shape parameter alpha whose moment ratio f(alpha) equals ``ratio`` (table lookup)."""
    return np.interp(ratio, _RATIO_GRID, _ALPHA_GRID)


def _as_channels(result: np.ndarray, channels: int) -> np.ndarray:
    """OpenCV returns 2-D arrays for one-channel input; restore the (H, W, N) layout."""
    return result.reshape(result.shape[0], result.shape[1], channels)


def _flat(x: np.ndarray) -> np.ndarray:
    """(H, W, N) -> (H*W, N): per-image reductions become column reductions."""
    return x.reshape(-1, x.shape[-1])


def _mean(x: np.ndarray) -> np.ndarray:
    """Per-image mean of an (H, W, N) stack, 0 for images with no samples (tiny inputs)."""
    flat = _flat(x)
    return flat.sum(axis=0, dtype=np.float64) / max(flat.shape[0], 1)


def _sum_sq(flat: np.ndarray) -> np.ndarray:
    """Per-column sum of squares; float32 accumulation (ample for features, 3x faster)."""
    return np.einsum("ij,ij->j", flat, flat).astype(np.float64)


def _ggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean generalised Gaussian fit by moment matching: (shape alpha, variance)."""
    flat = _flat(x)
    count = max(flat.shape[0], 1)
    mean_sq = _sum_sq(flat) / count
    mean_abs = np.abs(flat).sum(axis=0, dtype=np.float64) / count
    alpha = _invert_ratio(mean_abs**2 / np.maximum(mean_sq, _EPS))
    return alpha, mean_sq


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric GGD fit (Lasmar et al. 2009): (alpha, mean, left variance, right variance)."""
    flat = _flat(x)
    count = max(flat.shape[0], 1)
    negative = np.minimum(flat, 0.0)
    sq_left = _sum_sq(negative)
    sq_total = _sum_sq(flat)
    n_left = (flat < 0).sum(axis=0)
    n_right = (flat > 0).sum(axis=0)
    left_var = sq_left / np.maximum(n_left, 1)
    right_var = (sq_total - sq_left) / np.maximum(n_right, 1)
    left_std, right_std = np.sqrt(left_var), np.sqrt(right_var)
    # Flat images have no spread on either side: eps keeps gamma at 1 rather than 0/0.
    gamma = (left_std + 1e-6) / (right_std + 1e-6)
    mean_abs = np.abs(flat).sum(axis=0, dtype=np.float64) / count
    r_hat = mean_abs**2 / np.maximum(sq_total / count, _EPS)
    big_r = r_hat * (gamma**3 + 1.0) * (gamma + 1.0) / (gamma**2 + 1.0) ** 2
    alpha = _invert_ratio(big_r)
    scale = np.interp(alpha, _ALPHA_GRID, _SQRT_G1_OVER_G3)
    mean = (right_std - left_std) * scale * np.interp(alpha, _ALPHA_GRID, _G2_OVER_G1)
    return alpha, mean, left_var, right_var


def _mscn(grey: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of a float32 (H, W, N) grey stack."""
    n = grey.shape[2]
    ksize = (7, 7)
    border = cv2.BORDER_REPLICATE
    mu = _as_channels(cv2.GaussianBlur(grey, ksize, _MSCN_SIGMA, borderType=border), n)
    mu_sq = _as_channels(cv2.GaussianBlur(grey * grey, ksize, _MSCN_SIGMA, borderType=border), n)
    # Rounding can make E[x^2] - E[x]^2 slightly negative on flat regions.
    sigma = np.sqrt(np.maximum(mu_sq - mu * mu, 0.0))
    return (grey - mu) / (sigma + _MSCN_C)


def _brisque_scale(grey: np.ndarray) -> list[np.ndarray]:
    """The 18 BRISQUE statistics of one scale, each an (N,) array."""
    mscn = _mscn(grey)
    features = list(_ggd_fit(mscn))
    products = (
        mscn[:, :-1] * mscn[:, 1:],  # horizontal neighbour
        mscn[:-1, :] * mscn[1:, :],  # vertical neighbour
        mscn[:-1, :-1] * mscn[1:, 1:],  # main diagonal
        mscn[:-1, 1:] * mscn[1:, :-1],  # anti-diagonal
    )
    for product in products:
        features.extend(_aggd_fit(product))
    return features


def _band_statistics(grey: np.ndarray, half: np.ndarray,
                     detail: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Multi-scale band energies and kurtoses, content-normalised as ratios between scales.

    Band k is ``L_k - GaussianBlur(L_k, sigma=1)`` of the grey pyramid ``L_k`` (``INTER_AREA``
    halving), so every band holds the same relative frequencies of its own scale. Natural images
    have roughly scale-invariant spectra, so ``log E_k - log E_{k+1}`` depends little on content
    but drops when blur / JPEG2000 remove the fine scales and rises with noise. ``grey`` (full)
    and ``half`` are (H, W, N) stacks, ``detail`` is band 0 already computed as (H*W, N).
    Returns the features and the log band energies.
    """
    n = grey.shape[2]
    energies, kurtoses = [], []
    level = half
    for k in range(_N_BANDS):
        if k == 0:
            band = detail
        else:
            smooth = _as_channels(cv2.GaussianBlur(level, (0, 0), 1.0, borderType=cv2.BORDER_REPLICATE), n)
            band = _flat(level - smooth)
            if k + 1 < _N_BANDS:
                size = (max(level.shape[1] // 2, 1), max(level.shape[0] // 2, 1))
                level = _as_channels(cv2.resize(level, size, interpolation=cv2.INTER_AREA), n)
        count = max(band.shape[0], 1)
        e2 = _sum_sq(band) / count
        energies.append(np.log(e2 + 1e-2))
        if k < _N_BANDS - 1:
            squared = band * band
            e4 = _sum_sq(squared) / count
            # Kurtosis of the band: JPEG2000 zeroes small coefficients (heavy tails), noise pulls it to 3.
            kurtoses.append(np.log((e4 + 1e-4) / (e2 * e2 + 1e-4)))
    ratios = [energies[k] - energies[k + 1] for k in range(_N_BANDS - 1)]
    return [*ratios, energies[-1], *kurtoses], energies


def _panorama_statistics(erp: np.ndarray) -> np.ndarray:
    """The ``pano_*`` features of one ERP, float64 ``(len(_PANORAMA_FEATURES),)``."""
    luma = cv2.cvtColor(erp, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.concatenate([_blockiness(luma), _tile_contrasts(erp)])


def _block_profile_ratio(profile: np.ndarray, phase: int | None) -> tuple[float, int]:
    """``log`` of the mean of ``profile`` at one position modulo 8 over its median over the 8 positions.

    ``phase`` None picks the strongest position (the codec grid may be offset by a crop).
    """
    usable = (len(profile) // 8) * 8
    if usable == 0:
        return 0.0, 0
    means = profile[:usable].reshape(-1, 8).mean(axis=0)
    k = int(np.argmax(means)) if phase is None else phase
    return float(np.log((means[k] + 1e-3) / (np.median(means) + 1e-3))), k


def _blockiness(luma: np.ndarray) -> np.ndarray:
    """8x8 block-grid strength of the luma, whole image and 4 x 8 tiles.

    JPEG (and the AVC/HEVC intra blocks of CVIQD) quantise 8x8 blocks independently, so the mean
    absolute step between neighbouring pixels is larger across block boundaries than inside
    blocks. Only an image at the codec's own resolution keeps that grid; resampling smears it.
    """
    height, width = luma.shape
    dx = np.abs(np.diff(luma, axis=1)) if width > 1 else np.zeros((height, 0), np.float32)
    dy = np.abs(np.diff(luma, axis=0)) if height > 1 else np.zeros((0, width), np.float32)
    block_h, phase_h = _block_profile_ratio(dx.mean(axis=0) if dx.size else np.zeros(0), None)
    block_v, phase_v = _block_profile_ratio(dy.mean(axis=1) if dy.size else np.zeros(0), None)
    # Local compression (a region re-encoded) shows in a few tiles only; the tiles reuse the
    # global phase so that a tile's own content cannot pick a spurious one.
    tile_h, tile_w = height // 4, width // 8
    tiles = []
    for i in range(4):
        for j in range(8):
            rows, cols = slice(i * tile_h, (i + 1) * tile_h), slice(j * tile_w, (j + 1) * tile_w - 1)
            h_ratio = _block_profile_ratio(dx[rows, cols].mean(axis=0), phase_h)[0] if tile_h and tile_w > 1 else 0.0
            rows_v = slice(i * tile_h, (i + 1) * tile_h - 1)
            cols_v = slice(j * tile_w, (j + 1) * tile_w)
            v_ratio = _block_profile_ratio(dy[rows_v, cols_v].mean(axis=1), phase_v)[0] if tile_h > 1 and tile_w else 0.0
            tiles.append(0.5 * (h_ratio + v_ratio))
    return np.array([block_h, block_v, max(tiles), float(np.median(tiles))])


def _tile_means(values: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Means of ``values`` (H, W) over a rows x cols grid of tiles, ``(rows * cols,)``."""
    height, width = values.shape
    th, tw = height // rows, width // cols
    if th == 0 or tw == 0:
        return np.full(rows * cols, float(values.mean()) if values.size else 0.0)
    return values[: th * rows, : tw * cols].reshape(rows, th, cols, tw).mean(axis=(1, 3)).ravel()


_TILE_WIDTH = 1024  # working width of the tile statistics: 8192-px ERPs would be slow at full size
_TILE_ROWS, _TILE_COLS = 3, 8  # 45-degree tiles over latitudes -67.5..67.5 (the poles are stretched)


def _tile_contrasts(erp: np.ndarray) -> np.ndarray:
    """Local-vs-global contrast of quality statistics over 45-degree tiles of the ERP.

    A local distortion changes a statistic in a few tiles relative to the rest of the same
    panorama, which is content-normalised by construction (same scene, same camera). For each
    statistic: the median over tiles, and how far the maximum rises above / the minimum falls
    below it.
    """
    height, width = erp.shape[:2]
    if width > _TILE_WIDTH:
        erp = cv2.resize(erp, (_TILE_WIDTH, max(round(height * _TILE_WIDTH / width), 1)), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(erp, cv2.COLOR_RGB2GRAY).astype(np.float32)
    levels: list[np.ndarray] = [grey]
    for _ in range(2):
        g = levels[-1]
        levels.append(cv2.resize(g, (max(g.shape[1] // 2, 1), max(g.shape[0] // 2, 1)), interpolation=cv2.INTER_AREA))

    def tiles(values: np.ndarray) -> np.ndarray:
        m = values.shape[0] // 8
        return _tile_means(values[m : values.shape[0] - m] if values.shape[0] > 2 * m else values, _TILE_ROWS, _TILE_COLS)

    energy = [np.log(tiles((g - cv2.GaussianBlur(g, (0, 0), 1.0, borderType=cv2.BORDER_REPLICATE)) ** 2) + 1e-2)
              for g in levels]
    residual = np.abs(cv2.filter2D(grey, -1, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT_101))
    # Mean absolute residual -> Gaussian sigma (sqrt(pi/2)), over the kernel gain 6; relative to
    # the band-1 amplitude, because texture leaks into the residual in proportion to it.
    noise = np.log(tiles(residual) * math.sqrt(math.pi / 2) / 6.0 + 0.1) - 0.5 * energy[1]
    stats = [energy[0] - energy[1], energy[1] - energy[2], energy[1], noise, tiles(grey) / 255.0,
             tiles((grey >= 250).astype(np.float32)), tiles((grey <= 5).astype(np.float32))]
    out = []
    for values in stats:
        median = float(np.median(values))
        out += [median, float(values.max()) - median, median - float(values.min())]
    return np.array(out)


# Immerkaer's noise kernel: annihilates locally linear image structure, leaves white noise with
# a gain of sqrt(sum of squared taps) = 6.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_MAD_TO_SIGMA = 1.0 / (0.6745 * 6.0)


class NSSBackbone(Backbone):
    """Distortion-aware natural-scene statistics, computed for a whole batch with OpenCV/numpy.

    Version ``nss-v3``: 61 features per image (v1's 45 first, unchanged), the same for a viewport
    and for the global view. The global descriptor is these features of :func:`global_view`, the
    whole ERP at low resolution in one call, as the paper's g is its backbone on the resized ERP:
    it sees the scene, its exposure and colour and a distortion that covers the whole sphere, not
    where a local one sits (``docs/env.md``). ``NSSBackbone(panorama=True)`` (spec ``nss-pano``,
    name ``nss-pano-v3``) appends the 25 ``pano_*`` statistics of the whole ERP to the global
    descriptor (zeros for viewports): exactly nss-v2's 86 features, which locate the damage
    without any viewport and so leave a scanpath nothing to find. ``s1`` is full resolution, ``s2`` half resolution
    (``INTER_AREA``). Grey is BT.601 luma in 0..255 (float). MSCN coefficients use a 7x7 Gaussian
    window with sigma 7/6 and C = 1, as in BRISQUE (Mittal et al., 2012). Shape parameters are found
    by moment matching against a lookup table of the GGD moment ratio (alpha in 0.2..10).

    =============================  ====================================================================
    Features                       Definition (and the distortions they respond to)
    =============================  ====================================================================
    ``sX_mscn_alpha``, ``_var``    GGD shape and variance of the MSCN coefficients. Pristine content
                                   sits near alpha 1.5-2; noise raises alpha, compression and
                                   exposure faults lower it, blur shrinks the variance.
    ``sX_{h,v,d1,d2}_alpha``,      Asymmetric-GGD shape, mean, left and right variance of the products
    ``_mean``, ``_lvar``, ``_rvar`` of horizontally, vertically and diagonally adjacent MSCN values:
                                   neighbour correlation, which compression, blur and noise change.
    ``sharpness``                  ``log(1 + var(Laplacian(grey)))``: fine detail, lost to blur/JPEG2000.
    ``rms_contrast``               ``std(grey) / 255``.
    ``colourfulness``              Hasler & Suesstrunk (2003) on 0..255 RGB:
                                   ``sqrt(var(rg) + var(yb)) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)``,
                                   ``rg = R - G``, ``yb = (R + G) / 2 - B``; drops with exposure faults.
    ``entropy``                    Shannon entropy (bits) of the 256-level grey histogram.
    ``mean_luminance``             ``mean(grey) / 255``: over/under-exposure, brightness changes.
    ``hf_ratio``                   ``log`` of the energy of ``grey - GaussianBlur(grey, sigma=1)`` over the
                                   grey variance (both + 1e-2): share of high-frequency content,
                                   low for blur, high for noise.
    ``noise_sigma``                ``log(1 + sigma)``, sigma from the median absolute response of
                                   Immerkaer's noise kernel (robust to edges, which are sparse).
    ``highlight_fraction``         Fraction of grey levels >= 250 (clipped highlights).
    ``shadow_fraction``            Fraction of grey levels <= 5 (crushed shadows).
    =============================  ====================================================================

    Added in v2 (measured on Synth360, 3 reference splits: SVR test SRCC 0.68 -> 0.77):

    =============================  ====================================================================
    ``band_ratio_01/12/23``        ``log E_k - log E_{k+1}``, ``E_k`` the energy of the DoG band
                                   ``L_k - GaussianBlur(L_k, 1)`` of the grey pyramid (1, 1/2, 1/4,
                                   1/8): content-normalised fine-vs-coarse detail; blur and JPEG2000
                                   lower it, noise raises it. ``band_energy_3``: ``log E_3``.
    ``band_kurtosis_0/1/2``        ``log(E[b^4] / E[b^2]^2)`` of bands 0-2: heavy tails when a codec
                                   zeroes small coefficients, ~3 for noise.
    ``chroma_hf_ratio``            ``log`` of Cr+Cb over Y Laplacian energy: chroma subsampling/quantisation.
    ``noise_rel``                  ``log((sigma + 0.1) / (sqrt(E_1) + 0.1))``: noise relative to texture.
    ``lum_p{1,10,50,90,99}``       Grey-level quantiles / 255: exposure and tone compression.
    ``rgb_clip_high``, ``_low``    Fraction of pixels whose brightest channel is >= 254 / <= 2.
    ``pano_*`` (25, ``nss-pano``)  Whole-panorama block, filled only by :meth:`global_features` from
                                   the *canonical-density* ERP (0 for viewports and plain images):
                                   ``pano_block_h/v``: ``log`` of the mean absolute neighbour step at
                                   the strongest position modulo 8 over its median over the 8 positions
                                   (JPEG/AVC/HEVC block grids, phase-searched); ``pano_block_tile_max``,
                                   ``_median``: the same over 4 x 8 ERP tiles at the global phase (local
                                   compression). ``pano_tile_{r01,r12,e1,noise,lum,high,low}_{median,
                                   above,below}``: band ratios, band-1 energy, relative noise, mean
                                   luminance and clipped fractions on 3 x 8 tiles of 45 degrees
                                   (latitudes -67.5..67.5, ERP resized to at most 1024 wide); median
                                   over tiles and how far the max rises above / the min falls below it
                                   -- local-vs-global contrast, content-normalised by the scene itself.
    =============================  ====================================================================

    Viewports and the global view are resampled from the ERP, so a codec's block grid is neither
    aligned with nor at period 8 in them. ``pano_block_*`` measures it on the ERP it is given; the
    cache and the scorer give the canonical-density ERP (896 px wide for the default grid), where
    a grid survives only from inputs of about that width: resolution independence costs the
    block detector its native grid.

    All features are finite for flat, saturated and tiny (down to 1x1) images. Runs on the CPU;
    OpenCV's thread pool parallelises the filters.
    """

    VERSION = 3
    # Pure NumPy/OpenCV on the CPU with no model state: cheap to pickle into worker processes.
    parallel_safe = True

    def __init__(self, batch_size: int = 32, panorama: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.panorama = panorama
        self.name = f"nss-pano-v{self.VERSION}" if panorama else f"nss-v{self.VERSION}"
        self.feature_names: tuple[str, ...] = _nss_feature_names() + (_PANORAMA_FEATURES if panorama else ())
        self.dim = len(self.feature_names)
        self.device = "cpu"
        # Images are stacked as channels of one OpenCV matrix, which caps the batch.
        self.batch_size = min(batch_size, _MAX_CHANNELS)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        n, height, width, _ = images.shape
        rows = images.reshape(n * height, width, 3)
        rgb = rows.astype(np.float32)
        grey8 = cv2.cvtColor(rows, cv2.COLOR_RGB2GRAY).reshape(n, height * width)
        grey_rows = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        # (H, W, N): the batch becomes the channels of one image, so each OpenCV filter call
        # processes every image at once and per-image statistics are column reductions.
        grey = np.ascontiguousarray(grey_rows.reshape(n, height, width).transpose(1, 2, 0))

        features = _brisque_scale(grey)
        size = (max(width // 2, 1), max(height // 2, 1))
        half = _as_channels(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), n)
        features += _brisque_scale(half)
        statistics, detail = self._global_statistics(rgb.reshape(n, height * width, 3), grey, grey8)
        features += statistics
        bands, energies = _band_statistics(grey, half, detail)
        features += bands
        features.append(self._chroma_hf_ratio(rows, grey, n, height, width))
        # Noise relative to the band-1 amplitude: texture leaks into the noise residual in
        # proportion to it, so the ratio separates noise from busy content better than sigma alone.
        features.append(np.log((np.expm1(statistics[6]) + 0.1) / (np.exp(0.5 * energies[1]) + 0.1)))
        features += self._luma_quantiles(grey8)
        brightest = rows.reshape(n, height * width, 3).max(axis=2)
        features += [(brightest >= 254).mean(axis=1), (brightest <= 2).mean(axis=1)]
        if self.panorama:
            # The panorama-level block is defined for whole ERPs only (global_features); a lone image
            # (a viewport, or a global view embedded without its ERP) has no whole-panorama grid or tiles.
            features += [np.zeros(n)] * len(_PANORAMA_FEATURES)
        return np.stack(features, axis=1).astype(np.float32)

    def global_features(self, erp: np.ndarray, size: int) -> np.ndarray:
        """Features of :func:`global_view`; with ``panorama``, the ``pano_*`` block computed on the whole ``erp``."""
        features = super().global_features(erp, size)
        if self.panorama:
            features[-len(_PANORAMA_FEATURES):] = _panorama_statistics(erp)
        return features

    @staticmethod
    def _chroma_hf_ratio(rows: np.ndarray, grey: np.ndarray, n: int, height: int, width: int) -> np.ndarray:
        """``log`` of chroma (Cr + Cb) over luma Laplacian energy: JPEG's 4:2:0 subsampling and
        coarse chroma quantisation remove chroma detail faster than luma detail."""
        ycc = cv2.cvtColor(rows, cv2.COLOR_RGB2YCrCb).astype(np.float32).reshape(n, height, width, 3)
        chroma = np.ascontiguousarray(ycc[..., 1:].transpose(1, 2, 3, 0).reshape(height, width, 2 * n))

        def energy(x: np.ndarray, channels: int) -> np.ndarray:
            lap = _flat(_as_channels(cv2.Laplacian(x, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REPLICATE), channels))
            return _sum_sq(lap) / max(lap.shape[0], 1)

        chroma_energy = energy(chroma, 2 * n).reshape(2, n).sum(axis=0)
        return np.log((chroma_energy + 1e-2) / (energy(grey, n) + 1e-2))

    @staticmethod
    def _luma_quantiles(grey8: np.ndarray) -> list[np.ndarray]:
        """Grey-level quantiles (0..1) from the histograms: where the exposure puts the tones."""
        hist = _histograms(grey8)
        cdf = np.cumsum(hist, axis=1) / hist.sum(axis=1, keepdims=True)
        return [(cdf < q / 100.0).sum(axis=1) / 255.0 for q in _LUMA_QUANTILES]

    @staticmethod
    def _global_statistics(rgb: np.ndarray, grey: np.ndarray,
                           grey8: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """The nine whole-image statistics, and the band-0 detail ``(H*W, N)`` they use.

        ``rgb`` float32 (N, P, 3), ``grey`` float32 (H, W, N), ``grey8`` uint8 (N, P).
        """
        n = grey.shape[2]
        grey_mean = _mean(grey)
        grey_var = np.maximum(_sum_sq(_flat(grey)) / _flat(grey).shape[0] - grey_mean**2, 0.0)

        laplacian = _as_channels(cv2.Laplacian(grey, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REPLICATE), n)
        lap_mean = _mean(laplacian)
        lap_var = np.maximum(_sum_sq(_flat(laplacian)) / _flat(laplacian).shape[0] - lap_mean**2, 0.0)

        rg = rgb[:, :, 0] - rgb[:, :, 1]
        yb = 0.5 * (rgb[:, :, 0] + rgb[:, :, 1]) - rgb[:, :, 2]
        spread = np.sqrt(rg.var(axis=1, dtype=np.float64) + yb.var(axis=1, dtype=np.float64))
        offset = np.sqrt(rg.mean(axis=1, dtype=np.float64) ** 2 + yb.mean(axis=1, dtype=np.float64) ** 2)
        colourfulness = spread + 0.3 * offset

        hist = _histograms(grey8)
        pixels = hist.sum(axis=1)

        smooth = _as_channels(cv2.GaussianBlur(grey, (0, 0), 1.0, borderType=cv2.BORDER_REPLICATE), n)
        detail = _flat(grey - smooth)
        hf_energy = _sum_sq(detail) / detail.shape[0]
        hf_ratio = np.log((hf_energy + 1e-2) / (grey_var + 1e-2))

        residual = _as_channels(cv2.filter2D(grey, -1, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT_101), n)
        # The median of every 4th response (2x2 subsampling) estimates the same quantile at a
        # quarter of the cost of the partition, the slowest step of the whole backbone.
        noise_sigma = np.median(np.abs(_flat(residual[::2, ::2])), axis=0) * _MAD_TO_SIGMA

        return [
            np.log1p(lap_var),
            np.sqrt(grey_var) / 255.0,
            colourfulness,
            _entropy_from_histograms(hist),
            grey_mean / 255.0,
            hf_ratio,
            np.log1p(noise_sigma),
            hist[:, 250:].sum(axis=1) / pixels,
            hist[:, :6].sum(axis=1) / pixels,
        ], detail


# ---------------------------------------------------------------------------------------------
# DINOv2
# ---------------------------------------------------------------------------------------------

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_POOLINGS = {"cls": "cls", "cls+mean": "clsmean"}  # constructor value -> token used in names


def _looks_like_local_path(model: str) -> bool:
    """True when ``model`` names a folder rather than a hub id (``org/name``)."""
    if Path(model).expanduser().exists():
        return True
    return model.startswith((".", "/", "~", "\\")) or model.count("/") > 1 or "\\" in model or ":" in model


class DinoV2Backbone(Backbone):
    """A frozen DINOv2 ViT (the paper's backbone) through ``transformers.AutoModel``.

    Images are resized to the nearest multiple of the patch size (a 224x224 viewport stays
    224x224, the 224x448 global view stays 224x448; DINOv2 interpolates its position embeddings
    to any grid), scaled to 0..1 and normalised with the ImageNet mean and std. There is no
    centre crop: cropping would drop part of what the quality score is about.

    Args:
        model: hub id (``facebook/dinov2-small``, ``-base``, ...) or a local folder saved with
            ``save_pretrained`` / ``huggingface-cli download``.
        pooling: ``"cls"`` (the CLS token, dim = hidden size) or ``"cls+mean"`` (CLS token
            concatenated with the mean patch token, dim = 2 x hidden size).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        dtype: ``"auto"`` runs under bf16 autocast on GPUs that support it, else fp16, and in
            float32 on the CPU; ``"float32"``, ``"float16"`` or ``"bfloat16"`` force one. The
            name does not include it: reduced precision perturbs features far less than the
            differences between images, so caches stay shareable between CPU and GPU machines.
        batch_size: images per forward pass.

    Raises:
        BackboneLoadError: the weights cannot be loaded; the message says how to supply them.
    """

    def __init__(
        self,
        model: str = DEFAULT_DINOV2,
        *,
        pooling: str = "cls",
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
    ) -> None:
        if pooling not in _POOLINGS:
            raise ValueError(f"pooling must be one of {sorted(_POOLINGS)}, got {pooling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        import torch

        self.device = resolve_device(device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but no CUDA GPU is visible; use 'auto' or 'cpu'")
        self.batch_size = batch_size
        self.pooling = pooling
        self._autocast_dtype = self._pick_dtype(dtype, torch)
        source = model
        if _looks_like_local_path(model):
            folder = Path(model).expanduser().resolve()
            if not folder.is_dir():
                problem = "is not a folder" if folder.exists() else "does not exist"
                raise BackboneLoadError(_missing_weights_message(model, f"local folder {folder} {problem}"))
            source = str(folder)
        self.model_id = source
        self._model = _load_dinov2(source).to(self.device).eval()
        config = self._model.config
        self.patch_size = int(config.patch_size)
        # Register-token variants put their registers between the CLS and the patch tokens.
        self._first_patch = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        hidden = int(config.hidden_size)
        self.dim = hidden * (2 if pooling == "cls+mean" else 1)
        self.name = f"dinov2-{_POOLINGS[pooling]}:{source}"
        self._mean = torch.tensor(_IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(_IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def _pick_dtype(self, dtype: str, torch: Any) -> torch.dtype | None:
        """The autocast dtype, or None for plain float32."""
        choices = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype == "auto":
            if not self.device.startswith("cuda"):
                return None
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if dtype not in choices:
            raise ValueError(f"dtype must be 'auto' or one of {sorted(choices)}, got {dtype!r}")
        return choices[dtype]

    def _input_size(self, height: int, width: int) -> tuple[int, int]:
        def snap(x: int) -> int:
            return max(self.patch_size, round(x / self.patch_size) * self.patch_size)

        return snap(height), snap(width)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        import torch

        height, width = images.shape[1:3]
        target_h, target_w = self._input_size(height, width)
        if (target_h, target_w) != (height, width):
            shrinking = target_h * target_w < height * width
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
            size = (target_w, target_h)
            images = np.stack([cv2.resize(im, size, interpolation=interpolation) for im in images])
        with torch.inference_mode():
            pixels = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            pixels = (pixels - self._mean) / self._std
            with torch.autocast(
                device_type=self.device.split(":")[0],
                dtype=self._autocast_dtype or torch.float32,
                enabled=self._autocast_dtype is not None,
            ):
                tokens = self._model(pixel_values=pixels).last_hidden_state
            tokens = tokens.float()
            pooled = tokens[:, 0]
            if self.pooling == "cls+mean":
                pooled = torch.cat([pooled, tokens[:, self._first_patch :].mean(dim=1)], dim=1)
            return pooled.cpu().numpy()


def _missing_weights_message(model: str, reason: str) -> str:
    return (
        f"cannot load DINOv2 weights {model!r}: {reason.strip().rstrip('.')}. "
        "On a machine with internet access run "
        f"`huggingface-cli download {DEFAULT_DINOV2} --local-dir DIR` (or `hf download ...`), "
        "copy DIR here and pass `--backbone dinov2:DIR` (make_backbone('dinov2:DIR')); "
        "or use the offline default `--backbone nss`."
    )


def _load_dinov2(source: str) -> Any:
    """``AutoModel.from_pretrained`` with every failure turned into a BackboneLoadError."""
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        # transformers reports no network, missing files and unknown configs with these types.
        raise BackboneLoadError(_missing_weights_message(source, f"{type(exc).__name__}: {exc}")) from exc
    model_type = getattr(model.config, "model_type", "")
    if not model_type.startswith("dinov2"):
        raise BackboneLoadError(f"{source}: expected a DINOv2 checkpoint, found model_type {model_type!r}")
    return model


# ---------------------------------------------------------------------------------------------
# Fusion and the spec parser
# ---------------------------------------------------------------------------------------------


class FusionBackbone(Backbone):
    """Concatenation of several backbones' features, in the given order.

    Each part keeps its own batch size and device; ``name`` joins the parts' names with ``+``.
    """

    def __init__(self, parts: Sequence[Backbone]) -> None:
        if len(parts) < 2:
            raise ValueError("a fusion needs at least two backbones")
        self.parts = tuple(parts)
        self.name = "+".join(part.name for part in self.parts)
        self.dim = sum(part.dim for part in self.parts)
        # The accelerator, if any part uses one: that is where the expensive work runs.
        self.device = next((part.device for part in self.parts if part.device != "cpu"), "cpu")
        # Parts batch internally; a large outer chunk just avoids re-slicing.
        self.batch_size = max(part.batch_size for part in self.parts)
        self.parallel_safe = all(part.parallel_safe for part in self.parts)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        return np.concatenate([part(images) for part in self.parts], axis=1)

    def global_features(self, erp: np.ndarray, size: int) -> np.ndarray:
        """Each part's own global descriptor (NSS's uses the whole ERP), concatenated."""
        return np.concatenate([part.global_features(erp, size) for part in self.parts])


class CountingBackbone(Backbone):
    """Another backbone that counts the images it embeds.

    Benchmarks and tests use it to check that scoring a panorama costs exactly V + 1 backbone
    images (V viewports and the global descriptor) whatever K and T; every call, including the
    wrapped backbone's whole-panorama global descriptor, goes to ``inner`` unchanged.
    """

    def __init__(self, inner: Backbone) -> None:
        self.inner = inner
        self.name, self.dim, self.device = inner.name, inner.dim, inner.device
        self.batch_size, self.parallel_safe = inner.batch_size, inner.parallel_safe
        self.images = 0

    def _embed(self, images: np.ndarray) -> np.ndarray:
        self.images += len(images)
        return self.inner(images)

    def global_features(self, erp: np.ndarray, size: int) -> np.ndarray:
        self.images += 1
        return self.inner.global_features(erp, size)


_SPEC_HELP = (
    "use 'nss', 'nss-pano' (NSS with the whole-panorama block in the global descriptor), 'dinov2', "
    "'dinov2:<hub id or folder>', 'dinov2-clsmean[:<hub id or folder>]' (CLS + mean patch token), "
    "or several joined with '+', e.g. 'nss+dinov2:/models/dinov2-small'"
)


def _split_spec(spec: str) -> list[str]:
    """Split on '+', re-joining pieces that do not start a backbone (a '+' inside a path)."""
    parts: list[str] = []
    for piece in spec.split("+"):
        if parts and not piece.strip().startswith(("nss", "dinov2")):
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    return [part.strip() for part in parts]


def _make_one(spec: str, device: str, batch_size: int) -> Backbone:
    kind, _, argument = spec.partition(":")
    for prefix, panorama in (("nss", False), ("nss-pano", True)):
        if kind in (prefix, f"{prefix}-v{NSSBackbone.VERSION}") and not argument:
            return NSSBackbone(batch_size=batch_size, panorama=panorama)
        if re.fullmatch(rf"{prefix}-v\d+", kind):
            raise ValueError(
                f"backbone {spec!r}: this version computes {prefix}-v{NSSBackbone.VERSION} features, "
                f"whose definition differs; rebuild the feature cache with --backbone {prefix}"
            )
    poolings = {"dinov2": "cls", "dinov2-cls": "cls", "dinov2-clsmean": "cls+mean"}
    if kind in poolings:
        model = argument or DEFAULT_DINOV2
        return DinoV2Backbone(model, pooling=poolings[kind], device=device, batch_size=batch_size)
    raise ValueError(f"unknown backbone {spec!r}; {_SPEC_HELP}")


def make_backbone(spec: str = "nss", device: str = "auto", batch_size: int = 32) -> Backbone:
    """Build a backbone from a spec string (also accepts any backbone's ``name``).

    Specs: ``"nss"``; ``"nss-pano"`` (with the ``pano_*`` block); ``"dinov2"``
    (``facebook/dinov2-small``); ``"dinov2:<hub id or local folder>"``; ``"dinov2-clsmean[:...]"``
    for CLS + mean patch pooling; parts joined with ``+`` (``"nss+dinov2:/models/dinov2-small"``)
    give a :class:`FusionBackbone`.

    Raises:
        ValueError: unknown spec. BackboneLoadError: DINOv2 weights unavailable.
    """
    parts = [_make_one(part, device, batch_size) for part in _split_spec(spec.strip())]
    return parts[0] if len(parts) == 1 else FusionBackbone(parts)

