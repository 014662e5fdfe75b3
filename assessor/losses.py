"""Training losses of the quality assessor and the terminal rewards derived from them.

All scores live on the 0–1 normalised MOS scale (``MosScale.normalize``). Every loss takes
1-D tensors of shape (B,) — one entry per path (or per image) in the batch — and returns a
scalar tensor that is differentiable with respect to the predictions.

Augmented views: ``weak`` (distortion level 1), ``mild`` (level 2) and ``heavy`` (level 4–5 of
the same kind as ``mild``) are real image-space distortions whose features the feature cache
holds; the prediction for a path on an augmented view uses the *same viewport indices* as the
clean path, gathered from the augmented features. Entry ``b`` of every view tensor must refer
to the same image and path as entry ``b`` of the clean predictions.

The terminal rewards (:func:`mse_reward`, :func:`ranking_reward`) live here too, so that the
reward the policy is trained on and the loss the assessor is trained on cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import overload

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AssessorLossWeights:
    """Weights of the loss components (reference-code values as defaults)."""

    mse: float = 1.0
    rank: float = 0.2
    consistency: float = 0.2
    triplet: float = 0.3
    cross_rank: float = 0.2

    def __post_init__(self) -> None:
        negative = {name: value for name, value in asdict(self).items() if value < 0}
        if negative:
            raise ValueError(f"loss weights must be non-negative, got {negative}")


@dataclass(frozen=True)
class TripletMargins:
    """Score gaps the triplet loss demands, on the 0–1 scale.

    ``clean_mild`` is small because level-2 distortions are barely visible; ``mild_heavy`` is
    large because level 4–5 of the same distortion is plainly worse; ``clean_heavy`` equals
    their sum, so it is implied when both adjacent gaps hold and only adds a direct push while
    one of them is violated.
    """

    clean_mild: float = 0.02
    mild_heavy: float = 0.10
    clean_heavy: float = 0.12


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(shape != first for shape in shapes.values()):
        raise ValueError(f"expected 1-D tensors of one shape (B,), got {shapes}")


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predictions and normalised MOS."""
    _check_same_shape(pred=pred, target=target)
    return F.mse_loss(pred, target.to(pred.dtype))


