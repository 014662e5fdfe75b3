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

With a ``gain_weight`` above 0 every step also earns the information gain of its viewport,

    r_gain = w_gain(t) * ((q_hat(path without it) - q)^2 - (q_hat(path) - q)^2),

how much the viewport just added reduced the assessor's squared error on the path. Over a path
the gains telescope to the error of the start viewport alone minus the error of the whole path,
so they credit the same paths as the terminal MSE part, but at the step whose viewport made the
difference, instead of spreading one number over T actions through the value function.

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
    """Target weights of the task reward (terminal MSE and ranking parts, per-step information
    gain) and the length of their linear ramp from 0."""

    mse_weight: float = 2.0
    rank_weight: float = 2.0
    warmup_steps: int = 0
    gain_weight: float = 0.0

    def _ramp(self, step: int) -> float:
        return 1.0 if self.warmup_steps <= 0 else min(1.0, step / self.warmup_steps)

    def weights(self, step: int) -> tuple[float, float]:
        """``(w_mse, w_rank)`` after ``step`` environment steps."""
        ramp = self._ramp(step)
        return self.mse_weight * ramp, self.rank_weight * ramp

    def gain(self, step: int) -> float:
        """``w_gain`` after ``step`` environment steps (same ramp as the terminal weights)."""
        return self.gain_weight * self._ramp(step)


@dataclass(frozen=True)
class FinishedPath:
    """A path that ended during a rollout, kept for co-training the assessor."""

    image_index: int
    path: tuple[int, ...]


def score_finished_paths(assessor: QualityAssessor, infos: list[dict[str, Any]]) -> np.ndarray:
    """Assessor predictions (0–1, float64) for the paths described by ``infos``."""
    return assessor.predict(np.stack([info["path_features"] for info in infos]),
                            np.stack([info["global_feature"] for info in infos]))


def information_gain(assessor: QualityAssessor, infos: list[dict[str, Any]]) -> np.ndarray:
    """Unweighted gain of each step's viewport (float64, one per info; see the module doc).

    ``infos`` are the env's step infos: each holds the path so far (start and at least one action).
    """
    lengths = [len(info["path"]) for info in infos]
    if min(lengths) < 2:
        raise ValueError("information_gain needs paths with a start and at least one action")
    n, width = len(infos), max(lengths)
    dim = infos[0]["path_features"].shape[1]
    features = np.zeros((2 * n, width, dim), dtype=np.float32)
    mask = np.zeros((2 * n, width), dtype=bool)
    for row, (info, length) in enumerate(zip(infos, lengths)):
        features[row, :length] = info["path_features"]
        features[n + row, :length - 1] = info["path_features"][:-1]
        mask[row, :length] = True
        mask[n + row, :length - 1] = True
    global_features = np.stack([info["global_feature"] for info in infos])
    predictions = assessor.predict(features, np.concatenate([global_features, global_features]), mask)
    targets = np.array([info["mos_normalized"] for info in infos], dtype=np.float64)
    return (predictions[n:] - targets) ** 2 - (predictions[:n] - targets) ** 2


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


class _PathGains:
    """Each env's information gains of the current path, summed until the path's report."""

    def __init__(self, n_envs: int) -> None:
        self.raw = np.zeros(n_envs)
        self.weighted = np.zeros(n_envs)

    def add(self, assessor: QualityAssessor, infos: list[dict[str, Any]], weight: float) -> np.ndarray:
        """Score the step of every env; return the weighted gains (float32, one per env)."""
        gains = information_gain(assessor, infos)
        self.raw += gains
        self.weighted += weight * gains
        return (weight * gains).astype(np.float32)

    def report(self, env_index: int, mse: float, rank: float, terminal: float) -> dict[str, float]:
        """The ended path's ``task_reward`` info (``total``: terminal reward plus its weighted
        gains, the path's whole task credit) and a fresh sum for the env's next path."""
        gain, weighted = float(self.raw[env_index]), float(self.weighted[env_index])
        self.raw[env_index] = self.weighted[env_index] = 0.0
        return {"mse": mse, "rank": rank, "gain": gain, "total": terminal + weighted}


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
        self._path_gains = _PathGains(self.num_envs)

    def reset(self) -> Any:
        self._path_gains = _PathGains(self.num_envs)  # a reset abandons the paths under way
        return self.venv.reset()

    def step_wait(self):
        observations, rewards, dones, infos = self.venv.step_wait()
        self.num_timesteps += self.num_envs
        rewards = rewards.astype(np.float32, copy=True)
        if self.schedule.gain_weight > 0:
            rewards += self._path_gains.add(self.assessor, infos,
                                            self.schedule.gain(self.num_timesteps))
        ended = [i for i, info in enumerate(infos) if info.get("path_done")]
        if ended:
            ended_infos = [infos[i] for i in ended]
            predictions = score_finished_paths(self.assessor, ended_infos)
            targets = np.array([info["mos_normalized"] for info in ended_infos], dtype=np.float64)
            total, mse_part, rank_part = task_rewards(
                predictions, targets, len(ended), self.schedule.weights(self.num_timesteps),
                _baseline_predictions(self.baseline, self.assessor, ended_infos))
            for slot, env_index in enumerate(ended):
                rewards[env_index] += total[slot]
                info = infos[env_index]
                info["assessor_prediction"] = float(predictions[slot])
                info["task_reward"] = self._path_gains.report(
                    env_index, float(mse_part[slot]), float(rank_part[slot]), float(total[slot]))
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
        self._path_gains = _PathGains(1)

    def reset(self, **kwargs):
        self._path_gains = _PathGains(1)  # a reset abandons the path under way
        return self.env.reset(**kwargs)

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.num_timesteps += 1
        reward = float(reward)
        if self.schedule.gain_weight > 0:
            reward += float(self._path_gains.add(self.assessor, [info],
                                                 self.schedule.gain(self.num_timesteps))[0])
        if info.get("path_done"):
            prediction = score_finished_paths(self.assessor, [info])
            target = np.array([info["mos_normalized"]], dtype=np.float64)
            others = [(p, t) for image, p, t in self._memory if image != info["image_index"]]
            predictions = np.concatenate([prediction, [p for p, _ in others]])
            targets = np.concatenate([target, [t for _, t in others]])
            total, mse_part, rank_part = task_rewards(
                predictions, targets, 1, self.schedule.weights(self.num_timesteps),
                _baseline_predictions(self.baseline, self.assessor, [info]))
            reward += float(total[0])
            info["assessor_prediction"] = float(prediction[0])
            info["task_reward"] = self._path_gains.report(0, float(mse_part[0]), float(rank_part[0]),
                                                          float(total[0]))
            self._memory.append((int(info["image_index"]), float(prediction[0]), float(target[0])))
        return observation, reward, terminated, truncated, info
