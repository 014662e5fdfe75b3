"""Scanpath actor-critic policies for SB3 ``PPO``/``A2C`` and sb3-contrib ``MaskablePPO``.

The action head is the paper's additive attention over the candidate viewports,

    logit_j = v^T tanh(W_h h + W_g g + W_f f_j + b),

with viewports already visited in the current path masked by a large negative logit (-1e8, the
value sb3-contrib uses, so log-probabilities stay finite in ``evaluate_actions``); when every
viewport is visited (T >= V) nothing is masked. The value head is an MLP on [h; g].

How it fits SB3: :class:`~rl_scaniqa.agents.extractor.ScanpathExtractor` produces the keys
``W_f f_j``, ``h``, ``g`` and the visited flags; :class:`ScanpathHead` takes the place of SB3's
``mlp_extractor`` and returns the V logits as ``latent_pi`` and the value features as
``latent_vf``; ``action_net`` is the identity. SB3's own ``forward``, ``evaluate_actions``,
``predict_values``, ``predict`` and ``save``/``load`` therefore run unchanged, and sb3-contrib's
action masks are applied on top of the logits. Both policy classes share one mixin, so the
modules and their initialisation are defined once.

Initialisation follows SB3's orthogonal scheme: gain sqrt(2) for the extractor's and the head's
linear layers, 0.01 for the attention vector ``v`` (it plays the role of ``action_net``, so the
initial policy is near uniform over unvisited viewports) and 1 for ``value_net``. The GRU keeps
PyTorch's default initialisation, as SB3 does for every module that is not ``nn.Linear``/``Conv2d``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from rl_scaniqa.agents.extractor import FeatureLayout, ScanpathExtractor

# The logit given to masked actions; equal to sb3-contrib's, so both masks agree.
MASKED_LOGIT = -1e8


def _tanh(x: th.Tensor) -> th.Tensor:
    """tanh(x) computed as 2 sigmoid(2x) - 1.

    Same function (within float32 rounding), but PyTorch's CPU tanh kernel is about ten times
    slower than its sigmoid kernel, and this is the largest elementwise tensor of the policy
    (B x V x A).
    """
    return th.sigmoid(2.0 * x).mul(2.0).sub(1.0)


class ScanpathHead(nn.Module):
    """Additive attention over the candidates (actor) and an MLP on [h; g] (critic).

    Used as the policy's ``mlp_extractor``: ``forward`` returns ``(logits, latent_vf)`` with
    ``latent_dim_pi = V`` and ``latent_dim_vf = value_arch[-1]`` (or H + E without hidden layers).
    """

    def __init__(self, layout: FeatureLayout, value_arch: list[int], activation_fn: type[nn.Module]) -> None:
        super().__init__()
        self.layout = layout
        state_dim = layout.hidden_dim + layout.global_dim
        # W_h h + W_g g + b as one matmul on [h; g].
        self.query = nn.Linear(state_dim, layout.attention_dim)
        self.score = nn.Linear(layout.attention_dim, 1, bias=False)  # v
        layers: list[nn.Module] = []
        width = state_dim
        for size in value_arch:
            layers += [nn.Linear(width, size), activation_fn()]
            width = size
        self.value_mlp = nn.Sequential(*layers)
        self.latent_dim_pi = layout.n_viewports
        self.latent_dim_vf = width

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Return (masked attention logits (B, V), value features (B, latent_dim_vf))."""
        keys, h, g, visited = self.layout.split(features)
        state = th.cat((h, g), dim=1)
        return self._logits(keys, state, visited), self.value_mlp(state)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        """Masked attention logits (B, V)."""
        keys, h, g, visited = self.layout.split(features)
        return self._logits(keys, th.cat((h, g), dim=1), visited)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        """Value features (B, latent_dim_vf)."""
        _, h, g, _ = self.layout.split(features)
        return self.value_mlp(th.cat((h, g), dim=1))

    def _logits(self, keys: th.Tensor, state: th.Tensor, visited: th.Tensor) -> th.Tensor:
        energy = _tanh(keys + self.query(state).unsqueeze(1))  # (B, V, A)
        logits = self.score(energy).squeeze(-1)  # (B, V)
        masked = visited > 0.5
        # With every viewport visited (T >= V) the env accepts any action: leave them all open.
        masked = masked & ~masked.all(dim=1, keepdim=True)
        return logits.masked_fill(masked, MASKED_LOGIT)


