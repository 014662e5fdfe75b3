"""One evaluation harness for every scanpath agent.

Any object with Stable-Baselines3's ``predict(observation, state, episode_start, deterministic)``
— a trained ``PPO``/``MaskablePPO``/``A2C`` model, a policy, or one of the baseline agents in
:mod:`rl_scaniqa.agents.baselines` — is run on ``Panorama360Env`` for a set of images, and the
assessor scores the paths it produced. Episodes all have K·T steps, so the harness steps a batch
of envs (one per image) in lockstep and calls the agent once per step on the stacked
observations: evaluation costs K·T batched agent calls per batch of images, not per image.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from rl_scaniqa.agents.policy import ScanpathPolicy
from rl_scaniqa.assessor.metrics import evaluate
from rl_scaniqa.assessor.model import QualityAssessor
from rl_scaniqa.envs.features.cache import FeatureCache
from rl_scaniqa.envs.panorama_env import Panorama360Env
from rl_scaniqa.envs.progress import progress_bar


class ScanpathAgent(Protocol):
    """What the harness needs of an agent: SB3's ``predict``."""

    def predict(self, observation: dict[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,) for a batch of n observations, and the next recurrent state."""


class EpisodeAwareAgent(ScanpathAgent, Protocol):
    """An agent that is told which images the next batch of episodes shows.

    ``run_agent`` calls ``begin_episodes`` after resetting a batch's envs and before the first
    ``predict``; row ``i`` of every observation batch until the next call shows cache image
    ``image_indices[i]`` of ``feature_cache``. Agents without the method are run unchanged.
    """

    def begin_episodes(self, image_indices: np.ndarray, feature_cache: FeatureCache) -> None:
        """Prepare for episodes on ``feature_cache`` images ``image_indices`` (row order)."""


@dataclass
class Scanpaths:
    """The K paths an agent produced on each of N images, with what the assessor needs."""

    image_indices: np.ndarray     # (N,) cache indices
    paths: np.ndarray             # (N, K, L) viewport indices, column 0 = start viewport
    path_features: np.ndarray     # (N, K, L, D) standardised viewport features along each path
    global_features: np.ndarray   # (N, D) standardised global descriptors
    mos: np.ndarray               # (N,) raw MOS
    mos_normalized: np.ndarray    # (N,) MOS on the 0–1 scale
    agent_seconds: float          # wall time spent stepping envs and calling the agent

    def viewports_seen(self) -> float:
        """Distinct viewports the K paths of an image visit together, mean over the images.

        K paths that repeat each other give the assessor fewer views to average over than K
        paths that spread out, whatever each path's own choices are worth.
        """
        return float(np.mean([len(np.unique(image_paths)) for image_paths in self.paths]))


class SeededPolicyAgent:
    """An SB3 policy as a harness agent whose samples depend only on the image and the seed.

    ``run_agent`` steps a batch of images in lockstep and calls ``predict`` once per step on the
    stacked observations. SB3's own sampling draws all rows from the global torch RNG, so an
    image's paths would depend on the other images of its batch; here row ``i`` gets a fresh
    generator seeded with ``seed`` at the first step of a batch (``episode_start``), which makes
    every image's paths a function of the image and the seed alone.
    """

    def __init__(self, policy: ScanpathPolicy, seed: int) -> None:
        self.policy = policy
        self.seed = seed
        self._generators: list[torch.Generator] = []
        policy.set_training_mode(False)

    def predict(self, observation: dict[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,) for n stacked observations; ``state`` passes through (no recurrence)."""
        obs, _ = self.policy.obs_to_tensor(observation)
        with torch.no_grad():
            distribution = self.policy.get_distribution(obs).distribution
            if not isinstance(distribution, torch.distributions.Categorical):
                raise TypeError("SeededPolicyAgent samples viewports from a categorical policy, "
                                f"got {type(distribution).__name__}")
            probs = distribution.probs.cpu()
        if deterministic:
            return probs.argmax(dim=1).numpy(), state
        n = probs.shape[0]
        starting = episode_start is not None and bool(np.all(episode_start))
        if starting or len(self._generators) != n:
            self._generators = [torch.Generator().manual_seed(self.seed) for _ in range(n)]
        actions = [int(torch.multinomial(probs[i], 1, generator=generator))
                   for i, generator in enumerate(self._generators)]
        return np.asarray(actions, dtype=np.int64), state


def _accepts_action_masks(agent: ScanpathAgent) -> bool:
    try:
        return "action_masks" in inspect.signature(agent.predict).parameters
    except (TypeError, ValueError):
        return False


def run_agent(agent: ScanpathAgent, feature_cache: FeatureCache, image_indices: Sequence[int], *,
              n_paths: int = 15, path_length: int = 7,
              env_kwargs: Mapping[str, Any] | None = None, batch_size: int = 64,
              deterministic: bool = False, seed: int = 0, progress: bool = False) -> Scanpaths:
    """Run ``agent`` for one episode (K paths) on each image of ``image_indices``.

    ``env_kwargs`` go to :class:`Panorama360Env` (reward weights, ``start``, and above all
    ``feature_stats``: pass the training run's statistics so features are standardised as during
    training). Stochastic agents are seeded through ``seed`` (NumPy and torch), so the same call
    gives the same paths; wrap a policy in :class:`SeededPolicyAgent` to make each image's paths
    independent of the other images in its batch as well. Agents whose ``predict`` takes
    ``action_masks`` (sb3-contrib ``MaskablePPO``) receive the env's masks, and agents with
    ``begin_episodes`` (:class:`EpisodeAwareAgent`) are told each batch's images before its
    first step.
    """
    indices = [int(i) for i in image_indices]
    if not indices:
        raise ValueError("run_agent needs at least one image index")
    kwargs = dict(env_kwargs or {})
    kwargs.update(feature_cache=feature_cache, split="all", n_paths=n_paths,
                  path_length=path_length)
    masks_wanted = _accepts_action_masks(agent)
    begin_episodes = getattr(agent, "begin_episodes", None)
    torch.manual_seed(seed)
    length = path_length + 1
    dim = feature_cache.dim
    paths = np.empty((len(indices), n_paths, length), dtype=np.int64)
    features = np.empty((len(indices), n_paths, length, dim), dtype=np.float32)
    global_features = np.empty((len(indices), dim), dtype=np.float32)
    envs = [Panorama360Env(**kwargs) for _ in range(min(batch_size, len(indices)))]
    started = time.perf_counter()
    with progress_bar("scanpaths", total=len(indices), enabled=progress) as bar:
        for first in range(0, len(indices), batch_size):
            batch = indices[first:first + batch_size]
            active = envs[:len(batch)]
            observations = []
            for slot, (env, image) in enumerate(zip(active, batch)):
                observation, _ = env.reset(seed=seed + first + slot, options={"image_index": image})
                observations.append(observation)
            if callable(begin_episodes):
                begin_episodes(np.asarray(batch, dtype=np.int64), feature_cache)
            state = None
            episode_start = np.ones(len(batch), dtype=bool)
            path_counts = np.zeros(len(batch), dtype=np.int64)
            for _ in range(n_paths * path_length):
                stacked = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
                extra = {}
                if masks_wanted:
                    extra["action_masks"] = np.stack([env.action_masks() for env in active])
                actions, state = agent.predict(stacked, state=state, episode_start=episode_start,
                                               deterministic=deterministic, **extra)
                episode_start = np.zeros(len(batch), dtype=bool)
                for slot, env in enumerate(active):
                    observation, _, _, _, info = env.step(int(actions[slot]))
                    observations[slot] = observation
                    if info["path_done"]:
                        row, k = first + slot, path_counts[slot]
                        paths[row, k] = info["path"]
                        features[row, k] = info["path_features"]
                        global_features[row] = info["global_feature"]
                        path_counts[slot] += 1
            bar.advance(len(batch))
    seconds = time.perf_counter() - started
    chosen = np.asarray(indices, dtype=np.int64)
    return Scanpaths(image_indices=chosen, paths=paths, path_features=features,
                     global_features=global_features,
                     mos=np.asarray(feature_cache.mos, dtype=np.float64)[chosen],
                     mos_normalized=np.asarray(feature_cache.mos_normalized,
                                               dtype=np.float64)[chosen],
                     agent_seconds=seconds)


def score_scanpaths(assessor: QualityAssessor, scanpaths: Scanpaths,
                    batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assessor scores: per-image mean (N,) and std (N,) over the K paths, and all (N, K).

    Scores are on the 0–1 normalised MOS scale.
    """
    n, k, length, dim = scanpaths.path_features.shape
    flat = scanpaths.path_features.reshape(n * k, length, dim)
    repeated = np.repeat(scanpaths.global_features, k, axis=0)
    scores = np.concatenate([
        assessor.predict(flat[i:i + batch_size], repeated[i:i + batch_size])
        for i in range(0, n * k, batch_size)]).reshape(n, k)
    return scores.mean(axis=1), scores.std(axis=1), scores


@dataclass
class AgentEvaluation:
    """An agent's scanpaths on a set of images, the assessor's scores and the protocol metrics."""

    metrics: dict[str, Any]       # assessor.metrics.evaluate: srcc, krcc, plcc, rmse, n, mapping
    predicted: np.ndarray         # (N,) image scores on the dataset's raw MOS scale
    predicted_std: np.ndarray     # (N,) std over the K path scores, in raw MOS units
    scanpaths: Scanpaths
    ms_per_image: float           # agent (env stepping included) + assessor wall time per image


def evaluate_agent(agent: ScanpathAgent, assessor: QualityAssessor, feature_cache: FeatureCache,
                   image_indices: Sequence[int], *, n_paths: int = 15, path_length: int = 7,
                   env_kwargs: Mapping[str, Any] | None = None, batch_size: int = 64,
                   deterministic: bool = False, seed: int = 0,
                   progress: bool = False) -> AgentEvaluation:
    """:func:`run_agent`, then :func:`score_scanpaths`, then the protocol metrics against MOS.

    Scores are mapped back to ``feature_cache.mos_scale`` before the metrics, so RMSE is on the
    dataset's MOS scale (after the 4-parameter logistic fit, as the protocol prescribes).
    """
    scanpaths = run_agent(agent, feature_cache, image_indices, n_paths=n_paths,
                          path_length=path_length, env_kwargs=env_kwargs, batch_size=batch_size,
                          deterministic=deterministic, seed=seed, progress=progress)
    started = time.perf_counter()
    mean, std, _ = score_scanpaths(assessor, scanpaths)
    assessor_seconds = time.perf_counter() - started
    scale = feature_cache.mos_scale
    predicted = np.asarray(scale.denormalize(mean), dtype=np.float64)
    return AgentEvaluation(
        metrics=evaluate(predicted, scanpaths.mos), predicted=predicted,
        predicted_std=std * (scale.high - scale.low), scanpaths=scanpaths,
        ms_per_image=1000.0 * (scanpaths.agent_seconds + assessor_seconds) / len(scanpaths.mos))
