"""Features extractor of the scanpath policy: projections, GRU over the path, attention logits.

Architecture (per observation of ``Panorama360Env``; V viewports, D feature dim, L = T + 1)::

    f_j     = P c_j                         candidate projection, D -> E, all V candidates
    x_t     = f_{history[t]}                projected features of the viewports visited so far
    h       = GRU(x_0 .. x_{n-1})           n valid history entries; h = last valid hidden state
    g       = P_g g_raw                     global projection, D -> E
    logit_j = v^T tanh(W_h h + W_g g + W_f f_j + u s_j + b)   additive attention, visited j masked

where ``s_j`` is the env's ``seen`` entry: the share of the episode's earlier paths that visited
viewport j. It lets the actor send a path where the earlier ones did not go (or back to what they
found), which the set reward pays for; without it the K paths of an image are independent draws,
and a policy that sharpens sees fewer viewports per image (``docs/results/assessor-budget``).

The output is the flat tensor ``[logit_1 .. logit_V ; h ; g ; τ]``:
:class:`rl_scaniqa.agents.policy.ScanpathHead` hands the logits to SB3's categorical
distribution unchanged and feeds ``[h ; g ; τ]`` to the value MLP, where ``τ = (step / T,
path / (K − 1))`` says how far the episode has come. The critic needs it: an episode is K · T
steps (105 by default) and every step earns exploration rewards, so with γ = 0.99 the return of a
state depends mostly on the steps left, which nothing else in the state tells (measured in
``docs/results/time-aware-critic``).

The attention is computed here, not in the head, because its keys are a B x V x A tensor:
passing them through the flat features tensor would cost a concatenation and a split (forward
and backward) of the largest activation of the network.

Speed trick. The candidate projection dominates the cost, and the candidates are identical for
every step of an image's episode (K paths x T steps), so a PPO minibatch drawn from a rollout holds
few distinct candidate matrices. The projection ``f`` and the keys ``W_f f`` are computed once per
distinct matrix and gathered back: rows are grouped by a cheap fingerprint (a fixed random
projection of each row's first candidate feature) and the grouping is verified by a bitwise
comparison of the whole rows, so every row gets the projection of its own candidates (equal to
the plain computation up to the rounding of a differently blocked matmul); if the verification
fails, the plain computation runs. Batches smaller than ``dedup_min_batch`` (the
rollout: one observation per env) skip the bookkeeping, which would cost more than it saves.
Measured on one CPU thread, minibatch of 210 rows from an 8-env rollout (9 distinct images),
D = 384, E = H = A = 32: forward + backward 6.0 ms with the dedup, 10.3 ms without (E = 64:
8.6 vs 17.6 ms); the bitwise verification costs about 0.6 ms of that.
Computing ``f`` then ``W_f f`` (D*E + E*A per candidate) is cheaper than fusing ``W_f P`` into a
second D x A projection, because ``f`` is needed anyway as the GRU input. The default widths
(E = H = A = 32) are a speed choice too: 64 costs about a quarter of the PPO throughput.

Padding invariance: the history is a prefix of valid indices followed by -1. The GRU is causal, so
its output at the last valid position does not depend on what follows; the sequence is cut at the
longest valid prefix in the batch, which also saves recurrent steps early in a path.
"""

from __future__ import annotations

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from rl_scaniqa.envs.panorama_env import allowed_viewports

OBSERVATION_KEYS = ("global", "candidates", "history", "visited", "seen", "step", "path")
#: Width of τ, the episode-progress input of the critic (step in the path, path in the episode).
PROGRESS_DIM = 2
#: Logit of a masked (already visited) viewport; equal to sb3-contrib's, so both masks agree and
#: log-probabilities stay finite in ``evaluate_actions``.
MASKED_LOGIT = -1e8


def _check_space(observation_space: spaces.Space) -> tuple[int, int]:
    """Return (V, D) of a Panorama360Env observation space or raise ``ValueError``."""
    if not isinstance(observation_space, spaces.Dict):
        raise ValueError(f"ScanpathExtractor needs a Dict observation space, "
                         f"got {observation_space}")
    missing = [key for key in OBSERVATION_KEYS if key not in observation_space.spaces]
    if missing:
        raise ValueError(f"ScanpathExtractor: observation space lacks keys {missing}")
    cand_shape = observation_space["candidates"].shape
    if cand_shape is None or len(cand_shape) != 2:
        raise ValueError(f"ScanpathExtractor: 'candidates' must be (V, D), got {cand_shape}")
    n_viewports, dim = cand_shape
    expected = {"global": (dim,), "visited": (n_viewports,), "seen": (n_viewports,),
                "step": (1,), "path": (1,)}
    for key, shape in expected.items():
        if observation_space[key].shape != shape:
            raise ValueError(f"ScanpathExtractor: '{key}' must have shape {shape}, "
                             f"got {observation_space[key].shape}")
    history_shape = observation_space["history"].shape
    if history_shape is None or len(history_shape) != 1 or history_shape[0] < 1:
        raise ValueError(f"ScanpathExtractor: 'history' must be (L,) with L >= 1, "
                         f"got {history_shape}")
    return n_viewports, dim


