import math

import numpy as np
import pytest
import torch

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


def sp(x: float) -> float:
    """softplus by hand."""
    return math.log1p(math.exp(x))


def t(*values: float, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


PRED = (0.2, 0.5, 0.9)
TARGET = (0.1, 0.4, 0.4)   # items 1 and 2 tie


def test_mse_by_hand():
    assert mse_loss(t(0.2, 0.5, 0.9), t(0.3, 0.5, 0.6)).item() == pytest.approx(0.1 / 3)


def test_ranking_by_hand_ignores_ties():
    # Valid pairs: (0,1) with s = -1, q0 - q1 = -0.3 -> softplus(-0.3); (0,2): softplus(-0.7).
    # (1,2) has equal targets and is ignored, whatever the predictions say.
    expected = (sp(-0.3) + sp(-0.7)) / 2
    assert pairwise_ranking_loss(t(*PRED), t(*TARGET)).item() == pytest.approx(expected)
    swapped = pairwise_ranking_loss(t(0.2, 0.9, 0.5), t(*TARGET)).item()
    assert swapped == pytest.approx(expected)


def test_ranking_penalises_wrong_order_more():
    right = pairwise_ranking_loss(t(0.2, 0.8), t(0.1, 0.9)).item()
    wrong = pairwise_ranking_loss(t(0.8, 0.2), t(0.1, 0.9)).item()
    assert right == pytest.approx(sp(-0.6)) and wrong == pytest.approx(sp(0.6))


def test_ranking_with_all_ties_is_zero_and_differentiable():
    pred = t(0.2, 0.7, grad=True)
    loss = pairwise_ranking_loss(pred, t(0.5, 0.5))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(2, dtype=torch.float64))


def test_consistency_by_hand():
    assert consistency_loss(t(0.5, 0.7), t(0.4, 0.7)).item() == pytest.approx(0.005)


def test_triplet_by_hand_and_zero_when_ordered_with_margins():
    # Item 0 gaps: clean-mild 0.01, mild-heavy 0.04, clean-heavy 0.05
    #   -> (0.02-0.01) + (0.10-0.04) + (0.12-0.05) = 0.14. Item 1 satisfies every margin.
    loss = triplet_loss(t(0.80, 0.90), t(0.79, 0.85), t(0.75, 0.60))
    assert loss.item() == pytest.approx(0.07)
    assert triplet_loss(t(0.9), t(0.87), t(0.75)).item() == 0.0
    # Right order but gaps below the margins still costs.
    assert triplet_loss(t(0.9), t(0.89), t(0.85)).item() > 0.0


def test_triplet_custom_margins():
    margins = TripletMargins(clean_mild=0.0, mild_heavy=0.0, clean_heavy=0.0)
    assert triplet_loss(t(0.5), t(0.5), t(0.5), margins).item() == 0.0
    assert triplet_loss(t(0.5), t(0.6), t(0.5), margins).item() == pytest.approx(0.1)


def test_cross_ranking_uses_mos_order_on_weak_views():
    weak = t(0.3, 0.25, 0.8)
    target = t(0.2, 0.4, 0.9)
    # (0,1): s = -1, q0 - q1 = 0.05 -> sp(0.05); (0,2): sp(-0.5); (1,2): sp(-0.55)
    expected = (sp(0.05) + sp(-0.5) + sp(-0.55)) / 3
    assert cross_ranking_loss(weak, target).item() == pytest.approx(expected)


def test_combined_loss_weights_and_components():
    pred, target = t(*PRED, grad=True), t(*TARGET)
    weak, mild, heavy = t(0.25, 0.5, 0.85), t(0.15, 0.45, 0.9), t(0.05, 0.3, 0.6)
    weights = AssessorLossWeights()
    total, parts = combined_loss(pred, target, pred_weak=weak, pred_mild=mild, pred_heavy=heavy)
    assert set(parts) == {"mse", "rank", "consistency", "triplet", "cross_rank"}
    assert parts["mse"] == pytest.approx(mse_loss(pred, target).item())
    assert parts["triplet"] == pytest.approx(triplet_loss(pred, mild, heavy).item())
    assert parts["cross_rank"] == pytest.approx(cross_ranking_loss(weak, target).item())
    expected = (1.0 * parts["mse"] + 0.2 * parts["rank"] + 0.2 * parts["consistency"]
                + 0.3 * parts["triplet"] + 0.2 * parts["cross_rank"])
    assert total.item() == pytest.approx(expected)
    assert (weights.mse, weights.rank, weights.consistency, weights.triplet,
            weights.cross_rank) == (1.0, 0.2, 0.2, 0.3, 0.2)
    total.backward()
    assert torch.all(torch.isfinite(pred.grad)) and pred.grad.abs().sum() > 0


