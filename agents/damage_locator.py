"""A supervised damage locator: how well can the observation tell where the damage is?

The damage hit rate of a policy (``agents.damage``) mixes two limits: what the observation shows
about where the damage lies, and what the reward and PPO make of it. This module measures the
first one alone. :class:`DamageLocator` scores every candidate viewport from its observed
features (``obs["candidates"]``, the env's standardised and clipped features) with one small MLP
shared by all viewports, and is fitted by supervised learning on the training images that have a
located cap: the softmax of its scores over an image's V viewports is matched (cross-entropy) to
the share of the cap each viewport sees (:func:`~rl_scaniqa.agents.damage.cap_overlap`).

:class:`DamageLocatorAgent` then walks each image's viewports from the highest score down. It is
blind at test time (it reads the observation only), but it was fitted on the labels, with far
more direct a signal than any reward: its hit rate on held-out images is what a policy reading
the same candidates can be expected to reach, not a floor it must beat. A policy far below it is
limited by its reward or its training; a locator near random paths says the features do not show
the damage.

Default widths and epochs were chosen on one held-out fifth of the default Synth360's references
(nss-v3): hidden 8 and 100 full-batch Adam epochs gave a top-7 test hit rate of 0.54 (chance
0.23, oracle 0.91); more epochs or width (300 epochs: 0.53; 32 units: 0.52) or in-image
standardised inputs (0.44–0.49) fit the training images better and the test images worse. Over
the five reference splits of ``reproduce.py`` the top-7 test hit rate is 0.55 (225 images with a
cap), from 0.21 on stitching (chance) to 0.74 on underexposure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from torch import nn

from rl_scaniqa.agents.baselines import _allowed, _as_batch
from rl_scaniqa.agents.damage import cap_overlap, has_cap
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.panorama_env import observed_viewports


@dataclass(frozen=True)
class LocatorSettings:
    """Width and optimisation of :class:`DamageLocator` (see the module doc for the choice)."""

    hidden: int = 8
    epochs: int = 100
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 1:
            raise ValueError(f"LocatorSettings needs hidden >= 1 and epochs >= 1, got "
                             f"hidden={self.hidden}, epochs={self.epochs}")


class DamageLocator(nn.Module):
    """Damage score of every candidate viewport: ``s_j = MLP(c_j)``, one MLP for all j."""

    def __init__(self, dim: int, hidden: int = LocatorSettings.hidden) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, candidates: th.Tensor) -> th.Tensor:
        """Scores (B, V) of candidates (B, V, D)."""
        return self.net(candidates).squeeze(-1)

    def scores(self, candidates: np.ndarray) -> np.ndarray:
        """Scores (B, V) of NumPy candidates (B, V, D), without gradients."""
        with th.no_grad():
            return self(th.as_tensor(np.asarray(candidates, dtype=np.float32))).numpy()


def observed_candidates(cache: FeatureCache, stats: FeatureStats, indices: Sequence[int] | np.ndarray,
                        feature_clip: float) -> np.ndarray:
    """(N, V, D) float32 candidates of the images ``indices`` as the env observes them."""
    return np.stack([observed_viewports(cache, stats, int(i), feature_clip) for i in indices])


def fit_damage_locator(cache: FeatureCache, stats: FeatureStats, indices: Sequence[int] | np.ndarray,
                       feature_clip: float, settings: LocatorSettings = LocatorSettings()) -> DamageLocator:
    """Fit a :class:`DamageLocator` on the images of ``indices`` that have a cap.

    Raises:
        ValueError: none of them has a cap (nothing says where the damage is).
    """
    rows = np.asarray(indices, dtype=np.int64)
    rows = rows[has_cap(cache, rows)]
    if not len(rows):
        raise ValueError("fit_damage_locator needs training images with a located cap; none has one")
    overlap = cap_overlap(cache.grid, cache.caps[rows])
    target = th.as_tensor(overlap / overlap.sum(axis=1, keepdims=True), dtype=th.float32)
    candidates = th.as_tensor(observed_candidates(cache, stats, rows, feature_clip))
    th.manual_seed(settings.seed)
    locator = DamageLocator(cache.dim, settings.hidden)
    optimiser = th.optim.Adam(locator.parameters(), lr=settings.learning_rate,
                              weight_decay=settings.weight_decay)
    for _ in range(settings.epochs):
        loss = -(target * th.log_softmax(locator(candidates), dim=-1)).sum(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return locator.eval()


class DamageLocatorAgent:
    """Visits each image's viewports in the order of a :class:`DamageLocator`'s scores.

    Every action is the highest-scored viewport the env's revisit mask allows, so the K paths of
    an image are the same ranking prefix after the start. A reference row of the where-to-look
    diagnostics, not a method: it was fitted on the damage labels.
    """

    def __init__(self, locator: DamageLocator) -> None:
        self.locator = locator

    def predict(self, observation: Mapping[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,): the best-scored allowed viewport of each row."""
        batch, single = _as_batch(observation)
        scores = self.locator.scores(batch["candidates"])
        actions = np.where(_allowed(batch), scores, -np.inf).argmax(axis=1)
        return (actions[0] if single else actions), state
