"""The trained RL-ScanIQA model: the artefact that ``rl-scaniqa score`` and the scorer load.

:class:`ScanIQAModel` is policy + assessor + feature standardisation + settings, saved as an SB3
zip (policy), safetensors + JSON (assessor) and JSON (the rest). Loading never unpickles: the
policy is rebuilt from the saved settings and only its tensors are read from the zip
(``weights_only`` loading).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from gymnasium import spaces

from rl_scaniqa.agents.policy import ScanpathPolicy
from rl_scaniqa.agents.settings import CoTrainSettings
from rl_scaniqa.assessor.model import QualityAssessor
from rl_scaniqa.envs.data.datasets.records import MosScale
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.features.cache import FeatureStats
from rl_scaniqa.envs.panorama_env import observation_space_for
from rl_scaniqa.envs.storage import atomic_path, atomic_write_json

MODEL_FORMAT = "rl_scaniqa.model"
MODEL_VERSION = 1
POLICY_NAME = "policy.zip"
MODEL_CONFIG_NAME = "model.json"


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
        return self.settings.env_kwargs(self.feature_stats)

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
    # SB3 annotates the zip's parameter groups as tensors; each group is a state dict.
    policy.load_state_dict(cast(dict[str, Any], params["policy"]))
