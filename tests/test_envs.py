"""Panorama360Env: Gymnasium/SB3 conformance, determinism, episode structure, vectorisation.

Most tests run on a tiny random feature cache (4 images, 4 x 3 grid, D = 8) so they do not
depend on the dataset and backbone code; the default-data tests at the end build the real quick
Synth360 + NSS cache once per session in a temporary ``RL_SCANIQA_HOME``.
"""

import importlib
import os
import pickle
import subprocess
import sys
import threading
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

import rl_scaniqa.envs
from rl_scaniqa.envs import ENV_ID, QUALIFIED_ENV_ID
from rl_scaniqa.envs.data.datasets import split_by_reference
from rl_scaniqa.envs.data.geometry import ViewportGrid, coverage_matrix
from rl_scaniqa.envs.errors import DatasetError
from rl_scaniqa.envs.features.cache import FeatureStats
from rl_scaniqa.envs.features.provision import ensure_default_data
from rl_scaniqa.envs.features.random_cache import random_feature_cache
from rl_scaniqa.envs.panorama_env import (
    N_SPHERE_POINTS,
    Panorama360Env,
    allowed_viewports,
    make_env,
    observation_space_for,
)
from rl_scaniqa.envs.rewards import RewardWeights, set_reward
from rl_scaniqa.envs.storage import exclusive_lock

GRID = ViewportGrid(n_lon=4, n_lat=3, fov_deg=90.0, size=32)
V, D = GRID.n_viewports, 8
FRONT = 5  # 4 x 3 grid: viewports 5 (yaw -45) and 6 (yaw 45) on the equator tie; lowest wins


@pytest.fixture(scope="module")
def cache():
    return random_feature_cache(4, grid=GRID, dim=D, seed=1)


def small_env(cache, **kwargs):
    kwargs = {"feature_cache": cache, "split": "all", "n_paths": 3, "path_length": 2, **kwargs}
    return gym.make(ENV_ID, **kwargs)


