"""RL-ScanIQA micro-benchmarks, one subcommand each.

Usage::

    python experiments/bench.py projection            # human-readable table
    python experiments/bench.py projection --json     # exactly one JSON line on stdout
    python experiments/bench.py projection --quick    # fewer repeats

Adding a benchmark: write ``bench_<name>(args: argparse.Namespace) -> dict`` (its first docstring
line becomes the subcommand help; it honours ``args.quick`` and ``args.repeats``, e.g. through
``_repeats``), register it in ``BENCHMARKS``, and if it takes options of its own, register a
function adding them in ``BENCHMARK_OPTIONS``. The returned dict must be JSON-serialisable;
timings are in milliseconds. Nothing but the result may go to stdout, so ``--json`` stays one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from rl_scaniqa.envs.data.geometry import ViewportGrid, extract_viewports
from rl_scaniqa.envs.storage import json_line


def _time_ms(function: Callable[[], Any]) -> tuple[float, Any]:
    """Wall time of one call in ms, and its result."""
    start = time.perf_counter()
    result = function()
    return (time.perf_counter() - start) * 1000.0, result


def _interleaved_median_ms(
    functions: Sequence[Callable[[], Any]], calls_per_round: Sequence[int], rounds: int
) -> list[tuple[float, Any]]:
    """Median ms and last result of each function, timed in alternating rounds.

    Alternating spreads every function's samples over the same stretch of time, so background
    load on a shared machine weighs on all of them alike instead of on whichever ran last.
    """
    samples: list[list[float]] = [[] for _ in functions]
    results: list[Any] = [None] * len(functions)
    for _ in range(rounds):
        for index, (function, calls) in enumerate(zip(functions, calls_per_round)):
            for _ in range(calls):
                elapsed, results[index] = _time_ms(function)
                samples[index].append(elapsed)
    return [(float(np.median(times)), result) for times, result in zip(samples, results)]


def _repeats(args: argparse.Namespace, full: int, quick: int) -> int:
    if args.repeats is not None:
        return args.repeats
    return quick if args.quick else full


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def natural_erp(width: int) -> np.ndarray:
    """A uint8 (width / 2, width, 3) ERP of photographs tiled 4 x 2 (natural image statistics)."""
    import skimage.data

    height = width // 2
    names = ("astronaut", "coffee", "chelsea", "rocket")
    photos = [getattr(skimage.data, name)() for name in names]
    tile = (width // 4, height // 2)
    top = [cv2.resize(photo, tile, interpolation=cv2.INTER_AREA) for photo in photos]
    bottom = [
        cv2.resize(photo[::-1], tile, interpolation=cv2.INTER_AREA) for photo in reversed(photos)
    ]
    return np.ascontiguousarray(np.concatenate([np.hstack(top), np.hstack(bottom)], axis=0))


def _erp_width(text: str) -> int:
    value = int(text)
    # natural_erp tiles the photos 4 x 2 and the height is width / 2, so 8 divides it exactly.
    if value < 8 or value % 8:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 8, got {value}")
    return value


def _projection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--width", type=_erp_width, default=4096, help="ERP width in pixels (height = width / 2)"
    )
    parser.add_argument("--size", type=_positive_int, default=ViewportGrid.size,
                        help="viewport side in pixels")


def bench_projection(args: argparse.Namespace) -> dict[str, Any]:
    """All 32 viewports of a natural ERP: our cached remap against py360convert.e2p in a loop."""
    import py360convert

    grid = ViewportGrid(size=args.size)
    erp = natural_erp(args.width)
    centers = grid.centers_deg

    def ours() -> np.ndarray:
        return extract_viewports(erp, grid)

    def theirs() -> np.ndarray:
        out_hw = (grid.size, grid.size)
        return np.stack(
            [py360convert.e2p(erp, grid.fov_deg, yaw, pitch, out_hw) for yaw, pitch in centers]
        )

    # The first call builds and caches our remap maps; reported apart, since that is paid once
    # per ERP size. py360convert keeps only 8 samplers in its LRU cache, so a loop over 32
    # centres rebuilds every map on every pass: its first and later passes cost the same.
    ours_first_ms, _ = _time_ms(ours)
    rounds = _repeats(args, full=5, quick=2)
    ours_per_round = 3  # ours is ~50x faster, so more samples cost next to nothing
    (ours_ms, ours_views), (theirs_ms, theirs_views) = _interleaved_median_ms(
        [ours, theirs], [ours_per_round, 1], rounds
    )
    error = np.abs(ours_views.astype(np.float64) - theirs_views)
    return {
        "benchmark": "projection",
        "erp_shape": list(erp.shape),
        "viewports_shape": list(ours_views.shape),
        "grid": grid.key(),
        "ours_ms": round(ours_ms, 3),
        "ours_first_call_ms": round(ours_first_ms, 3),
        "py360convert_ms": round(theirs_ms, 3),
        "speedup": round(theirs_ms / ours_ms, 2),
        "mae": round(float(error.mean()), 5),
        "max_viewport_mae": round(float(error.mean(axis=(1, 2, 3)).max()), 5),
        "repeats_ours": rounds * ours_per_round,
        "repeats_py360convert": rounds,
        "cv2_threads": cv2.getNumThreads(),
        "target": {"speedup": 20.0, "mae": 1.0},
        "meets_target": bool(theirs_ms / ours_ms >= 20.0 and error.mean() <= 1.0),
    }


def _env_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dim", type=_positive_int, default=384, help="feature dimension D (DINOv2-S: 384)")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help="steps per timed block (default 5000, --quick 1000)")


def bench_env(args: argparse.Namespace) -> dict[str, Any]:
    """Panorama360Env-v0 step time against CartPole-v1, both from gym.make with default wrappers."""
    import gymnasium as gym

    from rl_scaniqa.envs import ENV_ID
    from rl_scaniqa.envs.features.random_cache import random_feature_cache

    # A random cache with real shapes (64 images, 8 x 4 grid, D features): step only indexes
    # precomputed tables and copies arrays, so its cost depends on the shapes, not the values.
    cache = random_feature_cache(64, dim=args.dim, seed=0)
    envs = {"env": gym.make(ENV_ID, feature_cache=cache), "cartpole": gym.make("CartPole-v1")}
    steps = args.steps or (1000 if args.quick else 5000)

    def block(env: gym.Env, actions: list[int]) -> Callable[[], None]:
        def run() -> None:
            for action in actions:
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    env.reset()
        return run

    blocks = []
    for seed, env in enumerate(envs.values()):
        env.reset(seed=seed)
        env.action_space.seed(seed)
        # Actions are drawn beforehand so sampling is not timed; random actions include revisits
        # and every episode's resets and set-reward computations are inside the timed blocks.
        run = block(env, [int(env.action_space.sample()) for _ in range(steps)])
        run()  # warm-up: the passive checker's first-call checks and first allocations
        blocks.append(run)
    rounds = _repeats(args, full=7, quick=3)
    (env_ms, _), (cartpole_ms, _) = _interleaved_median_ms(blocks, [1, 1], rounds)
    env_us, cartpole_us = env_ms * 1000.0 / steps, cartpole_ms * 1000.0 / steps
    unwrapped = envs["env"].unwrapped
    return {
        "benchmark": "env",
        "env_step_us": round(env_us, 3),
        "cartpole_step_us": round(cartpole_us, 3),
        "ratio": round(env_us / cartpole_us, 3),
        "dim": args.dim,
        "grid": unwrapped.grid.key(),
        "n_paths": unwrapped.n_paths,
        "path_length": unwrapped.path_length,
        "steps_per_round": steps,
        "rounds": rounds,
        "wrappers": str(envs["env"]),
        "target": {"ratio": 2.0},
        "meets_target": bool(env_us / cartpole_us <= 2.0),
    }


def _score_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=_erp_width, default=4096, help="ERP width in pixels (height = width / 2)")
    parser.add_argument("--k", type=_positive_int, default=15, help="paths per image")
    parser.add_argument("--t", type=_positive_int, default=7, help="steps per path")
    parser.add_argument("--stream", type=_positive_int, default=None,
                        help="images for the score_many throughput run (default 4, --quick 2)")


def _score_model() -> tuple[Any, str]:
    """The shipped model and its folder, or a freshly initialised one of the shipped shapes.

    Scoring time does not depend on the weights, so until the trained model ships the bench
    times an untrained model built exactly as training builds one (NSS features, default grid
    and architecture); its feature statistics come from random features of the right size.
    """
    import torch

    from rl_scaniqa.agents.scaniqa_model import ScanIQAModel, build_policy
    from rl_scaniqa.agents.scorer import DEFAULT_MODEL_DIR
    from rl_scaniqa.agents.settings import CoTrainSettings
    from rl_scaniqa.assessor.model import AssessorConfig, QualityAssessor
    from rl_scaniqa.envs.data.datasets.records import MosScale
    from rl_scaniqa.envs.features.backbones import NSSBackbone
    from rl_scaniqa.envs.features.cache import FeatureStats
    from rl_scaniqa.envs.features.random_cache import random_feature_cache

    if (DEFAULT_MODEL_DIR / "model.json").is_file():
        return ScanIQAModel.load(DEFAULT_MODEL_DIR), str(DEFAULT_MODEL_DIR)
    torch.manual_seed(0)  # the same untrained weights every run, so "score" is comparable
    grid, dim, settings = ViewportGrid(), NSSBackbone().dim, CoTrainSettings()
    shapes = settings.assessor
    assessor = QualityAssessor(AssessorConfig(feature_dim=dim, hidden_dim=shapes.hidden_dim,
                                              attention_dim=shapes.attention_dim,
                                              dropout=shapes.dropout)).eval()
    stats = FeatureStats.fit(random_feature_cache(4, grid=grid, dim=dim))
    model = ScanIQAModel(policy=build_policy(settings, grid, dim), assessor=assessor,
                         feature_stats=stats, settings=settings, grid=grid,
                         backbone=NSSBackbone().name, mos_scale=MosScale(1.0, 5.0))
    return model, "untrained (shipped model missing)"


def bench_score(args: argparse.Namespace) -> dict[str, Any]:
    """Score a natural 4096x2048 PNG end to end: read, project, NSS features, policy, assessor."""
    import tempfile
    from pathlib import Path

    import torch

    from rl_scaniqa.agents.scorer import STAGES, Scorer
    from rl_scaniqa.envs.data.imageio import write_image
    from rl_scaniqa.envs.features.backbones import CountingBackbone, NSSBackbone

    model, model_source = _score_model()
    backbone = CountingBackbone(NSSBackbone())
    scorer = Scorer(model, backbone, k=args.k, t=args.t, source=model_source)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "panorama.png"
        write_image(path, natural_erp(args.width))
        # The first call builds the remap tables of this ERP size (paid once per size): apart.
        first_ms, _ = _time_ms(lambda: scorer.score(path))
        rounds = _repeats(args, full=7, quick=3)
        totals, breakdown, calls = [], {stage: [] for stage in STAGES}, []
        for _ in range(rounds):
            before = backbone.images
            elapsed, result = _time_ms(lambda: scorer.score(path))
            calls.append(backbone.images - before)
            totals.append(elapsed)
            for stage in STAGES:
                breakdown[stage].append(result.timings[stage])
        n_stream = args.stream or (2 if args.quick else 4)
        stream_ms, streamed = _time_ms(
            lambda: list(scorer.score_many([path] * n_stream, progress=False)))
    score_ms = float(np.median(totals))
    n_viewports = model.grid.n_viewports
    return {
        "benchmark": "score",
        "model": model_source,
        "erp_shape": [args.width // 2, args.width, 3],
        "file": "PNG",
        "backbone": backbone.name,
        "grid": model.grid.key(),
        "k": scorer.n_paths,
        "t": scorer.path_length,
        "score_ms": round(score_ms, 1),
        "first_call_ms": round(first_ms, 1),
        **{stage: round(float(np.median(values)), 1) for stage, values in breakdown.items()},
        "stream_ms_per_image": round(stream_ms / n_stream, 1),
        "stream_images": n_stream,
        "backbone_calls": int(np.median(calls)),
        "backbone_calls_expected": n_viewports + 1,
        "score": round(float(result.score), 4),
        "stream_scores_equal": bool(all(abs(r.score - result.score) < 1e-5 for r in streamed)),
        "repeats": rounds,
        "cv2_threads": cv2.getNumThreads(),
        "torch_threads": torch.get_num_threads(),
        "target": {"score_ms": 1000.0, "backbone_calls": n_viewports + 1},
        "meets_target": bool(score_ms <= 1000.0 and all(c == n_viewports + 1 for c in calls)),
    }


def _train_options(parser: argparse.ArgumentParser) -> None:
    from rl_scaniqa.agents.settings import PPOSettings

    # Rollout and update sizes default to the co-training run's, so the bench measures them.
    ppo = PPOSettings()
    parser.add_argument("--dim", type=_positive_int, default=384,
                        help="feature dimension D (DINOv2-S: 384)")
    parser.add_argument("--n-envs", type=_positive_int, default=ppo.n_envs, help="DummyVecEnv envs")
    parser.add_argument("--n-steps", type=_positive_int, default=ppo.n_steps,
                        help="PPO n_steps per env")
    parser.add_argument("--batch-size", type=_positive_int, default=ppo.batch_size,
                        help="PPO minibatch size")
    parser.add_argument("--n-epochs", type=_positive_int, default=ppo.n_epochs, help="PPO epochs")
    parser.add_argument("--rollouts", type=_positive_int, default=None,
                        help="rollouts (each with its update) per round (default 4, --quick 2)")
    parser.add_argument("--torch-threads", type=_positive_int, default=1,
                        help="torch CPU threads for both runs (default 1, as run_ppo.py trains: "
                             "on 2 shared cores more threads oversubscribe and slow both runs)")


def bench_train(args: argparse.Namespace) -> dict[str, Any]:
    """PPO throughput of the scanpath policy on Panorama360Env against SB3 PPO on CartPole-v1."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rl_scaniqa.agents import ScanpathPolicy
    from rl_scaniqa.envs import ENV_ID
    from rl_scaniqa.envs.features.random_cache import random_feature_cache

    torch.set_num_threads(args.torch_threads)
    # A random cache with real shapes (64 images, 8 x 4 grid, D features) and the env's default
    # K = 15, T = 7: throughput depends on the shapes, not on the values.
    cache = random_feature_cache(64, dim=args.dim, seed=0)

    def panorama() -> gym.Env:
        # Through gym.make like CartPole below, so both carry Gymnasium's default wrappers.
        return gym.make(ENV_ID, feature_cache=cache, split="all", progress=False)

    class VisitedOnly(BaseFeaturesExtractor):
        """Reads only the visited flags: a policy with next to no work, for the floor run."""

        def __init__(self, observation_space: gym.spaces.Dict) -> None:
            n_viewports = observation_space["visited"].shape[0]
            super().__init__(observation_space, features_dim=n_viewports)
            self.linear = torch.nn.Linear(n_viewports, n_viewports)

        def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.linear(observations["visited"])

    settings = dict(n_steps=args.n_steps, batch_size=args.batch_size, n_epochs=args.n_epochs,
                    seed=0, device="cpu", verbose=0)
    models = {
        "ours": PPO(ScanpathPolicy, DummyVecEnv([panorama] * args.n_envs), **settings),
        "cartpole": PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("CartPole-v1")] * args.n_envs),
                        **settings),
        # SB3's stock policy on the same env: what an agent gets without our policy.
        "multiinput": PPO("MultiInputPolicy", DummyVecEnv([panorama] * args.n_envs), **settings),
        # The floor: env steps and SB3's buffers moving this observation, almost no policy work.
        "floor": PPO("MultiInputPolicy", DummyVecEnv([panorama] * args.n_envs),
                     policy_kwargs={"features_extractor_class": VisitedOnly}, **settings),
    }
    steps_per_rollout = args.n_envs * args.n_steps
    rollouts = args.rollouts or (2 if args.quick else 4)
    # Wall time of learn() and, inside it, of PPO.train (the updates; the rest is the rollout).
    learn_ms = {name: 0.0 for name in models}
    update_ms = {name: 0.0 for name in models}
    runs = []
    for name, model in models.items():
        model.learn(steps_per_rollout)  # warm-up: first allocations, the env's first resets
        update = model.train

        def timed_update(update: Callable[[], None] = update, name: str = name) -> None:
            update_ms[name] += _time_ms(update)[0]

        def timed_learn(model: PPO = model, name: str = name) -> None:
            learn_ms[name] += _time_ms(
                lambda: model.learn(rollouts * steps_per_rollout, reset_num_timesteps=False))[0]

        model.train = timed_update  # type: ignore[method-assign]
        runs.append(timed_learn)

    rounds = _repeats(args, full=3, quick=2)
    medians = _interleaved_median_ms(runs, [1] * len(runs), rounds)
    per_s = {name: rollouts * steps_per_rollout / (ms / 1000.0)
             for name, (ms, _) in zip(models, medians)}
    ratio = per_s["ours"] / per_s["cartpole"]
    return {
        "benchmark": "train",
        "ppo_steps_per_s": round(per_s["ours"], 1),
        "cartpole_ppo_steps_per_s": round(per_s["cartpole"], 1),
        "ratio": round(ratio, 3),
        "multiinput_ppo_steps_per_s": round(per_s["multiinput"], 1),
        "floor_steps_per_s": round(per_s["floor"], 1),
        "floor_ratio": round(per_s["floor"] / per_s["cartpole"], 3),
        "update_share": {name: round(update_ms[name] / learn_ms[name], 3) for name in models},
        "dim": args.dim,
        "n_envs": args.n_envs,
        "n_steps": args.n_steps,
        "batch_size": args.batch_size,
        "n_epochs": args.n_epochs,
        "steps_per_round": rollouts * steps_per_rollout,
        "rounds": rounds,
        "torch_threads": torch.get_num_threads(),
        "target": {"ratio": 0.5},
        "meets_target": bool(ratio >= 0.5),
    }


