"""Scanpath agents of RL-ScanIQA: the GRU + additive-attention actor-critic for SB3.

- :mod:`.extractor`: :class:`ScanpathExtractor` (candidate/global projections, GRU over the
  path, masked additive-attention logits) and :data:`MASKED_LOGIT`.
- :mod:`.policy`: :class:`ScanpathPolicy` (``PPO``/``A2C``), :class:`MaskableScanpathPolicy`
  (``MaskablePPO``) and :class:`ScanpathHead` (their ``mlp_extractor``: logits through, value
  MLP on [h; g; τ], τ = episode progress).
- :mod:`.baselines`: baseline scanpath agents with SB3's ``predict`` (random, equator sweep,
  entropy-greedy, cube faces, all viewports, human scanpaths) and the no-path
  :class:`SVRBaseline`, all evaluated by the harness in :mod:`.evaluation`.
"""

from rl_scaniqa.agents.baselines import (
    AllViewportsAgent,
    CubeFaceAgent,
    EntropyGreedyAgent,
    EquatorSweepAgent,
    HumanScanpathAgent,
    RandomPathAgent,
    SVRBaseline,
)
from rl_scaniqa.agents.extractor import MASKED_LOGIT, ScanpathExtractor
from rl_scaniqa.agents.policy import (
    MaskableScanpathPolicy,
    ScanpathHead,
    ScanpathPolicy,
)

__all__ = [
    "MASKED_LOGIT",
    "AllViewportsAgent",
    "CubeFaceAgent",
    "EntropyGreedyAgent",
    "EquatorSweepAgent",
    "HumanScanpathAgent",
    "MaskableScanpathPolicy",
    "RandomPathAgent",
    "SVRBaseline",
    "ScanpathExtractor",
    "ScanpathHead",
    "ScanpathPolicy",
]
