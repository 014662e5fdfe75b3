"""Where-to-look diagnostics: does a scanpath find the damage its image's labels locate?

Datasets whose labels say where a local distortion sits (Synth360: the damaged cap's centre and
radius, carried by the feature cache's ``caps`` array) allow three measurements that SRCC alone
hides:

* the **cap overlap** of a viewport: the fraction of the cap's points of the env's sphere
  sampling (:func:`~rl_scaniqa.envs.data.geometry.sphere_points` with
  :data:`~rl_scaniqa.envs.panorama_env.N_SPHERE_POINTS`, the sampling of the coverage and
  Jaccard rewards) that lie inside the viewport's frustum;
* the **damage hit rate** of an agent: over the test images with a cap, the share of path steps
  (the actions; the env's start viewport is not the agent's choice and is left out) whose
  viewport sees at least :data:`HIT_FRACTION` of the cap;
* the **distance profile**: how the agent's steps on those images spread over the great-circle
  distance between the viewport centre and the cap centre (the figure of visits against distance).

``srcc_local`` is the SRCC among the test images with a cap only: the images on which where a
path looks can matter. Every value is NaN where no test image has a cap (other datasets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from rl_scaniqa.agents.evaluation import Scanpaths
from rl_scaniqa.assessor.metrics import MIN_ITEMS, srcc
from rl_scaniqa.envs.data.geometry import (
    ViewportGrid,
    coverage_matrix,
    lonlat_to_xyz,
    sphere_points,
)
from rl_scaniqa.envs.features.cache import FeatureCache
from rl_scaniqa.envs.panorama_env import N_SPHERE_POINTS

#: A step hits the damage when its viewport sees at least this fraction of the cap.
HIT_FRACTION = 0.25
#: Bin edges (degrees of great-circle distance from the cap centre) of the distance profile.
DISTANCE_BIN_EDGES = np.arange(0.0, 180.0 + 1e-9, 15.0)


def has_cap(cache: FeatureCache, image_indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Bool (N,): whether each image (all images when None) has a located damaged cap."""
    caps = cache.caps if image_indices is None else cache.caps[np.asarray(image_indices, np.int64)]
    return ~np.isnan(caps).any(axis=1)


def cap_overlap(grid: ViewportGrid, caps: np.ndarray, n_points: int = N_SPHERE_POINTS) -> np.ndarray:
    """(N, V) fraction of each cap's sphere sample points that each viewport sees.

    ``caps`` is (N, 3) yaw, pitch, radius in degrees, every row a cap.

    Raises:
        ValueError: a row is not a cap, or a cap so small that no sample point falls in it (the
            overlap would be undefined; use more ``n_points``).
    """
    caps = np.asarray(caps, dtype=np.float64).reshape(-1, 3)
    if np.isnan(caps).any():
        raise ValueError("cap_overlap needs caps, got rows with NaN (images without a cap)")
    points = sphere_points(n_points)
    centres = lonlat_to_xyz(caps[:, 0], caps[:, 1])
    inside = points @ centres.T >= np.cos(np.radians(caps[:, 2]))  # (n_points, N)
    counts = inside.sum(axis=0)
    if (counts == 0).any():
        radius = float(caps[int(np.flatnonzero(counts == 0)[0]), 2])
        raise ValueError(f"a cap of radius {radius}° holds none of the {n_points} sphere points")
    seen = coverage_matrix(grid, n_points).astype(np.float64) @ inside  # (V, N)
    return (seen / counts).T


def damage_hits(grid: ViewportGrid, caps: np.ndarray) -> np.ndarray:
    """(N, V) bool: whether each viewport sees at least :data:`HIT_FRACTION` of each cap."""
    return cap_overlap(grid, caps) >= HIT_FRACTION