def caught_warnings(function, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        function(*args, **kwargs)
    return [str(w.message) for w in caught]


def rollout(env, seed, n_steps):
    """Seeded random actions; returns (action, reward, terminated, obs, info) per step."""
    env.action_space.seed(seed)
    obs, info = env.reset(seed=seed)
    trace = [(None, 0.0, False, obs, info)]
    for _ in range(n_steps):
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        assert truncated is False
        trace.append((action, reward, terminated, obs, info))
        if terminated:
            obs, info = env.reset()
            trace.append((None, 0.0, False, obs, info))
    return trace


def assert_same(trace_a, trace_b):
    assert len(trace_a) == len(trace_b)
    for (a1, r1, t1, o1, i1), (a2, r2, t2, o2, i2) in zip(trace_a, trace_b):
        assert (a1, r1, t1) == (a2, r2, t2)
        assert o1.keys() == o2.keys()
        for key in o1:
            np.testing.assert_array_equal(o1[key], o2[key])
        assert i1.keys() == i2.keys()
        assert i1.get("path") == i2.get("path")


# ---------------------------------------------------------------- registration and checkers

def test_registration_is_idempotent():
    importlib.reload(rl_scaniqa.envs)
    spec = gym.spec(ENV_ID)
    assert spec.entry_point == "rl_scaniqa.envs.panorama_env:Panorama360Env"
    assert spec.max_episode_steps is None


@pytest.mark.parametrize("start", ["front", "random_equator", "dataset"])
def test_gymnasium_check_env_passes_without_warnings(cache, start):
    env = small_env(cache, start=start)
    assert caught_warnings(gym_check_env, env.unwrapped) == []


def test_sb3_check_env_warns_only_about_the_candidate_matrix(cache):
    # Accepted: SB3 recommends flat 1-D Boxes; "candidates" is (V, D) by design, read by the
    # custom attention extractor, which scores each row.
    messages = caught_warnings(sb3_check_env, small_env(cache).unwrapped)
    assert len(messages) == 1
    assert "candidates has an unconventional shape" in messages[0]


def test_spaces(cache):
    env = small_env(cache)
    assert env.action_space == gym.spaces.Discrete(V)
    space = env.observation_space
    assert {k: s.shape for k, s in space.items()} == {
        "global": (D,), "candidates": (V, D), "history": (3,), "visited": (V,), "seen": (V,),
        "step": (1,), "path": (1,)}
    assert all(s.dtype == np.float32 for s in space.values())
    assert observation_space_for(V, D, path_length=2, n_paths=3) == space


# ---------------------------------------------------------------- determinism and pickling

@pytest.mark.parametrize("start", ["front", "random_equator"])
def test_same_seed_same_trajectory(cache, start):
    trace_a = rollout(small_env(cache, start=start, split="train"), seed=7, n_steps=20)
    trace_b = rollout(small_env(cache, start=start, split="train"), seed=7, n_steps=20)
    assert_same(trace_a, trace_b)


@pytest.mark.parametrize("start", ["front", "random_equator"])
def test_different_seeds_give_different_episodes(cache, start):
    env = small_env(cache, start=start)
    # The same actions after resets with different seeds: the seed alone changes the episodes.
    episodes = set()
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        trace = [info["image_index"], int(obs["history"][0])]
        for action in (1, 2, 3, 4, 7, 8):
            obs, reward, terminated, _, info = env.step(action)
            trace.append(int(obs["history"][0]) if not terminated else round(reward, 6))
        episodes.add(tuple(trace))
    assert len(episodes) >= 3
    images = {env.reset(seed=seed)[1]["image_index"] for seed in range(10)}
    assert len(images) >= 3  # 4 images in the "all" split
    if start == "random_equator":  # on the 4 x 3 grid the middle row (viewports 4..7) is nearest
        starts = {int(env.reset(seed=seed)[0]["history"][0]) for seed in range(10)}
        assert len(starts) >= 3 and starts <= {4, 5, 6, 7}


def test_pickled_env_continues_identically(cache):
    env = small_env(cache, start="random_equator")
    env.reset(seed=3)
    env.step(1)
    clone = pickle.loads(pickle.dumps(env))
    for action in [2, 8, 0, 4, 11, 3, 9]:
        result_a, result_b = env.step(action), clone.step(action)
        np.testing.assert_array_equal(result_a[0]["history"], result_b[0]["history"])
        assert result_a[1:4] == result_b[1:4]
        if result_a[2]:
            result_a, result_b = env.reset(), clone.reset()
            np.testing.assert_array_equal(result_a[0]["global"], result_b[0]["global"])


def test_make_env_thunk_pickles_and_checks_kwargs(cache):
    thunk = pickle.loads(pickle.dumps(make_env(feature_cache=cache, split="all")))
    env = thunk()
    assert env.spec.id == ENV_ID
    assert env.unwrapped.image_indices == (0, 1, 2, 3)
    with pytest.raises(TypeError):
        make_env(n_path=3)


# ---------------------------------------------------------------- episode structure and info

def test_episode_structure_and_info(cache):
    env = small_env(cache)
    stats = env.unwrapped.feature_stats
    obs, info = env.reset(seed=0, options={"image_index": 2})
    assert {key: info[key] for key in ("path_index", "step_in_path", "path_done", "image_index")} == {
        "path_index": 0, "step_in_path": 0, "path_done": False, "image_index": 2}
    np.testing.assert_array_equal(obs["history"], [FRONT, -1, -1])
    assert obs["step"][0] == 0 and obs["path"][0] == 0
    expected_candidates = np.clip(stats.standardize_viewports(cache.viewport_features[2]), -10, 10)
    np.testing.assert_allclose(obs["candidates"], expected_candidates)
    np.testing.assert_allclose(obs["global"], np.clip(stats.standardize_global(cache.global_features[2]), -10, 10))

    actions = [0, 1, 4, 4, 8, 9]
    total = 0.0
    for n, action in enumerate(actions, start=1):
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        path_index, step_in_path = (n - 1) // 2, (n - 1) % 2 + 1
        assert (info["path_index"], info["step_in_path"]) == (path_index, step_in_path)
        assert info["path_done"] is (step_in_path == 2)
        assert terminated is (n == 6) and truncated is False
        assert info["action_mask"].dtype == bool and info["action_mask"].shape == (V,)
        np.testing.assert_array_equal(info["action_mask"], env.unwrapped.action_masks())
        if step_in_path == 1:
            np.testing.assert_array_equal(obs["history"], [FRONT, action, -1])
            assert obs["step"][0] == 1 and obs["path"][0] == path_index
        if info["path_done"]:
            path = [FRONT, actions[n - 2], action]
            assert info["path"] == path
            np.testing.assert_allclose(info["path_features"], expected_candidates[path])
            assert info["path_features"].dtype == np.float32
            np.testing.assert_allclose(info["global_feature"], obs["global"])
            assert info["image_index"] == 2
            assert info["mos_normalized"] == pytest.approx((cache.mos[2] - 1.0) / 4.0)
        if info["path_done"] and not terminated:
            # The observation is already the next path's start.
            np.testing.assert_array_equal(obs["history"], [FRONT, -1, -1])
            assert obs["step"][0] == 0 and obs["path"][0] == path_index + 1
        else:
            assert "paths" not in info or terminated
    np.testing.assert_array_equal(info["paths"], [[FRONT, 0, 1], [FRONT, 4, 4], [FRONT, 8, 9]])
    assert info["image_id"] == cache.image_ids[2]
    assert info["mos"] == pytest.approx(float(cache.mos[2]))
    assert 0.0 < info["coverage"] <= 1.0 and 0.0 <= info["jaccard"] <= 1.0
    components = info["reward_components"]
    for key in ("entropy", "ssim", "novelty", "equator"):
        assert components[key].shape == (3, 2)
    assert components["novelty"][1, 1] == 0.0  # the revisit of viewport 4
    assert sum(float(np.sum(c)) for c in components.values()) == pytest.approx(total)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_per_path_set_reward_pays_each_paths_increment_and_the_same_total(cache):
    actions = [0, 1, 0, 1, 8, 9]  # path 2 repeats path 1, path 3 goes elsewhere
    returns = {}
    for per_path in (False, True):
        env = small_env(cache, set_reward_per_path=per_path, lambda_entropy=0.0, lambda_ssim=0.0,
                        lambda_novelty=0.0, lambda_equator=0.0)
        env.reset(seed=0, options={"image_index": 1})
        returns[per_path] = [env.step(action)[1] for action in actions]
    weights = RewardWeights()
    paths = np.array([[FRONT, 0, 1], [FRONT, 0, 1], [FRONT, 8, 9]])
    coverage = coverage_matrix(GRID, N_SPHERE_POINTS)
    so_far = [set_reward(paths[:k], coverage, weights).reward for k in (1, 2, 3)]
    np.testing.assert_allclose(returns[False], [0, 0, 0, 0, 0, so_far[2]], atol=1e-6)
    np.testing.assert_allclose(returns[True], [0, so_far[0], 0, so_far[1] - so_far[0],
                                               0, so_far[2] - so_far[1]], atol=1e-6)
    assert returns[True][3] < 0 < returns[True][1]  # the repeat lowers the set reward, is paid so
    assert sum(returns[True]) == pytest.approx(sum(returns[False]))
    with pytest.raises(TypeError, match="set_reward_per_path"):
        Panorama360Env(feature_cache=cache, set_reward_per_path="yes")


@pytest.mark.parametrize("n_paths,path_length", [(1, 1), (2, 5), (15, 7)])
def test_terminates_after_exactly_k_times_t_steps(cache, n_paths, path_length):
    env = small_env(cache, n_paths=n_paths, path_length=path_length)
    env.reset(seed=0)
    for n in range(1, n_paths * path_length + 1):
        _, _, terminated, truncated, info = env.step(n % V)
        assert terminated is (n == n_paths * path_length) and truncated is False
    assert len(info["paths"]) == n_paths and len(info["paths"][0]) == path_length + 1


def test_observations_are_independent_copies(cache):
    env = small_env(cache)
    obs, _ = env.reset(seed=0)
    kept = {key: value.copy() for key, value in obs.items()}
    for value in obs.values():
        value[...] = 0.0
    obs_next, *_ = env.step(3)
    np.testing.assert_array_equal(obs_next["candidates"], kept["candidates"])
    assert obs_next["history"][0] == kept["history"][0]


# ---------------------------------------------------------------- actions and masks

@pytest.mark.parametrize("action", [-1, V, np.int64(V)])
def test_out_of_range_action_is_a_value_error(cache, action):
    env = small_env(cache)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(action)


@pytest.mark.parametrize("action", [1.5, np.float32(2.0), "3", True, np.array([1, 2]), None])
def test_non_integer_action_is_a_type_error(cache, action):
    env = small_env(cache)
    env.reset(seed=0)
    with pytest.raises(TypeError, match="integer viewport index"):
        env.unwrapped.step(action)


def test_integer_like_actions_are_accepted(cache):
    env = small_env(cache)
    env.reset(seed=0)
    for action in (np.int32(1), np.array(2), np.uint8(3)):
        env.step(action)


def test_masks_follow_the_current_path(cache):
    env = small_env(cache)
    _, info = env.reset(seed=0)
    assert np.flatnonzero(~info["action_mask"]).tolist() == [FRONT]
    _, _, _, _, info = env.step(7)
    assert np.flatnonzero(~env.unwrapped.action_masks()).tolist() == [FRONT, 7]
    _, _, _, _, info = env.step(7)  # revisit allowed by default, ends path 0
    assert np.flatnonzero(~info["action_mask"]).tolist() == [FRONT]


def test_seen_counts_the_earlier_paths_of_the_episode_per_viewport(cache):
    env = small_env(cache)  # K = 3 paths of T = 2 steps from the front viewport
    observation, _ = env.reset(seed=0)
    assert not observation["seen"].any()
    observation, *_ = env.step(7)
    assert not observation["seen"].any()  # the current path is `visited`, not `seen`
    observation, *_ = env.step(7)  # a revisit: path 0 is {FRONT, 7}, counted once each
    expected = np.zeros(V, np.float32)
    expected[[FRONT, 7]] = 0.5  # 1 of K - 1 = 2
    np.testing.assert_array_equal(observation["seen"], expected)
    env.step(3)
    observation, *_ = env.step(7)
    expected[[FRONT, 7]], expected[3] = 1.0, 0.5
    np.testing.assert_array_equal(observation["seen"], expected)
    env.step(1)
    observation, _, terminated, _, _ = env.step(2)  # the last path adds nothing: it stays in 0..1
    assert terminated and env.observation_space.contains(observation)
    np.testing.assert_array_equal(observation["seen"], expected)
    observation, _ = env.reset(seed=1)
    assert not observation["seen"].any()


def test_reject_masked_actions(cache):
    env = small_env(cache, reject_masked_actions=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="already in the current path"):
        env.step(FRONT)
    env.step(2)
    with pytest.raises(ValueError, match="reject_masked_actions"):
        env.step(2)


def test_mask_rule_allows_every_viewport_once_all_are_visited():
    # The env never gets there (T <= V - 1); the rule still keeps a softmax over it defined.
    visited = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    expected = [[False, True, False], [True, True, True]]
    assert allowed_viewports(visited).tolist() == expected
    assert allowed_viewports(torch.from_numpy(visited)).tolist() == expected


# ---------------------------------------------------------------- images, splits, starts

def test_reset_with_image_index(cache):
    env = small_env(cache)
    stats = env.unwrapped.feature_stats
    for index in env.unwrapped.image_indices:
        obs, info = env.reset(seed=0, options={"image_index": index})
        assert info["image_index"] == index
        expected = np.clip(stats.standardize_global(cache.global_features[index]), -10, 10)
        np.testing.assert_allclose(obs["global"], expected)
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"image": 0})
    with pytest.raises(TypeError, match="integer"):
        env.reset(options={"image_index": 1.0})


