"""Scanpath agents of RL-ScanIQA: the GRU + additive-attention actor-critic for SB3.

- :mod:`.extractor`: :class:`ScanpathExtractor` (candidate/global projections, GRU over the path)
  and :class:`FeatureLayout` (layout of its flat output).
- :mod:`.policy`: :class:`ScanpathPolicy` (``PPO``/``A2C``), :class:`MaskableScanpathPolicy`
  (``MaskablePPO``) and :class:`ScanpathHead` (attention logits and value features).
"""

from rl_scaniqa.agents.extractor import MASKED_LOGIT, ScanpathExtractor
from rl_scaniqa.agents.policy import MaskableScanpathPolicy, ScanpathHead, ScanpathPolicy

__all__ = [
    "MASKED_LOGIT",
    "MaskableScanpathPolicy",
    "ScanpathExtractor",
    "ScanpathHead",
    "ScanpathPolicy",
]