def _pair_terms(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair ranking losses softplus(−s_ij (q̂_i − q̂_j)) and the mask of pairs with s_ij ≠ 0.

    Both are (B, B); s_ij = sign(target_i − target_j), so pairs with equal targets (including
    the diagonal) are masked out: they carry no order to learn.
    """
    sign = torch.sign(target.unsqueeze(1) - target.unsqueeze(0)).to(pred.dtype)
    diff = pred.unsqueeze(1) - pred.unsqueeze(0)
    return F.softplus(-sign * diff), sign != 0


def pairwise_ranking_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of softplus(−s·(q̂_i − q̂_j)) over all ordered pairs with different targets.

    s = sign(target_i − target_j). Each unordered pair appears twice with the same value, so
    the mean equals the mean over unordered pairs. Pairs with equal targets are ignored; with
    no usable pair the loss is 0 (kept in the graph so ``backward`` still works).

    On a 0–1 scale the softplus never saturates (softplus(−1) ≈ 0.31), so the term keeps
    pushing correctly ordered pairs apart and stretches the score spread: on a synthetic
    regression, weight 0.2 widened the prediction std by 25–40 % over MSE alone and doubled the
    raw MSE, with SRCC and post-logistic RMSE unchanged. The raw-scale terms (MSE loss, the
    −MSE reward) pay for it; the protocol metrics do not.
    """
    _check_same_shape(pred=pred, target=target)
    terms, valid = _pair_terms(pred, target.to(pred.dtype))
    if not valid.any():
        return pred.sum() * 0.0
    return terms[valid].mean()


def consistency_loss(pred_clean: torch.Tensor, pred_weak: torch.Tensor) -> torch.Tensor:
    """Mean of (q̂(x) − q̂(weak(x)))²: a level-1 distortion should not move the score.

    Gradient flows into both views: the clean prediction is already anchored by the MSE term,
    so letting the pair meet halfway does not drift the clean scores, and it lets unlabeled
    augmented views shape the representation.
    """
    _check_same_shape(pred_clean=pred_clean, pred_weak=pred_weak)
    return torch.mean((pred_clean - pred_weak) ** 2)


def triplet_loss(pred_clean: torch.Tensor, pred_mild: torch.Tensor, pred_heavy: torch.Tensor,
                 margins: TripletMargins = TripletMargins()) -> torch.Tensor:
    """Quality ordering clean > mild > heavy with margins, averaged over the batch.

    Per item: relu(m_cm − (q̂_clean − q̂_mild)) + relu(m_mh − (q̂_mild − q̂_heavy))
    + relu(m_ch − (q̂_clean − q̂_heavy)), with the margins of :class:`TripletMargins`.
    Zero once every gap is at least its margin. Note an image whose clean score is below
    ``m_ch`` cannot satisfy the ordering on a 0–1 scale; the MSE term (larger weight) keeps its
    clean score at the MOS, so the triplet then only pushes the distorted views down.
    """
    _check_same_shape(pred_clean=pred_clean, pred_mild=pred_mild, pred_heavy=pred_heavy)
    per_item = (F.relu(margins.clean_mild - (pred_clean - pred_mild))
                + F.relu(margins.mild_heavy - (pred_mild - pred_heavy))
                + F.relu(margins.clean_heavy - (pred_clean - pred_heavy)))
    return per_item.mean()


def cross_ranking_loss(pred_weak: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The MOS order of two images must survive the weak augmentation.

    The pairwise ranking loss applied to the weak views, with s_ij = sign(MOS_i − MOS_j):
    mean softplus(−s_ij (q̂_weak_i − q̂_weak_j)) over pairs with different MOS. The order is
    taken from MOS rather than from the clean predictions because every training item has a
    MOS, and prediction-derived signs are mostly noise early in co-training — they would teach
    the weak views to copy the clean views' mistakes instead of the true order.
    """
    return pairwise_ranking_loss(pred_weak, target)


def combined_loss(pred: torch.Tensor, target: torch.Tensor, *,
                  pred_weak: torch.Tensor | None = None,
                  pred_mild: torch.Tensor | None = None,
                  pred_heavy: torch.Tensor | None = None,
                  weights: AssessorLossWeights = AssessorLossWeights(),
                  margins: TripletMargins = TripletMargins()
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of all applicable loss components.

    ``pred``: clean-view predictions (B,); ``target``: normalised MOS (B,). Components that
    need an augmented view are computed only when it is given (a cache without augmentations
    still trains on MSE + ranking): consistency and cross-ranking need ``pred_weak``, the
    triplet needs ``pred_mild`` and ``pred_heavy``. A component with weight 0 is skipped.

    Returns ``(total, components)``: ``components`` maps each computed component ("mse",
    "rank", "consistency", "triplet", "cross_rank") to its *unweighted* value as a float, for
    logging.
    """
    if (pred_mild is None) != (pred_heavy is None):
        raise ValueError("the triplet loss needs both pred_mild and pred_heavy, or neither")
    target = target.to(pred.dtype)
    terms: dict[str, torch.Tensor] = {}
    if weights.mse > 0:
        terms["mse"] = mse_loss(pred, target)
    if weights.rank > 0:
        terms["rank"] = pairwise_ranking_loss(pred, target)
    if pred_weak is not None:
        if weights.consistency > 0:
            terms["consistency"] = consistency_loss(pred, pred_weak)
        if weights.cross_rank > 0:
            terms["cross_rank"] = cross_ranking_loss(pred_weak, target)
    if pred_mild is not None and pred_heavy is not None and weights.triplet > 0:
        terms["triplet"] = triplet_loss(pred, pred_mild, pred_heavy, margins)
    if not terms:
        raise ValueError("every loss component is disabled (all weights are zero)")
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}


def _to_tensor(values: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def _like_input(result: torch.Tensor, reference: np.ndarray | torch.Tensor
                ) -> np.ndarray | torch.Tensor:
    return result if isinstance(reference, torch.Tensor) else result.numpy()


@overload
def mse_reward(pred: np.ndarray, target: np.ndarray) -> np.ndarray: ...
@overload
def mse_reward(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
def mse_reward(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor
               ) -> np.ndarray | torch.Tensor:
    """Per-item terminal reward −(q̂ − MOS)², in [−1, 0] on the 0–1 scale (0 = perfect).

    Accepts NumPy arrays (returns float64 NumPy) or tensors (returns a tensor), any matching
    shape.
    """
    p, t = _to_tensor(pred), _to_tensor(target)
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(p.shape)} vs {tuple(t.shape)}")
    return _like_input(-(p - t.to(p.dtype)) ** 2, pred)


@overload
def ranking_reward(preds: np.ndarray, targets: np.ndarray) -> np.ndarray: ...
@overload
def ranking_reward(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...
def ranking_reward(preds: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor
                   ) -> np.ndarray | torch.Tensor:
    """Per-item terminal ranking reward against the other items of the batch.

    r_i = −mean_j softplus(−s_ij (q̂_i − q̂_j)) over items j whose target differs from item i's
    (s_ij = sign(target_i − target_j)); 0 for an item with no such partner (a batch of one
    image, or all targets equal). The reward is highest when item i is placed on the right
    side of every other item by a wide gap; it is the per-item counterpart of
    :func:`pairwise_ranking_loss`. Accepts (B,) NumPy arrays or tensors, returns the same kind.
    """
    p, t = _to_tensor(preds), _to_tensor(targets)
    if p.ndim != 1 or p.shape != t.shape:
        raise ValueError(f"expected 1-D preds and targets of one shape, got "
                         f"{tuple(p.shape)} and {tuple(t.shape)}")
    terms, valid = _pair_terms(p, t.to(p.dtype))
    counts = valid.sum(dim=1)
    sums = torch.where(valid, terms, torch.zeros_like(terms)).sum(dim=1)
    reward = -sums / counts.clamp(min=1).to(p.dtype)
    return _like_input(reward, preds)
