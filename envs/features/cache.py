"""Per-dataset feature cache: everything the env and the assessor need, so neither touches pixels.

For every image of a dataset, one backbone and one viewport grid, the cache holds

* the backbone features of the V viewports and of the global view (the whole ERP, resized);
* the grey-level Shannon entropy of each viewport (256 bins, bits, 0..8; grey = BT.601 luma as
  ``cv2.COLOR_RGB2GRAY``, computed by :func:`rl_scaniqa.envs.features.backbones.grey_entropy`);
* the V x V matrix of SSIM between the grey viewports (symmetric, diagonal 1), for the env's
  ``1 - SSIM(x_t, x_{t-1})`` reward;
* a 128 x 256 RGB thumbnail (``cv2.INTER_AREA``), only for rendering;
* the dataset's start viewport (``record.extra["start_yaw"]`` / ``["start_pitch"]`` in degrees,
  mapped with :meth:`ViewportGrid.nearest`; ``-1`` when absent);
* the label fields (image id, path, reference id, distortion, level, raw MOS);
* the damaged cap of a local distortion, where the labels locate it (``record.extra["cap_yaw"]``,
  ``["cap_pitch"]``, ``["cap_radius"]`` in degrees, as Synth360 writes them): centre and radius,
  NaN for images without one (global distortions, references, datasets that do not say), so the
  where-to-look diagnostics (:mod:`rl_scaniqa.agents.damage`) need no pixels either;
* optionally the viewport and global features of *augmented views*: real image-space
  distortions (:mod:`rl_scaniqa.envs.data.distortions`) applied to the ERP before projection, for
  the assessor's consistency, triplet and cross-ranking losses. ``weak`` is level 1 of a
  photometric, noise or JPEG distortion; ``mild`` and ``heavy`` are levels 2 and 4-5 of one kind
  per image (JPEG, JPEG2000, blur, noise, over- or under-exposure), so clean > mild > heavy holds
  by construction. Kinds and levels are drawn deterministically per image
  (:func:`augmentation_for`, seeded by SHA-256 of the image id and view); distortions are applied
  at the ERP's native resolution, like the datasets' own.

File format
-----------
One safetensors file (``safetensors.numpy``), tensors (M images, V viewports, D feature dims,
A augmented views)::

    viewport_features      float32 (M, V, D)
    global_features        float32 (M, D)
    entropy                float32 (M, V)
    ssim                   float32 (M, V, V)
    thumbnails             uint8   (M, 128, 256, 3)
    start_viewports        int64   (M,)
    levels                 int64   (M,)
    mos                    float32 (M,)
    caps                   float32 (M, 3)           yaw, pitch, radius in degrees; NaN = no cap
    aug_viewport_features  float32 (M, A, V, D)     A may be 0
    aug_global_features    float32 (M, A, D)

and string metadata: ``format`` (``rl-scaniqa-feature-cache``), ``format_version``, ``key``,
``fingerprint``, ``dataset``, ``backbone``, ``dim``, ``grid`` (JSON of the ViewportGrid fields),
``grid_key``, ``mos_scale`` (JSON ``[low, high]``), ``augmentations`` (JSON list),
``augmentation_views`` (JSON of their kinds and levels), ``ssim_resolution``, JSON lists
``image_ids``, ``paths``, ``ref_ids``, ``distortions``, and ``digests``.

Integrity
---------
``digests`` is JSON ``{"arrays": {name: hex}, "metadata": hex}``: a SHA-256 of every array (its
dtype, shape and raw bytes) and one of every other metadata field, written with the file and
verified on every read (:func:`load_cache`, resume and merge of chunk files, which carry their
own). The key and fingerprint only say which inputs a file was built *from*; a file edited
afterwards (zeroed features, a changed MOS or image id) keeps its name and metadata, so without
the digests it would load silently. A mismatch raises :class:`CacheError` naming the file and the
array; a chunk that fails is recomputed. SHA-256 because it is the fastest of :mod:`hashlib`'s
digests where the CPU has SHA instructions (about 1.8 GB/s here, blake2b 0.9).

Key and staleness
-----------------
The *dataset fingerprint* is a SHA-256 over, for every record **in order** (cache rows are
positions in the record list, so a reordering must not reuse a cache): image id, resolved path,
file size, ``st_mtime_ns``, MOS, reference id, distortion, level, start yaw/pitch and damaged
cap. The cache
*key* hashes the fingerprint with the dataset name, ``backbone.name``, ``grid.key()``, the
augmented views with their kinds and levels, the SSIM resolution and :data:`FORMAT_VERSION`.
The file is ``<cache_dir>/<dataset>-<grid key>-<key>.safetensors``, so a touched image, another
backbone or another grid gives another file and a stale cache is never picked up; loading checks
the stored backbone, grid and (through :func:`get_or_build_cache`) fingerprint as well. A cache
written by another :data:`FORMAT_VERSION` (e.g. one from before the ``caps`` array) has another
key, so it is rebuilt beside the old file, and :func:`load_cache` refuses it by name; files of
version 2 and older have no digests and are refused or rebuilt that way rather than loaded
unverified.

Resume
------
A build writes chunks of ``chunk_size`` images to ``<file stem>.parts/<start>-<stop>.safetensors``,
each atomically. A rerun after an interruption keeps every chunk whose metadata (key, index
range, image ids) and arrays check out and computes only the others (resuming therefore needs
the same ``chunk_size``), then concatenates them into the final file, written atomically, and
removes the parts folder. A build holds an exclusive ``fcntl`` lock on ``.<file stem>.lock``, so
concurrent builders of the same cache (vector-env workers, two CLI runs) wait and then reuse it.

Parallel build
--------------
Missing chunks are computed by ``workers`` processes (at most one per missing chunk), started
only where a caller asks for more than one: the library default is one, in this process. A
spawned process re-imports the user's main module, so a plain call (``gym.make``, ``Scorer``)
from an unguarded script must never start one; the scripts and the CLI, whose main modules are
guarded, ask for one per CPU core. Where the main module cannot be re-imported (code read from
standard input, an interactive session) the build falls back to one process with a warning.
They are started with ``spawn`` because forking a process whose OpenCV or torch thread
pools are running can deadlock the child. Each worker computes whole chunks single-threaded and
writes each chunk file itself, atomically, exactly as the in-process build does; the parent
validates, tracks progress per finished chunk, merges and holds the lock; workers exit as soon as
the parent dies, so a killed build leaves no process behind. Results are identical to the
in-process build. Backbones that are not :attr:`Backbone.parallel_safe` (DINOv2, fusions
containing it) and builds inside a daemonic process (SB3 ``SubprocVecEnv`` workers, which may not
start children) run in-process.

SSIM
----
Computed as in Wang et al. (2004) -- Gaussian window sigma 1.5 truncated at radius 5 (11 taps),
K1 = 0.01, K2 = 0.03, L = 255, population (co)variances, mean over the window positions that lie
fully inside the image -- on the grey viewports first downsampled to :data:`SSIM_RESOLUTION`
pixels (``cv2.INTER_AREA``; viewports smaller than that are used as they are). The result equals
``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`` on the downsampled pair up to float32 rounding.
64 px keeps all V(V-1)/2 = 496 pairs of a 32-viewport grid at about 15-20 ms per image on two
CPU cores; the reward only needs to tell similar neighbours from dissimilar ones, which coarse
structure already does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import sys
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save, save_file

from rl_scaniqa.envs.data.datasets.records import (
    MosScale,
    PanoramaRecord,
    mos_scale_for,
)
from rl_scaniqa.envs.data.distortions import apply_distortion
from rl_scaniqa.envs.data.geometry import ViewportGrid, canonical_erp, extract_viewports
from rl_scaniqa.envs.data.imageio import read_erp
from rl_scaniqa.envs.errors import CacheError, DatasetError, ImageError
from rl_scaniqa.envs.features.backbones import Backbone, global_view, grey_entropy
from rl_scaniqa.envs.progress import progress_bar
from rl_scaniqa.envs.storage import atomic_path, exclusive_lock

__all__ = [
    "AUGMENTATION_VIEWS",
    "CACHE_ARRAYS",
    "CACHE_LISTS",
    "FORMAT_VERSION",
    "NO_CAP",
    "PIXEL_ARRAYS",
    "SSIM_RESOLUTION",
    "AugmentationChoice",
    "CacheArray",
    "FeatureCache",
    "FeatureStats",
    "ProjectedImage",
    "augmentation_for",
    "build_cache",
    "cache_key",
    "cache_path",
    "check_arrays",
    "damage_cap",
    "dataset_fingerprint",
    "encode_projected",
    "file_digests",
    "get_or_build_cache",
    "grey_viewports",
    "load_cache",
    "load_cache_bytes",
    "portable_cache_bytes",
    "no_augmentations",
    "verify_digests",
    "project_image",
    "ssim_matrix",
]

#: Bumped whenever the content or layout of a cache changes; part of the key.
#: 2: the ``caps`` array (damaged cap of local distortions).
#: 3: the ``digests`` metadata (SHA-256 of every array and of the other metadata, checked on load).
#: 4: features computed from the canonical-density ERP (:func:`canonical_erp`), not the native one.
FORMAT_VERSION = 4
#: Side (pixels) to which grey viewports are downsampled before the pairwise SSIM.
SSIM_RESOLUTION = 64
#: (height, width) of the stored ERP thumbnails.
THUMBNAIL_SHAPE = (128, 256)

_FORMAT = "rl-scaniqa-feature-cache"
_CHUNK_FORMAT = "rl-scaniqa-feature-cache-chunk"

# Augmentation kinds. Weak views must leave the quality judgement nearly unchanged (consistency
# loss), so they use global photometric, noise and compression damage at level 1 -- no blur or
# stitching, whose visibility depends much more on content. Mild and heavy views share one kind
# list, and the kind of an image is drawn from a seed that depends only on the image and that
# list (see augmentation_for), so an image's mild and heavy views are the *same* distortion at
# levels 2 and 4-5: clean > mild > heavy is then a genuine ordering for the triplet loss.
# Stitching is left out: its damage is local to a few seams and barely moves a global score.
_WEAK_KINDS: tuple[str, ...] = ("jpeg", "noise", "overexposure", "underexposure")
_GRADED_KINDS: tuple[str, ...] = ("jpeg", "jpeg2000", "blur", "noise", "overexposure", "underexposure")

#: Augmented views: name -> (distortion kinds to choose from, inclusive level range).
AUGMENTATION_VIEWS: dict[str, tuple[tuple[str, ...], tuple[int, int]]] = {
    "weak": (_WEAK_KINDS, (1, 1)),
    "mild": (_GRADED_KINDS, (2, 2)),
    "heavy": (_GRADED_KINDS, (4, 5)),
}

# SSIM constants (Wang et al. 2004); the window matches skimage's gaussian_weights.
_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2
_SSIM_KERNEL = np.exp(-0.5 * (np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1) / _SSIM_SIGMA) ** 2)
_SSIM_KERNEL = (_SSIM_KERNEL / _SSIM_KERNEL.sum()).astype(np.float32)



# --------------------------------------------------------------------------- the array schema

@dataclass(frozen=True)
class CacheArray:
    """One per-image array of the cache: name, dtype and shape in the symbols M, V, D and A.

    ``M`` is the number of images, ``V`` of viewports, ``D`` of feature dimensions and ``A`` of
    augmented views; integers are fixed sizes.
    """

    name: str
    dtype: type[np.generic]
    dims: tuple[str | int, ...]
    #: Whether NaN/inf values make a cache invalid (features must be finite; the MOS of images
    #: scored without labels is NaN).
    finite: bool = False
    #: Whether the array is computed from an image's pixels (stored in the build's chunk files)
    #: rather than copied from its labels.
    from_pixels: bool = True

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape for ``sizes`` (a value for each symbol M, V, D, A)."""
        return tuple(sizes[dim] if isinstance(dim, str) else dim for dim in self.dims)


