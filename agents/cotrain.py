"""Joint training of the scanpath policy (PPO) and the quality assessor.

:func:`cotrain` is the method of the paper in one function, used by ``experiments/run_ppo.py``,
``experiments/reproduce.py`` and the reward sweep:

1. the assessor is warmed up on random paths of the training images (so that the task reward
   carries information from the first rollout);
2. PPO with :class:`~rl_scaniqa.agents.policy.ScanpathPolicy` runs on ``Panorama360Env`` whose
   step and set rewards come from the env and whose terminal task reward comes from the
   assessor through :class:`~rl_scaniqa.agents.reward_wrapper.AssessorRewardVecWrapper`;
   PPO sees these rewards divided by a running estimate of the return's standard deviation
   (SB3's ``VecNormalize``, rewards only), so the critic's targets stay near unit scale;
3. after each rollout the callbacks of :mod:`rl_scaniqa.agents.callbacks` train the assessor
   on the policy's paths, anneal the entropy bonus, validate and checkpoint; PPO's clip range is
   annealed by a linear schedule (0.2 → 0.1).

Given a checkpoint folder, a run saves itself there every few rollouts and at the end, and a
rerun resumes from it (:mod:`rl_scaniqa.agents.checkpoint`).

:func:`to_model` packages a run as the :class:`~rl_scaniqa.agents.scaniqa_model.ScanIQAModel`
artefact.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

from rl_scaniqa.agents.assessor_training import AssessorTrainer, AssessorTrainingConfig
from rl_scaniqa.agents.callbacks import (
    AssessorTrainingCallback,
    CheckpointCallback,
    CoTrainingCallbacks,
    EntropyAnnealingCallback,
    RewardStatsCallback,
    RolloutCallback,
    RolloutLog,
    ValidationCallback,
)
from rl_scaniqa.agents.checkpoint import restore_checkpoint, save_checkpoint
from rl_scaniqa.agents.damage import DamageHitReward, has_cap
from rl_scaniqa.agents.path_baseline import RandomPathBaseline
from rl_scaniqa.agents.policy import ScanpathPolicy
from rl_scaniqa.agents.reward_wrapper import (
    AssessorRewardVecWrapper,
    TaskRewardSchedule,
)
from rl_scaniqa.agents.scaniqa_model import ScanIQAModel, policy_kwargs
from rl_scaniqa.agents.settings import CoTrainSettings
from rl_scaniqa.assessor.model import AssessorConfig, QualityAssessor
from rl_scaniqa.envs.features.backbones import resolve_device
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.panorama_env import Panorama360Env


def make_training_env(settings: CoTrainSettings, cache: FeatureCache,
                      stats: FeatureStats) -> DummyVecEnv:
    """The training VecEnv: ``n_envs`` envs over every image of ``cache``."""
    kwargs = dict(feature_cache=cache, split="all", n_paths=settings.n_paths,
                  path_length=settings.path_length, **settings.env_kwargs(stats))

    def make(rank: int) -> Callable[[], Panorama360Env]:
        def thunk() -> Panorama360Env:
            env = Panorama360Env(**kwargs)
            env.reset(seed=settings.seed + rank)
            return env
        return thunk

    # The envs only look features up (microseconds a step): DummyVecEnv beats subprocesses here.
    venv = DummyVecEnv([make(rank) for rank in range(settings.ppo.n_envs)])
    venv.seed(settings.seed)
    return venv


def assessor_step_schedule(settings: CoTrainSettings) -> Callable[[int], int]:
    """Assessor steps after the PPO rollout that ended at ``num_timesteps``.

    ``settings.assessor.cotrain_steps`` spread evenly over the run: the steps due by a rollout's
    end, ``cotrain_steps · num_timesteps / total_timesteps`` rounded down, minus those due by the
    rollout before. Stateless, so a resumed run continues the same schedule.
    """
    assessor = settings.assessor
    rollout = settings.ppo.n_envs * settings.ppo.n_steps
    total = settings.total_timesteps

    def due(timesteps: int) -> int:
        return assessor.cotrain_steps * min(max(timesteps, 0), total) // total

    return lambda num_timesteps: due(num_timesteps) - due(num_timesteps - rollout)


@dataclass
class CoTrainRun:
    """The live objects of a co-training run (returned so callers can evaluate or save them)."""

    ppo: PPO
    assessor: QualityAssessor
    trainer: AssessorTrainer
    callback: CoTrainingCallbacks
    stats: FeatureStats
    env: AssessorRewardVecWrapper
    #: The reward scaling PPO trains through (``None`` with ``ppo.normalize_reward=False``).
    reward_scaling: VecNormalize | None = None
    #: Timesteps already done when the run resumed from a checkpoint (``None``: fresh start).
    resumed_from: int | None = None
    #: Wall time of the earlier processes of this run (restored from its checkpoint).
    earlier_seconds: float = 0.0
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def wall_seconds(self) -> float:
        """Wall time of the run over all its processes, up to now."""
        return self.earlier_seconds + time.perf_counter() - self.started

    @property
    def policy(self) -> ScanpathPolicy:
        """PPO's policy, the :class:`ScanpathPolicy` that :func:`setup_cotraining` gave it."""
        policy = self.ppo.policy
        if not isinstance(policy, ScanpathPolicy):
            raise TypeError(f"the run's PPO holds a {type(policy).__name__}, not a ScanpathPolicy")
        return policy


