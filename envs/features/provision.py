"""Data behind ``gym.make("Panorama360Env-v0")`` with no arguments, and cache loading for the env.

The env's default, the NSS feature cache of the small Synth360 (``quick=True``) on the default
grid, ships with the package (:data:`SHIPPED_CACHE`, xz-compressed, 1.8 MB): with default
arguments ``gym.make`` only decompresses and verifies it, offline, with no generation and no
worker processes. ``experiments/build_default_cache.py`` rebuilds it from the code, and a test
checks that the shipped file equals what :func:`ensure_default_data` builds, so the two cannot
drift apart. Anything else (another backbone, grid, augmented views, the full Synth360, the
images themselves) comes from :func:`ensure_default_data`:

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
root) to a cache.
"""

from __future__ import annotations

import lzma
import os
import shutil
import tempfile
import warnings
from importlib import resources
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rl_scaniqa.envs.data.datasets import DatasetPart, combined_name, load_combined, load_dataset
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.errors import CacheError, DatasetError
from rl_scaniqa.envs.features.cache import (
    FeatureCache,
    build_cache,
    get_or_build_cache,
    load_cache_bytes,
    portable_cache_bytes,
)
from rl_scaniqa.envs.storage import default_home, exclusive_lock

#: Dataset loader name of the default data.
DEFAULT_DATASET = "synth360"
#: Folder names under the data home.
DEFAULT_DATASET_FOLDER = "synth360-quick"
FULL_DATASET_FOLDER = "synth360"
CACHE_FOLDER = "cache"
_LOCK_NAME = ".default-data.lock"
#: Seed of the default dataset, so every machine generates the same images.
DEFAULT_SEED = 0
#: Backbone spec of the default data's cache.
DEFAULT_BACKBONE = "nss"
#: The shipped cache: package data of ``rl_scaniqa.envs.features`` (see the module docstring).
SHIPPED_CACHE = "synth360-quick-nss.safetensors.xz"


def shipped_cache_resource() -> resources.abc.Traversable:
    """Where the shipped default cache lies inside the installed package."""
    return resources.files("rl_scaniqa.envs.features").joinpath(SHIPPED_CACHE)


def load_shipped_cache() -> FeatureCache:
    """The shipped default cache, decompressed and verified (digests, backbone version, grid).

    Raises:
        CacheError: the file is missing, corrupt, or was built by another NSS version or
            another cache format than this code's (rebuild it with
            ``experiments/build_default_cache.py``).
    """
    from rl_scaniqa.envs.features.backbones import make_backbone

    resource = shipped_cache_resource()
    try:
        data = lzma.decompress(resource.read_bytes())
    except (OSError, lzma.LZMAError) as error:
        raise CacheError(f"{resource}: shipped default feature cache is missing or corrupt ({error})") from error
    return load_cache_bytes(data, str(resource), expect_backbone=make_backbone(DEFAULT_BACKBONE).name,
                            expect_grid=ViewportGrid())


def _resolve_home(home: str | os.PathLike[str] | None) -> Path:
    return Path(home).expanduser() if home is not None else default_home()


def _default_root(home: Path, quick: bool) -> Path:
    return home / (DEFAULT_DATASET_FOLDER if quick else FULL_DATASET_FOLDER)


def _generate_default_dataset(root: Path, quick: bool, progress: bool) -> None:
    """Generate Synth360 into a temporary sibling folder, then rename it to ``root``."""
    from rl_scaniqa.envs.data.datasets.synth360 import generate_synth360

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
               progress: bool, workers: int) -> FeatureCache:
    from rl_scaniqa.envs.features.backbones import (
        make_backbone,  # may import torch: only when building
    )

    records = load_dataset(dataset, root, **dataset_options)
    return get_or_build_cache(records, make_backbone(backbone), grid or ViewportGrid(), cache_dir,
                              dataset=dataset, augmentations=tuple(augmentations), progress=progress,
                              workers=workers)