def cap_distances(grid: ViewportGrid, caps: np.ndarray) -> np.ndarray:
    """(N, V) great-circle distance in degrees from each cap centre to each viewport centre."""
    caps = np.asarray(caps, dtype=np.float64).reshape(-1, 3)
    centres = grid.centers_deg
    cosine = lonlat_to_xyz(caps[:, 0], caps[:, 1]) @ lonlat_to_xyz(centres[:, 0], centres[:, 1]).T
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def damage_ranking(grid: ViewportGrid, caps: np.ndarray, *, least: bool = False) -> np.ndarray:
    """(N, V) viewport indices of each cap's image, best first: the oracle's order of looking.

    Most :func:`cap_overlap` first, ties broken by the viewport centre's distance to the cap
    centre, nearest first; ``least=True`` reverses both (least overlap, then farthest: the
    anti-oracle).
    """
    overlap, distance = cap_overlap(grid, caps), cap_distances(grid, caps)
    sign = -1.0 if least else 1.0
    # lexsort sorts by the last key first: overlap, then distance as the tie-break.
    return np.stack([np.lexsort((sign * far, -sign * seen)) for seen, far in zip(overlap, distance)])


def _local_steps(scanpaths: Scanpaths, cache: FeatureCache) -> tuple[np.ndarray, np.ndarray]:
    """The caps (L, 3) of the images with one, and their agents' steps (L, K*T)."""
    local = has_cap(cache, scanpaths.image_indices)
    caps = cache.caps[scanpaths.image_indices[local]]
    steps = scanpaths.paths[local][..., 1:]  # column 0 is the env's start, not a choice
    return caps, steps.reshape(len(caps), steps.shape[1] * steps.shape[2])


def damage_hit_rate(scanpaths: Scanpaths, cache: FeatureCache) -> float:
    """Share of path steps on images with a cap whose viewport sees ≥ :data:`HIT_FRACTION` of it.

    ``cache`` is the one ``scanpaths.image_indices`` index (the evaluation's). NaN when none of
    the images has a cap.
    """
    caps, steps = _local_steps(scanpaths, cache)
    if not len(caps):
        return math.nan
    return float(np.take_along_axis(damage_hits(cache.grid, caps), steps, axis=1).mean())


def distance_profile(scanpaths: Scanpaths, cache: FeatureCache) -> np.ndarray:
    """Fraction of the steps on images with a cap in each :data:`DISTANCE_BIN_EDGES` bin.

    Sums to 1; NaN everywhere when none of the images has a cap.
    """
    caps, steps = _local_steps(scanpaths, cache)
    if not len(caps):
        return np.full(len(DISTANCE_BIN_EDGES) - 1, np.nan)
    distances = np.take_along_axis(cap_distances(cache.grid, caps), steps, axis=1)
    counts, _ = np.histogram(distances, bins=DISTANCE_BIN_EDGES)
    return counts / counts.sum()


class DamageHitReward(VecEnvWrapper):
    """A training reward that reads the labels: ``weight`` for every step that hits the damage.

    ``RewardSettings.damage_hit`` turns it on in co-training (label-guided training); alone it
    asks whether the policy and PPO can learn to look at the damage at all when the reward says
    exactly where it is (``experiments/damage_reward_probe.py``). Only training reads the labels:
    the trained policy looks blind. Wraps a VecEnv of ``Panorama360Env`` over ``cache``; a step
    hits when its viewport sees at least :data:`HIT_FRACTION` of the image's cap.
    """

    def __init__(self, venv: VecEnv, cache: FeatureCache, weight: float = 1.0) -> None:
        super().__init__(venv)
        self.weight = weight
        located = has_cap(cache)
        self.hits = np.zeros((len(cache), cache.grid.n_viewports), dtype=bool)
        if located.any():
            self.hits[located] = damage_hits(cache.grid, cache.caps[located])

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        hit = [self.hits[info["image_index"], info["path"][-1]] for info in infos]
        return observations, rewards + self.weight * np.asarray(hit, dtype=np.float32), dones, infos


def local_srcc(cache: FeatureCache, image_indices: Sequence[int] | np.ndarray,
               predicted: np.ndarray) -> float:
    """SRCC of ``predicted`` (one score per image of ``image_indices``) among the images with a
    cap; NaN with fewer than the metrics' minimum of such images."""
    rows = np.asarray(image_indices, dtype=np.int64)
    local = has_cap(cache, rows)
    if local.sum() < MIN_ITEMS:
        return math.nan
    return srcc(np.asarray(predicted, dtype=np.float64)[local], cache.mos[rows[local]])