class _ScanpathPolicyMixin:
    """Builds the scanpath modules in place of SB3's MlpExtractor/action_net; shared by both policies.

    ``net_arch`` is the list of hidden widths of the value MLP on [h; g] (default ``[64]``); the
    actor has no MLP (it is the attention), so a dict with a ``"pi"`` entry is rejected.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        features_extractor_class: type[ScanpathExtractor] = ScanpathExtractor,
        share_features_extractor: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"{type(self).__name__} needs a Discrete action space, got {action_space}")
        if not issubclass(features_extractor_class, ScanpathExtractor):
            raise ValueError(f"{type(self).__name__} needs a ScanpathExtractor, got {features_extractor_class.__name__}")
        if not share_features_extractor:
            # The head reads the keys and h/g from one extractor output; two extractors would
            # double the dominant cost for no gain.
            raise ValueError(f"{type(self).__name__} requires share_features_extractor=True")
        if isinstance(net_arch, dict):
            if net_arch.get("pi"):
                raise ValueError("the actor is the attention head: net_arch may only set 'vf' (value MLP widths)")
            net_arch = list(net_arch.get("vf", []))
        super().__init__(  # type: ignore[call-arg]
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[64] if net_arch is None else list(net_arch),
            features_extractor_class=features_extractor_class,
            share_features_extractor=True,
            **kwargs,
        )

    def _build_mlp_extractor(self) -> None:
        """Install :class:`ScanpathHead` as ``mlp_extractor``."""
        layout: FeatureLayout = self.features_extractor.layout  # type: ignore[attr-defined]
        if self.action_space.n != layout.n_viewports:  # type: ignore[attr-defined]
            raise ValueError(
                f"action space has {self.action_space.n} actions but the observation "  # type: ignore[attr-defined]
                f"has {layout.n_viewports} candidates"
            )
        self.mlp_extractor = ScanpathHead(layout, self.net_arch, self.activation_fn)  # type: ignore[attr-defined]

    def _build(self, lr_schedule: Schedule) -> None:
        """Create head, identity ``action_net``, ``value_net``, the init and the optimizer.

        Replaces SB3's ``_build`` rather than patching its result, so the optimizer never holds
        the parameters of a discarded ``action_net``.
        """
        self._build_mlp_extractor()
        self.action_net = nn.Identity()
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:  # type: ignore[attr-defined]
            # Insertion order matters: the attention vector is re-initialised after its head.
            module_gains = {
                self.features_extractor: np.sqrt(2),
                self.mlp_extractor: np.sqrt(2),
                self.mlp_extractor.score: 0.01,
                self.value_net: 1.0,
            }
            for module, gain in module_gains.items():
                module.apply(partial(self.init_weights, gain=gain))  # type: ignore[attr-defined]
        self.optimizer = self.optimizer_class(  # type: ignore[attr-defined]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs  # type: ignore[attr-defined]
        )


class ScanpathPolicy(_ScanpathPolicyMixin, ActorCriticPolicy):
    """GRU + additive-attention scanpath policy for SB3 ``PPO`` and ``A2C``.

    Visited viewports are masked from the ``visited`` observation, so plain PPO never picks one.
    ``policy_kwargs``: ``net_arch`` (value MLP widths), ``features_extractor_kwargs`` (``embed_dim``,
    ``hidden_dim``, ``attention_dim``, ``dedup_min_batch``), and SB3's ``ortho_init``,
    ``activation_fn``, ``optimizer_class``/``optimizer_kwargs``.
    """


class MaskableScanpathPolicy(_ScanpathPolicyMixin, MaskableActorCriticPolicy):
    """The same policy for sb3-contrib ``MaskablePPO`` (env ``action_masks()`` applied on top)."""