def setup_cotraining(settings: CoTrainSettings, cache: FeatureCache, *,
                     stats: FeatureStats | None = None,
                     validate: Callable[[ScanpathPolicy, QualityAssessor], dict[str, float]] | None = None,
                     validate_every: int = 0,
                     checkpoint_dir: str | Path | None = None,
                     checkpoint_every: int = 0,
                     on_update: Callable[[dict[str, Any]], None] | None = None,
                     tensorboard_log: str | None = None) -> CoTrainRun:
    """Build PPO, assessor, reward wrapper, trainer and callback over the images of ``cache``.

    ``cache`` holds the training images only (use :meth:`FeatureCache.subset`); ``stats``
    defaults to statistics fitted on them. ``validate(policy, assessor)`` runs every
    ``validate_every`` rollouts, a checkpoint is saved to ``checkpoint_dir`` every
    ``checkpoint_every`` rollouts (0 = never).
    """
    torch.manual_seed(settings.seed)
    settings = dataclasses.replace(settings, device=resolve_device(settings.device))
    stats = stats or FeatureStats.fit(cache)
    assessor = QualityAssessor(AssessorConfig(
        feature_dim=cache.dim, hidden_dim=settings.assessor.hidden_dim,
        attention_dim=settings.assessor.attention_dim, dropout=settings.assessor.dropout))
    schedule = TaskRewardSchedule(
        mse_weight=settings.reward.task_mse, rank_weight=settings.reward.task_rank,
        gain_weight=settings.reward.task_gain,
        warmup_steps=int(settings.reward.task_warmup_fraction * settings.total_timesteps))
    venv = make_training_env(settings, cache, stats)
    baseline = None
    if settings.reward.task_baseline_paths > 0:
        baseline = RandomPathBaseline(cache, stats, settings.reward.task_baseline_paths,
                                      feature_clip=venv.get_attr("feature_clip", [0])[0], seed=settings.seed)
    env = AssessorRewardVecWrapper(venv, assessor, schedule, baseline)
    ppo_settings = settings.ppo
    # The returns are large (every one of the K · T steps of an episode earns exploration rewards:
    # 65 to 150 at the start with γ = 0.99), and a critic that must learn that scale at lr 3e-4
    # leaves advantages that bury the task reward. Scaling the rewards keeps its targets near 1.
    ppo_env: VecEnv = env
    if settings.reward.damage_hit > 0:
        if not has_cap(cache).any():
            raise ValueError("settings.reward.damage_hit needs training labels that locate the damage "
                             "(a cap centre and radius, as Synth360's and Real360's); none of the "
                             f"{len(cache)} training images has one")
        ppo_env = DamageHitReward(env, cache, settings.reward.damage_hit)
    reward_scaling = (VecNormalize(ppo_env, norm_obs=False, norm_reward=True, gamma=ppo_settings.gamma)
                      if ppo_settings.normalize_reward else None)
    # Random warm-up paths start where the env's default ("front") paths start.
    start_viewport = cache.grid.front
    trainer = AssessorTrainer(
        assessor, cache, stats, np.arange(len(cache)), path_length=settings.path_length + 1,
        start_viewport=start_viewport, seed=settings.seed, device=settings.device,
        config=AssessorTrainingConfig(
            learning_rate=settings.assessor.learning_rate, batch_size=settings.assessor.batch_size,
            policy_path_fraction=settings.assessor.policy_path_fraction,
            loss_weights=settings.assessor.loss_weights()))
    ppo = PPO(ScanpathPolicy, reward_scaling or ppo_env, learning_rate=ppo_settings.learning_rate,
              n_steps=ppo_settings.n_steps, batch_size=ppo_settings.batch_size,
              n_epochs=ppo_settings.n_epochs, gamma=ppo_settings.gamma,
              gae_lambda=ppo_settings.gae_lambda,
              clip_range=LinearSchedule(ppo_settings.clip_start, ppo_settings.clip_end, 1.0),
              ent_coef=ppo_settings.ent_coef_start, max_grad_norm=ppo_settings.max_grad_norm,
              policy_kwargs=policy_kwargs(settings), seed=settings.seed, device=settings.device,
              tensorboard_log=tensorboard_log, verbose=0)
    log = RolloutLog()
    callbacks: list[RolloutCallback] = [
        RewardStatsCallback(log),
        AssessorTrainingCallback(log, env, trainer, assessor_step_schedule(settings)),
        EntropyAnnealingCallback(log, ppo_settings.ent_coef_start, ppo_settings.ent_coef_end)]
    # ``run`` is bound below, before PPO calls the callbacks for the first time.
    if validate is not None and validate_every > 0:
        callbacks.append(ValidationCallback(
            log, lambda: validate(run.policy, assessor), validate_every))
    if checkpoint_dir is not None and checkpoint_every > 0:
        folder = Path(checkpoint_dir)
        callbacks.append(CheckpointCallback(log, lambda: save_checkpoint(run, folder),
                                            checkpoint_every))
    run = CoTrainRun(ppo=ppo, assessor=assessor, trainer=trainer,
                     callback=CoTrainingCallbacks(callbacks, log, on_update), stats=stats, env=env,
                     reward_scaling=reward_scaling)
    return run


