"""Features extractor of the scanpath policy: candidate projection + GRU over the path so far.

Architecture (per observation of ``Panorama360Env``, V viewports, D feature dim, L = T + 1)::

    f_j = P c_j                    candidate projection, D -> E, for all V candidates
    k_j = W_f f_j                  attention key of candidate j, E -> A (no bias: b lives in the query)
    x_t = f_{history[t]}           projected features of the viewports visited so far
    h   = GRU(x_0 .. x_{n-1})      n = number of valid history entries, h = last valid hidden state
    g   = P_g g_raw                global projection, D -> E

The extractor returns one flat tensor ``[k_1 .. k_V ; h ; g ; visited]`` whose layout is described
by :class:`FeatureLayout`; :class:`rl_scaniqa.agents.policy.ScanpathHead` turns it into the
attention logits and the value features.

Speed trick. The projection of the V x D candidate matrix dominates the cost, and the candidates
are identical for every step of an image's episode (K paths x T steps). A PPO minibatch drawn from
a rollout therefore holds few distinct images, so the projection (and the key projection) is
computed once per distinct candidate matrix and gathered back: rows are grouped by a cheap
fingerprint (a fixed random projection of the flattened candidates) and the grouping is verified
with an exact comparison, so the result is bit-for-bit that of the plain computation; on a
fingerprint collision the plain computation is used. Below ``dedup_min_batch`` rows (the rollout,
one observation per env) the bookkeeping costs more than it saves and is skipped. Computing
``f`` first and ``W_f f`` second costs D*E + E*A per candidate, cheaper than a fused
D x (E + A) matmul because ``f`` is needed anyway as the GRU input.

Padding invariance: the history is a prefix of valid indices followed by -1. The GRU is causal, so
its output at the last valid position does not depend on what follows; the sequence is cut at the
longest valid prefix in the batch, which also saves recurrent steps early in a path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

OBSERVATION_KEYS = ("global", "candidates", "history", "visited")


@dataclass(frozen=True)
class FeatureLayout:
    """Where each part lies in the flat extractor output (widths in floats, in this order)."""

    n_viewports: int
    attention_dim: int
    hidden_dim: int
    global_dim: int

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        """Widths of ``keys`` (V*A), ``h`` (H), ``g`` (E) and ``visited`` (V)."""
        return (self.n_viewports * self.attention_dim, self.hidden_dim, self.global_dim, self.n_viewports)

    @property
    def total(self) -> int:
        """The extractor's ``features_dim``."""
        return sum(self.sizes)

    def split(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """Split ``features`` (B, total) into keys (B, V, A), h (B, H), g (B, E), visited (B, V)."""
        keys, h, g, visited = th.split(features, self.sizes, dim=1)
        return keys.reshape(-1, self.n_viewports, self.attention_dim), h, g, visited


def _check_space(observation_space: spaces.Space) -> tuple[int, int, int]:
    """Return (V, D, L) of a Panorama360Env observation space or raise ``ValueError``."""
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(f"ScanpathExtractor needs a Dict observation space, got {observation_space}")
    missing = [key for key in OBSERVATION_KEYS if key not in observation_space.spaces]
    if missing:
        raise ValueError(f"ScanpathExtractor: observation space lacks keys {missing}")
    cand_shape = observation_space["candidates"].shape
    if len(cand_shape) != 2:
        raise ValueError(f"ScanpathExtractor: 'candidates' must be (V, D), got {cand_shape}")
    n_viewports, dim = cand_shape
    expected = {"global": (dim,), "visited": (n_viewports,)}
    for key, shape in expected.items():
        if observation_space[key].shape != shape:
            raise ValueError(f"ScanpathExtractor: '{key}' must have shape {shape}, got {observation_space[key].shape}")
    history_shape = observation_space["history"].shape
    if len(history_shape) != 1 or history_shape[0] < 1:
        raise ValueError(f"ScanpathExtractor: 'history' must be (L,) with L >= 1, got {history_shape}")
    return n_viewports, dim, history_shape[0]


def _same_bits(a: th.Tensor, b: th.Tensor) -> bool:
    """Bitwise equality of two same-shape tensors (stricter than ``==``: 0.0 and -0.0 differ).

    Identical bits guarantee identical projections. Comparing 64-bit words is about twice as
    fast as ``torch.equal`` on float32 elements.
    """
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    if a.numel() * a.element_size() % 8 == 0:
        a, b = a.view(th.int64), b.view(th.int64)
    return th.equal(a, b)


class ScanpathExtractor(BaseFeaturesExtractor):
    """Projects candidates and the global feature, and encodes the visited path with a GRU.

    :param observation_space: the env's Dict space ("global", "candidates", "history", "visited", ...).
    :param embed_dim: E, width of the projected candidate and global features (GRU input).
    :param hidden_dim: H, GRU hidden size.
    :param attention_dim: A, width of the additive-attention space.
    :param dedup_min_batch: batches with at least this many rows project each distinct candidate
        matrix once; smaller batches project every row (bookkeeping would cost more than it saves).
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        embed_dim: int = 64,
        hidden_dim: int = 64,
        attention_dim: int = 64,
        dedup_min_batch: int = 16,
    ) -> None:
        n_viewports, dim, _ = _check_space(observation_space)
        layout = FeatureLayout(n_viewports, attention_dim, hidden_dim, embed_dim)
        super().__init__(observation_space, features_dim=layout.total)
        self.layout = layout
        self.dedup_min_batch = dedup_min_batch
        self.candidate_proj = nn.Linear(dim, embed_dim)
        self.key_proj = nn.Linear(embed_dim, attention_dim, bias=False)
        self.global_proj = nn.Linear(dim, embed_dim)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        # A fixed random direction: its dot product with a row's first candidate feature is the
        # grouping fingerprint. It never changes outputs (groups are verified), so it is not saved.
        probe = th.randn(dim, generator=th.Generator().manual_seed(0))
        self.register_buffer("_probe", probe, persistent=False)

    def _distinct_rows(self, candidates: th.Tensor) -> tuple[th.Tensor, th.Tensor] | None:
        """Group identical candidate matrices: (representative rows (U,), inverse (B,)), or None.

        None means "project every row": small batch, all rows distinct, or a fingerprint collision.
        """
        batch = candidates.shape[0]
        if batch < self.dedup_min_batch:
            return None
        # The fingerprint reads one viewport per row (cheap); the full rows are compared below.
        fingerprints, inverse = th.unique(candidates[:, 0] @ self._probe, return_inverse=True)
        if fingerprints.numel() == batch:
            return None
        rows = th.empty(fingerprints.numel(), dtype=th.long, device=candidates.device)
        rows.scatter_(0, inverse, th.arange(batch, device=candidates.device))
        # Exactness: rows that share a fingerprint but differ elsewhere must not share a projection.
        if not _same_bits(candidates.index_select(0, rows[inverse]), candidates):
            return None
        return rows, inverse

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        """Return the flat features ``[keys ; h ; g ; visited]`` (B, layout.total)."""
        candidates = observations["candidates"]
        batch = candidates.shape[0]
        groups = self._distinct_rows(candidates)
        if groups is None:
            projected = self.candidate_proj(candidates)  # (B, V, E)
            keys = self.key_proj(projected)  # (B, V, A)
            owner = th.arange(batch, device=candidates.device)
        else:
            rows, owner = groups
            projected = self.candidate_proj(candidates.index_select(0, rows))  # (U, V, E)
            keys = self.key_proj(projected)[owner]  # (B, V, A)

        history = observations["history"].long()
        # Only the prefix before the first -1 is the path (robust to stray values after padding).
        valid = th.cumprod((history >= 0).long(), dim=1)
        lengths = valid.sum(dim=1)
        steps = max(int(lengths.max()), 1)
        index = (history[:, :steps] * valid[:, :steps]).clamp(min=0)  # padding -> any valid index
        sequence = projected[owner.unsqueeze(1), index]  # (B, steps, E)
        outputs, _ = self.gru(sequence)
        last = outputs[th.arange(batch, device=candidates.device), (lengths - 1).clamp(min=0)]
        # An empty history has no GRU step: h is the GRU's zero initial state.
        h = last * (lengths > 0).unsqueeze(1).to(last.dtype)

        g = self.global_proj(observations["global"])
        return th.cat((keys.reshape(batch, -1), h, g, observations["visited"]), dim=1)
