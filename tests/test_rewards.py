"""Reward terms: the pure functions of envs/rewards.py and the env's use of them."""

import math

import numpy as np
import pytest

from rl_scaniqa.envs import rewards
from rl_scaniqa.envs.data.geometry import ViewportGrid, coverage_matrix
from rl_scaniqa.envs.features.random_cache import random_feature_cache
from rl_scaniqa.envs.panorama_env import N_SPHERE_POINTS, Panorama360Env

GRID = ViewportGrid(n_lon=4, n_lat=3, fov_deg=90.0, size=32)


@pytest.fixture(scope="module")
def cache():
    return random_feature_cache(4, grid=GRID, dim=8, seed=3)


# ---------------------------------------------------------------- step terms

def test_entropy_term_is_bits_over_eight():
    assert rewards.entropy_term(8.0) == pytest.approx(1.0)
    assert rewards.entropy_term(2.0) == pytest.approx(0.25)
    np.testing.assert_allclose(rewards.entropy_term(np.array([0.0, 4.0])), [0.0, 0.5])


def test_ssim_term_is_dissimilarity():
    assert rewards.ssim_term(1.0) == pytest.approx(0.0)
    assert rewards.ssim_term(0.25) == pytest.approx(0.75)
    assert rewards.ssim_term(-0.5) == pytest.approx(1.5)


def test_novelty_term():
    np.testing.assert_array_equal(rewards.novelty_term(np.array([True, False])), [1.0, 0.0])


def test_equator_term_values():
    assert rewards.equator_term(0.0) == pytest.approx(1.0)
    assert rewards.equator_term(90.0) == pytest.approx(math.exp(-math.pi / 4))
    assert rewards.equator_term(-22.5) == pytest.approx(math.exp(-0.5 * math.radians(22.5)))
    assert rewards.equator_term(67.5) == pytest.approx(rewards.equator_term(-67.5))


def test_step_reward_combines_weighted_terms():
    weights = rewards.RewardWeights(entropy=0.5, ssim=1.0, novelty=1.0, equator=0.2)
    expected = 0.5 * 6.0 / 8.0 + 1.0 * (1.0 - 0.3) + 1.0 + 0.2 * math.exp(-0.5 * math.radians(45.0))
    assert rewards.step_reward(6.0, 0.3, True, -45.0, weights) == pytest.approx(expected)
    assert rewards.step_reward(6.0, 0.3, False, -45.0, weights) == pytest.approx(expected - 1.0)


def test_reward_weights_reject_non_finite():
    with pytest.raises(ValueError, match="jaccard"):
        rewards.RewardWeights(jaccard=float("nan"))


# ---------------------------------------------------------------- set terms on hand-made sets

# Three "viewports" over six sphere samples: 0 sees {0,1,2}, 1 sees {2,3}, 2 sees {4}.
COVERAGE = np.array([
    [1, 1, 1, 0, 0, 0],
    [0, 0, 1, 1, 0, 0],
    [0, 0, 0, 0, 1, 0],
], dtype=bool)


def test_path_point_sets_are_unions():
    sets = rewards.path_point_sets(np.array([[0, 1], [2, 2]]), COVERAGE)
    np.testing.assert_array_equal(sets, [[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]])


def test_identical_paths_have_jaccard_one():
    sets = rewards.path_point_sets(np.array([[0, 1], [1, 0], [0, 1]]), COVERAGE)
    assert rewards.mean_pairwise_jaccard(sets) == pytest.approx(1.0)


def test_disjoint_paths_have_jaccard_zero():
    sets = rewards.path_point_sets(np.array([[0, 0], [2, 2]]), COVERAGE)
    assert rewards.mean_pairwise_jaccard(sets) == 0.0


def test_partial_overlap_jaccard_by_hand():
    # {0,1,2} vs {2,3}: 1 shared of 4 -> 0.25; {0,1,2} vs {4}: 0; {2,3} vs {4}: 0.
    sets = rewards.path_point_sets(np.array([[0], [1], [2]]), COVERAGE)
    assert rewards.mean_pairwise_jaccard(sets) == pytest.approx(0.25 / 3)


def test_single_path_has_no_jaccard_term():
    sets = rewards.path_point_sets(np.array([[0, 1]]), COVERAGE)
    assert rewards.mean_pairwise_jaccard(sets) == 0.0


def test_empty_sets_count_as_no_overlap():
    assert rewards.mean_pairwise_jaccard(np.zeros((2, 5), dtype=bool)) == 0.0


def test_coverage_and_set_reward_by_hand():
    paths = np.array([[0, 0], [2, 2]])
    result = rewards.set_reward(paths, COVERAGE, rewards.RewardWeights(coverage=0.5, jaccard=3.0))
    assert result.coverage == pytest.approx(4 / 6)
    assert result.jaccard == 0.0
    assert result.reward == pytest.approx(0.5 * 4 / 6)
    same = rewards.set_reward(np.array([[0, 1], [0, 1]]), COVERAGE, rewards.RewardWeights(coverage=0.5, jaccard=3.0))
    assert same.reward == pytest.approx(0.5 * 4 / 6 - 3.0)


