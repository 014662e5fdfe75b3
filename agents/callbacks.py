"""The SB3 callback that co-trains the quality assessor with the scanpath policy.

After every PPO rollout (and before the PPO update that uses it) the callback

1. hands the paths finished during the rollout, which the reward wrapper remembered, to the
   :class:`~rl_scaniqa.agents.assessor_training.AssessorTrainer` and trains the assessor for a few steps
   on them and on random paths of the training images, so the terminal reward of the next
   rollout comes from a better assessor;
2. anneals PPO's entropy coefficient linearly from its start to its end value over training
   (the clip range is annealed by passing a schedule to PPO itself);
3. logs the rollout's reward components and the assessor's losses to SB3's logger (TensorBoard);
4. every ``validate_every`` rollouts calls ``validate`` (e.g. SRCC on held-out references) and
   every ``checkpoint_every`` rollouts calls ``checkpoint``.

The callback computes no metric and writes no file itself: those are the training script's
decisions, passed in as functions, which keeps this piece reusable by the sweep and by tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from rl_scaniqa.agents.assessor_training import AssessorTrainer
from rl_scaniqa.agents.reward_wrapper import AssessorRewardVecWrapper

STEP_COMPONENTS = ("entropy", "ssim", "novelty", "equator")


class CoTrainingCallback(BaseCallback):
    """Co-trains the assessor between PPO updates and anneals the entropy bonus.

    Parameters
    ----------
    reward_env:
        The reward wrapper of the training VecEnv (source of the finished paths).
    trainer:
        Trains the same assessor object the wrapper scores with.
    assessor_steps:
        Assessor optimiser steps after each rollout.
    ent_coef_start, ent_coef_end:
        Linear annealing of PPO's ``ent_coef`` over the run (reference: 0.02 → 0.005).
    validate, validate_every:
        ``validate()`` returns a dict of metrics, logged under ``val/``; called every
        ``validate_every`` rollouts (0 = never).
    checkpoint, checkpoint_every:
        ``checkpoint()`` saves the run; called every ``checkpoint_every`` rollouts (0 = never).
    on_update:
        Receives a dict of the latest statistics after every rollout (for a live display).
    """

    def __init__(self, reward_env: AssessorRewardVecWrapper, trainer: AssessorTrainer, *,
                 assessor_steps: int = 50, ent_coef_start: float = 0.02, ent_coef_end: float = 0.005,
                 validate: Callable[[], dict[str, float]] | None = None, validate_every: int = 0,
                 checkpoint: Callable[[], None] | None = None, checkpoint_every: int = 0,
                 on_update: Callable[[dict[str, Any]], None] | None = None, verbose: int = 0):
        super().__init__(verbose)
        self.reward_env = reward_env
        self.trainer = trainer
        self.assessor_steps = assessor_steps
        self.ent_coef_start = ent_coef_start
        self.ent_coef_end = ent_coef_end
        self.validate = validate
        self.validate_every = validate_every
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.on_update = on_update
        self.rollouts = 0
        self.latest: dict[str, Any] = {}
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def _on_training_start(self) -> None:
        self._anneal()

    def _add(self, name: str, value: float) -> None:
        self._sums[name] += value
        self._counts[name] += 1

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            task = info.get("task_reward")
            if task is not None:
                self._add("task/mse", task["mse"])
                self._add("task/rank", task["rank"])
            components = info.get("reward_components")
            if components is not None:
                for name in STEP_COMPONENTS:
                    self._add(f"step/{name}", float(np.mean(components[name])))
                self._add("set/coverage", float(info["coverage"]))
                self._add("set/jaccard", float(info["jaccard"]))
        return True

    def _anneal(self) -> None:
        remaining = float(getattr(self.model, "_current_progress_remaining", 1.0))
        self.model.ent_coef = self.ent_coef_end + (self.ent_coef_start - self.ent_coef_end) * remaining

    def _on_rollout_end(self) -> None:
        self.rollouts += 1
        self.trainer.add_paths(self.reward_env.pop_finished_paths())
        losses = self.trainer.train_steps(self.assessor_steps) if self.assessor_steps > 0 else {}
        self._anneal()
        stats: dict[str, Any] = {name: self._sums[name] / self._counts[name] for name in self._sums}
        self._sums.clear()
        self._counts.clear()
        stats.update({f"assessor/{name}": value for name, value in losses.items()})
        stats["train/ent_coef"] = float(self.model.ent_coef)
        stats["task/weights"] = self.reward_env.schedule.weights(self.reward_env.num_timesteps)
        if self.validate is not None and self.validate_every > 0 \
                and self.rollouts % self.validate_every == 0:
            stats.update({f"val/{name}": value for name, value in self.validate().items()})
        for name, value in stats.items():
            if isinstance(value, float):
                self.logger.record(name, value)
        self.latest.update(stats)
        self.latest["timesteps"] = self.num_timesteps
        self.latest["rollouts"] = self.rollouts
        if self.checkpoint is not None and self.checkpoint_every > 0 \
                and self.rollouts % self.checkpoint_every == 0:
            self.checkpoint()
        if self.on_update is not None:
            self.on_update(self.latest)