def _cache_load_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", default=None,
                        help="data home (default $RL_SCANIQA_HOME or ~/.cache/rl_scaniqa)")


def bench_cache_load(args: argparse.Namespace) -> dict[str, Any]:
    """Load the default quick feature cache: total time and the share of its digest verification."""
    from pathlib import Path

    from safetensors import safe_open

    from rl_scaniqa.envs.data.datasets import load_dataset
    from rl_scaniqa.envs.features.backbones import make_backbone
    from rl_scaniqa.envs.features.cache import build_cache, load_cache, verify_digests
    from rl_scaniqa.envs.features.provision import CACHE_FOLDER, DEFAULT_DATASET, ensure_default_data
    from rl_scaniqa.envs.storage import default_home

    # Generates the data and builds the cache on first use, as gym.make does; build_cache then
    # only finds the complete file and returns its path.
    root, _ = ensure_default_data(args.home, progress=False)
    home = Path(args.home).expanduser() if args.home is not None else default_home()
    path = build_cache(load_dataset(DEFAULT_DATASET, root), make_backbone("nss"), ViewportGrid(),
                       home / CACHE_FOLDER, dataset=DEFAULT_DATASET, progress=False)
    with safe_open(str(path), framework="numpy") as handle:
        metadata = dict(handle.metadata() or {})
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    load_cache(path)  # warm-up: the file into the page cache, the first allocations
    rounds = _repeats(args, full=20, quick=5)
    # The verification is timed on its own, on the same arrays load_cache hashes; load_cache
    # without it would cost the difference.
    (load_ms, cache), (verify_ms, _) = _interleaved_median_ms(
        [lambda: load_cache(path), lambda: verify_digests(path, metadata, tensors)], [1, 1], rounds)
    n_bytes = sum(array.nbytes for array in tensors.values())
    return {
        "benchmark": "cache_load",
        "file": path.name,
        "images": len(cache),
        "array_mb": round(n_bytes / 1e6, 2),
        "load_ms": round(load_ms, 3),
        "verify_ms": round(verify_ms, 3),
        "load_without_verify_ms": round(load_ms - verify_ms, 3),
        "verify_share_of_load": round(verify_ms / load_ms, 4),
        "verify_gb_per_s": round(n_bytes / 1e9 / (verify_ms / 1000.0), 2),
        "repeats": rounds,
    }


BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "projection": bench_projection,
    "env": bench_env,
    "score": bench_score,
    "train": bench_train,
    "cache_load": bench_cache_load,
}

BENCHMARK_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "projection": _projection_options,
    "env": _env_options,
    "score": _score_options,
    "train": _train_options,
    "cache_load": _cache_load_options,
}


def build_parser() -> argparse.ArgumentParser:
    """Parser with one subcommand per registered benchmark and the shared options on each."""
    parser = argparse.ArgumentParser(description="RL-ScanIQA micro-benchmarks.")
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, function in BENCHMARKS.items():
        summary = (function.__doc__ or name).strip().splitlines()[0]
        sub = subparsers.add_parser(name, help=summary, description=summary)
        sub.add_argument("--json", action="store_true", help="print exactly one JSON line")
        sub.add_argument("--quick", action="store_true", help="fewer repeats (noisier, faster)")
        sub.add_argument(
            "--repeats", type=_positive_int, default=None, help="number of timing rounds"
        )
        if name in BENCHMARK_OPTIONS:
            BENCHMARK_OPTIONS[name](sub)
    return parser


def _print_table(name: str, result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bench {name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = BENCHMARKS[args.benchmark](args)
    if args.json:
        print(json_line(result))
    else:
        _print_table(args.benchmark, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