def ensure_default_data(home: str | os.PathLike[str] | None = None, progress: bool = True, *,
                        backbone: str = DEFAULT_BACKBONE, grid: ViewportGrid | None = None,
                        cache_dir: str | os.PathLike[str] | None = None,
                        augmentations: Sequence[str] = (),
                        quick: bool = True, workers: int = 1) -> tuple[Path, FeatureCache]:
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
        workers: processes building the cache; the default 1 never starts any, which keeps an
            unguarded user script safe (see "Parallel build" in ``envs.features.cache``).
    """
    home_path = _resolve_home(home)
    caches = Path(cache_dir) if cache_dir is not None else home_path / CACHE_FOLDER
    with exclusive_lock(home_path / _LOCK_NAME):
        root = ensure_default_dataset(home_path, quick=quick, progress=progress, locked=True)
        cache = _get_cache(root, DEFAULT_DATASET, backbone, grid, caches, {}, augmentations, progress,
                           workers)
    return root, cache


def ensure_default_dataset(home: str | os.PathLike[str] | None = None, *, quick: bool = True,
                           progress: bool = True, locked: bool = False) -> Path:
    """The default Synth360 folder (see :func:`ensure_default_data`), generated on first use.

    ``locked``: the caller already holds the data home's lock.
    """
    home_path = _resolve_home(home)
    root = _default_root(home_path, quick)
    if (root / "labels.csv").is_file():
        return root
    if locked:
        _generate_default_dataset(root, quick, progress)
        return root
    with exclusive_lock(home_path / _LOCK_NAME):
        if not (root / "labels.csv").is_file():
            _generate_default_dataset(root, quick, progress)
    return root


def prepare_combined_cache(parts: Sequence[tuple[str, str | os.PathLike[str] | None, Mapping[str, Any]]],
                           *, backbone: str = DEFAULT_BACKBONE, grid: ViewportGrid | None = None,
                           augmentations: Sequence[str] = (),
                           cache_dir: str | os.PathLike[str] | None = None,
                           home: str | os.PathLike[str] | None = None,
                           quick_default: bool = True, progress: bool = True,
                           workers: int = 1) -> FeatureCache:
    """One feature cache of several datasets (``(name, root, options)`` each), trained on as one.

    Reference groups stay distinct across datasets (:func:`load_combined` prefixes them with the
    dataset's name). A root of None means the dataset's default folder: the default Synth360
    (generated on first use, ``quick_default`` picks which) or ``<home>/real360`` (made by
    ``rl-scaniqa real360``).
    """
    from rl_scaniqa.envs.data.datasets.real360 import default_real360_root

    home_path = _resolve_home(home)
    resolved = []
    for name, root, options in parts:
        if root is None and name.lower() == DEFAULT_DATASET:
            root = ensure_default_dataset(home_path, quick=quick_default, progress=progress)
        elif root is None and name.lower() == "real360":
            root = default_real360_root(home_path)
        elif root is None:
            raise ValueError(f"dataset {name!r} needs its folder; only synth360 and real360 have "
                             "default folders")
        resolved.append(DatasetPart(name, root, dict(options)))
    from rl_scaniqa.envs.features.backbones import make_backbone

    caches = Path(cache_dir) if cache_dir is not None else home_path / CACHE_FOLDER
    return get_or_build_cache(load_combined(resolved), make_backbone(backbone), grid or ViewportGrid(),
                              caches, dataset=combined_name(resolved),
                              augmentations=tuple(augmentations), progress=progress, workers=workers)


def shipped_cache_bytes(home: str | os.PathLike[str], progress: bool = True) -> bytes:
    """The xz-compressed file to ship as :data:`SHIPPED_CACHE`, built from the code in ``home``.

    ``home`` gets the default data and its cache (:func:`ensure_default_data`); the file is that
    cache with its image paths relative to the data home (:func:`portable_cache_bytes`).
    """
    from rl_scaniqa.envs.features.backbones import make_backbone

    home_path = Path(home)
    root, _ = ensure_default_data(home_path, progress)
    path = build_cache(load_dataset(DEFAULT_DATASET, root), make_backbone(DEFAULT_BACKBONE), ViewportGrid(),
                       home_path / CACHE_FOLDER, dataset=DEFAULT_DATASET, progress=False)
    return lzma.compress(portable_cache_bytes(path, root), preset=9)


def prepare_feature_cache(dataset: str, root: str | os.PathLike[str] | None, *,
                          backbone: str = DEFAULT_BACKBONE, grid: ViewportGrid | None = None,
                          augmentations: Sequence[str] = (),
                          cache_dir: str | os.PathLike[str] | None = None,
                          dataset_options: Mapping[str, Any] | None = None,
                          home: str | os.PathLike[str] | None = None,
                          quick_default: bool = True, progress: bool = True,
                          workers: int = 1) -> FeatureCache:
    """The feature cache for these arguments (what ``Panorama360Env`` uses), built if missing.

    ``root=None`` means the default data (only for ``dataset="synth360"``; ``quick_default``
    picks the small or the full Synth360, see :func:`ensure_default_data`): with the default
    backbone, grid and no augmented views or ``cache_dir``, the shipped cache
    (:func:`load_shipped_cache`); otherwise the dataset
    at ``root`` is loaded with ``load_dataset(dataset, root, **dataset_options)`` and its cache
    is built in ``cache_dir`` (default ``<home>/cache``; the builder locks each cache file)
    by ``workers`` processes (default 1: this one).
    """
    if root is None:
        if dataset != DEFAULT_DATASET:
            raise ValueError(f"dataset {dataset!r} needs root=<its folder>; only {DEFAULT_DATASET!r} "
                             "has default data that is generated on first use")
        if dataset_options:
            raise ValueError("dataset_options apply to a dataset given by root=; the default "
                             f"{DEFAULT_DATASET!r} data takes none")
        if (quick_default and backbone == DEFAULT_BACKBONE and grid in (None, ViewportGrid())
                and not augmentations and cache_dir is None):
            try:
                return load_shipped_cache()
            except CacheError as error:
                # Only a development checkout whose features changed gets here (a test keeps
                # the released file current); the cache it builds instead is identical.
                warnings.warn(f"{error}; building the default cache instead", stacklevel=2)
        return ensure_default_data(home, progress, backbone=backbone, grid=grid, cache_dir=cache_dir,
                                   augmentations=augmentations, quick=quick_default,
                                   workers=workers)[1]
    caches = Path(cache_dir) if cache_dir is not None else _resolve_home(home) / CACHE_FOLDER
    return _get_cache(Path(root), dataset, backbone, grid, caches, dict(dataset_options or {}),
                      augmentations, progress, workers)
