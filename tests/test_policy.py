"""Scanpath policy: shapes, masking, padding invariance, exact dedup, gradients, SB3 integration.

Most tests run on the real ``Panorama360Env`` over a tiny random feature cache (4 x 3 grid,
D = 8). The attention test uses a one-step stand-in env in which the rewarded candidate is marked
only by its feature, at a random position, so only attention over the candidates can find it.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from rl_scaniqa.agents import (
    MASKED_LOGIT,
    MaskableScanpathPolicy,
    ScanpathExtractor,
    ScanpathHead,
    ScanpathPolicy,
)
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.features.random_cache import random_feature_cache
from rl_scaniqa.envs.panorama_env import Panorama360Env, observation_space_for

GRID = ViewportGrid(n_lon=4, n_lat=3, fov_deg=90.0, size=32)
V, D, T, K = GRID.n_viewports, 8, 3, 2
L = T + 1
SMALL = {"embed_dim": 8, "hidden_dim": 8, "attention_dim": 8}


@pytest.fixture(scope="module")
def cache():
    return random_feature_cache(4, grid=GRID, dim=D, seed=3)


def make_env(cache, n_envs=2):
    return DummyVecEnv([lambda: Panorama360Env(feature_cache=cache, split="all", n_paths=K,
                                               path_length=T, progress=False)] * n_envs)


def space(n_viewports=V, dim=D, path_length=T):
    return observation_space_for(n_viewports, dim, path_length=path_length, n_paths=K)


def make_policy(cls=ScanpathPolicy, observation_space=None, **extractor_kwargs):
    observation_space = observation_space or space()
    n_viewports = observation_space["candidates"].shape[0]
    th.manual_seed(0)
    return cls(observation_space, spaces.Discrete(n_viewports), lambda _: 3e-4,
               features_extractor_kwargs={**SMALL, **extractor_kwargs})


def observations(batch, n_images=3, seed=0, n_viewports=V, dim=D, length=L):
    """A batch of valid observations: ``n_images`` distinct candidate sets, random path prefixes."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n_images, n_viewports, dim)).astype(np.float32)
    owner = rng.integers(0, n_images, batch)
    history = np.full((batch, length), -1.0, np.float32)
    visited = np.zeros((batch, n_viewports), np.float32)
    for row in range(batch):
        path = rng.permutation(n_viewports)[: rng.integers(1, length + 1)]
        history[row, : len(path)] = path
        visited[row, path] = 1.0
    obs = {"global": images[owner].mean(axis=1), "candidates": images[owner], "history": history,
           "visited": visited, "seen": rng.integers(0, 3, (batch, n_viewports)).astype(np.float32) / 2,
           "step": np.zeros((batch, 1), np.float32),
           "path": np.zeros((batch, 1), np.float32)}
    return {key: th.as_tensor(value) for key, value in obs.items()}


# ---------------------------------------------------------------- shapes and construction

def test_the_critic_sees_how_far_the_episode_has_come_and_the_actor_does_not():
    policy = make_policy()
    early, late = observations(4), observations(4)
    late["step"] = th.full((4, 1), float(L - 1))
    late["path"] = th.ones(4, 1)
    with th.no_grad():
        early_features, late_features = policy.extract_features(early), policy.extract_features(late)
        assert th.equal(early_features[:, :V], late_features[:, :V])  # same logits
        assert not th.allclose(policy.predict_values(early), policy.predict_values(late))
    progress = late_features[:, -2:]
    space = policy.observation_space
    expected = th.tensor([(L - 1) / float(space["step"].high[0]), 1.0 / float(space["path"].high[0])])
    assert th.allclose(progress, expected.expand(4, 2))



def test_the_actor_reads_which_viewports_earlier_paths_saw():
    policy = make_policy()
    obs = observations(6)
    other = dict(obs, seen=(obs["seen"] + 0.5) % 1.5)  # every entry changes (0, 0.5, 1)
    extractor = policy.features_extractor
    with th.no_grad():
        # u starts at 0: a fresh policy behaves as if nothing had been seen...
        assert th.equal(extractor(obs)[:, :V], extractor(other)[:, :V])
        extractor.seen_key.fill_(1.0)
        changed = extractor(obs)[:, :V] != extractor(other)[:, :V]
    # ... and, once u is learnt, the logits of the open viewports depend on it.
    open_viewports = obs["visited"] < 0.5
    assert changed[open_viewports].all() and not changed[~open_viewports].any()


