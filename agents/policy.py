"""Scanpath actor-critic policies for SB3 ``PPO``/``A2C`` and sb3-contrib ``MaskablePPO``.

The actor is the paper's additive attention over the candidate viewports,

    logit_j = v^T tanh(W_h h + W_g g + W_f f_j + b),

computed with the GRU state ``h`` and the projections by
:class:`~rl_scaniqa.agents.extractor.ScanpathExtractor` (its docstring explains the architecture
and the speed tricks). Viewports already visited in the current path get the logit
:data:`~rl_scaniqa.agents.extractor.MASKED_LOGIT` (-1e8, finite, so ``evaluate_actions`` never sees
``-inf``), except when every viewport is visited (T >= V). The critic is an MLP on [h; g; τ]
(τ: how far the episode has come, see the extractor) followed by SB3's ``value_net``.

How it fits SB3: the extractor's output is ``[logits ; h ; g ; τ]``; :class:`ScanpathHead` is the
``mlp_extractor`` (logits through as ``latent_pi``, value MLP as ``latent_vf``) and ``action_net``
is ``nn.Identity``. SB3's own ``forward``, ``evaluate_actions``, ``get_distribution``,
``predict_values``, ``predict`` and ``save``/``load`` therefore run unchanged, and sb3-contrib
applies its action masks on top of the logits. Both policy classes share one mixin, so modules
and initialisation are defined once.

Initialisation follows SB3's orthogonal scheme: gain sqrt(2) for every linear layer of the
extractor and the value MLP, 0.01 for the attention vector ``v`` (it plays the part of SB3's
``action_net``, so the first policy is near uniform over the unvisited viewports) and 1 for
``value_net``. The GRU keeps PyTorch's default initialisation, as SB3 does for every module that
is not ``nn.Linear``/``nn.Conv2d``.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from rl_scaniqa.agents.extractor import ScanpathExtractor


class ScanpathHead(nn.Module):
    """SB3 ``mlp_extractor`` of the scanpath policies: logits through, value MLP on [h; g; τ].

    Reads the extractor output ``[masked logits (V) ; h ; g ; τ]``; ``latent_dim_pi = V`` (so
    ``action_net`` is the identity) and ``latent_dim_vf`` is the value MLP's width (or that of
    [h; g; τ] when ``value_arch`` is empty).
    """

    def __init__(self, n_viewports: int, critic_dim: int, value_arch: list[int],
                 activation_fn: type[nn.Module]) -> None:
        super().__init__()
        self.n_viewports = n_viewports
        layers: list[nn.Module] = []
        width = critic_dim
        for size in value_arch:
            layers += [nn.Linear(width, size), activation_fn()]
            width = size
        self.value_mlp = nn.Sequential(*layers)
        self.latent_dim_pi = n_viewports
        self.latent_dim_vf = width

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Return (logits (B, V), value features (B, latent_dim_vf))."""
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        """The masked attention logits (B, V)."""
        return features[:, : self.n_viewports]

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        """Value features (B, latent_dim_vf) from [h; g; τ]."""
        return self.value_mlp(features[:, self.n_viewports :])


# The mixin is written against SB3's (Maskable)ActorCriticPolicy, which follows it in the MRO;
# type checkers see it as a subclass of ActorCriticPolicy to know the attributes it uses.
if TYPE_CHECKING:
    _PolicyBase = ActorCriticPolicy
else:
    _PolicyBase = object


class _ScanpathPolicyMixin(_PolicyBase):
    """Builds the scanpath head in place of SB3's MlpExtractor and action_net (both policies).

    ``net_arch`` is the list of hidden widths of the value MLP on [h; g; τ] (default ``[64]``); the
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
            raise ValueError(f"{type(self).__name__} needs a Discrete action space, "
                             f"got {action_space}")
        if not issubclass(features_extractor_class, ScanpathExtractor):
            raise ValueError(f"{type(self).__name__} needs a ScanpathExtractor, "
                             f"got {features_extractor_class.__name__}")
        if not share_features_extractor:
            # Actor and critic read one extractor output; a second extractor would double the
            # dominant cost.
            raise ValueError(f"{type(self).__name__} requires share_features_extractor=True")
        if isinstance(net_arch, dict):
            if net_arch.get("pi"):
                raise ValueError("the actor is the attention: net_arch may only set 'vf' "
                                 "(value MLP widths)")
            net_arch = list(net_arch.get("vf", []))
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[64] if net_arch is None else list(net_arch),
            features_extractor_class=features_extractor_class,
            share_features_extractor=True,
            **kwargs,
        )

    def _scanpath_extractor(self) -> ScanpathExtractor:
        extractor = self.features_extractor
        if not isinstance(extractor, ScanpathExtractor):  # __init__ checked the class
            raise TypeError(f"expected a ScanpathExtractor, got {type(extractor).__name__}")
        return extractor

    def _build_mlp_extractor(self) -> None:
        """Install :class:`ScanpathHead` as ``mlp_extractor``."""
        extractor = self._scanpath_extractor()
        # __init__ checked the action space and turned net_arch into a list.
        n_actions = int(cast(spaces.Discrete, self.action_space).n)
        if n_actions != extractor.n_viewports:
            raise ValueError(f"action space has {n_actions} actions but the observation has "
                             f"{extractor.n_viewports} candidates")
        self.mlp_extractor = ScanpathHead(  # type: ignore[assignment]
            extractor.n_viewports, extractor.critic_dim, cast(list[int], self.net_arch),
            self.activation_fn)

    def _build(self, lr_schedule: Schedule) -> None:
        """Create head, identity ``action_net``, ``value_net``, the init and the optimizer.

        Replaces SB3's ``_build`` rather than patching its result, so the optimizer never holds
        the parameters of a discarded ``action_net``.
        """
        self._build_mlp_extractor()
        self.action_net = nn.Identity()
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            # Insertion order matters: ``v`` is re-initialised after the rest of the extractor.
            module_gains: dict[nn.Module, float] = {
                self.features_extractor: np.sqrt(2),
                self.mlp_extractor: np.sqrt(2),
                self._scanpath_extractor().score: 0.01,
                self.value_net: 1.0,
            }
            for module, gain in module_gains.items():
                module.apply(partial(self.init_weights, gain=gain))
        # Every torch optimiser takes lr; torch types the Optimizer base class without it.
        self.optimizer = self.optimizer_class(  # type: ignore[call-arg]
            self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)


class ScanpathPolicy(_ScanpathPolicyMixin, ActorCriticPolicy):
    """GRU + additive-attention scanpath policy for SB3 ``PPO`` and ``A2C``.

    Visited viewports are masked from the ``visited`` observation, so plain PPO never picks one.
    ``policy_kwargs``: ``net_arch`` (value MLP widths, default ``[64]``),
    ``features_extractor_kwargs`` (``embed_dim``, ``hidden_dim``, ``attention_dim`` (default 32
    each), ``dedup_min_batch``), and SB3's ``ortho_init``, ``activation_fn`` (value MLP),
    ``optimizer_class``/``optimizer_kwargs``.
    """


# sb3-contrib types mlp_extractor as MlpExtractor and action_net as a Linear layer; the mixin
# installs ScanpathHead and an Identity, which answer the same calls (forward_actor/critic,
# latent_dim_pi/vf).
class MaskableScanpathPolicy(_ScanpathPolicyMixin, MaskableActorCriticPolicy):  # type: ignore[misc]
    """The same policy for sb3-contrib ``MaskablePPO`` (env ``action_masks()`` applied on top)."""