def test_splits_hold_disjoint_references_and_share_statistics(cache):
    train = small_env(cache, split="train").unwrapped
    test = small_env(cache, split="test").unwrapped
    reference_split = split_by_reference(cache.ref_ids, test_fraction=0.2, seed=0)
    assert train.image_indices == reference_split.train and test.image_indices == reference_split.test
    assert {cache.ref_ids[i] for i in train.image_indices}.isdisjoint(
        {cache.ref_ids[i] for i in test.image_indices})
    expected = FeatureStats.fit(cache, list(reference_split.train)).to_dict()
    assert train.feature_stats.to_dict() == expected == test.feature_stats.to_dict()
    with pytest.raises(ValueError, match="split='all'"):
        train.reset(options={"image_index": test.image_indices[0]})
    drawn = {train.reset(seed=s)[1]["image_index"] for s in range(20)}
    assert drawn <= set(train.image_indices)


def test_split_all_fits_statistics_on_every_image_and_needs_no_split():
    single_reference = random_feature_cache(3, grid=GRID, dim=D, n_refs=1)
    env = Panorama360Env(feature_cache=single_reference, split="all")
    assert env.image_indices == (0, 1, 2)
    assert env.feature_stats.to_dict() == FeatureStats.fit(single_reference).to_dict()
    with pytest.raises(ValueError, match="2 distinct reference"):
        Panorama360Env(feature_cache=single_reference, split="train")