def to_model(run: CoTrainRun, settings: CoTrainSettings, cache: FeatureCache,
             metadata: Mapping[str, Any] | None = None) -> ScanIQAModel:
    """Package a run's policy and assessor as a :class:`ScanIQAModel`."""
    return ScanIQAModel(policy=run.policy, assessor=run.assessor, feature_stats=run.stats,
                        settings=settings, grid=cache.grid, backbone=cache.backbone,
                        mos_scale=cache.mos_scale, metadata=dict(metadata or {}))


def warm_up_assessor(run: CoTrainRun, steps: int, *, progress: bool = False) -> dict[str, float]:
    """Train the run's assessor alone for ``steps`` steps on random paths of the training images.

    Done before PPO starts, so the task reward of the first rollout already carries information.
    Returns the losses of the last step (empty for ``steps == 0``).
    """
    from rl_scaniqa.envs.progress import progress_bar

    losses: dict[str, float] = {}
    with progress_bar("assessor warm-up", steps, unit="step", enabled=progress) as bar:
        for _ in range(steps):
            losses = run.trainer.train_steps(1)
            bar.advance()
        if losses:
            bar.describe(f"assessor warm-up (loss {losses.get('total', float('nan')):.4f})")
    return losses


def resume_or_warm_up(run: CoTrainRun, settings: CoTrainSettings,
                      checkpoint_dir: str | Path | None, *, progress: bool = False) -> int:
    """Restore the checkpoint in ``checkpoint_dir`` if there is one, else warm the assessor up.

    Returns the PPO timesteps already done (0 for a fresh start) and records them in
    ``run.resumed_from``.
    """
    done = restore_checkpoint(run, checkpoint_dir) if checkpoint_dir is not None else None
    if done is None:
        warm_up_assessor(run, settings.assessor.warmup_steps, progress=progress)
        return 0
    run.resumed_from = done
    return done


def train_to_budget(run: CoTrainRun, settings: CoTrainSettings, done: int,
                    checkpoint_dir: str | Path | None) -> None:
    """Run PPO (with the co-training callbacks) up to ``settings.total_timesteps``.

    With ``checkpoint_dir`` the finished run is checkpointed too, so a rerun finds it complete.
    """
    remaining = settings.total_timesteps - done
    if remaining <= 0:
        return
    run.ppo.learn(remaining, callback=run.callback, reset_num_timesteps=not done,
                  tb_log_name="ppo")
    if checkpoint_dir is not None:
        save_checkpoint(run, checkpoint_dir)


def cotrain(settings: CoTrainSettings, cache: FeatureCache, *, stats: FeatureStats | None = None,
            validate: Callable[[ScanpathPolicy, QualityAssessor], dict[str, float]] | None = None,
            validate_every: int = 0,
            checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
            on_update: Callable[[dict[str, Any]], None] | None = None,
            progress: bool = False) -> CoTrainRun:
    """Train one model on the images of ``cache``: the whole method in one call.

    :func:`setup_cotraining`, :func:`resume_or_warm_up` (the assessor warm-up of
    ``settings.assessor.warmup_steps`` steps on a fresh start), then :func:`train_to_budget`.
    With ``checkpoint_dir``, the run is saved there every ``checkpoint_every`` rollouts and at
    the end, and a call with the same folder continues a killed run from its last checkpoint.
    """
    run = setup_cotraining(settings, cache, stats=stats, validate=validate,
                           validate_every=validate_every, checkpoint_dir=checkpoint_dir,
                           checkpoint_every=checkpoint_every, on_update=on_update)
    done = resume_or_warm_up(run, settings, checkpoint_dir, progress=progress)
    train_to_budget(run, settings, done, checkpoint_dir)
    return run
