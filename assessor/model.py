"""The quality assessor: attention pooling over a scanpath's viewport features.

For one path of L viewports with (standardised, frozen-backbone) features f_1..f_L and the
global descriptor g of the panorama:

    p_t = drop(GELU(W_p f_t + b_p))              trainable projection of each viewport
    q   = drop(GELU(W_q g + b_q))                trainable projection of the global view
    e_t = wᵀ tanh(A_f p_t + A_g q + A_m (p_t ⊙ q))      attention logit
    α   = softmax_t(e_t)                         (padded positions excluded)
    z   = Σ_t α_t p_t
    ŷ   = sigmoid(MLP([z; q]))                   score on the 0–1 normalised MOS scale

The logit mixes an additive term (A_f p_t + A_g q: which viewport content matters in this
kind of scene) with a multiplicative one (p_t ⊙ q: per-channel agreement of a viewport with
the whole image, so a viewport that departs from the global impression — a local
distortion — can stand out), so α_t depends on the interaction of f_t and g rather than on
f_t alone.

Output head: a sigmoid, not a clamped linear output. Targets are normalised MOS in [0, 1];
a clamp has zero gradient for every prediction outside the range, so an item that overshoots
early stops learning, while the sigmoid always has a gradient and bounds the predictions,
which in turn bounds the terminal rewards (−MSE ∈ [−1, 0]) handed to PPO. Normalised MOS of
real datasets sits well inside (0, 1) (the per-dataset scales are the nominal rating ranges),
so saturation is not an issue. The final bias starts at 0, i.e. predictions start at 0.5,
the middle of the scale. Accuracy does not decide it: on a synthetic regression (512 paths,
400 Adam steps, 3 seeds) both heads reached the same held-out MSE (0.0058 vs 0.0060 at
lr 1e-3, 0.0049 vs 0.0049 at 3e-3 for targets in [0.05, 0.95]; 0.0070 vs 0.0070 for targets
spanning exactly [0, 1]), so the choice rests on the gradient and boundedness argument.

An image's score is the mean of its K path predictions and their standard deviation is the
uncertainty (:meth:`QualityAssessor.predict_image`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from rl_scaniqa.envs.errors import RLScanIQAError
from rl_scaniqa.envs.storage import atomic_path, atomic_write_json

CHECKPOINT_FORMAT = "rl_scaniqa.assessor"
CHECKPOINT_VERSION = 1
WEIGHTS_NAME = "assessor.safetensors"
CONFIG_NAME = "assessor.json"


class AssessorCheckpointError(RLScanIQAError, ValueError):
    """An assessor checkpoint is missing, corrupt, or does not match the expected model."""


@dataclass(frozen=True)
class AssessorConfig:
    """Architecture of a :class:`QualityAssessor`.

    ``feature_dim`` must equal the backbone's feature size D (``FeatureCache.dim``).
    ``hidden_dim`` is the width of the projections and the MLP, ``attention_dim`` the width of
    the attention scorer, ``dropout`` the drop probability after the projections and inside
    the MLP (small datasets: a few hundred images).
    """

    feature_dim: int
    hidden_dim: int = 256
    attention_dim: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("feature_dim", "hidden_dim", "attention_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"AssessorConfig.{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"AssessorConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AssessorConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown AssessorConfig field(s) {unknown}")
        if "feature_dim" not in data:
            raise ValueError("AssessorConfig needs 'feature_dim'")
        return cls(**dict(data))


class QualityAssessor(nn.Module):
    """Scores a scanpath from its viewport features and the global descriptor (see module doc).

    Inputs are the standardised features the env emits (``info["path_features"]`` (L, D) and
    ``info["global_feature"]`` (D,)); batches stack them to (B, L, D) and (B, D).
    """

    def __init__(self, config: AssessorConfig) -> None:
        super().__init__()
        self.config = config
        d, h, a = config.feature_dim, config.hidden_dim, config.attention_dim
        self.proj_viewport = nn.Linear(d, h)
        self.proj_global = nn.Linear(d, h)
        self.drop = nn.Dropout(config.dropout)
        self.att_viewport = nn.Linear(h, a)
        # One bias for the attention sum is enough; the other two terms go without.
        self.att_global = nn.Linear(h, a, bias=False)
        self.att_product = nn.Linear(h, a, bias=False)
        self.att_score = nn.Linear(a, 1, bias=False)
        hidden, output = nn.Linear(2 * h, h), nn.Linear(h, 1)  # in this order: same init draws
        nn.init.zeros_(output.bias)
        self.head = nn.Sequential(hidden, nn.GELU(), nn.Dropout(config.dropout), output)

    def _check_inputs(self, path_features: torch.Tensor, global_features: torch.Tensor,
                      mask: torch.Tensor | None) -> None:
        d = self.config.feature_dim
        if path_features.ndim != 3 or path_features.shape[-1] != d:
            raise ValueError(f"path_features must be (B, L, {d}), got {tuple(path_features.shape)}")
        b, length = path_features.shape[:2]
        if global_features.shape != (b, d):
            raise ValueError(f"global_features must be ({b}, {d}) to match path_features, "
                             f"got {tuple(global_features.shape)}")
        if length == 0:
            raise ValueError("a path needs at least one viewport (L = 0)")
        if mask is not None:
            if mask.shape != (b, length) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor of shape ({b}, {length}), "
                                 f"got {mask.dtype} {tuple(mask.shape)}")
            empty = ~mask.any(dim=1)
            if empty.any():
                raise ValueError(f"mask leaves no valid viewport in path(s) "
                                 f"{torch.nonzero(empty).flatten().tolist()}")

    def forward(self, path_features: torch.Tensor, global_features: torch.Tensor,
                mask: torch.Tensor | None = None, *, return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Score a batch of paths.

        Args:
            path_features: (B, L, D) viewport features in visiting order.
            global_features: (B, D) global descriptor of each path's image.
            mask: optional (B, L) bool, True = real viewport, False = padding. Padded positions
                get zero attention and their features (even NaN) never reach the output.
            return_attention: also return the attention weights α (B, L), rows summing to 1.

        Returns:
            Scores (B,) in (0, 1), or ``(scores, attention)`` when ``return_attention``.
        """
        self._check_inputs(path_features, global_features, mask)
        if mask is not None:
            # Zero the padding first: 0 · NaN would otherwise poison the weighted sum.
            path_features = path_features.masked_fill(~mask.unsqueeze(-1), 0.0)
        p = self.drop(nn.functional.gelu(self.proj_viewport(path_features)))    # (B, L, H)
        q = self.drop(nn.functional.gelu(self.proj_global(global_features)))    # (B, H)
        q_t = q.unsqueeze(1)
        energy = torch.tanh(self.att_viewport(p) + self.att_global(q_t) + self.att_product(p * q_t))
        logits = self.att_score(energy).squeeze(-1)                              # (B, L)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(logits, dim=1)
        pooled = torch.bmm(alpha.unsqueeze(1), p).squeeze(1)                    # (B, H)
        scores = torch.sigmoid(self.head(torch.cat([pooled, q], dim=-1)).squeeze(-1))
        return (scores, alpha) if return_attention else scores

    def _tensor(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        reference = next(self.parameters())
        return torch.as_tensor(values).to(device=reference.device, dtype=reference.dtype)

    @torch.no_grad()
    def predict(self, path_features: np.ndarray | torch.Tensor,
                global_features: np.ndarray | torch.Tensor,
                mask: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """Deterministic scores (dropout off) for a batch, as a float64 NumPy array (B,).

        Takes NumPy arrays or tensors shaped as in :meth:`forward`; restores the previous
        train/eval mode afterwards, so it is safe to call in the middle of training (e.g. from
        a reward wrapper).
        """
        was_training = self.training
        self.eval()
        try:
            m = None if mask is None else torch.as_tensor(mask, dtype=torch.bool,
                                                          device=next(self.parameters()).device)
            scores = self(self._tensor(path_features), self._tensor(global_features), m)
        finally:
            self.train(was_training)
        return scores.double().cpu().numpy()

    def predict_image(self, paths_features: np.ndarray | torch.Tensor,
                      global_feature: np.ndarray | torch.Tensor,
                      mask: np.ndarray | torch.Tensor | None = None) -> tuple[float, float]:
        """Score one image from its K paths: ``(mean, std)`` of the K path scores.

        ``paths_features``: (K, L, D); ``global_feature``: (D,); ``mask``: optional (K, L).
        ``std`` is the population standard deviation (ddof = 0), so K = 1 gives 0 rather
        than nan.
        """
        paths = self._tensor(paths_features)
        if paths.ndim != 3:
            raise ValueError(f"paths_features must be (K, L, D), got {tuple(paths.shape)}")
        g = self._tensor(global_feature)
        if g.ndim != 1:
            raise ValueError(f"global_feature must be (D,), got {tuple(g.shape)}")
        scores = self.predict(paths, g.unsqueeze(0).expand(paths.shape[0], -1), mask)
        return float(scores.mean()), float(scores.std(ddof=0))

    def save(self, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the weights (safetensors) and config (JSON), each atomically.

        ``path`` is a folder (files ``assessor.safetensors`` and ``assessor.json`` inside it) or
        a ``.safetensors`` file (config beside it with the ``.json`` suffix). ``extra`` is any
        JSON-serialisable metadata stored with the config (e.g. ``FeatureStats.to_dict()``,
        the MOS scale); read it back with :func:`load_extra`. The config is also embedded in
        the weights file, so a weights/config pair from different saves is detected on load.
        Returns the weights path.
        """
        weights_path, config_path = _checkpoint_paths(path)
        config_json = json.dumps(self.config.to_dict(), sort_keys=True)
        state = {name: tensor.detach().cpu().contiguous()
                 for name, tensor in self.state_dict().items()}
        with atomic_path(weights_path) as tmp:
            save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT,
                                                 "config": config_json})
        atomic_write_json(config_path, {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "extra": dict(extra) if extra is not None else {},
        })
        return weights_path

    @classmethod
    def load(cls, path: str | Path, *, expected: AssessorConfig | None = None,
             device: str | torch.device = "cpu") -> QualityAssessor:
        """Load a checkpoint written by :meth:`save` (safetensors + JSON, no pickle).

        ``expected``: raise if the stored config differs (e.g. pass the config built from the
        current cache's feature dimension). Raises :class:`AssessorCheckpointError` naming the
        file for missing or corrupt files, a weights/config mismatch, or missing, unexpected or
        wrongly shaped tensors. The model is returned in eval mode.
        """
        weights_path, config_path = _checkpoint_paths(path)
        document = _read_config_document(config_path)
        try:
            config = AssessorConfig.from_dict(document["config"])
        except (KeyError, TypeError, ValueError) as error:
            raise AssessorCheckpointError(f"{config_path}: invalid assessor config: {error}") \
                from error
        if expected is not None and expected != config:
            raise AssessorCheckpointError(
                f"{config_path}: checkpoint config {config.to_dict()} does not match the "
                f"expected {expected.to_dict()}")
        if not weights_path.is_file():
            raise AssessorCheckpointError(f"{weights_path}: assessor weights file not found")
        try:
            with safe_open(str(weights_path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            state = load_file(str(weights_path), device="cpu")
        except (SafetensorError, OSError) as error:
            raise AssessorCheckpointError(f"{weights_path}: unreadable safetensors file: {error}") \
                from error
        if metadata.get("config") != json.dumps(config.to_dict(), sort_keys=True):
            raise AssessorCheckpointError(
                f"{weights_path}: weights were saved with config {metadata.get('config')}, "
                f"but {config_path.name} says {config.to_dict()} (files from different saves?)")
        model = cls(config)
        _check_state(model, state, weights_path)
        model.load_state_dict(state)
        return model.to(device).eval()


def _checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) paths for a folder or a ``.safetensors`` file argument."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    return path / WEIGHTS_NAME, path / CONFIG_NAME


def _read_config_document(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        raise AssessorCheckpointError(f"{config_path}: assessor config file not found")
    try:
        document = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AssessorCheckpointError(f"{config_path}: unreadable JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise AssessorCheckpointError(f"{config_path}: not an assessor checkpoint "
                                      f"(format is not {CHECKPOINT_FORMAT!r})")
    if document.get("version") != CHECKPOINT_VERSION:
        raise AssessorCheckpointError(
            f"{config_path}: unsupported checkpoint version {document.get('version')!r} "
            f"(expected {CHECKPOINT_VERSION})")
    return document


def _check_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: Path) -> None:
    """Raise a readable error unless ``state`` has exactly the model's tensors and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(f"{name} {tuple(state[name].shape)} != {tuple(own[name].shape)}"
                   for name in set(own) & set(state) if state[name].shape != own[name].shape)
    problems = [f"{label}: {items}" for label, items in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    if problems:
        raise AssessorCheckpointError(f"{source}: weights do not fit the model; "
                                      + "; ".join(problems))
    bad = [name for name, tensor in state.items()
           if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if bad:
        raise AssessorCheckpointError(f"{source}: non-finite values in {bad}")


def load_extra(path: str | Path) -> dict[str, Any]:
    """The ``extra`` metadata stored by :meth:`QualityAssessor.save` (``{}`` if none)."""
    _, config_path = _checkpoint_paths(path)
    extra = _read_config_document(config_path).get("extra", {})
    if not isinstance(extra, dict):
        raise AssessorCheckpointError(f"{config_path}: 'extra' must be a JSON object")
    return extra