#: The cache's arrays, in file order: the one definition of their names, dtypes and shapes, used
#: to allocate, check, subset and load caches (and by the env and the scorer through
#: :class:`FeatureCache`).
CACHE_ARRAYS: tuple[CacheArray, ...] = (
    CacheArray("viewport_features", np.float32, ("M", "V", "D"), finite=True),
    CacheArray("global_features", np.float32, ("M", "D"), finite=True),
    CacheArray("entropy", np.float32, ("M", "V")),
    CacheArray("ssim", np.float32, ("M", "V", "V")),
    CacheArray("thumbnails", np.uint8, ("M", *THUMBNAIL_SHAPE, 3)),
    CacheArray("start_viewports", np.int64, ("M",)),
    CacheArray("levels", np.int64, ("M",), from_pixels=False),
    CacheArray("mos", np.float32, ("M",), from_pixels=False),
    CacheArray("caps", np.float32, ("M", 3), from_pixels=False),
    CacheArray("aug_viewport_features", np.float32, ("M", "A", "V", "D"), finite=True),
    CacheArray("aug_global_features", np.float32, ("M", "A", "D"), finite=True),
)
#: The arrays a build computes from pixels, chunk by chunk.
PIXEL_ARRAYS: tuple[CacheArray, ...] = tuple(spec for spec in CACHE_ARRAYS if spec.from_pixels)
#: Per-image label lists, stored as JSON metadata.
CACHE_LISTS: tuple[str, ...] = ("image_ids", "paths", "ref_ids", "distortions")


def check_arrays(arrays: Mapping[str, np.ndarray], sizes: Mapping[str, int], source: str,
                 specs: Sequence[CacheArray] = CACHE_ARRAYS) -> None:
    """Check that ``arrays`` holds every array of ``specs`` with its dtype, shape and finiteness.

    Raises:
        CacheError: naming ``source``, the array and what is wrong with it.
    """
    for spec in specs:
        if spec.name not in arrays:
            raise CacheError(f"{source}: feature cache lacks the {spec.name!r} array")
        array = np.asarray(arrays[spec.name])
        shape = spec.shape(sizes)
        if array.shape != shape or array.dtype != spec.dtype:
            raise CacheError(f"{source}: array {spec.name!r} is {array.dtype}{array.shape}, expected "
                             f"{np.dtype(spec.dtype)}{shape}")
        if spec.finite and not np.isfinite(array).all():
            raise CacheError(f"{source}: array {spec.name!r} contains NaN/inf values")


