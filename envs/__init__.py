"""RL-ScanIQA environments: panorama data, viewport geometry, feature caches and ``Panorama360Env``.

Importing this package registers ``Panorama360Env-v0`` with Gymnasium (Gymnasium 1.x no longer
reads plugin entry points, so packages register on import, as minigrid does)::

    import gymnasium as gym
    import rl_scaniqa.envs

    env = gym.make("Panorama360Env-v0")                  # after the import
    env = gym.make("rl_scaniqa.envs:Panorama360Env-v0")  # imports the package itself

Registration is idempotent. The public names below are loaded on first access, so importing the
package (which every submodule import does) stays cheap: no OpenCV or feature-cache code runs
until the env is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium.envs.registration import register, registry

#: Gymnasium id of the environment.
ENV_ID = "Panorama360Env-v0"
#: The id with its module prefix: ``gym.make`` imports ``rl_scaniqa.envs`` before looking it up.
QUALIFIED_ENV_ID = f"rl_scaniqa.envs:{ENV_ID}"

if ENV_ID not in registry:
    # No max_episode_steps: the env terminates itself after K*T steps, and a TimeLimit would
    # turn that end into a truncation.
    register(id=ENV_ID, entry_point="rl_scaniqa.envs.panorama_env:Panorama360Env")

_LAZY_EXPORTS = {
    "Panorama360Env": "rl_scaniqa.envs.panorama_env",
    "make_env": "rl_scaniqa.envs.panorama_env",
    "observation_space_for": "rl_scaniqa.envs.panorama_env",
    "ensure_default_data": "rl_scaniqa.envs.features.provision",
    "prepare_feature_cache": "rl_scaniqa.envs.features.provision",
    "random_feature_cache": "rl_scaniqa.envs.features.random_cache",
    "draw_scanpaths": "rl_scaniqa.envs.render",
    "RewardWeights": "rl_scaniqa.envs.rewards",
}

__all__ = ["ENV_ID", "QUALIFIED_ENV_ID", *_LAZY_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rl_scaniqa.envs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
