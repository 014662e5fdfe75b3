"""Task-level (terminal) reward: the quality assessor's error on each finished path.

At the end of every path the env puts the path's standardised viewport features, the global
descriptor and the normalised MOS into ``info`` (keys ``path_done``, ``path_features``,
``global_feature``, ``mos_normalized``). The wrappers here score those paths with the current
assessor and add

    r_task = w_mse(t) * (-(q_hat - q)^2) + w_rank(t) * ranking_reward

to the reward of that step, where ``ranking_reward`` compares the path's prediction with the other
paths that ended in the same batch (``assessor.losses.ranking_reward``). Both weights ramp linearly
from 0 to their targets over ``warmup_steps`` environment steps, so the policy first learns to
explore while the assessor is still poor (the paper ramps over its first 30 epochs).

With a :class:`~rl_scaniqa.agents.path_baseline.RandomPathBaseline`, each part is reported
relative to the mean of the same part for random paths of the same image: the reward then credits
what the path revealed beyond a random look, not which image it was given.

Why a VecEnv wrapper: the assessor is being trained in the main process; computing the reward
there keeps it batched and current, with no weights shipped to ``SubprocVecEnv`` workers. SB3 reads
the rewards returned by ``step_wait`` into its rollout buffer, so advantages include this term.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from rl_scaniqa.assessor.losses import mse_reward, ranking_reward
from rl_scaniqa.assessor.model import QualityAssessor

if TYPE_CHECKING:  # path_baseline imports assessor_training, which imports FinishedPath from here
    from rl_scaniqa.agents.path_baseline import RandomPathBaseline


@dataclass
class TaskRewardSchedule:
    """Target weights of the task reward and the length of their linear ramp from 0."""

    mse_weight: float = 2.0
    rank_weight: float = 2.0
    warmup_steps: int = 0

    def weights(self, step: int) -> tuple[float, float]:
        """``(w_mse, w_rank)`` after ``step`` environment steps."""
        ramp = 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)
        return self.mse_weight * ramp, self.rank_weight * ramp


@dataclass(frozen=True)
class FinishedPath:
    """A path that ended during a rollout, kept for co-training the assessor."""

    image_index: int
    path: tuple[int, ...]


def score_finished_paths(assessor: QualityAssessor, infos: list[dict[str, Any]]) -> np.ndarray:
    """Assessor predictions (0–1, float64) for the paths described by ``infos``."""
    return assessor.predict(np.stack([info["path_features"] for info in infos]),
                            np.stack([info["global_feature"] for info in infos]))


def task_rewards(predictions: np.ndarray, targets: np.ndarray, n_scored: int,
                 weights: tuple[float, float], baseline_predictions: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted task reward of the first ``n_scored`` items, and its unweighted parts.

    Every item takes part in the ranking comparison, but only the first ``n_scored`` are paths that
    just ended; the rest are reference items (the single-env wrapper's memory of recent paths).
    ``baseline_predictions`` ``(R, n_scored)``: predictions for R random paths of each scored
    item's image; each part is then the path's minus the mean of the random paths' (for the
    ranking part, the random paths take the scored items' places in the same comparison).
    """
    mse_part = mse_reward(predictions[:n_scored], targets[:n_scored])
    rank_part = ranking_reward(predictions, targets)[:n_scored]
    if baseline_predictions is not None:
        scored = np.repeat(targets[None, :n_scored], len(baseline_predictions), axis=0)
        mse_part = mse_part - mse_reward(baseline_predictions, scored).mean(axis=0)
        rank_part = rank_part - np.mean(
            [ranking_reward(np.concatenate([row, predictions[n_scored:]]), targets)[:n_scored]
             for row in baseline_predictions], axis=0)
    w_mse, w_rank = weights
    return w_mse * mse_part + w_rank * rank_part, mse_part, rank_part


def _baseline_predictions(baseline: RandomPathBaseline | None, assessor: QualityAssessor,
                          infos: list[dict[str, Any]]) -> np.ndarray | None:
    if baseline is None:
        return None
    return baseline.predictions(assessor, [int(info["image_index"]) for info in infos],
                                [list(info["path"]) for info in infos],
                                np.stack([info["global_feature"] for info in infos]))