def test_shapes_and_identity_action_net():
    policy = make_policy()
    obs = observations(5)
    features = policy.extract_features(obs)
    assert features.shape == (5, V + 8 + 8 + 2) == (5, policy.features_extractor.features_dim)
    assert isinstance(policy.action_net, th.nn.Identity)
    assert isinstance(policy.mlp_extractor, ScanpathHead)
    actions, values, log_prob = policy(obs)
    assert actions.shape == (5,) and values.shape == (5, 1) and log_prob.shape == (5,)
    values, log_prob, entropy = policy.evaluate_actions(obs, actions)
    assert values.shape == (5, 1) and log_prob.shape == (5,) and entropy.shape == (5,)
    assert policy.predict_values(obs).shape == (5, 1)


def test_default_sizes_and_value_arch():
    observation_space = space()
    policy = ScanpathPolicy(observation_space, spaces.Discrete(V), lambda _: 3e-4)
    extractor = policy.features_extractor
    assert (extractor.gru.hidden_size, extractor.candidate_proj.out_features,
            extractor.key_proj.out_features) == (32, 32, 32)
    assert policy.mlp_extractor.latent_dim_vf == 64
    wide = ScanpathPolicy(observation_space, spaces.Discrete(V), lambda _: 3e-4,
                          net_arch=dict(vf=[16, 8]))
    assert wide.mlp_extractor.latent_dim_vf == 8


@pytest.mark.parametrize("kwargs, message", [
    ({"action_space": spaces.Discrete(V + 1)}, "candidates"),
    ({"action_space": spaces.Box(0, 1, (V,))}, "Discrete"),
    ({"share_features_extractor": False}, "share_features_extractor"),
    ({"net_arch": dict(pi=[64], vf=[64])}, "'vf'"),
])
def test_bad_configurations_are_rejected(kwargs, message):
    arguments = {"observation_space": space(), "action_space": spaces.Discrete(V),
                 "lr_schedule": lambda _: 3e-4, **kwargs}
    with pytest.raises(ValueError, match=message):
        ScanpathPolicy(**arguments)


def test_bad_observation_spaces_are_rejected():
    flat = spaces.Box(-1, 1, (V * D,), np.float32)
    with pytest.raises(ValueError, match="Dict"):
        ScanpathExtractor(flat)
    partial_space = spaces.Dict({key: box for key, box in space().items() if key != "history"})
    with pytest.raises(ValueError, match="history"):
        ScanpathExtractor(partial_space)
    wrong = spaces.Dict({**space().spaces, "global": spaces.Box(-1, 1, (D + 1,), np.float32)})
    with pytest.raises(ValueError, match="'global'"):
        ScanpathExtractor(wrong)


def test_initial_policy_is_near_uniform_over_unvisited():
    policy = make_policy()
    obs = observations(16)
    probs = policy.get_distribution(obs).distribution.probs
    n_open = (obs["visited"] < 0.5).sum(dim=1, keepdim=True)
    uniform = (obs["visited"] < 0.5).float() / n_open
    assert th.allclose(probs, uniform, atol=0.02)


# ---------------------------------------------------------------- masking

def test_visited_viewports_get_no_probability_and_log_probs_stay_finite():
    policy = make_policy()
    obs = observations(32, seed=1)
    with th.no_grad():
        distribution = policy.get_distribution(obs).distribution
    visited = obs["visited"] > 0.5
    assert float(distribution.probs[visited].max()) < 1e-30
    assert th.allclose(distribution.probs.sum(dim=1), th.ones(32))
    every_action = th.arange(V).repeat(32, 1).T  # (V, 32): each action for every row
    for actions in every_action:
        _, log_prob, entropy = policy.evaluate_actions(obs, actions)
        assert th.isfinite(log_prob).all() and th.isfinite(entropy).all()
    _, log_prob, _ = policy.evaluate_actions(obs, th.zeros(32, dtype=th.long))
    assert (log_prob[visited[:, 0]] < -1e6).all()  # a visited action is (finitely) impossible
    for _ in range(20):
        actions, _, _ = policy(obs)
        assert not visited[th.arange(32), actions].any()


