"""Step-level and set-level rewards of ``Panorama360Env``, as pure functions on arrays.

Every term here reads values that the feature cache precomputed from pixels (grey-level entropy,
SSIM between viewports) or that follow from the viewport grid (pitch, sphere coverage), so the
env never touches an image while stepping.

Step reward of the action that moves the gaze from viewport ``x_{t-1}`` to ``x_t``::

    r_t = λ_ent · H(x_t) / 8 + λ_ssim · (1 − SSIM(x_t, x_{t−1})) + λ_nov · δ_new + λ_eqb · B(x_t)

Set reward, added once at the end of an episode of K paths::

    R_set = β_cov · coverage − β_jac · mean_{i<j} J(P_i, P_j)

The functions below document each term; :class:`RewardWeights` holds the λ and β weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Entropy of a uniform 8-bit grey-level histogram, log2(256): the largest value H can take.
MAX_ENTROPY_BITS = 8.0


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward terms (defaults: the paper's reference values)."""

    entropy: float = 0.5
    ssim: float = 1.0
    novelty: float = 1.0
    equator: float = 0.2
    coverage: float = 0.2
    jaccard: float = 0.2

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not math.isfinite(value):
                raise ValueError(f"reward weight {name!r} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class SetRewardResult:
    """The set reward of one episode and the two quantities it is made of."""

    reward: float
    coverage: float
    jaccard: float


def entropy_term(entropy_bits: np.ndarray | float) -> np.ndarray:
    """Normalised information term ``H(x) / 8``.

    ``entropy_bits`` is the Shannon entropy of the viewport's 256-bin grey-level histogram in bits,
    ``H = −Σ_k p_k log2 p_k``, which lies in ``[0, log2(256)] = [0, 8]``. Dividing by 8 maps it to
    ``[0, 1]`` so that, like the other terms, it is of order one and λ_ent keeps its meaning
    whatever the bit depth convention.
    """
    return np.asarray(entropy_bits, dtype=np.float64) / MAX_ENTROPY_BITS


def ssim_term(ssim_value: np.ndarray | float) -> np.ndarray:
    """Dissimilarity term ``1 − SSIM(x_t, x_{t−1})`` (0 for a repeat, up to 2 for anti-correlated views)."""
    return 1.0 - np.asarray(ssim_value, dtype=np.float64)


def novelty_term(is_new: np.ndarray | bool) -> np.ndarray:
    """Novelty term ``δ_new``: 1 when the viewport was not yet visited in the current path, else 0.

    The path's start viewport counts as visited, so returning to it earns no novelty.
    """
    return np.asarray(is_new, dtype=np.float64)


def equator_term(pitch_deg: np.ndarray | float) -> np.ndarray:
    """Equator prior ``B(x) = exp(−0.5 · |pitch in radians|)`` (1 on the equator, ≈0.46 at a pole)."""
    return np.exp(-0.5 * np.abs(np.radians(np.asarray(pitch_deg, dtype=np.float64))))


def step_reward(entropy_bits: float, ssim_to_previous: float, is_new: bool, pitch_deg: float,
                weights: RewardWeights = RewardWeights()) -> float:
    """The step reward ``r_t`` of moving to a viewport, from the four quantities it depends on."""
    return float(weights.entropy * entropy_term(entropy_bits)
                 + weights.ssim * ssim_term(ssim_to_previous)
                 + weights.novelty * novelty_term(is_new)
                 + weights.equator * equator_term(pitch_deg))


def path_point_sets(paths: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """Sphere points seen by each path: ``S_k = ∪_{v ∈ path k} C_v``.

    Args:
        paths: int array (K, L) of viewport indices (every entry a valid index).
        coverage: bool array (V, N), True where sphere sample n lies inside viewport v
            (:func:`rl_scaniqa.envs.data.geometry.coverage_matrix`), or its columns merged by
            :func:`compress_coverage`.

    Returns:
        bool array (K, N).
    """
    paths = np.asarray(paths)
    coverage = np.asarray(coverage)
    if paths.ndim != 2 or paths.shape[0] == 0 or paths.shape[1] == 0:
        raise ValueError(f"paths must be a non-empty (K, L) array of viewport indices, got shape {paths.shape}")
    if not np.issubdtype(paths.dtype, np.integer):
        raise ValueError(f"paths must hold integer viewport indices, got dtype {paths.dtype}")
    if coverage.ndim != 2 or coverage.dtype != bool:
        raise ValueError(f"coverage must be a (V, N) bool matrix, got {coverage.dtype} {coverage.shape}")
    n_viewports = coverage.shape[0]
    if paths.min() < 0 or paths.max() >= n_viewports:
        raise ValueError(f"paths hold viewport indices outside 0..{n_viewports - 1}: "
                         f"min {paths.min()}, max {paths.max()}")
    return coverage[paths].any(axis=1)


def compress_coverage(coverage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge sphere points that exactly the same viewports see into weighted atoms.

    Every set quantity here (union, intersection, their sizes) treats such points alike, so
    computing on the distinct columns of ``coverage`` weighted by their multiplicity gives
    identical results far faster (the default 8 x 4 grid has 301 distinct columns among 4096).

    Returns:
        ``(atoms, counts)``: bool (V, P) distinct columns and int64 (P,) multiplicities, to pass
        as ``coverage`` and ``point_weights`` to :func:`set_reward`.
    """
    coverage = np.asarray(coverage, dtype=bool)
    atoms, counts = np.unique(coverage.T, axis=0, return_counts=True)
    return np.ascontiguousarray(atoms.T), counts.astype(np.int64)


def _weights_for(point_sets: np.ndarray, point_weights: np.ndarray | None) -> np.ndarray:
    if point_weights is None:
        return np.ones(point_sets.shape[-1], dtype=np.float64)
    point_weights = np.asarray(point_weights, dtype=np.float64)
    if point_weights.shape != (point_sets.shape[-1],) or (point_weights < 0).any():
        raise ValueError(f"point_weights must be {point_sets.shape[-1]} non-negative numbers, "
                         f"got shape {point_weights.shape}")
    return point_weights


def sphere_coverage(point_sets: np.ndarray, point_weights: np.ndarray | None = None) -> float:
    """``coverage = |∪_k S_k| / N``: the fraction of the N sphere samples seen by any path.

    The samples are a near-equal-area Fibonacci lattice, so this estimates the seen solid angle
    over 4π. ``point_weights`` counts each column that many times (see :func:`compress_coverage`).
    """
    point_sets = np.asarray(point_sets, dtype=bool)
    weights = _weights_for(point_sets, point_weights)
    return float(weights[point_sets.any(axis=0)].sum() / weights.sum())


def mean_pairwise_jaccard(point_sets: np.ndarray, point_weights: np.ndarray | None = None) -> float:
    """Mean over the K(K−1)/2 pairs i < j of ``J(S_i, S_j) = |S_i ∩ S_j| / |S_i ∪ S_j|``.

    With a single path there is no pair and the result is 0. A pair whose union is empty (two
    paths that saw nothing) contributes 0: they share no seen area. ``point_weights`` counts each
    column that many times (see :func:`compress_coverage`).
    """
    sets = np.asarray(point_sets, dtype=bool)
    weights = _weights_for(sets, point_weights)
    n_paths = sets.shape[0]
    if n_paths < 2:
        return 0.0
    as_float = sets.astype(np.float64)
    intersections = (as_float * weights) @ as_float.T
    sizes = np.diag(intersections)
    unions = sizes[:, None] + sizes[None, :] - intersections
    upper_i, upper_j = np.triu_indices(n_paths, k=1)
    inter, union = intersections[upper_i, upper_j], unions[upper_i, upper_j]
    jaccard = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return float(jaccard.mean())


def set_reward(paths: np.ndarray, coverage: np.ndarray, weights: RewardWeights = RewardWeights(),
               point_weights: np.ndarray | None = None) -> SetRewardResult:
    """Set reward ``β_cov · coverage − β_jac · mean pairwise Jaccard`` of an episode's K paths.

    Both quantities are measured on the sphere sampling behind ``coverage`` (see
    :func:`path_point_sets`); each path includes its start viewport. ``point_weights`` goes with
    a compressed ``coverage`` (:func:`compress_coverage`).
    """
    point_sets = path_point_sets(paths, coverage)
    seen = sphere_coverage(point_sets, point_weights)
    overlap = mean_pairwise_jaccard(point_sets, point_weights)
    return SetRewardResult(reward=weights.coverage * seen - weights.jaccard * overlap,
                           coverage=seen, jaccard=overlap)
