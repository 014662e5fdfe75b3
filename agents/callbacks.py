"""Small SB3 callbacks that co-train the quality assessor with the scanpath policy.

Each callback does one job after every PPO rollout (before the PPO update that uses it):

- :class:`RewardStatsCallback` averages the rollout's reward components from the env infos;
- :class:`AssessorTrainingCallback` hands the paths finished during the rollout, which the reward
  wrapper remembered, to the :class:`~rl_scaniqa.agents.assessor_training.AssessorTrainer` and
  trains the assessor a few steps, so the task reward of the next rollout comes from a better
  assessor;
- :class:`EntropyAnnealingCallback` anneals PPO's entropy coefficient linearly over training
  (the clip range is annealed by passing a schedule to PPO itself);
- :class:`ValidationCallback` calls a validation function every few rollouts;
- :class:`CheckpointCallback` calls a save function every few rollouts.

They write what they measured into one shared :class:`RolloutLog`;
:class:`CoTrainingCallbacks` (a ``CallbackList``) counts the rollouts, runs them in order and
then logs the rollout's statistics to SB3's logger (TensorBoard) and to an ``on_update``
function (a live display). No callback computes a metric or writes a file itself: those are the
caller's decisions, passed in as functions, which keeps the pieces reusable by every script.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

from rl_scaniqa.agents.assessor_training import AssessorTrainer
from rl_scaniqa.agents.reward_wrapper import AssessorRewardVecWrapper

STEP_COMPONENTS = ("entropy", "ssim", "novelty", "equator")


@dataclass
class RolloutLog:
    """What the callbacks measured: the current rollout's figures and the latest of each."""

    rollouts: int = 0
    current: dict[str, Any] = field(default_factory=dict)
    latest: dict[str, Any] = field(default_factory=dict)


class RolloutCallback(BaseCallback):
    """A callback that acts once per rollout and records into a shared :class:`RolloutLog`."""

    def __init__(self, log: RolloutLog, every: int = 1, verbose: int = 0):
        super().__init__(verbose)
        self.log = log
        self.every = every

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.every > 0 and self.log.rollouts % self.every == 0:
            self.after_rollout()

    @abstractmethod
    def after_rollout(self) -> None:
        """The callback's job, done once every ``every`` rollouts."""


class RewardStatsCallback(RolloutCallback):
    """Averages the step, set and task reward components the env reported in the rollout.

    Besides each component's mean it measures what the policy learns from: per finished episode,
    the weighted task reward and the summed step terms of each of its K paths, and their standard
    deviations over the K paths (``spread/task``, ``spread/step``). Only what differs between the
    paths of one image can move the policy; ``share/task`` = spread/task / (spread/task +
    spread/step) says how much of that the task reward is (issue 10: the step terms may drown it).
    """

    def __init__(self, log: RolloutLog, verbose: int = 0):
        super().__init__(log, verbose=verbose)
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._episode_task: dict[int, list[float]] = defaultdict(list)

    def _add(self, name: str, value: float) -> None:
        self._sums[name] += value
        self._counts[name] += 1

    def _on_step(self) -> bool:
        for env_index, info in enumerate(self.locals.get("infos", ())):
            task = info.get("task_reward")
            if task is not None:
                self._add("task/mse", task["mse"])
                self._add("task/rank", task["rank"])
                self._add("task/gain", task["gain"])
                self._episode_task[env_index].append(task["total"])
            components = info.get("reward_components")
            if components is not None:
                for name in STEP_COMPONENTS:
                    self._add(f"step/{name}", float(np.mean(components[name])))
                self._add("set/coverage", float(info["coverage"]))
                self._add("set/jaccard", float(info["jaccard"]))
                self._add_spreads(components, self._episode_task.pop(env_index, []))
        return True

    def _add_spreads(self, components: dict[str, np.ndarray], task_totals: list[float]) -> None:
        """Per-path returns of one finished episode: their means and spreads over its K paths."""
        step = sum(np.asarray(components[name], dtype=np.float64).sum(axis=1) for name in STEP_COMPONENTS)
        self._add("return/step", float(np.mean(step)))
        self._add("spread/step", float(np.std(step)))
        if len(task_totals) == len(step):  # the wrapper scored every path of the episode
            self._add("return/task", float(np.mean(task_totals)))
            self._add("spread/task", float(np.std(task_totals)))

    def after_rollout(self) -> None:
        figures = {name: self._sums[name] / self._counts[name] for name in self._sums}
        if "spread/task" in figures:
            total = figures["spread/task"] + figures["spread/step"]
            figures["share/task"] = figures["spread/task"] / total if total > 0 else 0.0
        self.log.current.update(figures)
        self._sums.clear()
        self._counts.clear()