def test_nothing_is_masked_when_every_viewport_is_visited():
    # T >= V: a path of 5 viewports on a 2 x 2 grid visits all 4; the env then accepts anything.
    small = space(n_viewports=4, path_length=4)
    policy = make_policy(observation_space=small)
    obs = observations(4, n_viewports=4, length=5)
    obs["visited"][:2] = 1.0
    obs["visited"][2:] = th.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    with th.no_grad():
        logits = policy.extract_features(obs)[:, :4]
        probs = policy.get_distribution(obs).distribution.probs
    assert (logits[:2] > MASKED_LOGIT / 2).all()
    assert (probs[:2] > 0.2).all()  # near uniform at initialisation
    th.testing.assert_close(logits[2:] == MASKED_LOGIT, obs["visited"][2:] > 0.5)


# ---------------------------------------------------------------- padding and dedup invariance

def test_output_ignores_padding_and_batch_composition():
    policy = make_policy()
    obs = observations(12, seed=2)
    reference = policy.extract_features(obs)
    # The path ends at the first -1; whatever follows it is not part of the path.
    history = obs["history"]
    lengths = (history >= 0).sum(dim=1, keepdim=True)
    after_end = th.arange(L) > lengths
    garbage = th.randint(0, V, history.shape).float()
    changed = policy.extract_features({**obs, "history": th.where(after_end, garbage, history)})
    th.testing.assert_close(changed, reference, rtol=0, atol=1e-6)
    # More padding (a longer history space, same weights) changes nothing either.
    longer = make_policy(observation_space=space(path_length=T + 3))
    longer.load_state_dict(policy.state_dict())
    padded = th.cat((history, th.full((12, 3), -1.0)), dim=1)
    th.testing.assert_close(longer.extract_features({**obs, "history": padded}), reference,
                            rtol=0, atol=1e-6)
    # Each row alone (GRU run for its own length only) equals the row inside the batch.
    for row in range(12):
        alone = policy.extract_features({key: value[row:row + 1] for key, value in obs.items()})
        th.testing.assert_close(alone[0], reference[row], rtol=0, atol=1e-6)


def test_empty_history_uses_the_zero_initial_state():
    policy = make_policy()
    obs = observations(2, seed=4)
    obs["history"][0] = -1.0
    features = policy.extract_features(obs)
    h = features[0, V:V + 8]
    assert th.equal(h, th.zeros(8))


def test_dedup_is_exact_and_keeps_gradients():
    obs = observations(64, n_images=5, seed=5)
    dedup = make_policy(dedup_min_batch=16)
    plain = make_policy(dedup_min_batch=10**9)
    plain.load_state_dict(dedup.state_dict())
    groups = dedup.features_extractor._distinct_rows(obs["candidates"])
    assert groups is not None and groups[0].numel() == 5
    out_dedup, out_plain = dedup.extract_features(obs), plain.extract_features(obs)
    th.testing.assert_close(out_dedup, out_plain, rtol=0, atol=1e-6)
    out_dedup.square().sum().backward()
    out_plain.square().sum().backward()
    for (name, a), b in zip(dedup.named_parameters(), plain.parameters()):
        th.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_fingerprint_collision_falls_back_to_the_plain_path():
    extractor = make_policy().features_extractor
    obs = observations(32, n_images=2, seed=6)
    candidates = obs["candidates"].clone()
    # Same first viewport (the fingerprinted part), different elsewhere: must not be grouped.
    candidates[1::2, 1:] += 1.0
    groups_of = extractor._distinct_rows
    assert groups_of(candidates) is None
    assert groups_of(obs["candidates"]) is not None
    assert groups_of(obs["candidates"][:8]) is None  # below dedup_min_batch


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("cls", [ScanpathPolicy, MaskableScanpathPolicy])
def test_every_parameter_gets_a_gradient(cls):
    policy = make_policy(cls)
    obs = observations(32, seed=7)
    actions = th.as_tensor([int(np.flatnonzero(row < 0.5)[0]) for row in obs["visited"].numpy()])
    values, log_prob, entropy = policy.evaluate_actions(obs, actions)
    (-(log_prob.mean()) + values.square().mean() - 0.01 * entropy.mean()).backward()
    names = [name for name, _ in policy.named_parameters()]
    for part in ("candidate_proj", "global_proj", "gru.weight_hh", "gru.weight_ih", "key_proj",
                 "query", "score", "value_mlp", "value_net"):
        assert any(part in name for name in names), part
    for name, parameter in policy.named_parameters():
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name


