"""The trained RL-ScanIQA model: the artefact that ``rl-scaniqa score`` and the scorer load.

:class:`ScanIQAModel` is policy + assessor + feature standardisation + settings, saved as an SB3
zip (policy), safetensors + JSON (assessor) and JSON (the rest). Loading never unpickles: the
policy is rebuilt from the saved settings and only its tensors are read from the zip
(``weights_only`` loading).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from gymnasium import spaces

from rl_scaniqa.agents.policy import ScanpathPolicy
from rl_scaniqa.agents.settings import CoTrainSettings
from rl_scaniqa.assessor.model import QualityAssessor
from rl_scaniqa.envs.data.datasets.records import MosScale
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.errors import RLScanIQAError
from rl_scaniqa.envs.features.cache import FeatureStats
from rl_scaniqa.envs.panorama_env import observation_space_for
from rl_scaniqa.envs.storage import atomic_path, atomic_write_json

T = TypeVar("T")


class ModelLoadError(RLScanIQAError, ValueError):
    """A model folder whose files disagree with each other or with ``model.json``."""


MODEL_FORMAT = "rl_scaniqa.model"
#: 2: trained on features of the canonical-density ERP (``canonical_erp``); version 1 models saw
#: the native resolution and would be fed features they never learnt from.
#: 3: the critic reads the episode's progress τ (its value MLP is two inputs wider than in 2).
#: 4: the actor reads the env's ``seen`` entry (the earlier paths' viewports), one more parameter.
MODEL_VERSION = 4
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
        save_policy(self.policy, directory / POLICY_NAME,
                    architecture(self.settings, self.grid, self.assessor.config.feature_dim))
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
            why = {1: "were trained on native-resolution features",
                   2: "have a critic without the episode's progress",
                   3: "have an actor blind to the episode's earlier paths"}.get(document.get("version"))
            hint = (f"; version {document.get('version')} models {why}: retrain with this release"
                    if document.get("format") == MODEL_FORMAT and why else "")
            raise ValueError(f"{config_path}: not an RL-ScanIQA model of version {MODEL_VERSION} "
                             f"(format {document.get('format')!r}, version {document.get('version')!r}){hint}")
        def read_field(name: str, parse: Callable[[Any], T]) -> T:
            try:
                return parse(document[name])
            except (KeyError, TypeError, ValueError) as error:
                raise ModelLoadError(f"{config_path}: field {name!r} is missing or malformed "
                                     f"({error})") from None

        settings = read_field("settings", CoTrainSettings.from_dict)
        grid = read_field("grid", lambda values: ViewportGrid(**values))
        dim = read_field("feature_dim", int)
        stats = read_field("feature_stats", FeatureStats.from_dict)
        scale = read_field("mos_scale", lambda values: MosScale(float(values["low"]),
                                                           float(values["high"])))
        backbone = read_field("backbone", str)
        expected = architecture(settings, grid, dim)
        policy_path = directory / POLICY_NAME
        _check_architecture(policy_path, config_path, expected)
        policy = build_policy(settings, grid, dim, device)
        try:
            load_policy_weights(policy, policy_path, device)
        except RuntimeError as error:  # torch: tensors of other shapes than model.json implies
            raise ModelLoadError(
                f"{policy_path}: its tensors do not fit the architecture {config_path} describes "
                f"(feature_dim, settings.ppo.embed_dim / hidden_dim / attention_dim): "
                f"{str(error).splitlines()[0]}") from None
        assessor = QualityAssessor.load(directory).to(device)
        if assessor.config.feature_dim != dim:
            raise ModelLoadError(f"{config_path}: field 'feature_dim' is {dim}, but the assessor "
                                 f"in {directory} takes {assessor.config.feature_dim} features")
        assessor.eval()
        return cls(policy=policy, assessor=assessor, feature_stats=stats, settings=settings,
                   grid=grid, backbone=backbone, mos_scale=scale,
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


def architecture(settings: CoTrainSettings, grid: ViewportGrid, dim: int) -> dict[str, Any]:
    """What a policy's weights were trained for, as ``model.json`` field names and values.

    The policy's tensors do not depend on the grid or the path shape, so only this record, kept
    in the policy's zip, tells a model folder whose ``model.json`` was edited afterwards.
    """
    values: dict[str, Any] = {f"grid.{name}": value for name, value in asdict(grid).items()}
    values.update({"feature_dim": dim, "settings.path_length": settings.path_length,
                   "settings.n_paths": settings.n_paths,
                   "settings.ppo.embed_dim": settings.ppo.embed_dim,
                   "settings.ppo.hidden_dim": settings.ppo.hidden_dim,
                   "settings.ppo.attention_dim": settings.ppo.attention_dim})
    return values


def _check_architecture(policy_path: Path, config_path: Path, expected: dict[str, Any]) -> None:
    """Raise :class:`ModelLoadError` naming each field where the two files disagree."""
    try:
        with zipfile.ZipFile(policy_path) as archive:
            # SB3's "data" entry is JSON; read it as such, never through SB3's unpickling path.
            data = json.loads(archive.read("data"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{policy_path}: policy weights are missing") from None
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{policy_path}: not a readable policy archive ({error})") from None
    trained = data.get("architecture")
    if trained is None:
        return  # written before the record existed: the tensor shapes are the only check
    differing = [f"{name} is {expected.get(name)!r} but the policy was trained with {value!r}"
                 for name, value in trained.items() if expected.get(name) != value]
    if differing:
        raise ModelLoadError(f"{config_path} does not match {policy_path.name}: "
                             + "; ".join(differing))


def save_policy(policy: ScanpathPolicy, path: Path, trained_for: dict[str, Any]) -> None:
    """Write the policy's tensors in SB3's zip layout (``policy.pth`` inside), atomically.

    ``trained_for`` is the :func:`architecture` record stored beside them.
    """
    from stable_baselines3.common.save_util import save_to_zip_file

    with atomic_path(path) as tmp:
        save_to_zip_file(tmp, data={"policy_class": type(policy).__name__,
                                    "architecture": trained_for},
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
