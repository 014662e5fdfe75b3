"""A feature cache of seeded random numbers, for tests and benchmarks of cache consumers."""

from __future__ import annotations

import numpy as np

from rl_scaniqa.envs.data.datasets.records import MosScale
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.features.cache import NO_CAP, THUMBNAIL_SHAPE, FeatureCache, no_augmentations


def random_feature_cache(n_images: int = 4, *, grid: ViewportGrid | None = None, dim: int = 8,
                         n_refs: int | None = None, seed: int = 0) -> FeatureCache:
    """A :class:`FeatureCache` of seeded random numbers with valid shapes and ranges.

    For tests and benchmarks of code that consumes caches (the env, policies, assessors) without
    images or a backbone. Features are N(3, 2²) so standardisation is not the identity; entropy
    is U(0, 8) bits; SSIM is a symmetric matrix in [-0.2, 1] with unit diagonal; MOS is U(1, 5)
    on ``MosScale(1, 5)``; image ``k`` has reference ``f"ref{k % n_refs}"`` (default
    ``n_refs = max(2, n_images // 2)``, so reference splits work) and a dataset start viewport on
    odd ``k`` (``-1``, none, on even ``k``). No damaged caps (tests that need them replace
    ``caps``) and no augmented views.
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
        caps=np.full((n_images, 3), NO_CAP, dtype=np.float32),
        viewport_features=rng.normal(3.0, 2.0, (n_images, n_viewports, dim)).astype(np.float32),
        global_features=rng.normal(3.0, 2.0, (n_images, dim)).astype(np.float32),
        entropy=rng.uniform(0.0, 8.0, (n_images, n_viewports)).astype(np.float32),
        ssim=ssim.astype(np.float32),
        thumbnails=rng.integers(0, 256, (n_images, *THUMBNAIL_SHAPE, 3), dtype=np.uint8),
        start_viewports=starts.astype(np.int64),
        augmentations=(),
        **no_augmentations(n_images, n_viewports, dim),
    )
