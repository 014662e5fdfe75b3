"""Joint training of the scanpath policy (PPO) and the quality assessor, and the trained model.

:func:`cotrain` is the method of the paper in one function, used by ``experiments/run_ppo.py``,
``experiments/reproduce.py`` and the reward sweep:

1. the assessor is warmed up on random paths of the training images (so that the task reward
   carries information from the first rollout);
2. PPO with :class:`~rl_scaniqa.agents.policy.ScanpathPolicy` runs on ``Panorama360Env`` whose
   step and set rewards come from the env and whose terminal task reward comes from the
   assessor through :class:`~rl_scaniqa.assessor.reward_wrapper.AssessorRewardVecWrapper`;
3. after each rollout :class:`~rl_scaniqa.agents.callbacks.CoTrainingCallback` trains the
   assessor on the policy's paths and anneals the entropy bonus; PPO's clip range is annealed by
   a linear schedule (0.2 → 0.1).

:class:`ScanIQAModel` is the result: policy + assessor + feature standardisation + settings,
saved as an SB3 zip (policy), safetensors + JSON (assessor) and JSON (the rest). Loading never
unpickles: the policy is rebuilt from the saved settings and only its tensors are read from the
zip (``weights_only`` loading).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv

from rl_scaniqa.agents.callbacks import CoTrainingCallback
from rl_scaniqa.agents.policy import ScanpathPolicy
from rl_scaniqa.assessor.losses import AssessorLossWeights
from rl_scaniqa.assessor.model import AssessorConfig, QualityAssessor
from rl_scaniqa.assessor.reward_wrapper import AssessorRewardVecWrapper, TaskRewardSchedule
from rl_scaniqa.assessor.training import AssessorTrainer, AssessorTrainingConfig
from rl_scaniqa.envs.arguments import build_dataclass
from rl_scaniqa.envs.backbones import resolve_device
from rl_scaniqa.envs.datasets.records import MosScale
from rl_scaniqa.envs.feature_cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.geometry import ViewportGrid
from rl_scaniqa.envs.io_utils import atomic_path, atomic_write_json
from rl_scaniqa.envs.panorama_env import Panorama360Env, observation_space_for

MODEL_FORMAT = "rl_scaniqa.model"
MODEL_VERSION = 1
POLICY_NAME = "policy.zip"
MODEL_CONFIG_NAME = "model.json"


@dataclass
class RewardSettings:
    """Env and task reward weights (reference values from the paper's code)."""

    lambda_entropy: float = 0.5
    lambda_ssim: float = 1.0
    lambda_novelty: float = 1.0
    lambda_equator: float = 0.2
    beta_coverage: float = 0.2
    beta_jaccard: float = 0.2
    task_mse: float = 2.0
    task_rank: float = 2.0
    #: Fraction of the run over which the task weights ramp from 0 (paper: 30 of 300 epochs).
    task_warmup_fraction: float = 0.1

    def env_kwargs(self) -> dict[str, float]:
        """The env's reward keyword arguments."""
        names = ("lambda_entropy", "lambda_ssim", "lambda_novelty", "lambda_equator",
                 "beta_coverage", "beta_jaccard")
        return {name: getattr(self, name) for name in names}


@dataclass
class PPOSettings:
    """PPO hyperparameters (paper values where they apply; rollout sizes scaled for a CPU)."""

    learning_rate: float = 3e-4
    n_envs: int = 8
    n_steps: int = 105
    batch_size: int = 210
    n_epochs: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_start: float = 0.2
    clip_end: float = 0.1
    ent_coef_start: float = 0.02
    ent_coef_end: float = 0.005
    max_grad_norm: float = 1.0
    # Width 32 measured ~25% faster than 64 (rollouts dominate) with the same learning curve.
    embed_dim: int = 32
    hidden_dim: int = 32
    attention_dim: int = 32


@dataclass
class AssessorSettings:
    """Assessor architecture and optimisation (Adam lr 1e-4 and loss weights from the reference)."""

    hidden_dim: int = 256
    attention_dim: int = 128
    dropout: float = 0.1
    learning_rate: float = 1e-4
    batch_size: int = 32
    warmup_steps: int = 400
    steps_per_rollout: int = 40
    policy_path_fraction: float = 0.75
    loss_mse: float = 1.0
    loss_rank: float = 0.2
    loss_consistency: float = 0.2
    loss_triplet: float = 0.3
    loss_cross_rank: float = 0.2

    def loss_weights(self) -> AssessorLossWeights:
        return AssessorLossWeights(mse=self.loss_mse, rank=self.loss_rank,
                                   consistency=self.loss_consistency, triplet=self.loss_triplet,
                                   cross_rank=self.loss_cross_rank)


@dataclass
class CoTrainSettings:
    """Everything :func:`cotrain` needs besides the data."""

    total_timesteps: int = 150_000
    n_paths: int = 15
    path_length: int = 7
    start: str = "front"
    seed: int = 0
    device: str = "auto"
    reward: RewardSettings = field(default_factory=RewardSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    assessor: AssessorSettings = field(default_factory=AssessorSettings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoTrainSettings:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        return build_dataclass(cls, data, "settings")


@dataclass
class ScanIQAModel:
    """A trained RL-ScanIQA model: scanpath policy, assessor and what their inputs must look like."""

    policy: ScanpathPolicy
    assessor: QualityAssessor
    feature_stats: FeatureStats
    settings: CoTrainSettings
    grid: ViewportGrid
    backbone: str
    mos_scale: MosScale
    metadata: dict[str, Any] = field(default_factory=dict)

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make ``Panorama360Env`` present features as in training."""
        return {"feature_stats": self.feature_stats, "start": self.settings.start,
                **self.settings.reward.env_kwargs()}

    def save(self, directory: str | Path) -> Path:
        """Write the model into ``directory`` (each file atomically) and return it."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_policy(self.policy, directory / POLICY_NAME)
        self.assessor.save(directory)
        atomic_write_json(directory / MODEL_CONFIG_NAME, {
            "format": MODEL_FORMAT, "version": MODEL_VERSION,
            "backbone": self.backbone, "feature_dim": self.assessor.config.feature_dim,
            "grid": asdict(self.grid), "mos_scale": {"low": self.mos_scale.low,
                                                     "high": self.mos_scale.high},
            "feature_stats": self.feature_stats.to_dict(), "settings": self.settings.to_dict(),
            "metadata": self.metadata})
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> ScanIQAModel:
        """Load a model written by :meth:`save` (no unpickling)."""
        directory = Path(directory)
        config_path = directory / MODEL_CONFIG_NAME
        try:
            document = json.loads(config_path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{config_path}: no RL-ScanIQA model here ({MODEL_CONFIG_NAME} "
                                    "is missing)") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path}: not valid JSON ({error})") from None
        if document.get("format") != MODEL_FORMAT or document.get("version") != MODEL_VERSION:
            raise ValueError(f"{config_path}: not an RL-ScanIQA model of version {MODEL_VERSION} "
                             f"(format {document.get('format')!r}, version {document.get('version')!r})")
        settings = CoTrainSettings.from_dict(document["settings"])
        grid = ViewportGrid(**document["grid"])
        dim = int(document["feature_dim"])
        policy = build_policy(settings, grid, dim, device)
        load_policy_weights(policy, directory / POLICY_NAME, device)
        assessor = QualityAssessor.load(directory).to(device)
        assessor.eval()
        scale = document["mos_scale"]
        return cls(policy=policy, assessor=assessor,
                   feature_stats=FeatureStats.from_dict(document["feature_stats"]),
                   settings=settings, grid=grid, backbone=document["backbone"],
                   mos_scale=MosScale(float(scale["low"]), float(scale["high"])),
                   metadata=dict(document.get("metadata", {})))


def policy_kwargs(settings: CoTrainSettings) -> dict[str, Any]:
    """``policy_kwargs`` of the scanpath policy for these settings."""
    return {"features_extractor_kwargs": {"embed_dim": settings.ppo.embed_dim,
                                          "hidden_dim": settings.ppo.hidden_dim,
                                          "attention_dim": settings.ppo.attention_dim}}


def build_policy(settings: CoTrainSettings, grid: ViewportGrid, dim: int,
                 device: str = "cpu") -> ScanpathPolicy:
    """A fresh policy with the architecture these settings describe (weights random)."""
    observation_space = observation_space_for(grid.n_viewports, dim, settings.path_length,
                                              settings.n_paths)
    policy = ScanpathPolicy(observation_space, spaces.Discrete(grid.n_viewports),
                            lambda _: settings.ppo.learning_rate, **policy_kwargs(settings))
    return policy.to(device)


def save_policy(policy: ScanpathPolicy, path: Path) -> None:
    """Write the policy's tensors in SB3's zip layout (``policy.pth`` inside), atomically."""
    from stable_baselines3.common.save_util import save_to_zip_file

    with atomic_path(path) as tmp:
        save_to_zip_file(tmp, data={"policy_class": type(policy).__name__},
                         params={"policy": policy.state_dict()})


def load_policy_weights(policy: ScanpathPolicy, path: Path, device: str = "cpu") -> None:
    """Load the policy tensors of an SB3 zip (``weights_only`` torch loading, data not read)."""
    from stable_baselines3.common.save_util import load_from_zip_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: policy weights are missing")
    _, params, _ = load_from_zip_file(path, load_data=False, device=device)
    if "policy" not in params:
        raise ValueError(f"{path}: no policy tensors in this zip")
    policy.load_state_dict(params["policy"])


def make_training_env(settings: CoTrainSettings, cache: FeatureCache,
                      stats: FeatureStats) -> DummyVecEnv:
    """The training VecEnv: ``n_envs`` envs over every image of ``cache``."""
    kwargs = dict(feature_cache=cache, split="all", n_paths=settings.n_paths,
                  path_length=settings.path_length, start=settings.start, feature_stats=stats,
                  **settings.reward.env_kwargs())

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


@dataclass
class CoTrainRun:
    """The live objects of a co-training run (returned so callers can evaluate or save them)."""

    ppo: PPO
    assessor: QualityAssessor
    trainer: AssessorTrainer
    callback: CoTrainingCallback
    stats: FeatureStats
    env: AssessorRewardVecWrapper


def setup_cotraining(settings: CoTrainSettings, cache: FeatureCache, *,
                     stats: FeatureStats | None = None,
                     validate: Callable[[ScanpathPolicy, QualityAssessor], dict[str, float]] | None = None,
                     validate_every: int = 0,
                     checkpoint: Callable[[CoTrainRun], None] | None = None,
                     checkpoint_every: int = 0,
                     on_update: Callable[[dict[str, Any]], None] | None = None,
                     tensorboard_log: str | None = None) -> CoTrainRun:
    """Build PPO, assessor, reward wrapper, trainer and callback over the images of ``cache``.

    ``cache`` holds the training images only (use :meth:`FeatureCache.subset`); ``stats``
    defaults to statistics fitted on them.
    """
    torch.manual_seed(settings.seed)
    settings = dataclasses.replace(settings, device=resolve_device(settings.device))
    stats = stats or FeatureStats.fit(cache)
    assessor = QualityAssessor(AssessorConfig(
        feature_dim=cache.dim, hidden_dim=settings.assessor.hidden_dim,
        attention_dim=settings.assessor.attention_dim, dropout=settings.assessor.dropout))
    schedule = TaskRewardSchedule(
        mse_weight=settings.reward.task_mse, rank_weight=settings.reward.task_rank,
        warmup_steps=int(settings.reward.task_warmup_fraction * settings.total_timesteps))
    env = AssessorRewardVecWrapper(make_training_env(settings, cache, stats), assessor, schedule)
    # Random warm-up paths start where the env's default ("front") paths start.
    start_viewport = cache.grid.nearest(0.0, 0.0)
    trainer = AssessorTrainer(
        assessor, cache, stats, np.arange(len(cache)), path_length=settings.path_length + 1,
        start_viewport=start_viewport, seed=settings.seed, device=settings.device,
        config=AssessorTrainingConfig(
            learning_rate=settings.assessor.learning_rate, batch_size=settings.assessor.batch_size,
            policy_path_fraction=settings.assessor.policy_path_fraction,
            loss_weights=settings.assessor.loss_weights()))
    ppo_settings = settings.ppo
    ppo = PPO(ScanpathPolicy, env, learning_rate=ppo_settings.learning_rate,
              n_steps=ppo_settings.n_steps, batch_size=ppo_settings.batch_size,
              n_epochs=ppo_settings.n_epochs, gamma=ppo_settings.gamma,
              gae_lambda=ppo_settings.gae_lambda,
              clip_range=LinearSchedule(ppo_settings.clip_start, ppo_settings.clip_end, 1.0),
              ent_coef=ppo_settings.ent_coef_start, max_grad_norm=ppo_settings.max_grad_norm,
              policy_kwargs=policy_kwargs(settings), seed=settings.seed, device=settings.device,
              tensorboard_log=tensorboard_log, verbose=0)
    run: CoTrainRun

    def run_validation() -> dict[str, float]:
        assert validate is not None
        return validate(ppo.policy, assessor)

    def run_checkpoint() -> None:
        assert checkpoint is not None
        checkpoint(run)

    callback = CoTrainingCallback(
        env, trainer, assessor_steps=settings.assessor.steps_per_rollout,
        ent_coef_start=ppo_settings.ent_coef_start, ent_coef_end=ppo_settings.ent_coef_end,
        validate=run_validation if validate else None, validate_every=validate_every,
        checkpoint=run_checkpoint if checkpoint else None, checkpoint_every=checkpoint_every,
        on_update=on_update)
    run = CoTrainRun(ppo=ppo, assessor=assessor, trainer=trainer, callback=callback, stats=stats,
                     env=env)
    return run


def to_model(run: CoTrainRun, settings: CoTrainSettings, cache: FeatureCache,
             metadata: Mapping[str, Any] | None = None) -> ScanIQAModel:
    """Package a run's policy and assessor as a :class:`ScanIQAModel`."""
    return ScanIQAModel(policy=run.ppo.policy, assessor=run.assessor, feature_stats=run.stats,
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


def cotrain(settings: CoTrainSettings, cache: FeatureCache, *, stats: FeatureStats | None = None,
            validate: Callable[[ScanpathPolicy, QualityAssessor], dict[str, float]] | None = None,
            validate_every: int = 0,
            on_update: Callable[[dict[str, Any]], None] | None = None,
            progress: bool = False) -> CoTrainRun:
    """Train one model on the images of ``cache`` from scratch: the whole method in one call.

    :func:`setup_cotraining`, :func:`warm_up_assessor` for ``settings.assessor.warmup_steps``
    steps, then ``settings.total_timesteps`` PPO steps with the co-training callback. For runs
    that checkpoint and resume, call the pieces yourself (as ``experiments/run_ppo.py`` does).
    """
    run = setup_cotraining(settings, cache, stats=stats, validate=validate,
                           validate_every=validate_every, on_update=on_update)
    warm_up_assessor(run, settings.assessor.warmup_steps, progress=progress)
    run.ppo.learn(settings.total_timesteps, callback=run.callback)
    return run
