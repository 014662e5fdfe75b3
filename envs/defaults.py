"""Data behind ``gym.make("Panorama360Env-v0")`` with no arguments, and cache loading for the env.

On first use :func:`ensure_default_data` generates a small synthetic dataset (Synth360,
``quick=True``) in ``<home>/synth360-quick`` and builds its NSS feature cache in
``<home>/cache``, with progress bars; later calls reuse both. ``home`` is the ``home`` argument,
else ``$RL_SCANIQA_HOME``, else ``~/.cache/rl_scaniqa``. Nothing needs the network.

Concurrency: the whole check-generate-build sequence runs under an exclusive ``fcntl`` lock on
``<home>/.default-data.lock`` (and every cache build under the builder's own per-file lock),
so ``SubprocVecEnv`` workers that start together wait for the first one instead of all building;
the others then load what it wrote. The dataset is generated in a temporary folder and renamed
into place, so an interrupted run never leaves a half-written dataset that looks complete.
Building once in the main process before starting workers avoids even the wait. On platforms
without ``fcntl`` (Windows) there is no lock: build in the main process first there.

:func:`prepare_feature_cache` resolves the env's data arguments (default data or a dataset
root) to a cache; :func:`random_feature_cache` makes a cache of random numbers for tests and
benchmarks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rl_scaniqa.envs.arguments import key_values
from rl_scaniqa.envs.datasets import load_dataset
from rl_scaniqa.envs.datasets.records import MosScale
from rl_scaniqa.envs.errors import DatasetError
from rl_scaniqa.envs.feature_cache import FeatureCache, get_or_build_cache
from rl_scaniqa.envs.geometry import ViewportGrid
from rl_scaniqa.envs.io_utils import default_home, exclusive_lock


#: Dataset loader name of the default data.
DEFAULT_DATASET = "synth360"
#: Folder names under the data home.
DEFAULT_DATASET_FOLDER = "synth360-quick"
FULL_DATASET_FOLDER = "synth360"
CACHE_FOLDER = "cache"
_LOCK_NAME = ".default-data.lock"
#: Seed of the default dataset, so every machine generates the same images.
DEFAULT_SEED = 0


def _resolve_home(home: str | os.PathLike[str] | None) -> Path:
    return Path(home).expanduser() if home is not None else default_home()


def _default_root(home: Path, quick: bool) -> Path:
    return home / (DEFAULT_DATASET_FOLDER if quick else FULL_DATASET_FOLDER)


def _generate_default_dataset(root: Path, quick: bool, progress: bool) -> None:
    """Generate Synth360 into a temporary sibling folder, then rename it to ``root``."""
    from rl_scaniqa.envs.datasets.synth360 import generate_synth360

    if root.exists():
        # Our own runs only ever create this folder complete (rename below), so it is not ours
        # to delete.
        raise DatasetError(f"{root} exists but holds no labels.csv; remove it to regenerate the "
                           "default data")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate_synth360(staging, seed=DEFAULT_SEED, quick=quick, progress=progress)
        os.replace(staging, root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _get_cache(root: Path, dataset: str, backbone: str, grid: ViewportGrid | None, cache_dir: Path,
               dataset_options: Mapping[str, Any], augmentations: Sequence[str],
               progress: bool) -> FeatureCache:
    from rl_scaniqa.envs.backbones import make_backbone  # may import torch: only when building

    records = load_dataset(dataset, root, **dataset_options)
    return get_or_build_cache(records, make_backbone(backbone), grid or ViewportGrid(), cache_dir,
                              dataset=dataset, augmentations=tuple(augmentations), progress=progress)


def ensure_default_data(home: str | os.PathLike[str] | None = None, progress: bool = True, *,
                        backbone: str = "nss", grid: ViewportGrid | None = None,
                        cache_dir: str | os.PathLike[str] | None = None,
                        augmentations: Sequence[str] = (),
                        quick: bool = True) -> tuple[Path, FeatureCache]:
    """The default dataset's root and its feature cache, generating/building them on first use.

    Args:
        home: data folder (default ``$RL_SCANIQA_HOME`` or ``~/.cache/rl_scaniqa``).
        progress: show progress bars while generating and building.
        backbone: feature extractor spec (``make_backbone``); the default data uses ``"nss"``.
        grid: viewport grid (default 8 x 4, 90°).
        cache_dir: cache folder (default ``<home>/cache``).
        augmentations: augmented views to cache as well (names of ``AUGMENTATION_VIEWS``).
        quick: the small Synth360 (60 images, ``<home>/synth360-quick``, what the env uses by
            default); ``False`` for the full one (520 images, ``<home>/synth360``).
    """
    home_path = _resolve_home(home)
    root = _default_root(home_path, quick)
    caches = Path(cache_dir) if cache_dir is not None else home_path / CACHE_FOLDER
    with exclusive_lock(home_path / _LOCK_NAME):
        if not (root / "labels.csv").is_file():
            _generate_default_dataset(root, quick, progress)
        cache = _get_cache(root, DEFAULT_DATASET, backbone, grid, caches, {}, augmentations, progress)
    return root, cache


def prepare_feature_cache(dataset: str, root: str | os.PathLike[str] | None, *,
                          backbone: str = "nss", grid: ViewportGrid | None = None,
                          augmentations: Sequence[str] = (),
                          cache_dir: str | os.PathLike[str] | None = None,
                          dataset_options: Mapping[str, Any] | None = None,
                          home: str | os.PathLike[str] | None = None,
                          quick_default: bool = True, progress: bool = True) -> FeatureCache:
    """The feature cache for these arguments (what ``Panorama360Env`` uses), built if missing.

    ``root=None`` means the default data (only for ``dataset="synth360"``; ``quick_default``
    picks the small or the full Synth360, see :func:`ensure_default_data`); otherwise the dataset
    at ``root`` is loaded with ``load_dataset(dataset, root, **dataset_options)`` and its cache
    is built in ``cache_dir`` (default ``<home>/cache``; the builder locks each cache file).
    """
    if root is None:
        if dataset != DEFAULT_DATASET:
            raise ValueError(f"dataset {dataset!r} needs root=<its folder>; only {DEFAULT_DATASET!r} "
                             "has default data that is generated on first use")
        if dataset_options:
            raise ValueError("dataset_options apply to a dataset given by root=; the default "
                             f"{DEFAULT_DATASET!r} data takes none")
        return ensure_default_data(home, progress, backbone=backbone, grid=grid, cache_dir=cache_dir,
                                   augmentations=augmentations, quick=quick_default)[1]
    caches = Path(cache_dir) if cache_dir is not None else _resolve_home(home) / CACHE_FOLDER
    return _get_cache(Path(root), dataset, backbone, grid, caches, dict(dataset_options or {}),
                      augmentations, progress)


@dataclass
class DataArgs:
    """Dataset, backbone and viewport-grid arguments shared by the experiment scripts.

    The scripts' argument dataclasses inherit these fields (so every script spells them the same:
    ``--dataset``, ``--root``, ``--dataset-options``, ``--backbone``, ``--n-lon`` …) and load
    their feature cache through :meth:`feature_cache`.
    """

    dataset: str = DEFAULT_DATASET
    root: str = ""
    dataset_options: str = ""
    backbone: str = "nss"
    n_lon: int = 8
    n_lat: int = 4
    fov: float = 90.0
    size: int = 224
    augmentations: str = "weak,mild,heavy"
    cache_dir: str = ""

    def grid(self) -> ViewportGrid:
        """The viewport grid these arguments describe."""
        return ViewportGrid(n_lon=self.n_lon, n_lat=self.n_lat, fov_deg=self.fov, size=self.size)

    def loader_options(self, dataset: str | None = None, text: str | None = None) -> dict[str, Any]:
        """``KEY=VALUE,...`` loader options (default: ``dataset_options``) as keyword arguments.

        JUFE's head-movement scanpaths are mapped to viewports of this grid, so it gets the grid.
        """
        options: dict[str, Any] = key_values(self.dataset_options if text is None else text)
        if (dataset or self.dataset).lower() == "jufe" and "hm_root" in options:
            options["grid"] = self.grid()
        return options

    def feature_cache(self, *, dataset: str | None = None, root: str | None = None,
                      options_text: str | None = None, quick_default: bool = False,
                      progress: bool = True) -> FeatureCache:
        """The feature cache of this dataset (or of ``dataset``/``root``), built on first use."""
        name = dataset or self.dataset
        folder = self.root if root is None else root
        return prepare_feature_cache(
            name, folder or None, backbone=self.backbone, grid=self.grid(),
            augmentations=tuple(a for a in self.augmentations.split(",") if a),
            cache_dir=self.cache_dir or None, dataset_options=self.loader_options(name, options_text),
            quick_default=quick_default, progress=progress)


def random_feature_cache(n_images: int = 4, *, grid: ViewportGrid | None = None, dim: int = 8,
                         n_refs: int | None = None, seed: int = 0) -> FeatureCache:
    """A :class:`FeatureCache` of seeded random numbers with valid shapes and ranges.

    For tests and benchmarks of code that consumes caches (the env, policies, assessors) without
    images or a backbone. Features are N(3, 2²) so standardisation is not the identity; entropy
    is U(0, 8) bits; SSIM is a symmetric matrix in [-0.2, 1] with unit diagonal; MOS is U(1, 5)
    on ``MosScale(1, 5)``; image ``k`` has reference ``f"ref{k % n_refs}"`` (default
    ``n_refs = max(2, n_images // 2)``, so reference splits work) and a dataset start viewport on
    odd ``k`` (``-1``, none, on even ``k``). No augmented views.
    """
    grid = grid or ViewportGrid()
    if n_images < 1 or dim < 1:
        raise ValueError(f"n_images and dim must be positive, got {n_images} and {dim}")
    n_refs = max(2, n_images // 2) if n_refs is None else n_refs
    rng = np.random.default_rng(seed)
    n_viewports = grid.n_viewports
    ssim = rng.uniform(-0.2, 1.0, size=(n_images, n_viewports, n_viewports))
    ssim = np.triu(ssim, 1)
    ssim = ssim + np.swapaxes(ssim, 1, 2) + np.eye(n_viewports)
    starts = np.where(np.arange(n_images) % 2 == 1, rng.integers(0, n_viewports, n_images), -1)
    image_ids = [f"random-{k:04d}" for k in range(n_images)]
    return FeatureCache(
        backbone="random",
        dim=dim,
        grid=grid,
        dataset="random",
        mos_scale=MosScale(1.0, 5.0),
        image_ids=image_ids,
        paths=[f"{name}.png" for name in image_ids],
        ref_ids=[f"ref{k % n_refs}" for k in range(n_images)],
        distortions=["none"] * n_images,
        levels=np.zeros(n_images, dtype=np.int64),
        mos=rng.uniform(1.0, 5.0, n_images).astype(np.float32),
        viewport_features=rng.normal(3.0, 2.0, (n_images, n_viewports, dim)).astype(np.float32),
        global_features=rng.normal(3.0, 2.0, (n_images, dim)).astype(np.float32),
        entropy=rng.uniform(0.0, 8.0, (n_images, n_viewports)).astype(np.float32),
        ssim=ssim.astype(np.float32),
        thumbnails=rng.integers(0, 256, (n_images, 128, 256, 3), dtype=np.uint8),
        start_viewports=starts.astype(np.int64),
        augmentations=(),
        aug_viewport_features=np.zeros((n_images, 0, n_viewports, dim), dtype=np.float32),
        aug_global_features=np.zeros((n_images, 0, dim), dtype=np.float32),
    )
