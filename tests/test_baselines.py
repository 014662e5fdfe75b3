"""Baseline scanpath agents and the SVR baseline, run through the shared evaluation harness."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from rl_scaniqa.agents.baselines import (
    CUBE_FACE_PATH_LENGTH,
    AllViewportsAgent,
    CubeFaceAgent,
    EntropyGreedyAgent,
    EquatorSweepAgent,
    HumanScanpathAgent,
    RandomPathAgent,
    SVRBaseline,
    all_viewports_kwargs,
    human_scanpaths_from_records,
)
from rl_scaniqa.agents.evaluation import run_agent
from rl_scaniqa.assessor.metrics import srcc
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.features.random_cache import random_feature_cache

GRID = ViewportGrid()
FRONT = GRID.nearest(0.0, 0.0)


@pytest.fixture(scope="module")
def cache():
    # Even images have no dataset start, so "front" and "dataset" starts agree on them.
    return random_feature_cache(6, grid=GRID, dim=8, seed=3)


def run(agent, cache, indices=(0, 2, 4), **kwargs):
    options = {"n_paths": 3, "path_length": 5, "seed": 0, **kwargs}
    return run_agent(agent, cache, list(indices), **options)


def assert_valid(paths: np.ndarray, n_viewports: int) -> None:
    assert paths.min() >= 0 and paths.max() < n_viewports
    for path in paths.reshape(-1, paths.shape[-1]):
        assert len(set(path.tolist())) == len(path), f"revisit in {path}"
    assert (paths[..., 0] == FRONT).all()


@pytest.mark.parametrize("make", [
    lambda: RandomPathAgent(seed=0),
    lambda: EquatorSweepAgent(GRID),
    lambda: EntropyGreedyAgent(GRID, seed=0),
    AllViewportsAgent,
])
def test_paths_are_valid(cache, make):
    scanpaths = run(make(), cache)
    assert scanpaths.paths.shape == (3, 3, 6)
    assert_valid(scanpaths.paths, GRID.n_viewports)


def test_agents_accept_a_single_unbatched_observation(cache):
    from rl_scaniqa.envs.panorama_env import Panorama360Env

    env = Panorama360Env(feature_cache=cache, split="all", n_paths=2, path_length=3)
    observation, _ = env.reset(seed=0, options={"image_index": 0})
    for agent in (RandomPathAgent(1), EquatorSweepAgent(GRID), CubeFaceAgent(GRID),
                  AllViewportsAgent()):
        action, _ = agent.predict(observation)
        assert np.ndim(action) == 0 and 0 <= int(action) < GRID.n_viewports
        assert int(action) != FRONT


def test_random_paths_are_seeded_and_batch_independent(cache):
    first = run(RandomPathAgent(seed=7), cache).paths
    again = run(RandomPathAgent(seed=7), cache).paths
    one_by_one = run(RandomPathAgent(seed=7), cache, batch_size=1).paths
    other = run(RandomPathAgent(seed=8), cache).paths
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, one_by_one)
    assert not np.array_equal(first, other)
    # K paths of one image differ (a random agent explores).
    assert len({tuple(p) for p in first[0]}) > 1


def test_entropy_greedy_sampling_is_seeded(cache):
    first = run(EntropyGreedyAgent(GRID, seed=1), cache).paths
    np.testing.assert_array_equal(first, run(EntropyGreedyAgent(GRID, seed=1), cache).paths)
    assert not np.array_equal(first, run(EntropyGreedyAgent(GRID, seed=2), cache).paths)


def test_begin_episodes_gets_each_batch_in_row_order(cache):
    seen = []

    class Recorder(AllViewportsAgent):
        def begin_episodes(self, image_indices, feature_cache):
            seen.append((image_indices.tolist(), feature_cache is cache))

    run(Recorder(), cache, indices=(5, 1, 3), batch_size=2)
    assert seen == [([5, 1], True), ([3], True)]


def test_cube_faces_are_the_nearest_grid_viewports(cache):
    agent = CubeFaceAgent(GRID)
    # front (0,0) -> 11; right (90,0) -> 13; back (180,0) -> 8; left (-90,0) -> 9;
    # up -> 0 and down -> 24 (all yaws tie at a pole; the lowest index of the row wins).
    assert agent.faces.tolist() == [11, 13, 8, 9, 0, 24]
    scanpaths = run(agent, cache, n_paths=2, path_length=CUBE_FACE_PATH_LENGTH)
    assert (scanpaths.paths == np.array([11, 13, 8, 9, 0, 24])).all()
    with pytest.raises(ValueError, match="no face left"):
        run(agent, cache, n_paths=1, path_length=CUBE_FACE_PATH_LENGTH + 1)


def test_cube_faces_on_a_coarse_grid_are_kept_once():
    grid = ViewportGrid(n_lon=2, n_lat=1)
    assert len(set(CubeFaceAgent(grid).faces.tolist())) == len(CubeFaceAgent(grid).faces)


def test_equator_sweep_continues_around_the_band(cache):
    paths = run(EquatorSweepAgent(GRID), cache, n_paths=3, path_length=7).paths[0]
    # Equator band in yaw order from the start column 3: (11, 19), (12, 20), (13, 21), ...
    assert paths[0].tolist() == [11, 19, 12, 20, 13, 21, 14, 22]
    assert paths[1].tolist() == [11, 15, 23, 8, 16, 9, 17, 10]
    assert paths[2].tolist() == [11, 18, 19, 12, 20, 13, 21, 14]


def test_entropy_greedy_picks_high_entropy_and_avoids_revisits():
    base = random_feature_cache(2, grid=GRID, dim=4, seed=0)
    entropy = np.full((2, GRID.n_viewports), 2.0, dtype=np.float32)
    favourites = [30, 5, 26, 2]   # polar rows: the equator prior cannot be what picks them
    entropy[:, favourites] = [7.9, 7.8, 7.7, 7.6]
    cache = dataclasses.replace(base, entropy=entropy)
    agent = EntropyGreedyAgent(GRID, equator_weight=0.25, revisit_penalty=2.0)
    paths = run_agent(agent, cache, [0], n_paths=2, path_length=4, deterministic=True).paths[0]
    assert paths[0].tolist() == [FRONT, *favourites]
    # The second path is pushed off the first path's viewports by the revisit penalty.
    assert not set(paths[1, 1:].tolist()) & set(paths[0].tolist())
    # Sampling at a low temperature still finds them.
    sampled = run_agent(EntropyGreedyAgent(GRID, temperature=0.01, revisit_penalty=0.0), cache,
                        [0], n_paths=1, path_length=4).paths[0, 0]
    assert sorted(sampled[1:].tolist()) == sorted(favourites)


def test_entropy_greedy_needs_to_know_the_images(cache):
    from rl_scaniqa.envs.panorama_env import Panorama360Env

    env = Panorama360Env(feature_cache=cache, split="all", n_paths=1, path_length=2)
    observation, _ = env.reset(seed=0)
    with pytest.raises(RuntimeError, match="begin_episodes"):
        EntropyGreedyAgent(GRID).predict(observation)


def test_all_viewports_path_holds_the_whole_grid(cache):
    scanpaths = run(AllViewportsAgent(), cache, **all_viewports_kwargs(GRID))
    assert scanpaths.paths.shape == (3, 1, GRID.n_viewports)
    for path in scanpaths.paths[:, 0]:
        assert sorted(path.tolist()) == list(range(GRID.n_viewports))


def test_human_agent_replays_subjects_then_moves_to_the_nearest(cache):
    # Subject A revisits 12 and repeats the start; subject B is short.
    scanpaths = {cache.image_ids[0]: [[FRONT, 12, 13, 12, 14, 6], [20]],
                 cache.image_ids[2]: [[3, 4]]}
    agent = HumanScanpathAgent(scanpaths, GRID)
    paths = run(agent, cache, indices=(0, 2), n_paths=3, path_length=4).paths
    assert paths[0, 0].tolist() == [FRONT, 12, 13, 14, 6]
    assert paths[0, 2].tolist() == [FRONT, 12, 13, 14, 6]       # subject k mod S
    assert paths[0, 1, :2].tolist() == [FRONT, 20]
    assert paths[1, 0, :3].tolist() == [FRONT, 3, 4]
    assert_valid(paths, GRID.n_viewports)
    # After the recorded viewports, the smallest head movement: a neighbour of viewport 4.
    centers = GRID.centers_deg
    step = np.abs(((centers[paths[1, 0, 3], 0] - centers[4, 0]) + 180) % 360 - 180)
    assert step <= 360 / GRID.n_lon + 1e-9
    with pytest.raises(KeyError, match="no human scanpath"):
        run(agent, cache, indices=(4,), n_paths=1, path_length=2)


def test_human_scanpaths_from_records_check_the_grid():
    def record(image_id, paths, grid_key):
        return SimpleNamespace(image_id=image_id, path=f"{image_id}.png",
                               extra={"human_scanpaths": paths, "human_scanpath_grid": grid_key})

    records = [record("a", [[1, 2], []], GRID.key()), record("b", [[]], GRID.key()),
               SimpleNamespace(image_id="c", path="c.png", extra={})]
    assert human_scanpaths_from_records(records, GRID) == {"a": [[1, 2]]}
    with pytest.raises(ValueError, match="mapped on grid"):
        human_scanpaths_from_records([record("d", [[1]], "lon4-lat2-fov90-s224")], GRID)


def test_svr_beats_a_constant_predictor_on_a_synthetic_signal():
    base = random_feature_cache(80, grid=ViewportGrid(n_lon=4, n_lat=2), dim=6, n_refs=20, seed=1)
    rng = np.random.default_rng(0)
    signal = base.global_features[:, 0] + 0.5 * np.sin(base.viewport_features[:, :, 1].mean(1))
    mos = 1.0 + 4.0 * (signal - signal.min()) / np.ptp(signal) + rng.normal(0, 0.05, 80)
    cache = dataclasses.replace(base, mos=np.clip(mos, 1, 5).astype(np.float32))
    train = [i for i in range(80) if int(cache.ref_ids[i][3:]) < 15]
    test = [i for i in range(80) if int(cache.ref_ids[i][3:]) >= 15]
    model = SVRBaseline().fit(cache, train)
    predicted = model.predict(cache, test)
    target = cache.mos_normalized[test]
    constant = np.full_like(predicted, cache.mos_normalized[train].mean())
    assert np.mean((predicted - target) ** 2) < 0.5 * np.mean((constant - target) ** 2)
    assert srcc(predicted, target) > 0.8
    assert set(model.best_params) == {"C", "gamma"}


def test_svr_predict_before_fit_raises(cache):
    with pytest.raises(RuntimeError, match="before fit"):
        SVRBaseline().predict(cache, [0])
