"""Settings of an RL-ScanIQA model and its co-training run (defaults from the paper's code)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rl_scaniqa.agents.reward_wrapper import TaskRewardSchedule
from rl_scaniqa.agents.script_args import with_values
from rl_scaniqa.assessor.losses import AssessorLossWeights
from rl_scaniqa.envs.features.cache import FeatureStats
from rl_scaniqa.envs.rewards import RewardWeights


@dataclass
class RewardSettings:
    """Env and task reward weights (defaults: ``RewardWeights`` and ``TaskRewardSchedule``)."""

    lambda_entropy: float = RewardWeights.entropy
    """λ_ent: step reward for the viewport's grey-level entropy."""
    lambda_ssim: float = RewardWeights.ssim
    """λ_ssim: step reward for dissimilarity (1 − SSIM) to the previous viewport."""
    lambda_novelty: float = RewardWeights.novelty
    """λ_nov: step reward for a viewport not yet visited in the path."""
    lambda_equator: float = RewardWeights.equator
    """λ_eqb: step reward of the equator prior."""
    beta_coverage: float = RewardWeights.coverage
    """β_cov: set reward for the sphere coverage of the K paths."""
    beta_jaccard: float = RewardWeights.jaccard
    """β_jac: set penalty for the mean pairwise Jaccard overlap of the K paths."""
    set_reward_per_path: bool = False
    """Pay the set reward at every path end, as what that path changed of it (the increments sum
    to the episode's set reward), instead of once at the episode's end (the paper)."""
    task_mse: float = TaskRewardSchedule.mse_weight
    """Terminal task reward weight of −(q̂ − MOS)², the assessor's squared error on the path."""
    task_rank: float = TaskRewardSchedule.rank_weight
    """Terminal task reward weight of the assessor's ranking agreement within the batch."""
    task_gain: float = TaskRewardSchedule.gain_weight
    """Step reward weight of the information gain: how much each step's viewport reduced the
    assessor's squared error on the path (``agents.reward_wrapper``); 0 = none, the paper's reward."""
    task_warmup_fraction: float = 0.1
    """Fraction of the run over which the task weights ramp from 0 (paper: 30 of 300 epochs)."""
    task_baseline_paths: int = 0
    """Random paths of the same image whose task reward is subtracted from each path's (a
    per-image baseline, ``agents.path_baseline``); 0 = none, the paper's reward."""
    damage_hit: float = 0.0
    """Label-guided training: reward of every step whose viewport sees at least a quarter of the
    image's damaged cap, read from the training labels (Synth360's and Real360's locate it;
    ``agents.damage``); 0 = none, the paper's reward. Only training reads the labels: the
    trained policy looks blind, as every other."""

    def __post_init__(self) -> None:
        if self.task_gain < 0:
            raise ValueError(f"task_gain must be 0 (no information gain) or more, got {self.task_gain}")
        if self.task_baseline_paths < 0:
            raise ValueError(f"task_baseline_paths must be 0 (no baseline) or more, got {self.task_baseline_paths}")
        if self.damage_hit < 0:
            raise ValueError(f"damage_hit must be 0 (no label-guided reward) or more, got {self.damage_hit}")

    def env_kwargs(self) -> dict[str, float | bool]:
        """The env's reward keyword arguments."""
        names = ("lambda_entropy", "lambda_ssim", "lambda_novelty", "lambda_equator",
                 "beta_coverage", "beta_jaccard", "set_reward_per_path")
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
    normalize_reward: bool = True
    """Divide the rewards PPO learns from by a running std of the discounted return (SB3's
    ``VecNormalize``); the env and task rewards themselves, and every reported figure, are unscaled."""
    embed_dim: int = 32
    """Policy width of the viewport embedding (32: ~25% faster than 64, same learning curve)."""
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
    cotrain_steps: int = 1_600
    """Assessor steps over the whole PPO run after the warm-up, spread evenly over its rollouts,
    whatever PPO's budget (0 = the assessor stays as the warm-up left it). Alone on random paths
    its validation SRCC peaks near 2,000 steps in all and falls by 8,000, and a budget that grew
    with PPO's (40 steps per rollout) cost every path agent about 0.05 SRCC
    (docs/results/assessor-budget)."""
    policy_path_fraction: float = 0.75
    loss_mse: float = 1.0
    loss_rank: float = 0.2
    loss_consistency: float = 0.2
    loss_triplet: float = 0.3
    loss_cross_rank: float = 0.2

    def __post_init__(self) -> None:
        if self.cotrain_steps < 0:
            raise ValueError(f"cotrain_steps must be 0 (no assessor training during PPO) or more, "
                             f"got {self.cotrain_steps}")

    def loss_weights(self) -> AssessorLossWeights:
        return AssessorLossWeights(mse=self.loss_mse, rank=self.loss_rank,
                                   consistency=self.loss_consistency, triplet=self.loss_triplet,
                                   cross_rank=self.loss_cross_rank)


@dataclass
class CoTrainSettings:
    """Everything :func:`cotrain` needs besides the data."""

    total_timesteps: int = 150_000
    """PPO environment steps of one training."""
    n_paths: int = 15
    """K: scanpaths per image."""
    path_length: int = 7
    """T: viewports per scanpath after the start."""
    start: str = "front"
    """Start viewport of a path: front | random_equator | dataset."""
    seed: int = 0
    """Seed of PPO, the assessor and the environments."""
    device: str = "auto"
    """Torch device: auto, cpu, cuda, cuda:1, ..."""
    reward: RewardSettings = field(default_factory=RewardSettings)
    ppo: PPOSettings = field(default_factory=PPOSettings)
    assessor: AssessorSettings = field(default_factory=AssessorSettings)

    def env_kwargs(self, feature_stats: FeatureStats) -> dict[str, Any]:
        """``Panorama360Env`` arguments that present a run's data as in its training.

        The one definition used for training, validation, evaluation and scoring: the run's
        feature standardisation, start rule and reward weights.
        """
        return {"feature_stats": feature_stats, "start": self.start, **self.reward.env_kwargs()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoTrainSettings:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        return with_values(cls(), data, "settings")


#: The smoke-run training budget of ``reproduce.py --quick`` and ``real360_check.py --quick``:
#: a few thousand PPO steps, enough to exercise every code path.
SMOKE_SETTINGS: dict[str, Any] = {
    "total_timesteps": 2_240, "n_paths": 5,
    "ppo": {"n_envs": 4, "n_steps": 70, "batch_size": 140, "n_epochs": 2},
    "assessor": {"warmup_steps": 100, "cotrain_steps": 80},
}
