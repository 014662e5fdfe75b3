"""Quality assessor of RL-ScanIQA: the path-scoring model, its losses and rewards, and metrics.

- :mod:`.model`: :class:`QualityAssessor` (attention pooling over a scanpath's viewport
  features, conditioned on the global descriptor) with safetensors save/load.
- :mod:`.losses`: MSE, pairwise ranking, consistency, triplet and cross-ranking losses,
  :func:`combined_loss`, and the terminal rewards :func:`mse_reward` / :func:`ranking_reward`.
- :mod:`.metrics`: SRCC, KRCC, PLCC and RMSE with the 4-parameter logistic mapping.
"""

from rl_scaniqa.assessor.losses import (
    AssessorLossWeights,
    TripletMargins,
    combined_loss,
    consistency_loss,
    cross_ranking_loss,
    mse_loss,
    mse_reward,
    pairwise_ranking_loss,
    ranking_reward,
    triplet_loss,
)
from rl_scaniqa.assessor.metrics import (
    DegenerateInputWarning,
    LogisticFit,
    LogisticFitWarning,
    evaluate,
    krcc,
    logistic_4p,
    logistic_4p_fit,
    plcc,
    rmse,
    srcc,
    summarize,
)
from rl_scaniqa.assessor.model import (
    AssessorCheckpointError,
    AssessorConfig,
    QualityAssessor,
    load_extra,
)

__all__ = [
    "AssessorCheckpointError",
    "AssessorConfig",
    "AssessorLossWeights",
    "DegenerateInputWarning",
    "LogisticFit",
    "LogisticFitWarning",
    "QualityAssessor",
    "TripletMargins",
    "combined_loss",
    "consistency_loss",
    "cross_ranking_loss",
    "evaluate",
    "krcc",
    "load_extra",
    "logistic_4p",
    "logistic_4p_fit",
    "mse_loss",
    "mse_reward",
    "pairwise_ranking_loss",
    "plcc",
    "ranking_reward",
    "rmse",
    "srcc",
    "summarize",
    "triplet_loss",
]