# ---------------------------------------------------------------- SB3 integration

def test_ppo_save_load_round_trip(cache, tmp_path):
    env = make_env(cache)
    model = PPO(ScanpathPolicy, env, n_steps=16, batch_size=16, n_epochs=1, seed=0,
                policy_kwargs={"features_extractor_kwargs": SMALL})
    model.learn(32)
    model.save(tmp_path / "ppo")
    loaded = PPO.load(tmp_path / "ppo", device="cpu")
    assert type(loaded.policy) is ScanpathPolicy
    obs = env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(actions, loaded_actions)
    tensors, _ = model.policy.obs_to_tensor(obs)
    with th.no_grad():
        assert th.equal(model.policy.predict_values(tensors), loaded.policy.predict_values(tensors))


def count_optimizer_steps(model):
    """Wrap the policy's optimizer so that ``counter[0]`` counts its ``step`` calls."""
    counter = [0]
    step = model.policy.optimizer.step

    def counting_step(*args, **kwargs):
        counter[0] += 1
        return step(*args, **kwargs)

    model.policy.optimizer.step = counting_step
    return counter


def assert_rollout_follows_the_env(buffer, n_paths=K, path_length=T):
    """The last rollout holds env observations: fixed-budget episodes, visited == set(history)."""
    obs = buffer.observations
    n_steps, n_envs = buffer.episode_starts.shape
    # Episodes end after exactly K * T actions: starts at every (K * T)-th step of each env.
    starts = np.flatnonzero(buffer.episode_starts[:, 0])
    np.testing.assert_array_equal(np.diff(starts), n_paths * path_length)
    history = obs["history"].reshape(n_steps * n_envs, -1).astype(int)
    visited = obs["visited"].reshape(n_steps * n_envs, -1)
    step = obs["step"].reshape(-1).astype(int)
    for row in range(n_steps * n_envs):
        path = history[row][history[row] >= 0]
        assert len(path) == step[row] + 1
        np.testing.assert_array_equal(np.flatnonzero(visited[row]), np.unique(path))