def no_augmentations(n_images: int, n_viewports: int, dim: int) -> dict[str, np.ndarray]:
    """The augmented-view arrays of a cache without augmented views (A = 0)."""
    sizes = {"M": n_images, "V": n_viewports, "D": dim, "A": 0}
    return {spec.name: np.zeros(spec.shape(sizes), spec.dtype)
            for spec in CACHE_ARRAYS if "A" in spec.dims}


# --------------------------------------------------------------------------- pixel statistics

def grey_viewports(viewports: np.ndarray) -> np.ndarray:
    """Grey (ITU-R BT.601 luma, as ``cv2.COLOR_RGB2GRAY``) copies of RGB viewports.

    Args:
        viewports: ``uint8 (V, S, S, 3)`` RGB.

    Returns:
        ``uint8 (V, S, S)``.
    """
    n, height, width, _ = viewports.shape
    stacked = np.ascontiguousarray(viewports).reshape(n * height, width, 3)
    return cv2.cvtColor(stacked, cv2.COLOR_RGB2GRAY).reshape(n, height, width)


def _valid_gaussian_filter(images: np.ndarray) -> np.ndarray:
    """Gaussian-filter a stack ``(N, S, S)`` and keep the window positions fully inside each image.

    The stack is filtered as one tall ``(N*S, S)`` image (one fast OpenCV call): the vertical pass
    mixes rows of neighbouring images only within ``_SSIM_RADIUS`` of their borders, exactly the
    rows that the crop then discards.
    """
    n, side, _ = images.shape
    filtered = cv2.sepFilter2D(images.reshape(n * side, side), -1, _SSIM_KERNEL, _SSIM_KERNEL,
                               borderType=cv2.BORDER_REFLECT)
    r = _SSIM_RADIUS
    return np.ascontiguousarray(filtered.reshape(n, side, side)[:, r:-r, r:-r])


def ssim_matrix(grey: np.ndarray, resolution: int = SSIM_RESOLUTION) -> np.ndarray:
    """SSIM between every pair of grey viewports, vectorised over the pairs.

    Args:
        grey: ``uint8 (V, S, S)`` grey viewports.
        resolution: side to which they are downsampled first (``cv2.INTER_AREA``); viewports
            already at most this size are used as they are.

    Returns:
        ``float32 (V, V)``, symmetric, diagonal exactly 1.

    Raises:
        ValueError: viewports smaller than the 11 px SSIM window, or not square.
    """
    n, height, width = grey.shape
    if height != width:
        raise ValueError(f"SSIM expects square viewports, got {height}x{width}")
    side = min(height, resolution)
    if side < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"viewports of {side} px are smaller than the {2 * _SSIM_RADIUS + 1} px SSIM window")
    if side != height:
        small = np.stack([cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA) for g in grey])
    else:
        small = grey
    x = small.astype(np.float32)
    i, j = np.triu_indices(n, 1)
    mu = _valid_gaussian_filter(x)
    var = _valid_gaussian_filter(x * x) - mu * mu
    cross = _valid_gaussian_filter(x[i] * x[j])
    mu_i, mu_j = mu[i], mu[j]
    # In-place arithmetic: the (pairs, s, s) temporaries dominate the cost at V = 32.
    numerator = mu_i * mu_j
    cross -= numerator
    cross *= 2.0
    cross += _SSIM_C2
    numerator *= 2.0
    numerator += _SSIM_C1
    numerator *= cross
    denominator = mu_i * mu_i
    denominator += mu_j * mu_j
    denominator += _SSIM_C1
    spread = var[i] + var[j]
    spread += _SSIM_C2
    denominator *= spread
    numerator /= denominator
    out = np.eye(n, dtype=np.float32)
    out[i, j] = numerator.reshape(len(i), -1).mean(axis=1)
    out[j, i] = out[i, j]
    return out


# --------------------------------------------------------------------------- augmentations

@dataclass(frozen=True)
class AugmentationChoice:
    """The distortion an augmented view applies to one image."""

    kind: str
    level: int
    seed: int