def test_combined_loss_without_augmented_views_and_with_zero_weights():
    total, parts = combined_loss(t(*PRED), t(*TARGET))
    assert set(parts) == {"mse", "rank"}
    assert total.item() == pytest.approx(parts["mse"] + 0.2 * parts["rank"])
    _, parts = combined_loss(t(*PRED), t(*TARGET), pred_weak=t(*PRED),
                             weights=AssessorLossWeights(rank=0.0, cross_rank=0.0))
    assert set(parts) == {"mse", "consistency"}
    with pytest.raises(ValueError, match="both pred_mild and pred_heavy"):
        combined_loss(t(*PRED), t(*TARGET), pred_mild=t(*PRED))
    with pytest.raises(ValueError, match="all weights are zero"):
        combined_loss(t(*PRED), t(*TARGET), weights=AssessorLossWeights(mse=0.0, rank=0.0))
    with pytest.raises(ValueError, match="non-negative"):
        AssessorLossWeights(triplet=-0.1)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="1-D tensors of one shape"):
        mse_loss(t(0.1, 0.2), t(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="1-D tensors of one shape"):
        triplet_loss(t(0.1), t(0.1), t(0.1, 0.2))


def test_mse_reward_numpy_and_torch():
    target = np.array([0.3, 0.6, 0.9], dtype=np.float32)
    perfect = mse_reward(target.copy(), target)
    assert isinstance(perfect, np.ndarray) and np.all(perfect == 0.0)
    np.testing.assert_allclose(mse_reward(np.array([0.5, 0.6, 0.5]), target),
                               [-0.04, 0.0, -0.16], atol=1e-7)
    reward = mse_reward(torch.tensor([0.5, 0.6]), torch.tensor([0.3, 0.6]))
    assert isinstance(reward, torch.Tensor)
    assert reward.tolist() == pytest.approx([-0.04, 0.0])
    with pytest.raises(ValueError, match="differ in shape"):
        mse_reward(np.zeros(2), np.zeros(3))


def test_ranking_reward_by_hand():
    reward = ranking_reward(np.array(PRED), np.array(TARGET))
    assert isinstance(reward, np.ndarray)
    # Item 0 has partners 1 and 2; items 1 and 2 tie with each other, so only item 0 counts.
    expected = [-(sp(-0.3) + sp(-0.7)) / 2, -sp(-0.3), -sp(-0.7)]
    np.testing.assert_allclose(reward, expected, rtol=1e-12)
    as_tensor = ranking_reward(torch.tensor(PRED), torch.tensor(TARGET))
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), expected, rtol=1e-6)


def test_ranking_reward_without_partners_is_zero():
    assert ranking_reward(np.array([0.4]), np.array([0.7])).tolist() == [0.0]
    assert ranking_reward(np.array([0.4, 0.9]), np.array([0.7, 0.7])).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="1-D"):
        ranking_reward(np.zeros((2, 2)), np.zeros((2, 2)))


def test_ranking_reward_is_the_per_item_form_of_the_loss():
    rng = np.random.default_rng(3)
    preds = rng.uniform(0, 1, 9)
    targets = rng.integers(0, 4, 9) / 4.0   # many ties
    rewards = ranking_reward(preds, targets)
    partners = (targets[:, None] != targets[None, :]).sum(axis=1)
    loss = pairwise_ranking_loss(torch.tensor(preds), torch.tensor(targets)).item()
    assert -(rewards * partners).sum() / partners.sum() == pytest.approx(loss)
    # Better-ordered predictions earn a higher mean reward.
    assert ranking_reward(targets, targets).mean() > ranking_reward(-targets, targets).mean()