def _upper_bound(observation_space: spaces.Dict, key: str) -> float:
    """The largest value of a counter entry (a ``Box`` of shape (1,)); 1 when it is 0."""
    space = observation_space[key]
    if not isinstance(space, spaces.Box):
        raise ValueError(f"ScanpathExtractor: '{key}' must be a Box, got {space}")
    return float(space.high[0]) or 1.0


def _tanh(x: th.Tensor) -> th.Tensor:
    """tanh(x) computed as 2 sigmoid(2x) - 1.

    The same function to float32 rounding, but PyTorch's CPU tanh kernel is about ten times slower
    than its sigmoid kernel, and the attention energy (B x V x A) is the largest activation here.
    """
    return th.sigmoid(2.0 * x).mul(2.0).sub(1.0)


def _same_bits(a: th.Tensor, b: th.Tensor) -> bool:
    """Bitwise equality of two same-shape tensors (stricter than ``==``: 0.0 and -0.0 differ).

    Identical bits guarantee identical projections. Comparing 64-bit words is about twice as fast
    as ``torch.equal`` on float32 elements.
    """
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    if a.numel() * a.element_size() % 8 == 0:
        a, b = a.view(th.int64), b.view(th.int64)
    return th.equal(a, b)


class ScanpathExtractor(BaseFeaturesExtractor):
    """Projections, GRU over the visited path and masked attention logits over the candidates.

    :param observation_space: the env's Dict space (all of :data:`OBSERVATION_KEYS` are read).
    :param embed_dim: E, width of the projected candidate and global features (GRU input).
    :param hidden_dim: H, GRU hidden size.
    :param attention_dim: A, width of the additive-attention space.
    :param dedup_min_batch: batches with at least this many rows project each distinct candidate
        matrix once; smaller batches project every row.
    """

    _probe: th.Tensor  # a buffer (register_buffer below), not a parameter

    def __init__(
        self,
        observation_space: spaces.Dict,
        embed_dim: int = 32,
        hidden_dim: int = 32,
        attention_dim: int = 32,
        dedup_min_batch: int = 16,
    ) -> None:
        n_viewports, dim = _check_space(observation_space)
        super().__init__(observation_space,
                         features_dim=n_viewports + hidden_dim + embed_dim + PROGRESS_DIM)
        self.n_viewports = n_viewports
        #: Width of the actor's state ``[h ; g]``, which follows the logits in the output.
        self.state_dim = hidden_dim + embed_dim
        #: Width of the critic's input ``[h ; g ; τ]``: everything after the logits.
        self.critic_dim = self.state_dim + PROGRESS_DIM
        # τ divides the counters by their largest values (the spaces' bounds: T and K − 1).
        self._progress_scale = (_upper_bound(observation_space, "step"),
                                _upper_bound(observation_space, "path"))
        self.dedup_min_batch = dedup_min_batch
        self.candidate_proj = nn.Linear(dim, embed_dim)
        self.global_proj = nn.Linear(dim, embed_dim)
        self.gru = nn.GRU(embed_dim, hidden_dim, batch_first=True)
        self.key_proj = nn.Linear(embed_dim, attention_dim, bias=False)  # W_f (b is in the query)
        self.query = nn.Linear(self.state_dim, attention_dim)  # W_h h + W_g g + b in one matmul
        self.score = nn.Linear(attention_dim, 1, bias=False)  # v
        self.seen_key = nn.Parameter(th.zeros(attention_dim))  # u: starts as if nothing was seen
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
        """Return ``[masked logits (V) ; h (H) ; g (E) ; τ (2)]``, shape (B, V + H + E + 2)."""
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
        outputs, _ = self.gru(sequence)  # (B, steps, H)
        # Prepending the GRU's zero initial state makes position n the state after n valid steps,
        # for every n including 0 (an empty history).
        outputs = th.cat((outputs.new_zeros(batch, 1, outputs.shape[-1]), outputs), dim=1)
        h = outputs[th.arange(batch, device=candidates.device), lengths]
        state = th.cat((h, self.global_proj(observations["global"])), dim=1)

        seen = observations["seen"].unsqueeze(-1) * self.seen_key  # (B, V, A)
        energy = _tanh(keys + seen + self.query(state).unsqueeze(1))  # (B, V, A)
        logits = self.score(energy).squeeze(-1)  # (B, V)
        masked = ~allowed_viewports(observations["visited"])
        progress = th.cat((observations["step"] / self._progress_scale[0],
                           observations["path"] / self._progress_scale[1]), dim=1)
        return th.cat((logits.masked_fill(masked, MASKED_LOGIT), state, progress), dim=1)