def _stable_seed(*parts: str) -> int:
    """A 63-bit seed from strings, identical across processes and Python versions (unlike hash())."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def augmentation_for(image_id: str, view: str) -> AugmentationChoice:
    """The deterministic distortion of augmented ``view`` for image ``image_id``.

    The kind is drawn with a seed from the image id and the view's *kind list*, so views sharing
    a kind list (mild and heavy) distort one image with the same kind; the level (within the
    view's range) and the pixel randomness (noise samples) are seeded by image id and view name.

    Raises:
        CacheError: ``view`` is not in :data:`AUGMENTATION_VIEWS`.
    """
    if view not in AUGMENTATION_VIEWS:
        raise CacheError(f"unknown augmented view {view!r}; known views: {', '.join(AUGMENTATION_VIEWS)}")
    kinds, (low, high) = AUGMENTATION_VIEWS[view]
    kind_rng = np.random.default_rng(_stable_seed(image_id, "kind", *kinds))
    kind = kinds[int(kind_rng.integers(len(kinds)))]
    level_rng = np.random.default_rng(_stable_seed(image_id, "level", view))
    level = int(level_rng.integers(low, high + 1))
    return AugmentationChoice(kind=kind, level=level, seed=_stable_seed(image_id, "pixels", view))


def _check_augmentations(augmentations: Sequence[str]) -> tuple[str, ...]:
    names = tuple(augmentations)
    for name in names:
        if name not in AUGMENTATION_VIEWS:
            raise CacheError(f"unknown augmented view {name!r}; known views: {', '.join(AUGMENTATION_VIEWS)}")
    if len(set(names)) != len(names):
        raise CacheError(f"augmented views listed twice: {', '.join(names)}")
    return names


# --------------------------------------------------------------------------- the cache object

@dataclass
class FeatureCache:
    """Cached features and labels of a dataset; rows follow the record order it was built from."""

    backbone: str
    dim: int
    grid: ViewportGrid
    dataset: str
    mos_scale: MosScale
    image_ids: list[str]
    paths: list[str]
    ref_ids: list[str]
    distortions: list[str]
    levels: np.ndarray
    mos: np.ndarray
    caps: np.ndarray
    viewport_features: np.ndarray
    global_features: np.ndarray
    entropy: np.ndarray
    ssim: np.ndarray
    thumbnails: np.ndarray
    start_viewports: np.ndarray
    augmentations: tuple[str, ...]
    aug_viewport_features: np.ndarray
    aug_global_features: np.ndarray

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def mos_normalized(self) -> np.ndarray:
        """MOS mapped to 0..1 by the dataset's MOS scale, ``float32 (M,)``."""
        return np.asarray(self.mos_scale.normalize(self.mos), dtype=np.float32)

    @property
    def sizes(self) -> dict[str, int]:
        """The sizes of the schema's symbols: M images, V viewports, D dimensions, A views."""
        return {"M": len(self), "V": self.grid.n_viewports, "D": self.dim, "A": len(self.augmentations)}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of :data:`CACHE_ARRAYS` by name (the objects themselves, not copies)."""
        return {spec.name: getattr(self, spec.name) for spec in CACHE_ARRAYS}

    def validate(self, source: str) -> None:
        """Check the label lists, every array's dtype, shape and finiteness and the start viewports.

        Raises:
            CacheError: naming ``source`` and the first inconsistency found.
        """
        m = len(self)
        lengths = {name: len(getattr(self, name)) for name in CACHE_LISTS}
        if any(length != m for length in lengths.values()):
            raise CacheError(f"{source}: label lists have different lengths "
                             f"({', '.join(f'{k}={v}' for k, v in lengths.items())})")
        check_arrays(self.arrays(), self.sizes, source)
        starts = self.start_viewports
        if starts.size and (starts.min() < -1 or starts.max() >= self.grid.n_viewports):
            raise CacheError(f"{source}: start_viewports must be -1 or a viewport index < "
                             f"{self.grid.n_viewports}")
        _check_caps(self.caps, source)

    def subset(self, indices: Sequence[int] | np.ndarray) -> FeatureCache:
        """A new cache holding the given rows, in the given order (arrays are copies)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for a cache of {len(self)} images")
        pick = [int(k) for k in idx]
        lists = {name: [getattr(self, name)[k] for k in pick] for name in CACHE_LISTS}
        arrays = {name: array[idx] for name, array in self.arrays().items()}
        changes: dict[str, Any] = {**lists, **arrays}
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class FeatureStats:
    """Per-dimension standardisation of viewport and global features (fit on TRAIN images only)."""

    global_mean: np.ndarray
    global_std: np.ndarray
    viewport_mean: np.ndarray
    viewport_std: np.ndarray

    #: Standard deviations below this are raised to it, so constant dimensions map to 0, not inf.
    STD_FLOOR = 1e-6

    @classmethod
    def fit(cls, cache: FeatureCache, indices: Sequence[int] | None = None) -> FeatureStats:
        """Fit on the clean features of the images ``indices`` (all images when None)."""
        idx = np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("FeatureStats.fit needs at least one image")
        glob = cache.global_features[idx].astype(np.float64)
        views = cache.viewport_features[idx].reshape(-1, cache.dim).astype(np.float64)
        floor = cls.STD_FLOOR
        return cls(
            global_mean=glob.mean(axis=0).astype(np.float32),
            global_std=np.maximum(glob.std(axis=0), floor).astype(np.float32),
            viewport_mean=views.mean(axis=0).astype(np.float32),
            viewport_std=np.maximum(views.std(axis=0), floor).astype(np.float32),
        )

    def standardize_viewports(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` over the last axis (D) with the viewport statistics, float32."""
        return ((np.asarray(x, dtype=np.float32) - self.viewport_mean) / self.viewport_std).astype(np.float32)

    def standardize_global(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` over the last axis (D) with the global statistics, float32."""
        return ((np.asarray(x, dtype=np.float32) - self.global_mean) / self.global_std).astype(np.float32)

    def global_distance(self, x: np.ndarray) -> float:
        """Standardised RMS distance of one global feature ``x`` (D,) from the fitted images.

        ``sqrt(mean(((x - mean) / std) ** 2))``: the Mahalanobis distance under the diagonal
        covariance these statistics hold, divided by sqrt(D) so that it does not grow with D.
        Averaged over the images the statistics were fit on, its square is exactly 1 (at most
        1 where the std floor applies), so ~1 is typical and large values mean unlike them.
        """
        z = self.standardize_global(np.asarray(x, dtype=np.float64)).astype(np.float64)
        return float(np.sqrt(np.mean(np.square(z))))

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form (lists of floats)."""
        return {name: [float(v) for v in getattr(self, name)] for name in _STATS_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> FeatureStats:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a field is missing, the lengths differ, a value is not finite or a std
                is not positive.
        """
        missing = [name for name in _STATS_FIELDS if name not in data]
        if missing:
            raise ValueError(f"feature statistics lack {', '.join(missing)}")
        arrays = {name: np.asarray(data[name], dtype=np.float32).reshape(-1) for name in _STATS_FIELDS}
        sizes = {name: a.size for name, a in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"feature statistics have different lengths: {sizes}")
        if not all(np.isfinite(a).all() for a in arrays.values()):
            raise ValueError("feature statistics contain non-finite values")
        if (arrays["global_std"] <= 0).any() or (arrays["viewport_std"] <= 0).any():
            raise ValueError("feature statistics contain non-positive standard deviations")
        return cls(**arrays)


_STATS_FIELDS = ("global_mean", "global_std", "viewport_mean", "viewport_std")


# --------------------------------------------------------------------------- keys and paths

def _image_id(record: PanoramaRecord) -> str:
    return record.image_id or Path(record.path).stem


def _start_direction(record: PanoramaRecord) -> tuple[float, float] | None:
    """The dataset's start direction (yaw, pitch) in degrees, or None when it has none."""
    extra = record.extra or {}
    if "start_yaw" not in extra and "start_pitch" not in extra:
        return None
    try:
        yaw, pitch = float(extra["start_yaw"]), float(extra["start_pitch"])
    except (KeyError, TypeError, ValueError) as error:
        raise DatasetError(f"{record.path}: start direction needs numeric start_yaw and start_pitch "
                           f"(got {dict(extra)!r}): {error}") from error
    if not (np.isfinite(yaw) and np.isfinite(pitch) and -90.0 <= pitch <= 90.0):
        raise DatasetError(f"{record.path}: start direction yaw={yaw}, pitch={pitch} is not on the sphere")
    return yaw, pitch


#: The ``caps`` row of an image without a located damage.
NO_CAP = (math.nan, math.nan, math.nan)
_CAP_FIELDS = ("cap_yaw", "cap_pitch", "cap_radius")


def _check_caps(caps: np.ndarray, source: str) -> None:
    """Rows are all NaN (no cap) or a centre on the sphere with a radius in (0, 180] degrees."""
    known = ~np.isnan(caps).all(axis=1)
    rows = caps[known]
    if not np.isfinite(rows).all() or not ((np.abs(rows[:, 1]) <= 90.0).all()
                                           and (rows[:, 2] > 0).all() and (rows[:, 2] <= 180).all()):
        raise CacheError(f"{source}: array 'caps' must hold NaN rows or (yaw, pitch in [-90, 90], "
                         "radius in (0, 180]) degrees")


def damage_cap(record: PanoramaRecord) -> tuple[float, float, float]:
    """The damaged cap (yaw, pitch, radius) in degrees of a record, or :data:`NO_CAP`.

    Read from ``record.extra["cap_yaw"]``, ``["cap_pitch"]`` and ``["cap_radius"]``; absent or
    all empty (Synth360 leaves them empty for global distortions and references) means no cap.

    Raises:
        DatasetError: some but not all fields given, a non-numeric value, or a cap that is not on
            the sphere; the message names the image file.
    """
    extra = record.extra or {}
    cells = [extra.get(name, "") for name in _CAP_FIELDS]
    if all(cell in ("", None) for cell in cells):
        return NO_CAP
    try:
        yaw, pitch, radius = (float(cell) for cell in cells)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{record.path}: damaged cap needs numeric {', '.join(_CAP_FIELDS)} "
                           f"(got {dict(zip(_CAP_FIELDS, cells))!r}): {error}") from error
    if not (math.isfinite(yaw) and -90.0 <= pitch <= 90.0 and 0.0 < radius <= 180.0):
        raise DatasetError(f"{record.path}: damaged cap yaw={yaw}, pitch={pitch}, radius={radius} "
                           "is not a cap on the sphere")
    return yaw, pitch, radius


def dataset_fingerprint(records: Sequence[PanoramaRecord]) -> str:
    """SHA-256 hex of the records' files (path, size, mtime) and labels, in record order.

    Raises:
        ImageError: an image file does not exist.
        DatasetError: two records share an image id, or a start direction or cap is malformed.
    """
    entries = []
    seen: dict[str, Path] = {}
    for record in records:
        path = Path(record.path)
        image_id = _image_id(record)
        if image_id in seen:
            raise DatasetError(f"{path}: image id {image_id!r} is also used by {seen[image_id]}")
        seen[image_id] = path
        try:
            stat = path.stat()
        except OSError as error:
            raise ImageError(f"{path}: cannot read the image file ({error.strerror or error})") from error
        entries.append([image_id, str(path.resolve()), stat.st_size, stat.st_mtime_ns, float(record.mos),
                        record.ref_id, record.distortion, int(record.level), _start_direction(record),
                        _cap_entry(record)])
    return hashlib.sha256(json.dumps(entries).encode("utf-8")).hexdigest()


def _cap_entry(record: PanoramaRecord) -> list[float] | None:
    """The cap as JSON can hash it (NaN is not JSON): None for no cap."""
    cap = damage_cap(record)
    return None if math.isnan(cap[0]) else list(cap)


def cache_key(fingerprint: str, backbone_name: str, grid: ViewportGrid, dataset: str,
              augmentations: Sequence[str] = ()) -> str:
    """The 20-hex-digit key naming a cache file (see the module docstring for what it covers)."""
    names = _check_augmentations(augmentations)
    payload = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "dataset": dataset,
        "backbone": backbone_name,
        "grid": grid.key(),
        "augmentations": [[name, list(AUGMENTATION_VIEWS[name][0]), list(AUGMENTATION_VIEWS[name][1])]
                          for name in names],
        "ssim_resolution": SSIM_RESOLUTION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:20]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "dataset"


def cache_path(cache_dir: str | os.PathLike[str], dataset: str, grid: ViewportGrid, key: str) -> Path:
    """``<cache_dir>/<dataset>-<grid key>-<key>.safetensors``."""
    return Path(cache_dir) / f"{_slug(dataset)}-{_slug(grid.key())}-{key}.safetensors"


def _parts_dir(path: Path) -> Path:
    return path.with_name(path.stem + ".parts")


# --------------------------------------------------------------------------- computing features

def _run_backbone(backbone: Backbone, images: np.ndarray, name: str, what: str) -> np.ndarray:
    """Backbone features of ``images``, checked for shape and finiteness (errors name the image)."""
    return _check_features(backbone, backbone(images), name, what)


def _run_global(backbone: Backbone, projected: ProjectedImage, name: str, what: str) -> np.ndarray:
    """The global descriptor (D,): :meth:`Backbone.global_features` of the projected ERP."""
    features = backbone.global_features(projected.erp, projected.global_view.shape[0])
    return _check_features(backbone, np.asarray(features)[None], name, what)[0]


def _check_features(backbone: Backbone, features: np.ndarray, name: str, what: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    expected = (features.shape[0], backbone.dim)
    if features.shape != expected:
        raise CacheError(f"{name}: backbone {backbone.name} returned features of shape "
                         f"{features.shape} for the {what}, expected {expected}")
    if not np.isfinite(features).all():
        raise CacheError(f"{name}: backbone {backbone.name} produced NaN/inf features for the {what}")
    return features


@dataclass(frozen=True)
class ProjectedImage:
    """The pixels of one ERP that its cache row is computed from (see :func:`project_image`).

    Attributes:
        viewports: ``uint8 (V, S, S, 3)``, :func:`extract_viewports` on the grid.
        global_view: ``uint8 (S, 2S, 3)``, :func:`global_view`, input of the global descriptor.
        thumbnail: ``uint8 (128, 256, 3)`` (``cv2.INTER_AREA``), for rendering only.
        erp: the canonical-density ERP the rest was rendered from, for
            :meth:`Backbone.global_features`.
    """

    viewports: np.ndarray
    global_view: np.ndarray
    thumbnail: np.ndarray
    erp: np.ndarray


def project_image(erp: np.ndarray, grid: ViewportGrid) -> ProjectedImage:
    """Viewports, global view and thumbnail of one ERP (``uint8 (H, 2H, 3)`` RGB), as the cache uses them.

    All of them come from :func:`canonical_erp` (the grid's canonical sampling density), so that
    the same panorama gives the same features at any resolution. Only OpenCV resampling, which
    releases the GIL: the scorer runs it in its reader thread.
    """
    canonical = canonical_erp(erp, grid)
    return ProjectedImage(viewports=extract_viewports(canonical, grid), global_view=global_view(canonical, grid.size),
                          thumbnail=cv2.resize(canonical, THUMBNAIL_SHAPE[::-1], interpolation=cv2.INTER_AREA),
                          erp=canonical)


def encode_projected(projected: ProjectedImage, backbone: Backbone, name: str = "<array>") -> dict[str, np.ndarray]:
    """One row of each clean per-image cache array, computed from a projected ERP.

    The single definition of an image's cache row, shared by :func:`build_cache` and the scorer.
    Exactly V + 1 images go through the backbone, in two calls because the viewports (S x S) and
    the global view (S x 2S) differ in size.

    Returns:
        ``viewport_features`` float32 (V, D), ``global_features`` float32 (D,), ``entropy``
        float32 (V,), ``ssim`` float32 (V, V) and ``thumbnails`` uint8 (128, 256, 3).

    Raises:
        CacheError: the backbone returned a wrong shape or NaN/inf features (the message names ``name``).
    """
    viewports = projected.viewports
    return {
        "viewport_features": _run_backbone(backbone, viewports, name, "viewports (clean)"),
        "global_features": _run_global(backbone, projected, name, "global view (clean)"),
        "entropy": grey_entropy(viewports).astype(np.float32),
        "ssim": ssim_matrix(grey_viewports(viewports)),
        "thumbnails": projected.thumbnail,
    }


def _encode(image: np.ndarray, backbone: Backbone, grid: ViewportGrid, record: PanoramaRecord,
            view: str) -> tuple[np.ndarray, np.ndarray]:
    """Viewport features (V, D) and global feature (D,) of one (augmented) ERP, projected as
    :func:`project_image` projects every image."""
    name = str(record.path)
    projected = project_image(image, grid)
    local = _run_backbone(backbone, projected.viewports, name, f"viewports ({view})")
    return local, _run_global(backbone, projected, name, f"global view ({view})")


def _compute_chunk(records: Sequence[PanoramaRecord], backbone: Backbone, grid: ViewportGrid,
                   augmentations: tuple[str, ...], on_image: Callable[[], None]) -> dict[str, np.ndarray]:
    """Every per-image array of ``records``; ``on_image()`` is called after each image."""
    sizes = {"M": len(records), "V": grid.n_viewports, "D": backbone.dim, "A": len(augmentations)}
    out = {spec.name: np.empty(spec.shape(sizes), spec.dtype) for spec in PIXEL_ARRAYS}
    for row, record in enumerate(records):
        erp = read_erp(record.path)
        for name, value in encode_projected(project_image(erp, grid), backbone, str(record.path)).items():
            out[name][row] = value
        start = _start_direction(record)
        out["start_viewports"][row] = -1 if start is None else grid.nearest(*start)
        for col, view in enumerate(augmentations):
            choice = augmentation_for(_image_id(record), view)
            distorted = apply_distortion(erp, choice.kind, choice.level, np.random.default_rng(choice.seed))
            out["aug_viewport_features"][row, col], out["aug_global_features"][row, col] = _encode(
                distorted, backbone, grid, record, f"{view} view, {choice.kind} level {choice.level}")
        on_image()
    return out


# --------------------------------------------------------------------------- reading files

_DIGESTS = "digests"


def _array_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and raw bytes.

    dtype and shape are hashed too, so a reinterpreted or reshaped buffer with the same bytes
    does not pass.
    """
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode("ascii"))
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _metadata_digest(metadata: Mapping[str, str]) -> str:
    """SHA-256 of every metadata field but the digests themselves, independent of field order."""
    fields = sorted((name, value) for name, value in metadata.items() if name != _DIGESTS)
    return hashlib.sha256(json.dumps(fields).encode("utf-8")).hexdigest()


def file_digests(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str:
    """The ``digests`` metadata value for a file of ``tensors`` and ``metadata`` (see "Integrity")."""
    return json.dumps({"arrays": {name: _array_digest(array) for name, array in sorted(tensors.items())},
                       "metadata": _metadata_digest(metadata)})


def verify_digests(path: Path | str, metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray]) -> None:
    """Check the stored ``digests`` of a file against its arrays and metadata.

    Raises:
        CacheError: naming ``path`` and the array (or the metadata) that changed since the file
            was written, or saying that the file has no (well-formed) digests.
    """
    try:
        stored = json.loads(metadata[_DIGESTS])
        arrays, meta = stored["arrays"], stored["metadata"]
        if not isinstance(arrays, dict):
            raise TypeError("arrays is not an object")
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise CacheError(f"{path}: feature cache has no valid {_DIGESTS!r} metadata (written by an older "
                         f"version?); delete it to rebuild") from error
    if sorted(arrays) != sorted(tensors):
        raise CacheError(f"{path}: arrays {sorted(tensors)} differ from those with stored digests "
                         f"{sorted(arrays)} (file changed after it was written); delete it to rebuild")
    for name, array in tensors.items():
        if _array_digest(array) != arrays[name]:
            raise CacheError(f"{path}: array {name!r} does not match its stored digest (file changed "
                             "after it was written); delete it to rebuild")
    if _metadata_digest(metadata) != meta:
        raise CacheError(f"{path}: metadata does not match its stored digest (file changed after it "
                         "was written); delete it to rebuild")


def _save(tensors: dict[str, np.ndarray], metadata: dict[str, str], path: Path) -> None:
    """Write a cache or chunk file atomically, with the digests :func:`_open` verifies."""
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={**metadata, _DIGESTS: file_digests(tensors, metadata)})


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Metadata and all tensors of a safetensors file, unverified; any failure becomes a CacheError."""
    if not path.is_file():
        raise CacheError(f"{path}: feature cache file not found")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own (non-exported) error types
        raise CacheError(f"{path}: corrupt or truncated feature cache ({error})") from error
    return metadata, tensors


def _open(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """:func:`_read_file`, with the digests verified (chunk files; :func:`_read_cache` checks the version first)."""
    metadata, tensors = _read_file(path)
    verify_digests(path, metadata, tensors)
    return metadata, tensors


def _read_metadata(path: Path) -> dict[str, str] | None:
    """Header metadata only (cheap), or None when the file is missing or unreadable."""
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except Exception:  # any unreadable file just means "not reusable"
        return None


def _json_field(metadata: Mapping[str, str], name: str, path: Path | str) -> Any:
    try:
        return json.loads(metadata[name])
    except (KeyError, json.JSONDecodeError) as error:
        raise CacheError(f"{path}: feature cache metadata field {name!r} is missing or malformed") from error


def _read_bytes(data: bytes, source: str) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """:func:`_read_file` for a file's contents held in memory (``source`` names it in errors)."""
    try:
        # safetensors: an 8-byte little-endian header length, then the JSON header.
        header_size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_size])
        metadata = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
        tensors = load_tensors(data)
    except Exception as error:  # safetensors raises its own (non-exported) error types
        raise CacheError(f"{source}: corrupt or truncated feature cache ({error})") from error
    return metadata, tensors


def _read_cache(path: Path | str, expect_backbone: str | None, expect_grid: ViewportGrid | None,
                stored: tuple[dict[str, str], dict[str, np.ndarray]] | None = None,
                ) -> tuple[FeatureCache, dict[str, str]]:
    """The cache in file ``path``, or in ``stored`` (metadata, arrays) read from it elsewhere
    (``path`` then only names it)."""
    # The format and version are checked before the digests, so an older file (which has none)
    # is refused by its version, with the hint to rebuild, rather than as a changed file.
    metadata, tensors = stored if stored is not None else _read_file(Path(path))
    if metadata.get("format") != _FORMAT:
        raise CacheError(f"{path}: not an rl-scaniqa feature cache (format {metadata.get('format')!r})")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CacheError(f"{path}: feature cache format version {metadata.get('format_version')!r}, this "
                         f"code reads version {FORMAT_VERSION}; rebuild the cache")
    verify_digests(path, metadata, tensors)
    if expect_backbone is not None and metadata.get("backbone") != expect_backbone:
        raise CacheError(f"{path}: built with backbone {metadata.get('backbone')}, expected {expect_backbone}")
    grid_fields = _json_field(metadata, "grid", path)
    try:
        grid = ViewportGrid(**grid_fields)
    except (TypeError, ValueError) as error:
        raise CacheError(f"{path}: stored grid {grid_fields!r} is not a valid ViewportGrid ({error})") from error
    if expect_grid is not None and grid != expect_grid:
        raise CacheError(f"{path}: built with grid {grid.key()}, expected {expect_grid.key()}")
    lists = {name: _json_field(metadata, name, path) for name in ("image_ids", "paths", "ref_ids", "distortions")}
    augmentations = tuple(_json_field(metadata, "augmentations", path))
    low, high = _json_field(metadata, "mos_scale", path)
    try:
        dim = int(metadata["dim"])
    except (KeyError, ValueError) as error:
        raise CacheError(f"{path}: feature cache metadata field 'dim' is missing or malformed") from error
    for spec in CACHE_ARRAYS:
        if spec.name not in tensors:
            raise CacheError(f"{path}: feature cache lacks the {spec.name!r} array")
    contents: dict[str, Any] = {**lists, **{spec.name: tensors[spec.name] for spec in CACHE_ARRAYS}}
    cache = FeatureCache(
        backbone=metadata.get("backbone", ""), dim=dim, grid=grid, dataset=metadata.get("dataset", ""),
        mos_scale=MosScale(float(low), float(high)), augmentations=augmentations, **contents,
    )
    cache.validate(str(path))
    return cache, metadata


def load_cache(path: str | os.PathLike[str], *, expect_backbone: str | None = None,
               expect_grid: ViewportGrid | None = None) -> FeatureCache:
    """Load a feature cache file.

    Args:
        path: a file written by :func:`build_cache`.
        expect_backbone: when given, the ``backbone.name`` the cache must have been built with.
        expect_grid: when given, the grid it must have been built with.

    Raises:
        CacheError: missing, corrupt or truncated file, another format version, an array or the
            metadata changed after the file was written (digest mismatch), another backbone or
            grid than expected, inconsistent arrays, or NaN/inf features; the message names the
            file and the mismatch.
    """
    cache, _ = _read_cache(Path(path), expect_backbone, expect_grid)
    return cache


def load_cache_bytes(data: bytes, source: str, *, expect_backbone: str | None = None,
                     expect_grid: ViewportGrid | None = None) -> FeatureCache:
    """:func:`load_cache` for a file's contents held in memory, e.g. decompressed package data.

    ``source`` names the file in errors; the checks are those of :func:`load_cache`.
    """
    cache, _ = _read_cache(source, expect_backbone, expect_grid, stored=_read_bytes(data, source))
    return cache


def portable_cache_bytes(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bytes:
    """The cache file ``path`` with its image paths made relative to ``root``, as bytes to ship.

    A cache records the absolute paths its features came from; a copy shipped with the package
    names them relative to the dataset root instead (``root``'s own name included, e.g.
    ``synth360-quick/images/c000_ref.png``). Arrays are unchanged; the digests are recomputed.

    Raises:
        CacheError: ``path`` fails :func:`load_cache`'s checks, or an image lies outside ``root``.
    """
    source, base = Path(path), Path(root).resolve()
    metadata, tensors = _read_file(source)
    _read_cache(source, None, None, stored=(metadata, tensors))  # every check of load_cache
    try:
        relative = [str(Path(p).resolve().relative_to(base.parent)) for p in json.loads(metadata["paths"])]
    except ValueError as error:
        raise CacheError(f"{source}: an image path lies outside {base} ({error})") from error
    fields = {name: value for name, value in metadata.items() if name != _DIGESTS}
    fields["paths"] = json.dumps(relative)
    return save(tensors, metadata={**fields, _DIGESTS: file_digests(tensors, fields)})


# --------------------------------------------------------------------------- building

def _chunk_is_valid(path: Path, key: str, start: int, stop: int, image_ids: Sequence[str],
                    v: int, d: int, a: int) -> bool:
    """Whether a chunk file left by an earlier run belongs to this build and is complete."""
    try:
        metadata, tensors = _open(path)
        if (metadata.get("format") != _CHUNK_FORMAT or metadata.get("key") != key
                or metadata.get("start") != str(start) or metadata.get("stop") != str(stop)
                or json.loads(metadata.get("image_ids", "null")) != list(image_ids)):
            return False
        check_arrays(tensors, {"M": stop - start, "V": v, "D": d, "A": a}, str(path), PIXEL_ARRAYS)
    except (CacheError, json.JSONDecodeError):
        return False
    return True


def _ranges(total: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, total)) for start in range(0, total, chunk_size)]


