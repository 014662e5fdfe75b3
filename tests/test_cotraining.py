"""Co-training: task-reward wrappers, assessor trainer, callback, trained-model save/load, harness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from rl_scaniqa.agents.assessor_training import AssessorTrainer, random_paths
from rl_scaniqa.agents.callbacks import RewardStatsCallback, RolloutLog
from rl_scaniqa.agents.cotrain import assessor_step_schedule, setup_cotraining, to_model
from rl_scaniqa.agents.evaluation import SeededPolicyAgent, run_agent, score_scanpaths
from rl_scaniqa.agents.path_baseline import RandomPathBaseline
from rl_scaniqa.agents.reward_wrapper import (
    AssessorRewardVecWrapper,
    AssessorRewardWrapper,
    TaskRewardSchedule,
    information_gain,
    task_rewards,
)
from rl_scaniqa.agents.scaniqa_model import ScanIQAModel, build_policy
from rl_scaniqa.agents.script_args import parse_script_args
from rl_scaniqa.agents.settings import CoTrainSettings, RewardSettings
from rl_scaniqa.assessor.losses import mse_reward, ranking_reward
from rl_scaniqa.assessor.model import AssessorConfig, QualityAssessor
from rl_scaniqa.envs.features.cache import FeatureStats
from rl_scaniqa.envs.features.random_cache import random_feature_cache
from rl_scaniqa.envs.panorama_env import Panorama360Env
from training_fixtures import GRID, tiny_cache, tiny_settings

@pytest.fixture(scope="module")
def cache():
    return tiny_cache()


def make_assessor(dim: int) -> QualityAssessor:
    torch.manual_seed(0)
    return QualityAssessor(AssessorConfig(feature_dim=dim, hidden_dim=16, attention_dim=8))


def env_kwargs(cache):
    return dict(feature_cache=cache, split="all", n_paths=2, path_length=3)


def test_schedule_ramps_linearly_then_holds():
    schedule = TaskRewardSchedule(mse_weight=2.0, rank_weight=1.0, warmup_steps=100)
    assert schedule.weights(0) == (0.0, 0.0)
    assert schedule.weights(50) == (1.0, 0.5)
    assert schedule.weights(1000) == (2.0, 1.0)
    assert TaskRewardSchedule(warmup_steps=0).weights(0) == (2.0, 2.0)


def test_vec_wrapper_adds_task_reward_exactly_at_path_ends(cache):
    assessor = make_assessor(cache.dim)
    plain = DummyVecEnv([lambda: Panorama360Env(**env_kwargs(cache)) for _ in range(3)])
    wrapped = AssessorRewardVecWrapper(
        DummyVecEnv([lambda: Panorama360Env(**env_kwargs(cache)) for _ in range(3)]), assessor,
        TaskRewardSchedule(mse_weight=2.0, rank_weight=0.5))
    plain.seed(7)
    wrapped.seed(7)
    plain.reset()
    wrapped.reset()
    rng = np.random.default_rng(0)
    for _ in range(6):
        actions = rng.integers(0, GRID.n_viewports, size=3)
        _, base_rewards, _, base_infos = plain.step(actions)
        _, rewards, _, infos = wrapped.step(actions)
        if not base_infos[0]["path_done"]:
            np.testing.assert_allclose(rewards, base_rewards, rtol=1e-6)
            continue
        predictions = assessor.predict(np.stack([i["path_features"] for i in infos]),
                                       np.stack([i["global_feature"] for i in infos]))
        targets = np.array([i["mos_normalized"] for i in infos])
        expected = 2.0 * -(predictions - targets) ** 2 + 0.5 * ranking_reward(predictions, targets)
        np.testing.assert_allclose(rewards - base_rewards, expected, rtol=1e-5, atol=1e-6)
        assert all("task_reward" in info for info in infos)
    finished = wrapped.pop_finished_paths()
    assert len(finished) == 6  # 3 envs x 2 paths of 3 steps in 6 steps
    assert all(len(f.path) == 4 for f in finished)
    assert wrapped.pop_finished_paths() == []


def test_gym_wrapper_ranks_against_memory_of_other_images(cache):
    assessor = make_assessor(cache.dim)
    env = AssessorRewardWrapper(Panorama360Env(**env_kwargs(cache)), assessor,
                                TaskRewardSchedule(mse_weight=1.0, rank_weight=1.0))
    env.reset(seed=0)
    first_path_info = None
    for _ in range(3):
        _, _, _, _, info = env.step(env.action_space.sample())
        if info["path_done"]:
            first_path_info = info
    assert first_path_info is not None
    # The first path has no other image in memory: the ranking part is 0.
    assert first_path_info["task_reward"]["rank"] == 0.0
    prediction = first_path_info["assessor_prediction"]
    assert first_path_info["task_reward"]["mse"] == pytest.approx(
        -(prediction - first_path_info["mos_normalized"]) ** 2)


def test_env_info_holds_the_path_seen_so_far_at_every_step(cache):
    env = Panorama360Env(**env_kwargs(cache))
    env.reset(seed=3)
    taken: list[int] = []
    info: dict = {}
    for action in (5, 1, 2):
        _, _, _, _, info = env.step(action)
        taken.append(action)
        assert info["path"][1:] == taken
        assert info["path_features"].shape == (len(taken) + 1, cache.dim)
    assert info["path_done"]


def _squared_errors(assessor, infos, drop_last: int) -> np.ndarray:
    """The assessor's squared error on each info's path without its last ``drop_last`` viewports."""
    features = np.stack([i["path_features"][:len(i["path"]) - drop_last] for i in infos])
    predictions = assessor.predict(features, np.stack([i["global_feature"] for i in infos]))
    return (predictions - np.array([i["mos_normalized"] for i in infos])) ** 2


def test_information_gain_is_the_error_reduction_of_the_last_viewport(cache):
    assessor = make_assessor(cache.dim)
    venv = DummyVecEnv([lambda: Panorama360Env(**env_kwargs(cache)) for _ in range(3)])
    venv.seed(4)
    venv.reset()
    venv.step(np.array([3, 4, 5]))
    _, _, _, infos = venv.step(np.array([1, 6, 7]))  # paths of three viewports, none ended
    gains = information_gain(assessor, infos)
    np.testing.assert_allclose(gains, _squared_errors(assessor, infos, 1) - _squared_errors(assessor, infos, 0),
                               rtol=1e-5, atol=1e-9)
    assert np.abs(gains).max() > 0  # an untrained assessor's prediction still moves with the viewports
    with pytest.raises(ValueError, match="at least one action"):
        information_gain(assessor, [dict(infos[0], path=infos[0]["path"][:1])])
    with pytest.raises(ValueError, match="task_gain"):
        RewardSettings(task_gain=-1.0)


def test_gains_of_a_path_telescope_to_its_error_reduction_from_the_start_alone(cache):
    assessor = make_assessor(cache.dim)
    schedule = TaskRewardSchedule(mse_weight=0.0, rank_weight=0.0, gain_weight=3.0)
    plain = DummyVecEnv([lambda: Panorama360Env(**env_kwargs(cache)) for _ in range(2)])
    wrapped = AssessorRewardVecWrapper(
        DummyVecEnv([lambda: Panorama360Env(**env_kwargs(cache)) for _ in range(2)]), assessor, schedule)
    single = AssessorRewardWrapper(Panorama360Env(**env_kwargs(cache)), assessor, schedule)
    single_plain = Panorama360Env(**env_kwargs(cache))
    for env in (plain, wrapped):
        env.seed(5)
        env.reset()
    single.reset(seed=5)
    single_plain.reset(seed=5)
    rng = np.random.default_rng(1)
    added, single_added = np.zeros(2), 0.0
    infos: list = []
    single_info: dict = {}
    for _ in range(3):  # one whole path of three actions
        actions = rng.integers(0, GRID.n_viewports, size=2)
        _, base, _, _ = plain.step(actions)
        _, rewards, _, infos = wrapped.step(actions)
        added += rewards - base
        _, single_reward, _, _, single_info = single.step(int(actions[0]))
        single_added += single_reward - single_plain.step(int(actions[0]))[1]
    assert all(i["path_done"] for i in infos)
    start_only = _squared_errors(assessor, infos, 3)  # the start viewport alone
    whole = _squared_errors(assessor, infos, 0)
    np.testing.assert_allclose(added, 3.0 * (start_only - whole), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([i["task_reward"]["gain"] for i in infos], start_only - whole, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose([i["task_reward"]["total"] for i in infos], added, rtol=1e-4, atol=1e-6)
    single_start = _squared_errors(assessor, [single_info], 3)[0]
    single_whole = _squared_errors(assessor, [single_info], 0)[0]
    assert single_added == pytest.approx(3.0 * (single_start - single_whole), rel=1e-4, abs=1e-6)
    assert single_info["task_reward"]["gain"] == pytest.approx(single_start - single_whole, rel=1e-4, abs=1e-7)


def test_random_path_baseline_scores_paths_shaped_like_the_scored_ones(cache):
    assessor = make_assessor(cache.dim)
    stats = FeatureStats.fit(cache)
    baseline = RandomPathBaseline(cache, stats, n_paths=5, feature_clip=3.0, seed=0)
    env = Panorama360Env(**env_kwargs(cache), feature_stats=stats, feature_clip=3.0)
    env.reset(seed=1)
    info: dict = {}
    while not info.get("path_done"):
        _, _, _, _, info = env.step(env.action_space.sample())
    image, path = info["image_index"], info["path"]
    predictions = baseline.predictions(assessor, [image, image], [path, path], np.stack([info["global_feature"]] * 2))
    assert predictions.shape == (5, 2)
    # The same path scored through the baseline's feature lookup is the env's own path features.
    candidates = np.clip(stats.standardize_viewports(cache.viewport_features[image]), -3.0, 3.0)
    np.testing.assert_allclose(candidates[path], info["path_features"], rtol=1e-6)
    drawn = random_paths(np.random.default_rng(0), np.full(5, path[0]), GRID.n_viewports, len(path))
    expected = assessor.predict(candidates[drawn], np.stack([info["global_feature"]] * 5))
    np.testing.assert_allclose(predictions[:, 0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="at least one path"):
        RandomPathBaseline(cache, stats, n_paths=0)
    with pytest.raises(ValueError, match="task_baseline_paths"):
        RewardSettings(task_baseline_paths=-1)


def test_baseline_makes_the_task_reward_relative_to_random_paths_of_the_image(cache):
    assessor = make_assessor(cache.dim)
    stats = FeatureStats.fit(cache)
    venv = DummyVecEnv([lambda: Panorama360Env(**env_kwargs(cache), feature_stats=stats) for _ in range(3)])
    wrapped = AssessorRewardVecWrapper(venv, assessor, TaskRewardSchedule(mse_weight=2.0, rank_weight=0.5),
                                       RandomPathBaseline(cache, stats, n_paths=4, seed=3))
    replay = RandomPathBaseline(cache, stats, n_paths=4, seed=3)
    wrapped.seed(7)
    wrapped.reset()
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(6):
        _, _, _, infos = wrapped.step(rng.integers(0, GRID.n_viewports, size=3))
        if not infos[0]["path_done"]:
            continue
        predictions = np.array([i["assessor_prediction"] for i in infos])
        targets = np.array([i["mos_normalized"] for i in infos])
        random_predictions = replay.predictions(assessor, [i["image_index"] for i in infos], [i["path"] for i in infos],
                                                np.stack([i["global_feature"] for i in infos]))
        mse = mse_reward(predictions, targets) - mse_reward(random_predictions, np.repeat(targets[None], 4, axis=0)).mean(0)
        rank = ranking_reward(predictions, targets) - np.mean(
            [ranking_reward(row, targets) for row in random_predictions], axis=0)
        np.testing.assert_allclose([i["task_reward"]["mse"] for i in infos], mse, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose([i["task_reward"]["rank"] for i in infos], rank, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose([i["task_reward"]["total"] for i in infos], 2.0 * mse + 0.5 * rank,
                                   rtol=1e-5, atol=1e-9)
        checked += 1
    assert checked == 2
    # A path scored exactly like its random paths earns nothing: the baseline removes the image's share.
    same = np.array([0.3, 0.7])
    total, _, _ = task_rewards(same, np.array([0.2, 0.9]), 2, (2.0, 2.0), np.stack([same, same]))
    np.testing.assert_allclose(total, 0.0, atol=1e-12)


def test_random_paths_start_fixed_and_never_revisit():
    rng = np.random.default_rng(0)
    paths = random_paths(rng, np.full(50, 5), n_viewports=8, length=6)
    assert paths.shape == (50, 6)
    assert (paths[:, 0] == 5).all()
    assert all(len(set(row)) == 6 for row in paths.tolist())
    again = random_paths(np.random.default_rng(0), np.full(50, 5), n_viewports=8, length=6)
    np.testing.assert_array_equal(paths, again)
    for start in (-1, 8):  # -1 is a cache's "no dataset start", not a viewport
        with pytest.raises(ValueError, match=r"viewport indices in 0\.\.7"):
            random_paths(rng, np.array([0, start]), n_viewports=8, length=6)


def test_trainer_learns_mos_from_features():
    # MOS is a function of the first global feature: the assessor must pick it up.
    cache = random_feature_cache(40, grid=GRID, dim=6, seed=1)
    mos = 1 + 4 * (cache.global_features[:, 0] - cache.global_features[:, 0].min()) / np.ptp(
        cache.global_features[:, 0])
    cache.mos = mos.astype(np.float32)
    stats = FeatureStats.fit(cache)
    assessor = QualityAssessor(AssessorConfig(feature_dim=6, hidden_dim=32, attention_dim=8,
                                              dropout=0.0))
    trainer = AssessorTrainer(assessor, cache, stats, np.arange(40), path_length=4,
                              start_viewport=0, seed=0)
    trainer.config.learning_rate = 3e-3
    trainer.optimizer = torch.optim.Adam(assessor.parameters(), lr=3e-3)
    before = trainer.train_steps(5)["mse"]
    after = trainer.train_steps(150)["mse"]
    assert after < before / 3


def test_reward_stats_measure_the_task_rewards_share_of_the_spread_between_paths():
    log = RolloutLog()
    callback = RewardStatsCallback(log)
    zeros = np.zeros((2, 3))
    components = {"entropy": np.array([[0.1, 0.2, 0.3], [0.3, 0.3, 0.3]]), "ssim": zeros, "novelty": zeros,
                  "equator": zeros}
    path_end = {"task_reward": {"mse": -0.1, "rank": -0.5, "gain": 0.0, "total": -1.0}}
    last = {"task_reward": {"mse": -0.2, "rank": -0.5, "gain": 0.0, "total": -2.0}, "reward_components": components,
            "coverage": 0.5, "jaccard": 0.1}
    for infos in ([path_end, {}], [last, {}]):
        callback.locals = {"infos": infos}
        callback._on_step()
    callback.after_rollout()
    figures = log.current
    # Per-path step returns 0.6 and 0.9 (spread 0.15); task totals -1 and -2 (spread 0.5).
    assert figures["return/step"] == pytest.approx(0.75) and figures["spread/step"] == pytest.approx(0.15)
    assert figures["return/task"] == pytest.approx(-1.5) and figures["spread/task"] == pytest.approx(0.5)
    assert figures["share/task"] == pytest.approx(0.5 / 0.65)
    assert figures["task/mse"] == pytest.approx(-0.15)


def test_cotraining_runs_logs_and_round_trips_through_save_load(cache, tmp_path):
    settings = tiny_settings()
    seen: list[dict] = []
    run = setup_cotraining(settings, cache, on_update=lambda stats: seen.append(dict(stats)),
                           validate=lambda policy, assessor: {"srcc": 0.5}, validate_every=2)
    run.trainer.train_steps(settings.assessor.warmup_steps)
    run.ppo.learn(settings.total_timesteps, callback=run.callback)
    assert run.callback.rollouts == settings.total_timesteps // (2 * 12)
    assert seen and "assessor/total" in seen[-1] and "task/mse" in seen[-1]
    assert any("val/srcc" in stats for stats in seen)
    # Entropy coefficient annealed from 0.02 towards 0.005.
    assert settings.ppo.ent_coef_end <= run.ppo.ent_coef < settings.ppo.ent_coef_start

    model = to_model(run, settings, cache, metadata={"seed": 0})
    model.save(tmp_path / "model")
    loaded = ScanIQAModel.load(tmp_path / "model")
    assert loaded.grid == cache.grid and loaded.settings == settings
    env = Panorama360Env(**env_kwargs(cache), feature_stats=run.stats)
    observation, _ = env.reset(seed=0)
    batch = {key: value[None] for key, value in observation.items()}
    expected, _ = run.ppo.policy.predict(batch, deterministic=True)
    actual, _ = loaded.policy.predict(batch, deterministic=True)
    np.testing.assert_array_equal(expected, actual)
    with torch.no_grad():
        tensors = loaded.policy.obs_to_tensor(batch)[0]
        np.testing.assert_allclose(run.ppo.policy.predict_values(tensors).numpy(),
                                   loaded.policy.predict_values(tensors).numpy(), rtol=1e-6)


def test_assessor_step_budget_is_spread_over_the_run_whatever_its_length():
    frozen = CoTrainSettings.from_dict({"assessor": {"cotrain_steps": 0}})
    assert assessor_step_schedule(frozen)(840) == 0
    for total in (8_400, 150_000, 600_000):
        settings = CoTrainSettings(total_timesteps=total)
        settings.assessor.cotrain_steps = 1_600
        steps = assessor_step_schedule(settings)
        rollout = settings.ppo.n_envs * settings.ppo.n_steps
        # SB3 runs whole rollouts, so the last one may pass the budget: it earns no extra steps.
        ends = range(rollout, total + rollout, rollout)
        per = [steps(end) for end in ends]
        assert sum(per) == 1_600
        assert max(per) - min(per[:-1]) <= 1  # even, not front-loaded
    with pytest.raises(ValueError, match="cotrain_steps"):
        CoTrainSettings.from_dict({"assessor": {"cotrain_steps": -1}})


def test_cotraining_trains_the_assessor_its_budget(cache):
    settings = tiny_settings()
    settings.assessor.cotrain_steps = 5
    steps: list[float] = []
    run = setup_cotraining(settings, cache, on_update=lambda stats: steps.append(stats["assessor/steps"]))
    run.ppo.learn(settings.total_timesteps, callback=run.callback)
    assert len(steps) == run.callback.rollouts == 10 and sum(steps) == 5


def test_model_load_rejects_foreign_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        ScanIQAModel.load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an RL-ScanIQA model"):
        ScanIQAModel.load(tmp_path)


def test_harness_is_seeded_and_scores_every_path(cache):
    settings = tiny_settings()
    policy = build_policy(settings, GRID, cache.dim)
    stats = FeatureStats.fit(cache)
    kwargs = {"feature_stats": stats}
    first = run_agent(SeededPolicyAgent(policy, 4), cache, range(5), n_paths=2, path_length=3,
                      env_kwargs=kwargs, batch_size=2, seed=4)
    second = run_agent(SeededPolicyAgent(policy, 4), cache, range(5), n_paths=2, path_length=3,
                       env_kwargs=kwargs, batch_size=3, seed=4)
    assert first.paths.shape == (5, 2, 4)
    assert first.path_features.shape == (5, 2, 4, cache.dim)
    # Per-image generators: an image's paths do not depend on the batch it was run in.
    np.testing.assert_array_equal(first.paths, second.paths)
    other_seed = run_agent(SeededPolicyAgent(policy, 5), cache, range(5), n_paths=2, path_length=3,
                           env_kwargs=kwargs, batch_size=2, seed=4)
    assert not np.array_equal(first.paths, other_seed.paths)
    mean, std, scores = score_scanpaths(make_assessor(cache.dim), first)
    assert mean.shape == std.shape == (5,) and scores.shape == (5, 2)
    np.testing.assert_allclose(mean, scores.mean(axis=1))


def test_settings_nested_options_and_config(tmp_path):
    config = tmp_path / "best.json"
    config.write_text(json.dumps({"total_timesteps": 10, "ppo": {"n_envs": 3, "gamma": 0.9}}))
    settings = parse_script_args(CoTrainSettings, "test",
                                 ["--config", str(config), "--ppo.n-envs", "5",
                                  "--reward.task-mse", "1.5"])
    assert settings.total_timesteps == 10
    assert settings.ppo.n_envs == 5 and settings.ppo.gamma == 0.9
    assert settings.reward.task_mse == 1.5
    assert settings.assessor == CoTrainSettings().assessor
    with pytest.raises(ValueError, match="unknown"):
        CoTrainSettings.from_dict({"ppo": {"n_env": 1}})


def test_a_reset_mid_path_leaves_no_gain_behind(cache):
    assessor = make_assessor(cache.dim)
    env = AssessorRewardWrapper(Panorama360Env(**env_kwargs(cache)), assessor,
                                TaskRewardSchedule(mse_weight=0.0, rank_weight=0.0, gain_weight=1.0))
    env.reset(seed=2)
    env.step(4)  # a path abandoned by the reset below
    env.reset(seed=3)
    info: dict = {}
    for action in (1, 6, 7):
        _, _, _, _, info = env.step(action)
    expected = _squared_errors(assessor, [info], 3)[0] - _squared_errors(assessor, [info], 0)[0]
    assert info["task_reward"]["gain"] == pytest.approx(expected, rel=1e-4, abs=1e-7)