def test_maskable_ppo_never_takes_a_masked_action_and_trains_every_minibatch(cache):
    env = make_env(cache)
    model = MaskablePPO(MaskableScanpathPolicy, env, n_steps=64, batch_size=32, n_epochs=2,
                        seed=0, policy_kwargs={"features_extractor_kwargs": SMALL})
    steps = count_optimizer_steps(model)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(256)
    # 2 rollouts of 64 steps x 2 envs, 2 epochs of 4 minibatches each: 16 gradient steps.
    assert steps[0] == 2 * 2 * (64 * 2 // 32)
    assert all(not th.equal(a, b) for a, b in zip(before, model.policy.parameters()))
    buffer = model.rollout_buffer
    assert_rollout_follows_the_env(buffer)
    visited = buffer.observations["visited"].reshape(-1, V) > 0.5
    actions = buffer.actions.reshape(-1).astype(int)
    assert not visited[np.arange(len(actions)), actions].any()
    np.testing.assert_array_equal(buffer.action_masks.reshape(-1, V) > 0.5, ~visited)
    obs = env.reset()
    actions, _ = model.predict(obs, action_masks=np.stack(env.env_method("action_masks")))
    assert actions.shape == (2,)


@pytest.mark.parametrize("algorithm", [PPO, A2C, MaskablePPO])
def test_stock_multi_input_policies_run_on_the_env(cache, algorithm):
    # Alternative agents plug in: SB3's own MultiInputPolicy needs nothing from this package.
    kwargs = {"n_steps": 32, "batch_size": 32, "n_epochs": 2} if algorithm is not A2C else {"n_steps": 16}
    model = algorithm("MultiInputPolicy", make_env(cache), seed=0, **kwargs)
    steps = count_optimizer_steps(model)
    model.learn(256)
    # PPO: 4 rollouts of 32 x 2 envs, 2 epochs of 2 minibatches; A2C: 8 rollouts, one step each.
    assert steps[0] == (8 if algorithm is A2C else 4 * 2 * 2)
    assert_rollout_follows_the_env(model.rollout_buffer)


# ---------------------------------------------------------------- learning a measurable task

PAID = 0  # the viewport the paid-viewport env rewards; the front start on the 4 x 3 grid is 5


@pytest.fixture(scope="module")
def paid_cache():
    """Two images whose only informative viewport is PAID: entropy 8 bits there, 0 elsewhere."""
    paid = random_feature_cache(2, grid=GRID, dim=D, seed=4)
    paid.entropy = np.zeros_like(paid.entropy)
    paid.entropy[:, PAID] = 8.0
    return paid


def paid_env(paid_cache):
    # One action per episode; the env's own entropy term is the only reward: 1 for PAID, else 0.
    return Panorama360Env(feature_cache=paid_cache, split="all", n_paths=1, path_length=1,
                          lambda_entropy=1.0, lambda_ssim=0.0, lambda_novelty=0.0,
                          lambda_equator=0.0, beta_coverage=0.0, beta_jaccard=0.0, progress=False)


def test_maskable_ppo_learns_to_look_at_the_paid_viewport(paid_cache):
    env = DummyVecEnv([lambda: paid_env(paid_cache)] * 2)
    env.seed(0)
    model = MaskablePPO(MaskableScanpathPolicy, env, n_steps=32, batch_size=32, n_epochs=4,
                        learning_rate=3e-3, seed=0,
                        policy_kwargs={"features_extractor_kwargs": SMALL})
    probe = paid_env(paid_cache)

    def paid_probability():
        """Probability of PAID at the start of each image's episode, one value per image."""
        probabilities = []
        for image in range(2):
            obs, _ = probe.reset(options={"image_index": image})
            tensors, _ = model.policy.obs_to_tensor(obs)
            with th.no_grad():
                probs = model.policy.get_distribution(tensors).distribution.probs[0]
            probabilities.append(float(probs[PAID]))
        return np.array(probabilities)

    before = paid_probability()
    model.learn(3072)
    after = paid_probability()
    uniform = 1 / (V - 1)  # the start viewport is masked
    np.testing.assert_allclose(before, uniform, atol=0.03)
    assert (after > 0.9).all(), (before, after)


class _FindTheMarkedCandidate(gym.Env):
    """One-step episodes: reward 1 for the candidate whose feature is the marker, at a random index.

    Minimal stand-in with the env's observation keys; the start viewport is never the marked one.
    """

    n_viewports, dim = 8, 4

    def __init__(self):
        self.observation_space = space(self.n_viewports, self.dim, path_length=1)
        self.action_space = spaces.Discrete(self.n_viewports)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        candidates = self.np_random.standard_normal((self.n_viewports, self.dim))
        self.target, start = self.np_random.choice(self.n_viewports, 2, replace=False)
        candidates[self.target] = 3.0
        visited = np.zeros(self.n_viewports, np.float32)
        visited[start] = 1.0
        self.obs = {"global": candidates.mean(axis=0).astype(np.float32),
                    "candidates": candidates.astype(np.float32),
                    "history": np.array([start, -1], np.float32), "visited": visited,
                    "seen": np.zeros(self.n_viewports, np.float32),
                    "step": np.zeros(1, np.float32), "path": np.zeros(1, np.float32)}
        return self.obs, {}

    def step(self, action):
        return self.obs, float(action == self.target), True, False, {}


def test_attention_learns_to_pick_the_marked_candidate():
    env = DummyVecEnv([_FindTheMarkedCandidate] * 4)
    env.seed(0)
    model = PPO(ScanpathPolicy, env, n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-3,
                seed=0, policy_kwargs={"features_extractor_kwargs": SMALL})

    def hit_rate(n=200):
        probe = _FindTheMarkedCandidate()
        hits = 0
        for seed in range(n):
            obs, _ = probe.reset(seed=10_000 + seed)
            action, _ = model.predict(obs, deterministic=False)
            hits += int(action) == probe.target
        return hits / n

    before = hit_rate()
    model.learn(3000)
    after = hit_rate()
    assert before < 0.3  # chance is 1/7 over the unvisited candidates
    assert after > 0.8, (before, after)