def _is_complete(path: Path, key: str, fingerprint: str) -> bool:
    existing = _read_metadata(path)
    return (existing is not None and existing.get("format") == _FORMAT and existing.get("key") == key
            and existing.get("fingerprint") == fingerprint)


def build_cache(records: Sequence[PanoramaRecord], backbone: Backbone, grid: ViewportGrid,
                cache_dir: str | os.PathLike[str], *, dataset: str, augmentations: Sequence[str] = (),
                chunk_size: int = 16, progress: bool = True, workers: int = 1) -> Path:
    """Build (or resume, or reuse) the feature cache of ``records`` and return its path.

    A complete file with the same key and fingerprint is returned as it is. Otherwise the images
    are processed in chunks of ``chunk_size``, each saved atomically under ``<stem>.parts/``;
    chunks left by an interrupted run are validated and reused. The chunks are then merged into
    the final file (atomically) and the parts folder is removed. The whole build holds a lock
    file ``.<stem>.lock`` beside the cache.

    ``workers`` processes compute the missing chunks (see "Parallel build" in the module
    docstring), never more than the missing chunks; 1 (the default) computes them in this
    process. Backbones that are not ``parallel_safe`` always run in this process.

    Raises:
        CacheError: no records, unknown augmented view, bad chunk size or worker count, or a
            backbone that returns NaN/inf features (the message names the image).
        ImageError: an image file is missing, unreadable or not an ERP.
        DatasetError: duplicate image ids or a malformed start direction or damaged cap.
    """
    records = list(records)
    views = _check_augmentations(augmentations)
    if not records:
        raise CacheError(f"no images to cache for dataset {dataset!r}")
    if chunk_size < 1:
        raise CacheError(f"chunk_size must be at least 1, got {chunk_size}")
    if workers < 1:
        raise CacheError(f"workers must be at least 1, got {workers}")
    if min(grid.size, SSIM_RESOLUTION) < 2 * _SSIM_RADIUS + 1:
        raise CacheError(f"grid {grid.key()}: viewports must be at least {2 * _SSIM_RADIUS + 1} px for SSIM")
    fingerprint = dataset_fingerprint(records)
    key = cache_key(fingerprint, backbone.name, grid, dataset, views)
    path = cache_path(cache_dir, dataset, grid, key)
    # Concurrent builders of one key wait for each other, then reuse the file.
    with exclusive_lock(path.with_name(f".{path.stem}.lock")):
        if path.exists():
            if _is_complete(path, key, fingerprint):
                return path
            warnings.warn(f"{path}: unreadable or mismatched feature cache, rebuilding it", stacklevel=2)
        # Under the lock nobody else writes this cache: temporary files of it are leftovers of a
        # killed run (atomic_path names them ".<stem>.<random>.tmp.safetensors").
        for leftover in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
            leftover.unlink(missing_ok=True)
        chunks = _build_chunks(records, backbone, grid, views, key, _parts_dir(path), chunk_size, progress,
                               dataset, workers)
        tensors = _merge_chunks(chunks)
        tensors["levels"] = np.asarray([int(r.level) for r in records], dtype=np.int64)
        tensors["mos"] = np.asarray([float(r.mos) for r in records], dtype=np.float32)
        tensors["caps"] = np.asarray([damage_cap(r) for r in records], dtype=np.float32).reshape(-1, 3)
        _save(tensors, _cache_metadata(records, backbone, grid, views, dataset, key, fingerprint), path)
        shutil.rmtree(_parts_dir(path), ignore_errors=True)
    return path


