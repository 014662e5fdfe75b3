"""A tiny co-training set-up shared by the training tests: a random cache and small settings."""

from __future__ import annotations

from rl_scaniqa.agents.settings import CoTrainSettings
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.features.cache import FeatureCache
from rl_scaniqa.envs.features.random_cache import random_feature_cache

GRID = ViewportGrid(n_lon=4, n_lat=2, size=32)


def tiny_cache() -> FeatureCache:
    """12 random images on the 4 x 2 grid, 6-dimensional features."""
    return random_feature_cache(12, grid=GRID, dim=6, seed=3)


def tiny_settings(**overrides) -> CoTrainSettings:
    """Two envs, 12-step rollouts, 3-step paths and small networks: seconds per run."""
    values = {"total_timesteps": 240, "n_paths": 2, "path_length": 3,
              "ppo": {"n_envs": 2, "n_steps": 12, "batch_size": 12, "n_epochs": 1,
                      "embed_dim": 8, "hidden_dim": 8, "attention_dim": 8},
              "assessor": {"hidden_dim": 16, "attention_dim": 8, "batch_size": 8,
                           "warmup_steps": 2, "cotrain_steps": 20}}
    values.update(overrides)
    return CoTrainSettings.from_dict(values)