class AssessorRewardVecWrapper(VecEnvWrapper):
    """Adds the assessor's terminal reward to every path end of a vectorised env.

    Parameters
    ----------
    venv:
        A VecEnv of ``Panorama360Env``.
    assessor:
        The quality assessor; the wrapper holds a reference, so training it elsewhere (the
        co-training callback) changes the reward from the next step on.
    schedule:
        Target weights and ramp.
    baseline:
        Optional per-image baseline (random paths of the same image); ``None``: the paper's reward.

    The finished paths of the rollout accumulate in :attr:`finished_paths` until
    :meth:`pop_finished_paths` is called (by the co-training callback).
    """

    def __init__(self, venv: VecEnv, assessor: QualityAssessor,
                 schedule: TaskRewardSchedule | None = None, baseline: RandomPathBaseline | None = None):
        super().__init__(venv)
        self.assessor = assessor
        self.schedule = schedule or TaskRewardSchedule()
        self.baseline = baseline
        self.num_timesteps = 0
        self.finished_paths: list[FinishedPath] = []

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self):
        observations, rewards, dones, infos = self.venv.step_wait()
        self.num_timesteps += self.num_envs
        ended = [i for i, info in enumerate(infos) if info.get("path_done")]
        if ended:
            ended_infos = [infos[i] for i in ended]
            predictions = score_finished_paths(self.assessor, ended_infos)
            targets = np.array([info["mos_normalized"] for info in ended_infos], dtype=np.float64)
            total, mse_part, rank_part = task_rewards(
                predictions, targets, len(ended), self.schedule.weights(self.num_timesteps),
                _baseline_predictions(self.baseline, self.assessor, ended_infos))
            rewards = rewards.astype(np.float32, copy=True)
            for slot, env_index in enumerate(ended):
                rewards[env_index] += total[slot]
                info = infos[env_index]
                info["assessor_prediction"] = float(predictions[slot])
                info["task_reward"] = {"mse": float(mse_part[slot]), "rank": float(rank_part[slot]),
                                       "total": float(total[slot])}
                self.finished_paths.append(
                    FinishedPath(int(info["image_index"]), tuple(int(v) for v in info["path"])))
        return observations, rewards, dones, infos

    def pop_finished_paths(self) -> list[FinishedPath]:
        """Return and forget the paths finished since the last call."""
        paths, self.finished_paths = self.finished_paths, []
        return paths


class AssessorRewardWrapper(gym.Wrapper):
    """Single-env version of :class:`AssessorRewardVecWrapper` for users of ``gym.make``.

    With one env there is no batch to rank against, so the ranking term compares each path with a
    memory of the ``memory_size`` most recent finished paths of other images.
    """

    def __init__(self, env: gym.Env, assessor: QualityAssessor,
                 schedule: TaskRewardSchedule | None = None, memory_size: int = 64,
                 baseline: RandomPathBaseline | None = None):
        super().__init__(env)
        self.assessor = assessor
        self.schedule = schedule or TaskRewardSchedule()
        self.baseline = baseline
        self.num_timesteps = 0
        self._memory: deque[tuple[int, float, float]] = deque(maxlen=memory_size)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.num_timesteps += 1
        if info.get("path_done"):
            prediction = score_finished_paths(self.assessor, [info])
            target = np.array([info["mos_normalized"]], dtype=np.float64)
            others = [(p, t) for image, p, t in self._memory if image != info["image_index"]]
            predictions = np.concatenate([prediction, [p for p, _ in others]])
            targets = np.concatenate([target, [t for _, t in others]])
            total, mse_part, rank_part = task_rewards(
                predictions, targets, 1, self.schedule.weights(self.num_timesteps),
                _baseline_predictions(self.baseline, self.assessor, [info]))
            reward = float(reward) + float(total[0])
            info["assessor_prediction"] = float(prediction[0])
            info["task_reward"] = {"mse": float(mse_part[0]), "rank": float(rank_part[0]),
                                   "total": float(total[0])}
            self._memory.append((int(info["image_index"]), float(prediction[0]), float(target[0])))
        return observation, reward, terminated, truncated, info