@dataclass(frozen=True)
class _ChunkJob:
    """One chunk to compute and the build settings it needs; picklable, for pool workers."""

    records: tuple[PanoramaRecord, ...]
    start: int
    stop: int
    path: Path
    key: str
    grid: ViewportGrid
    views: tuple[str, ...]


def _write_chunk(job: _ChunkJob, backbone: Backbone, on_image: Callable[[], None]) -> None:
    """Compute the chunk's arrays and save them atomically to ``job.path`` with their metadata."""
    arrays = _compute_chunk(job.records, backbone, job.grid, job.views, on_image)
    metadata = {"format": _CHUNK_FORMAT, "key": job.key, "start": str(job.start), "stop": str(job.stop),
                "image_ids": json.dumps([_image_id(r) for r in job.records])}
    _save(arrays, metadata, job.path)


def _write_chunk_in_worker(job: _ChunkJob, backbone: Backbone) -> None:
    """Pool task: :func:`_write_chunk` with OpenCV and torch single-threaded.

    The pool already runs about one process per core; their own thread pools on top would only
    oversubscribe the cores. torch is limited only if the backbone (or the parent's main module,
    which spawn re-imports) loaded it: importing it just for this would cost seconds per worker.
    """
    cv2.setNumThreads(1)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    _write_chunk(job, backbone, lambda: None)