@pytest.mark.parametrize("paths", [np.array([[0, 3]]), np.array([[-1, 0]]), np.array([0, 1]),
                                   np.array([[0.0, 1.0]])])
def test_bad_paths_are_rejected(paths):
    with pytest.raises(ValueError):
        rewards.path_point_sets(paths, COVERAGE)


def test_full_grid_covers_most_of_the_sphere():
    grid = ViewportGrid()
    everything = np.arange(grid.n_viewports)[None, :]
    sets = rewards.path_point_sets(everything, coverage_matrix(grid))
    assert rewards.sphere_coverage(sets) == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------- the env's rewards

def _pitch(index):
    return GRID.centers_deg[index, 1]


def test_env_step_reward_matches_hand_computation(cache):
    env = Panorama360Env(feature_cache=cache, split="all", n_paths=2, path_length=3)
    env.reset(seed=0, options={"image_index": 2})
    start = GRID.nearest(0.0, 0.0)
    previous, visited = start, {start}
    for action in (0, 7, 0):
        is_new = action not in visited
        visited.add(action)
        _, reward, _, _, _ = env.step(action)
        expected = (0.5 * cache.entropy[2, action] / 8.0
                    + 1.0 * (1.0 - cache.ssim[2, previous, action])
                    + (1.0 if is_new else 0.0)
                    + 0.2 * math.exp(-0.5 * abs(math.radians(_pitch(action)))))
        assert reward == pytest.approx(expected, rel=1e-6)
        previous = action


def test_env_revisiting_the_start_earns_no_novelty_and_no_dissimilarity(cache):
    env = Panorama360Env(feature_cache=cache, split="all", n_paths=1, path_length=2,
                         lambda_entropy=0.0, lambda_equator=0.0)
    env.reset(seed=0, options={"image_index": 0})
    start = GRID.nearest(0.0, 0.0)
    _, reward, _, _, _ = env.step(start)
    assert reward == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("term", ["entropy", "ssim", "novelty", "equator"])
def test_env_single_weight_isolates_its_term(cache, term):
    weights = {"lambda_entropy": 0.0, "lambda_ssim": 0.0, "lambda_novelty": 0.0,
               "lambda_equator": 0.0, "beta_coverage": 0.0, "beta_jaccard": 0.0}
    weights[f"lambda_{term}"] = 2.0
    env = Panorama360Env(feature_cache=cache, split="all", n_paths=1, path_length=1, **weights)
    env.reset(seed=0, options={"image_index": 1})
    start = GRID.nearest(0.0, 0.0)
    _, reward, terminated, _, info = env.step(9)
    expected = {
        "entropy": 2.0 * cache.entropy[1, 9] / 8.0,
        "ssim": 2.0 * (1.0 - cache.ssim[1, start, 9]),
        "novelty": 2.0,
        "equator": 2.0 * math.exp(-0.5 * math.radians(abs(_pitch(9)))),
    }[term]
    assert terminated
    assert reward == pytest.approx(expected, rel=1e-6)
    assert info["reward_components"][term][0, 0] == pytest.approx(expected, rel=1e-6)


def test_env_set_reward_at_episode_end(cache):
    env = Panorama360Env(feature_cache=cache, split="all", n_paths=2, path_length=2,
                         lambda_entropy=0.0, lambda_ssim=0.0, lambda_novelty=0.0,
                         lambda_equator=0.0, beta_coverage=0.7, beta_jaccard=0.3)
    env.reset(seed=0, options={"image_index": 0})
    start = GRID.nearest(0.0, 0.0)
    actions = [0, 1, 10, 11]
    returns = [env.step(a)[1] for a in actions]
    assert returns[:3] == [0.0, 0.0, 0.0]
    paths = np.array([[start, 0, 1], [start, 10, 11]])
    sets = coverage_matrix(GRID, N_SPHERE_POINTS)
    seen = [sets[p].any(axis=0) for p in paths]
    coverage = (seen[0] | seen[1]).mean()
    jaccard = (seen[0] & seen[1]).sum() / (seen[0] | seen[1]).sum()
    assert returns[3] == pytest.approx(0.7 * coverage - 0.3 * jaccard, rel=1e-6)
    env.reset(seed=0, options={"image_index": 0})
    for a in actions[:3]:
        env.step(a)
    info = env.step(actions[3])[4]
    assert info["coverage"] == pytest.approx(coverage)
    assert info["jaccard"] == pytest.approx(jaccard)
    np.testing.assert_array_equal(info["paths"], paths)


def test_env_identical_paths_pay_full_jaccard(cache):
    env = Panorama360Env(feature_cache=cache, split="all", n_paths=3, path_length=2,
                         lambda_entropy=0.0, lambda_ssim=0.0, lambda_novelty=0.0,
                         lambda_equator=0.0, beta_coverage=0.0, beta_jaccard=1.0)
    env.reset(seed=0)
    for _ in range(3):
        for action in (0, 1):
            _, reward, terminated, _, info = env.step(action)
    assert terminated
    assert info["jaccard"] == pytest.approx(1.0)
    assert reward == pytest.approx(-1.0)