def test_feature_stats_argument(cache):
    stats = FeatureStats.fit(cache, [0])
    env = small_env(cache, feature_stats=stats.to_dict()).unwrapped
    assert env.feature_stats.to_dict() == stats.to_dict()
    other = random_feature_cache(4, grid=GRID, dim=D + 1)
    with pytest.raises(ValueError, match="dimension"):
        Panorama360Env(feature_cache=cache, feature_stats=FeatureStats.fit(other))


def test_front_start_of_the_default_grid_is_viewport_11():
    env = gym.make(ENV_ID, feature_cache=random_feature_cache(2, dim=4), split="all")
    obs, _ = env.reset(seed=0)
    assert obs["history"][0] == 11
    assert ViewportGrid().centers_deg[11].tolist() == [-22.5, 22.5]


def test_random_equator_start_varies_per_path(cache):
    env = small_env(cache, start="random_equator", n_paths=12, path_length=1)
    env.reset(seed=0)
    starts = set()
    for _ in range(12):
        info = env.step(0)[4]
        starts.add(info["path"][0])
    assert starts <= set(GRID.equator_indices().tolist())
    assert len(starts) > 1


def test_dataset_start_falls_back_to_front(cache):
    env = small_env(cache, start="dataset")
    for index in range(len(cache)):
        obs, _ = env.reset(seed=0, options={"image_index": index})
        provided = int(cache.start_viewports[index])
        assert obs["history"][0] == (provided if provided >= 0 else FRONT)
    assert (cache.start_viewports >= 0).any() and (cache.start_viewports < 0).any()