def _init_worker() -> None:
    """Pool initializer: end this worker as soon as the parent process dies.

    Without it a killed parent (SIGKILL, OOM killer) leaves its workers alive: they finish the
    chunks already queued to them, writing into the parts folder behind the back of the build
    that resumes, and then block on the task queue forever.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), daemon=True,
                         name="rl-scaniqa-parent-watch").start()


def _exit_with_parent(sentinel: int) -> None:
    """Block until the parent's sentinel signals its death, then exit at once."""
    multiprocessing.connection.wait([sentinel])
    os._exit(1)


def _worker_count(workers: int, backbone: Backbone, missing: int) -> int:
    """Processes to compute ``missing`` chunks with; 1 means in this process."""
    # A daemonic process (an SB3 SubprocVecEnv worker) is not allowed to start children.
    if workers <= 1 or not backbone.parallel_safe or multiprocessing.current_process().daemon:
        return 1
    if not main_module_reimportable():
        warnings.warn("building the feature cache in one process: spawned workers would have to "
                      "re-import the main module, which was not read from a file", stacklevel=4)
        return 1
    return max(1, min(workers, missing))


def main_module_reimportable() -> bool:
    """Whether spawned processes can re-import ``__main__`` (it was run from a file)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is not None and os.path.isfile(path)


def _run_in_pool(jobs: Sequence[_ChunkJob], backbone: Backbone, workers: int,
                 advance: Callable[[float], None]) -> None:
    """Write every job's chunk in ``workers`` spawned processes; ``advance(images)`` as each one finishes.

    Raises:
        ImageError, CacheError, DatasetError: the error of the failed chunk that comes first in
            index order, as the in-process build would raise it (same type, message naming the file).
    """
    # spawn, not fork: a fork taken while OpenCV's or torch's thread pools run can deadlock.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)
    try:
        futures = {pool.submit(_write_chunk_in_worker, job, backbone): job for job in jobs}
        for future in as_completed(futures):
            if future.exception() is not None:
                break
            job = futures[future]
            advance(job.stop - job.start)
    finally:
        # After a failure or Ctrl-C, queued chunks are dropped; running ones finish, and their
        # files stay valid for a resume.
        pool.shutdown(wait=True, cancel_futures=True)
    failed = [f for f in futures if not f.cancelled() and f.exception() is not None]
    if failed:
        first = min(failed, key=lambda f: futures[f].start).exception()
        if first is not None:
            raise first


def _build_chunks(records: list[PanoramaRecord], backbone: Backbone, grid: ViewportGrid,
                  views: tuple[str, ...], key: str, parts: Path, chunk_size: int, progress: bool,
                  dataset: str, workers: int) -> list[Path]:
    """Compute (or keep, when valid) every chunk file; returns them in index order."""
    image_ids = [_image_id(r) for r in records]
    v, d, a = grid.n_viewports, backbone.dim, len(views)
    parts.mkdir(parents=True, exist_ok=True)
    chunk_files = []
    with progress_bar(f"caching {dataset}", len(records), unit="img", enabled=progress) as bar:
        missing = []
        for start, stop in _ranges(len(records), chunk_size):
            chunk = parts / f"{start:06d}-{stop:06d}.safetensors"
            chunk_files.append(chunk)
            if _chunk_is_valid(chunk, key, start, stop, image_ids[start:stop], v, d, a):
                bar.advance(stop - start)
            else:
                missing.append(_ChunkJob(tuple(records[start:stop]), start, stop, chunk, key, grid, views))
        count = _worker_count(workers, backbone, len(missing))
        if count == 1:
            for job in missing:
                _write_chunk(job, backbone, bar.advance)
        else:
            _run_in_pool(missing, backbone, count, bar.advance)
    return chunk_files


def _merge_chunks(chunk_files: Sequence[Path]) -> dict[str, np.ndarray]:
    merged: dict[str, list[np.ndarray]] = {}
    for chunk in chunk_files:
        _, tensors = _open(chunk)
        for name, array in tensors.items():
            merged.setdefault(name, []).append(array)
    return {name: np.ascontiguousarray(np.concatenate(arrays)) for name, arrays in merged.items()}


def _cache_metadata(records: Sequence[PanoramaRecord], backbone: Backbone, grid: ViewportGrid,
                    views: tuple[str, ...], dataset: str, key: str, fingerprint: str) -> dict[str, str]:
    scale = mos_scale_for(dataset, records)
    return {
        "format": _FORMAT,
        "format_version": str(FORMAT_VERSION),
        "key": key,
        "fingerprint": fingerprint,
        "dataset": dataset,
        "backbone": backbone.name,
        "dim": str(backbone.dim),
        "grid": json.dumps(dataclasses.asdict(grid)),
        "grid_key": grid.key(),
        "mos_scale": json.dumps([scale.low, scale.high]),
        "augmentations": json.dumps(list(views)),
        "augmentation_views": json.dumps({name: [list(AUGMENTATION_VIEWS[name][0]), list(AUGMENTATION_VIEWS[name][1])]
                                          for name in views}),
        "ssim_resolution": str(SSIM_RESOLUTION),
        "image_ids": json.dumps([_image_id(r) for r in records]),
        "paths": json.dumps([str(r.path) for r in records]),
        "ref_ids": json.dumps([r.ref_id for r in records]),
        "distortions": json.dumps([r.distortion for r in records]),
    }


def get_or_build_cache(records: Sequence[PanoramaRecord], backbone: Backbone, grid: ViewportGrid,
                       cache_dir: str | os.PathLike[str], *, dataset: str, augmentations: Sequence[str] = (),
                       chunk_size: int = 16, progress: bool = True, workers: int = 1) -> FeatureCache:
    """The feature cache of ``records``: loaded when an up-to-date one exists, else built first.

    Besides the backbone and grid, the stored dataset fingerprint and image ids are checked
    against ``records`` so a cache never serves other images or labels. ``workers`` is passed to
    :func:`build_cache`.

    Raises:
        CacheError, ImageError, DatasetError: as :func:`build_cache` and :func:`load_cache`.
    """
    records = list(records)
    path = build_cache(records, backbone, grid, cache_dir, dataset=dataset, augmentations=augmentations,
                       chunk_size=chunk_size, progress=progress, workers=workers)
    cache, metadata = _read_cache(path, backbone.name, grid)
    fingerprint = dataset_fingerprint(records)
    if metadata.get("fingerprint") != fingerprint or cache.image_ids != [_image_id(r) for r in records]:
        raise CacheError(f"{path}: cache was built from other images or labels than the {len(records)} "
                         f"records given (dataset fingerprint {metadata.get('fingerprint')}, expected {fingerprint})")
    if cache.augmentations != tuple(augmentations):
        raise CacheError(f"{path}: cache holds augmented views {list(cache.augmentations)}, "
                         f"expected {list(augmentations)}")
    return cache