class AssessorTrainingCallback(RolloutCallback):
    """Trains the assessor on the rollout's finished paths (and random ones).

    ``steps(num_timesteps)`` says how many steps to train after the rollout that ended at PPO's
    ``num_timesteps`` (:func:`~rl_scaniqa.agents.cotrain.assessor_step_schedule`).
    """

    def __init__(self, log: RolloutLog, reward_env: AssessorRewardVecWrapper,
                 trainer: AssessorTrainer, steps: Callable[[int], int], verbose: int = 0):
        super().__init__(log, verbose=verbose)
        self.reward_env = reward_env
        self.trainer = trainer
        self.steps = steps

    def after_rollout(self) -> None:
        self.trainer.add_paths(self.reward_env.pop_finished_paths())
        steps = self.steps(self.model.num_timesteps)
        losses = self.trainer.train_steps(steps) if steps > 0 else {}
        self.log.current["assessor/steps"] = float(steps)
        self.log.current.update({f"assessor/{name}": value for name, value in losses.items()})
        self.log.current["task/weights"] = self.reward_env.schedule.weights(
            self.reward_env.num_timesteps)


class EntropyAnnealingCallback(RolloutCallback):
    """PPO's ``ent_coef`` goes linearly from ``start`` to ``end`` over the run (0.02 → 0.005)."""

    def __init__(self, log: RolloutLog, start: float, end: float, verbose: int = 0):
        super().__init__(log, verbose=verbose)
        self.start = start
        self.end = end

    def _ppo(self) -> PPO:
        if not isinstance(self.model, PPO):
            raise TypeError(f"EntropyAnnealingCallback anneals PPO's ent_coef; the model is a "
                            f"{type(self.model).__name__}")
        return self.model

    def _anneal(self) -> None:
        ppo = self._ppo()
        ppo.ent_coef = self.end + (self.start - self.end) * ppo._current_progress_remaining

    def _on_training_start(self) -> None:
        self._anneal()

    def after_rollout(self) -> None:
        self._anneal()
        self.log.current["train/ent_coef"] = float(self._ppo().ent_coef)


class ValidationCallback(RolloutCallback):
    """Every ``every`` rollouts, ``validate()``'s metrics are recorded under ``val/``."""

    def __init__(self, log: RolloutLog, validate: Callable[[], dict[str, float]], every: int,
                 verbose: int = 0):
        super().__init__(log, every, verbose)
        self.validate = validate

    def after_rollout(self) -> None:
        self.log.current.update({f"val/{name}": value for name, value in self.validate().items()})


class CheckpointCallback(RolloutCallback):
    """Every ``every`` rollouts, ``save()`` writes what a resume needs."""

    def __init__(self, log: RolloutLog, save: Callable[[], None], every: int, verbose: int = 0):
        super().__init__(log, every, verbose)
        self.save = save

    def after_rollout(self) -> None:
        self.save()


class CoTrainingCallbacks(CallbackList):
    """Runs the rollout callbacks in order, then logs what they recorded.

    ``on_update`` receives the latest statistics (with ``timesteps`` and ``rollouts``) after
    every rollout.
    """

    def __init__(self, callbacks: Sequence[RolloutCallback], log: RolloutLog,
                 on_update: Callable[[dict[str, Any]], None] | None = None):
        super().__init__(list(callbacks))
        self.log = log
        self.on_update = on_update

    @property
    def rollouts(self) -> int:
        return self.log.rollouts

    @property
    def latest(self) -> dict[str, Any]:
        return self.log.latest

    def _on_rollout_end(self) -> None:
        self.log.rollouts += 1
        self.log.current = {}
        super()._on_rollout_end()
        for name, value in self.log.current.items():
            if isinstance(value, float):
                self.logger.record(name, value)
        self.log.latest.update(self.log.current)
        self.log.latest["timesteps"] = self.num_timesteps
        self.log.latest["rollouts"] = self.log.rollouts
        if self.on_update is not None:
            self.on_update(self.log.latest)