@pytest.mark.parametrize("kwargs,match", [
    ({"n_paths": 0}, "n_paths"), ({"path_length": 1.5}, "path_length"), ({"split": "val"}, "split"),
    ({"start": "north"}, "start"), ({"render_mode": "human"}, "render_mode"),
    ({"root": "/nowhere"}, "not both"), ({"grid": ViewportGrid()}, "grid"),
    ({"feature_clip": 0}, "feature_clip"), ({"feature_clip": float("inf")}, "feature_clip"), ({"lambda_ssim": float("inf")}, "ssim"),
])
def test_bad_arguments(cache, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Panorama360Env(feature_cache=cache, **kwargs)


# ---------------------------------------------------------------- rendering

def test_render_rgb_array(cache):
    env = small_env(cache, render_mode="rgb_array")
    env.reset(seed=0, options={"image_index": 1})
    first = env.render()
    assert first.shape == (256, 512, 3) and first.dtype == np.uint8
    env.step(0)
    second = env.render()
    assert second.shape == first.shape and not np.array_equal(first, second)
    for action in (1, 2, 3, 4, 5):
        env.step(action)
    assert env.render().shape == (256, 512, 3)


def test_render_ansi(cache):
    env = small_env(cache, render_mode="ansi")
    env.reset(seed=0, options={"image_index": 0})
    env.step(0)
    text = env.render()
    lines = text.splitlines()
    assert lines[0].startswith(f"image {cache.image_ids[0]}") and "path 1/3" in lines[0]
    assert len(lines) == 1 + GRID.n_lat
    assert lines[1].split("°")[1].split() == ["[", "1]", ".", ".", "."]
    assert lines[2].split("°")[1].split() == [".", "0", ".", "."]
    env.step(1)
    assert "+" in env.render()  # viewports of path 1 are marked as seen before


def test_render_without_mode_warns(cache):
    env = Panorama360Env(feature_cache=cache, split="all")
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


# ---------------------------------------------------------------- vectorisation

def test_dummy_vec_env_and_masking_support(cache):
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    venv = make_vec_env(make_env(feature_cache=cache, split="all", n_paths=2, path_length=2),
                        n_envs=2, seed=0, vec_env_cls=DummyVecEnv)
    obs = venv.reset()
    assert obs["candidates"].shape == (2, V, D)
    assert is_masking_supported(venv)
    assert get_action_masks(venv).shape == (2, V)
    for n in range(1, 5):
        obs, rewards, dones, infos = venv.step(np.array([n, n + 1]))
    assert dones.tolist() == [True, True]
    assert "terminal_observation" in infos[0] and infos[0]["paths"].shape == (2, 3)
    venv.close()


def test_subproc_vec_env(cache):
    # "fork" keeps this test short; what the default forkserver/spawn start adds (pickling the
    # thunk, importing the package afresh) is covered by the thunk pickling and fresh-process tests.
    venv = make_vec_env(make_env(feature_cache=cache, split="all", n_paths=1, path_length=2),
                        n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                        vec_env_kwargs={"start_method": "fork"})
    try:
        venv.reset()
        venv.step(np.array([0, 1]))
        _, rewards, dones, infos = venv.step(np.array([2, 3]))
        assert dones.tolist() == [True, True]
        assert [info["path"][1:] for info in infos] == [[0, 2], [1, 3]]
        assert np.isfinite(rewards).all()
    finally:
        venv.close()


def test_gymnasium_make_vec(cache):
    envs = gym.make_vec(QUALIFIED_ENV_ID, num_envs=2, vectorization_mode="sync",
                        feature_cache=cache, split="all", n_paths=1, path_length=2)
    obs, infos = envs.reset(seed=0)
    assert obs["candidates"].shape == (2, V, D)
    envs.step(np.array([0, 1]))
    _, rewards, terminated, truncated, infos = envs.step(np.array([2, 3]))
    assert terminated.tolist() == [True, True] and truncated.tolist() == [False, False]
    assert infos["paths"].shape == (2, 1, 3)
    envs.close()


# ---------------------------------------------------------------- default data (real builders)

def test_make_with_no_arguments_loads_the_shipped_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RL_SCANIQA_HOME", str(tmp_path))
    env = gym.make(ENV_ID, progress=False)
    obs, info = env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(0)
    assert isinstance(reward, float) and np.isfinite(reward)
    assert (terminated, truncated) == (False, False)
    assert obs["candidates"].shape == (32, env.unwrapped.feature_cache.dim)
    assert len(env.unwrapped.image_indices) > 0
    assert list(tmp_path.iterdir()) == []  # nothing generated, nothing built


def test_qualified_id_works_in_a_fresh_process(tmp_path):
    code = ("import gymnasium as gym; e = gym.make('rl_scaniqa.envs:Panorama360Env-v0', progress=False); "
            "e.reset(seed=0); print(e.step(0)[1])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "RL_SCANIQA_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert np.isfinite(float(result.stdout.strip().splitlines()[-1]))


def test_other_dataset_needs_a_root(tmp_path):
    with pytest.raises(ValueError, match="needs root"):
        Panorama360Env(dataset="oiqa", data_home=tmp_path)


def test_build_lock_serialises_builders(tmp_path):
    lock_file, order = tmp_path / "build.lock", []

    def contender():
        with exclusive_lock(lock_file):
            order.append("contender")

    with exclusive_lock(lock_file):
        thread = threading.Thread(target=contender)
        thread.start()
        thread.join(timeout=0.3)
        order.append("holder")
    thread.join(timeout=10)
    assert order == ["holder", "contender"]


def test_incomplete_default_folder_is_reported_not_deleted(tmp_path):
    stray = tmp_path / "synth360-quick" / "notes.txt"
    stray.parent.mkdir()
    stray.write_text("mine")
    with pytest.raises(DatasetError, match="no labels.csv"):
        ensure_default_data(home=tmp_path, progress=False)
    assert stray.read_text() == "mine"


def test_path_length_is_bounded_like_the_scorer(cache):
    V = cache.grid.n_viewports
    small_env(cache, n_paths=1, path_length=V - 1).reset(seed=0)
    with pytest.raises(ValueError, match=rf"path_length must be at most {V - 1} \(V - 1\)"):
        small_env(cache, n_paths=1, path_length=V)
