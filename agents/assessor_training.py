"""Training the quality assessor on scanpaths, alone (warm-up) or alongside PPO (co-training).

The trainer samples a batch of training images, picks one path per image — a recent path of the
current policy for that image when one is known (``policy_path_fraction`` of the time), otherwise
a random path — gathers the path's viewport features from the feature cache and optimises the
combined loss of :mod:`rl_scaniqa.assessor.losses`. The augmented views (weak / mild / heavy) are
the same path read from the cache's features of the really distorted image, so the consistency,
triplet and cross-ranking terms compare real distortions, not noise added to features.

Random paths keep the assessor calibrated on every image and path shape, policy paths make it
accurate where the policy actually looks; the mix is what "trains on the paths the current policy
produced (and on the train split's images)" means in practice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from rl_scaniqa.agents.reward_wrapper import FinishedPath
from rl_scaniqa.assessor.losses import AssessorLossWeights, combined_loss
from rl_scaniqa.assessor.model import QualityAssessor
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats

#: Names of the augmented views used by the losses, as built by the feature cache.
LOSS_VIEWS = ("weak", "mild", "heavy")


@dataclass
class AssessorTrainingConfig:
    """Optimisation settings; defaults follow the reference code (Adam, lr 1e-4)."""

    learning_rate: float = 1e-4
    batch_size: int = 32
    policy_path_fraction: float = 0.75
    paths_per_image_memory: int = 16
    grad_clip: float = 1.0
    loss_weights: AssessorLossWeights = field(default_factory=AssessorLossWeights)


def random_paths(rng: np.random.Generator, starts: np.ndarray, n_viewports: int,
                 length: int) -> np.ndarray:
    """Random paths without revisits: ``(N, length)`` ints, column 0 = ``starts``.

    The remaining ``length - 1`` viewports are drawn uniformly without replacement from the others
    (with replacement only when the path is longer than the grid).
    """
    starts = np.asarray(starts, dtype=np.int64)
    outside = (starts < 0) | (starts >= n_viewports)
    if outside.any():
        # A -1 ("no dataset start" in a cache) would silently index the last viewport.
        raise ValueError(f"path starts must be viewport indices in 0..{n_viewports - 1}, "
                         f"got {sorted(set(starts[outside].tolist()))}")
    n = len(starts)
    paths = np.empty((n, length), dtype=np.int64)
    paths[:, 0] = starts
    if length == 1:
        return paths
    keys = rng.random((n, n_viewports))
    keys[np.arange(n), starts] = np.inf  # the start is never drawn again
    if length - 1 <= n_viewports - 1:
        paths[:, 1:] = np.argsort(keys, axis=1)[:, :length - 1]
    else:
        paths[:, 1:] = rng.integers(0, n_viewports, size=(n, length - 1))
    return paths


class AssessorTrainer:
    """Optimises a :class:`QualityAssessor` on paths over the training images of a cache.

    Parameters
    ----------
    assessor:
        The model to train (updated in place; reward wrappers holding it see the updates).
    cache:
        The feature cache; its augmented views are used when it has ``weak``/``mild``/``heavy``.
    stats:
        Feature standardisation — the same object the env uses, so features match the env's.
    train_indices:
        Cache indices of the training images.
    path_length:
        L = T + 1 viewports per path.
    start_viewport:
        Start of the random paths (the env's default start viewport).
    """

    def __init__(self, assessor: QualityAssessor, cache: FeatureCache, stats: FeatureStats,
                 train_indices: Sequence[int] | np.ndarray, *, path_length: int, start_viewport: int,
                 config: AssessorTrainingConfig | None = None, seed: int = 0,
                 device: str | torch.device = "cpu"):
        if len(train_indices) < 2:
            raise ValueError("the assessor needs at least 2 training images")
        self.assessor = assessor.to(device)
        self.config = config or AssessorTrainingConfig()
        self.device = torch.device(device)
        self.path_length = path_length
        self.start_viewport = start_viewport
        self.rng = np.random.default_rng(seed)
        self.train_indices = np.asarray(train_indices, dtype=np.int64)
        self._position = {int(image): row for row, image in enumerate(self.train_indices)}
        self.n_viewports = cache.viewport_features.shape[1]

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32,
                                   device=self.device)

        self.viewports = tensor(stats.standardize_viewports(
            cache.viewport_features[self.train_indices]))
        self.globals = tensor(stats.standardize_global(cache.global_features[self.train_indices]))
        self.targets = tensor(cache.mos_normalized[self.train_indices])
        self.views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in LOSS_VIEWS:
            if name in cache.augmentations:
                a = cache.augmentations.index(name)
                self.views[name] = (
                    tensor(stats.standardize_viewports(
                        cache.aug_viewport_features[self.train_indices, a])),
                    tensor(stats.standardize_global(cache.aug_global_features[self.train_indices, a])))
        self._policy_paths: dict[int, deque[tuple[int, ...]]] = {}
        self.optimizer = torch.optim.Adam(self.assessor.parameters(), lr=self.config.learning_rate)

    def add_paths(self, paths: Iterable[FinishedPath]) -> int:
        """Remember policy paths of training images; returns how many were kept."""
        kept = 0
        for finished in paths:
            row = self._position.get(finished.image_index)
            if row is None or len(finished.path) != self.path_length:
                continue
            memory = self._policy_paths.setdefault(
                row, deque(maxlen=self.config.paths_per_image_memory))
            memory.append(finished.path)
            kept += 1
        return kept

    def _sample_batch(self) -> tuple[np.ndarray, np.ndarray]:
        size = min(self.config.batch_size, len(self.train_indices))
        rows = self.rng.choice(len(self.train_indices), size=size, replace=False)
        paths = random_paths(self.rng, np.full(size, self.start_viewport), self.n_viewports,
                             self.path_length)
        use_policy = self.rng.random(size) < self.config.policy_path_fraction
        for slot, row in enumerate(rows):
            memory = self._policy_paths.get(int(row))
            if use_policy[slot] and memory:
                paths[slot] = memory[self.rng.integers(len(memory))]
        return rows, paths

    def _gather(self, viewports: torch.Tensor, rows: np.ndarray, paths: np.ndarray) -> torch.Tensor:
        rows_t = torch.as_tensor(rows, device=self.device).unsqueeze(1)
        return viewports[rows_t, torch.as_tensor(paths, device=self.device)]

    def train_steps(self, n_steps: int) -> dict[str, float]:
        """Run ``n_steps`` optimiser steps; returns the mean of each loss component."""
        self.assessor.train()
        totals: dict[str, float] = {}
        for _ in range(n_steps):
            rows, paths = self._sample_batch()
            rows_t = torch.as_tensor(rows, device=self.device)
            predictions = {"clean": self.assessor(self._gather(self.viewports, rows, paths),
                                                  self.globals[rows_t])}
            for name, (viewports, globals_) in self.views.items():
                predictions[name] = self.assessor(self._gather(viewports, rows, paths),
                                                  globals_[rows_t])
            loss, components = combined_loss(
                predictions["clean"], self.targets[rows_t], pred_weak=predictions.get("weak"),
                pred_mild=predictions.get("mild"), pred_heavy=predictions.get("heavy"),
                weights=self.config.loss_weights)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.assessor.parameters(), self.config.grad_clip)
            self.optimizer.step()
            components["total"] = float(loss.detach())
            for name, value in components.items():
                totals[name] = totals.get(name, 0.0) + value / n_steps
        return totals

    def state_dict(self) -> dict[str, object]:
        """Optimiser state, for resuming (tensors only besides plain ints; safe to torch.save)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
