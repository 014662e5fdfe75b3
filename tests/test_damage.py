"""Where-to-look diagnostics: cap overlap, damage hit rate, distance profile, oracle agents."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from rl_scaniqa.agents.baselines import DamageOracleAgent, RandomPathAgent
from rl_scaniqa.agents.damage import (
    DISTANCE_BIN_EDGES,
    HIT_FRACTION,
    DamageHitReward,
    cap_distances,
    cap_overlap,
    damage_hit_rate,
    damage_hits,
    damage_ranking,
    distance_profile,
    has_cap,
    local_srcc,
)
from rl_scaniqa.agents.damage_locator import DamageLocatorAgent, LocatorSettings, fit_damage_locator
from rl_scaniqa.agents.evaluation import Scanpaths, run_agent
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.features.cache import FeatureStats
from rl_scaniqa.envs.features.random_cache import random_feature_cache
from rl_scaniqa.envs.panorama_env import Panorama360Env

GRID = ViewportGrid()
FRONT = GRID.nearest(0.0, 0.0)
N_PATHS, PATH_LENGTH = 3, 7


def centre(viewport: int) -> tuple[float, float]:
    yaw, pitch = GRID.centers_deg[viewport]
    return float(yaw), float(pitch)


def far_from(viewport: int, count: int) -> list[int]:
    """Viewports whose centres lie more than 90° from ``viewport``'s: they see none of a small cap
    around it (a 90° frustum reaches at most 54.7° from its centre, at the corners)."""
    distances = cap_distances(GRID, np.array([[*centre(viewport), 1.0]]))[0]
    far = [int(v) for v in np.flatnonzero(distances > 90.0) if v != FRONT]
    assert len(far) >= count
    return far[:count]


def synth_like_cache(n_images: int = 12, seed: int = 7):
    """A random cache whose first two thirds carry Synth360-like caps (radius 25-40°, centres off
    the poles), the rest none, like global distortions and references."""
    cache = random_feature_cache(n_images, grid=GRID, dim=8, seed=seed)
    rng = np.random.default_rng(seed)
    caps = np.full((n_images, 3), np.nan, dtype=np.float32)
    local = (2 * n_images) // 3
    caps[:local] = np.stack([rng.uniform(-180, 180, local), rng.uniform(-60, 60, local),
                             rng.uniform(25, 40, local)], axis=1)
    return dataclasses.replace(cache, caps=caps)


def fake_scanpaths(paths: list[list[list[int]]]) -> Scanpaths:
    array = np.asarray(paths, dtype=np.int64)
    n, k, length = array.shape
    return Scanpaths(image_indices=np.arange(n), paths=array,
                     path_features=np.zeros((n, k, length, 1), np.float32),
                     global_features=np.zeros((n, 1), np.float32), mos=np.zeros(n),
                     mos_normalized=np.zeros(n), agent_seconds=0.0)


def test_cap_overlap_of_a_small_cap_and_of_the_whole_sphere():
    small = cap_overlap(GRID, np.array([[*centre(12), 10.0]]))[0]
    assert small[12] == 1.0  # 10° around the centre lies well inside the 90° frustum
    assert (small[far_from(12, 5)] == 0.0).all()
    # A cap of radius 180° is the sphere: each viewport sees 2π/3 sr of 4π, a sixth of it.
    whole = cap_overlap(GRID, np.array([[0.0, 0.0, 180.0]]))[0]
    np.testing.assert_allclose(whole, 1 / 6, atol=0.01)
    with pytest.raises(ValueError, match="NaN"):
        cap_overlap(GRID, np.array([[np.nan, np.nan, np.nan]]))
    with pytest.raises(ValueError, match="holds none"):
        cap_overlap(GRID, np.array([[0.0, 0.0, 0.01]]))


def test_damage_hit_rate_and_distance_profile_on_a_hand_computed_case():
    a, b = 12, 3
    fa, fb = far_from(a, 3), far_from(b, 3)
    cache = random_feature_cache(3, grid=GRID, dim=8)
    caps = np.array([[*centre(a), 10.0], [np.nan] * 3, [*centre(b), 10.0]], dtype=np.float32)
    cache = dataclasses.replace(cache, caps=caps)
    scanpaths = fake_scanpaths([
        # Image 0: the cap's viewport is taken twice in 6 steps; the start (column 0) is no step,
        # so starting on the cap's viewport counts for nothing.
        [[a, a, fa[0], fa[1]], [a, fa[0], a, fa[2]]],
        # Image 1 has no cap: its steps are not counted, whatever they are.
        [[FRONT, a, b, 0], [FRONT, b, a, 1]],
        # Image 2: 0 hits in 6 steps.
        [[b, fb[0], fb[1], fb[2]], [FRONT, fb[2], fb[1], fb[0]]],
    ])
    assert damage_hit_rate(scanpaths, cache) == pytest.approx(2 / 12)
    # Distinct viewports over an image's paths, every image counted: {a, fa0, fa1, fa2}, ...
    seen = [len({a, *fa}), len({FRONT, a, b, 0, 1}), len({b, *fb, FRONT})]
    assert scanpaths.viewports_seen() == pytest.approx(np.mean(seen))
    profile = distance_profile(scanpaths, cache)
    assert profile.sum() == pytest.approx(1.0)
    # The two hits sit 0° from the cap centre: 2 of the 12 steps in the first bin.
    assert profile[0] == pytest.approx(2 / 12)
    assert len(profile) == len(DISTANCE_BIN_EDGES) - 1
    # Without caps there is nothing to measure.
    plain = random_feature_cache(3, grid=GRID, dim=8)
    assert math.isnan(damage_hit_rate(scanpaths, plain))
    assert np.isnan(distance_profile(scanpaths, plain)).all()


def test_local_srcc_uses_only_the_images_with_a_cap():
    cache = synth_like_cache(12)
    local = has_cap(cache)
    predicted = np.where(local, cache.mos, -cache.mos)  # right order on local images only
    assert local_srcc(cache, np.arange(12), predicted) == pytest.approx(1.0)
    assert math.isnan(local_srcc(cache, np.arange(8, 12), predicted))  # no local image there


@pytest.fixture(scope="module")
def runs():
    cache = synth_like_cache()
    images = list(range(len(cache)))
    options = {"n_paths": N_PATHS, "path_length": PATH_LENGTH, "seed": 0}
    agents = {"oracle": DamageOracleAgent(GRID, seed=4),
              "anti": DamageOracleAgent(GRID, least=True, seed=4),
              "random": RandomPathAgent(seed=4)}
    return cache, {name: run_agent(agent, cache, images, **options) for name, agent in agents.items()}


def test_oracle_hits_as_often_as_possible_and_the_anti_oracle_never(runs):
    cache, scanpaths = runs
    local = np.flatnonzero(has_cap(cache))
    overlap = cap_overlap(GRID, cache.caps[local])
    # The most hits a path can hold: the viewports that see a quarter of the cap, less the
    # start (visited before the first step), at most T of them.
    hitting = (overlap >= HIT_FRACTION)
    hitting[:, FRONT] = False
    best = np.minimum(hitting.sum(axis=1), PATH_LENGTH).sum() / (len(local) * PATH_LENGTH)
    oracle = damage_hit_rate(scanpaths["oracle"], cache)
    random = damage_hit_rate(scanpaths["random"], cache)
    assert oracle == pytest.approx(best)
    assert oracle > 0.25 and oracle > 2 * random
    assert damage_hit_rate(scanpaths["anti"], cache) == 0.0
    # The oracle's first step is the viewport that sees most of the cap (unless it is the start).
    first = scanpaths["oracle"].paths[local, 0, 1]
    ranked = np.argsort(-overlap, axis=1, kind="stable")
    expected = np.where(ranked[:, 0] == FRONT, ranked[:, 1], ranked[:, 0])
    np.testing.assert_array_equal(overlap[np.arange(len(local)), first],
                                  overlap[np.arange(len(local)), expected])


def test_oracle_paths_respect_the_mask_and_fall_back_to_random_paths_without_a_cap(runs):
    cache, scanpaths = runs
    for name in ("oracle", "anti"):
        paths = scanpaths[name].paths
        for path in paths.reshape(-1, paths.shape[-1]):
            assert len(set(path.tolist())) == len(path), f"{name} revisits in {path}"
        without = ~has_cap(cache)
        np.testing.assert_array_equal(paths[without], scanpaths["random"].paths[without])
        assert not np.array_equal(paths[~without], scanpaths["random"].paths[~without])


def test_assessor_fit_scores_the_oracle_agents_paths(runs):
    """``assessor_fit.py``'s oracle and anti test paths are those of the env's oracle agents
    (one ranking, :func:`damage_ranking`), and images without a cap keep the same random paths."""
    spec = importlib.util.spec_from_file_location("assessor_fit_script",
                                                  Path(__file__).parents[1] / "experiments" / "assessor_fit.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(script)
    cache, scanpaths = runs
    local = has_cap(cache)
    paths = {kind: script.path_sampler(cache, kind, PATH_LENGTH + 1)(np.random.default_rng(1))
             for kind in ("random", "oracle", "anti")}
    for kind in ("oracle", "anti"):
        for k in range(N_PATHS):
            np.testing.assert_array_equal(paths[kind][local], scanpaths[kind].paths[local, k])
        np.testing.assert_array_equal(paths[kind][~local], paths["random"][~local])
    assert not np.array_equal(paths["oracle"][local], paths["random"][local])


def test_damage_ranking_orders_by_overlap_then_distance():
    caps = np.array([[*centre(12), 20.0], [*centre(3), 60.0]])
    overlap, distance = cap_overlap(GRID, caps), cap_distances(GRID, caps)
    for least in (False, True):
        ranking = damage_ranking(GRID, caps, least=least)
        assert sorted(ranking[0].tolist()) == list(range(GRID.n_viewports))
        sign = -1.0 if least else 1.0
        for row in range(len(caps)):
            keys = list(zip(-sign * overlap[row, ranking[row]], sign * distance[row, ranking[row]]))
            assert keys == sorted(keys)
    assert ranking[0, 0] != damage_ranking(GRID, caps)[0, 0]


def test_oracle_refuses_another_grid_and_predict_before_begin_episodes(runs):
    cache, _ = runs
    with pytest.raises(ValueError, match="grid"):
        DamageOracleAgent(ViewportGrid(n_lon=6, n_lat=3)).begin_episodes(np.arange(2), cache)
    observation = {"visited": np.zeros(GRID.n_viewports, np.float32)}
    with pytest.raises(RuntimeError, match="begin_episodes"):
        DamageOracleAgent(GRID).predict(observation)


def test_damage_hit_reward_pays_exactly_the_steps_that_hit_the_cap():
    from stable_baselines3.common.vec_env import DummyVecEnv

    cache = synth_like_cache()
    kwargs = dict(feature_cache=cache, split="all", n_paths=2, path_length=3)
    plain = DummyVecEnv([lambda: Panorama360Env(**kwargs) for _ in range(3)])
    wrapped = DamageHitReward(DummyVecEnv([lambda: Panorama360Env(**kwargs) for _ in range(3)]), cache, 2.5)
    for env in (plain, wrapped):
        env.seed(3)
        env.reset()
    overlap = np.zeros((len(cache), GRID.n_viewports))
    located = has_cap(cache)
    overlap[located] = cap_overlap(GRID, cache.caps[located])
    rng = np.random.default_rng(0)
    paid = 0
    for _ in range(30):  # five episodes per env
        actions = rng.integers(0, GRID.n_viewports, size=3)
        _, base, _, _ = plain.step(actions)
        _, rewards, _, infos = wrapped.step(actions)
        hits = np.array([overlap[i["image_index"], i["path"][-1]] >= HIT_FRACTION for i in infos])
        np.testing.assert_allclose(rewards - base, 2.5 * hits, atol=1e-6)
        paid += int(hits.sum())
    assert paid > 0  # the check saw hits, not only misses


def test_label_guided_training_pays_the_hit_reward_and_needs_located_damage():
    from rl_scaniqa.agents.cotrain import setup_cotraining
    from training_fixtures import tiny_settings

    cache = synth_like_cache()
    guided = setup_cotraining(tiny_settings(reward={"damage_hit": 2.0}), cache)
    assert isinstance(guided.reward_scaling.venv, DamageHitReward)
    assert guided.reward_scaling.venv.weight == 2.0 and guided.reward_scaling.venv.hits.any()
    assert not isinstance(setup_cotraining(tiny_settings(), cache).reward_scaling.venv, DamageHitReward)
    unlocated = dataclasses.replace(cache, caps=np.full_like(cache.caps, np.nan))
    with pytest.raises(ValueError, match="damage_hit needs training labels that locate the damage"):
        setup_cotraining(tiny_settings(reward={"damage_hit": 2.0}), unlocated)
    with pytest.raises(ValueError, match="damage_hit must be 0"):
        tiny_settings(reward={"damage_hit": -1.0})


# ---------------------------------------------------------------- the supervised damage locator


def marked_cache(marked: bool, n_images: int = 90):
    """A cap cache whose viewports that see the damage carry +6 on feature 0 when ``marked``
    (a feature that shows the damage); unmarked, nothing in the features says where it is."""
    cache = synth_like_cache(n_images, seed=11)
    if marked:
        located = has_cap(cache)
        hits = damage_hits(GRID, cache.caps[located])
        features = cache.viewport_features.copy()
        features[np.flatnonzero(located)[:, None], np.arange(GRID.n_viewports)[None], 0] += 6.0 * hits
        cache = dataclasses.replace(cache, viewport_features=features)
    return cache


@pytest.mark.parametrize("marked", [True, False])
def test_the_locator_finds_the_damage_only_when_the_features_show_it(marked):
    cache = marked_cache(marked)
    fit, held_out = np.arange(0, len(cache), 3), np.setdiff1d(np.arange(len(cache)), np.arange(0, len(cache), 3))
    stats = FeatureStats.fit(cache, fit)
    locator = fit_damage_locator(cache, stats, fit, feature_clip=10.0)
    env_kwargs = {"feature_stats": stats}
    options = {"n_paths": 2, "path_length": PATH_LENGTH, "seed": 0, "env_kwargs": env_kwargs}
    located = held_out[has_cap(cache, held_out)]
    rate = damage_hit_rate(run_agent(DamageLocatorAgent(locator), cache, located, **options), cache)
    chance = damage_hit_rate(run_agent(RandomPathAgent(seed=0), cache, located, **options), cache)
    best = damage_hit_rate(run_agent(DamageOracleAgent(GRID), cache, located, **options), cache)
    if marked:  # as often as the oracle, which a 7-step path cannot always keep on a small cap
        assert rate > 0.8 * best and rate > 2 * chance
    else:
        assert rate < chance + 0.15


def test_the_locator_agent_respects_the_mask_and_the_fit_needs_caps():
    cache = marked_cache(True, n_images=12)
    stats = FeatureStats.fit(cache)
    locator = fit_damage_locator(cache, stats, np.arange(len(cache)), feature_clip=10.0,
                                 settings=LocatorSettings(epochs=5))
    paths = run_agent(DamageLocatorAgent(locator), cache, [0, 1], n_paths=2, path_length=PATH_LENGTH,
                      seed=0, env_kwargs={"feature_stats": stats}).paths
    assert all(len(set(path)) == len(path) for image in paths for path in image)
    assert (paths[:, 0] == paths[:, 1]).all()  # deterministic: every path is the same ranking
    no_caps = dataclasses.replace(cache, caps=np.full_like(cache.caps, np.nan))
    with pytest.raises(ValueError, match="located cap"):
        fit_damage_locator(no_caps, stats, np.arange(len(cache)), feature_clip=10.0)
    with pytest.raises(ValueError, match="hidden"):
        LocatorSettings(hidden=0)
