#!/usr/bin/env python
"""Can PPO learn where the damage is when the reward says so? A learnability check of the policy.

Issue 10 asks for a policy whose paths find the damage. Before blaming the task reward, this
script asks whether the policy and PPO can learn that at all. Per reference split it trains the
scanpath policy exactly as ``cotrain`` does (same PPO, critic, assessor co-training and reward
scaling) with the label-guided reward :class:`~rl_scaniqa.agents.damage.DamageHitReward`:
``--settings.reward.damage-hit`` (here 1.0) for every step whose viewport sees at least a quarter
of the damaged cap, read from the labels. The other rewards are those of ``--settings.reward``
(by default only the novelty term: the exploration and task terms are 0, so the hit reward is the
one signal that depends on where a path looks).

It then measures the damage hit rate (``agents.damage``) of the trained policy, of random
paths and of the oracle on the training and the test images. If the policy stays near the
random rate here, no task reward, however well designed, can teach it to look at the damage
within that budget; if it rises, the limit is the task reward's signal.

A fourth row, the supervised ``locator`` (``agents.damage_locator``), is fitted on the same
training images' labels and reads the same candidate features as the policy: its test hit rate
says how far those features show where the damage is, the most a policy reading them can be
expected to reach.

Outputs in ``--out``: ``results.json``, ``report.md`` and ``hit_rates.png``, rewritten after
every split; ``--json`` prints the summary on the last line.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from rl_scaniqa.agents.baselines import DamageOracleAgent, RandomPathAgent
from rl_scaniqa.agents.cotrain import resume_or_warm_up, setup_cotraining, train_to_budget
from rl_scaniqa.agents.damage import damage_hit_rate, has_cap
from rl_scaniqa.agents.damage_locator import DamageLocatorAgent, fit_damage_locator
from rl_scaniqa.agents.data_args import DataArgs
from rl_scaniqa.agents.evaluation import ScanpathAgent, SeededPolicyAgent, run_agent
from rl_scaniqa.agents.reporting import markdown_table, plot_grouped_bars
from rl_scaniqa.agents.script_args import parse_script_args, usage_error
from rl_scaniqa.agents.settings import SMOKE_SETTINGS, CoTrainSettings, RewardSettings
from rl_scaniqa.envs.data.datasets import repeated_splits
from rl_scaniqa.envs.features.cache import FeatureCache
from rl_scaniqa.envs.progress import progress_bar
from rl_scaniqa.envs.storage import atomic_write_json, atomic_write_text, json_line

SCRIPT = "damage_reward_probe.py"
AGENTS = ("policy", "locator", "random", "oracle")


def probe_settings() -> CoTrainSettings:
    """Co-training defaults with the hit reward on and every other term but novelty off."""
    return CoTrainSettings(reward=RewardSettings(
        lambda_entropy=0.0, lambda_ssim=0.0, lambda_equator=0.0, beta_coverage=0.0,
        beta_jaccard=0.0, task_mse=0.0, task_rank=0.0, damage_hit=1.0))


@dataclass
class Args(DataArgs):
    """Arguments of ``damage_reward_probe.py``."""

    splits: int = 1
    """Reference splits (the same splits as reproduce.py's with the same --split-seed)."""
    split_seed: int = 0
    """Seed of the first split."""
    test_fraction: float = 0.2
    """Fraction of the references held out for testing."""
    eval_paths: int = 15
    """K paths per image when measuring the hit rates."""
    out: str = "runs/damage_reward_probe"
    """Output folder."""
    torch_threads: int = 1
    """Torch CPU threads."""
    quick: bool = False
    """Smoke run: the small Synth360, a tiny training budget."""
    json: bool = False
    """Print the summary as JSON on the last line."""
    progress: bool = True
    """Show progress (on stderr)."""
    settings: CoTrainSettings = field(default_factory=probe_settings)
    """Co-training settings (PPO, critic, rewards; the hit reward is ``reward.damage_hit``)."""


QUICK_OVERRIDES: dict[str, Any] = {"eval_paths": 3, "settings": SMOKE_SETTINGS}


def hit_rates(agent: ScanpathAgent, cache: FeatureCache, args: Args, settings: CoTrainSettings,
              env_kwargs: dict[str, Any]) -> float:
    """Damage hit rate of ``agent`` on the images of ``cache`` with a cap."""
    located = np.flatnonzero(has_cap(cache))
    paths = run_agent(agent, cache, located, n_paths=args.eval_paths,
                      path_length=settings.path_length, env_kwargs=env_kwargs, seed=settings.seed)
    return damage_hit_rate(paths, cache)


def run_split(k: int, train: FeatureCache, test: FeatureCache, args: Args) -> dict[str, Any]:
    """Train one policy with the hit reward; hit rates of it, random paths and the oracle."""
    settings = args.settings
    started = time.perf_counter()
    rollout = settings.ppo.n_envs * settings.ppo.n_steps
    with progress_bar(f"split {k + 1}: PPO with the hit reward", settings.total_timesteps,
                      unit="step", enabled=args.progress) as bar:
        run = setup_cotraining(settings, train, on_update=lambda _: bar.advance(rollout))
        train_to_budget(run, settings, resume_or_warm_up(run, settings, None), None)
    critic = {name.removeprefix("train/"): float(value)
              for name, value in run.ppo.logger.name_to_value.items()
              if name in ("train/value_loss", "train/explained_variance", "train/approx_kl")}
    env_kwargs = settings.env_kwargs(run.stats)
    feature_clip = run.env.get_attr("feature_clip", [0])[0]
    locator = fit_damage_locator(train, run.stats, np.arange(len(train)), feature_clip)
    agents: dict[str, ScanpathAgent] = {
        "policy": SeededPolicyAgent(run.policy, settings.seed),
        "locator": DamageLocatorAgent(locator),
        "random": RandomPathAgent(seed=settings.seed),
        "oracle": DamageOracleAgent(train.grid, seed=settings.seed)}
    rates = {side: {name: hit_rates(agent, cache, args, settings, env_kwargs)
                    for name, agent in agents.items()}
             for side, cache in (("train", train), ("test", test))}
    return {"split": k, "hit_rate": rates, "last_update": critic,
            "seconds": time.perf_counter() - started}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean hit rate per side and agent over the splits."""
    return {side: {name: float(np.mean([r["hit_rate"][side][name] for r in records]))
                   for name in AGENTS} for side in ("train", "test")} | {"splits": len(records)}


def report_text(summary: dict[str, Any], records: list[dict[str, Any]], command: str) -> str:
    rows = [{"split": r["split"] + 1, **{f"{side} {name}": r["hit_rate"][side][name]
                                          for side in ("train", "test") for name in AGENTS},
             "critic explained variance": r["last_update"].get("explained_variance", float("nan"))}
            for r in records]
    rows.append({"split": "mean", **{f"{side} {name}": summary[side][name]
                                      for side in ("train", "test") for name in AGENTS}})
    columns = ["split", *[f"{side} {name}" for side in ("train", "test") for name in AGENTS],
               "critic explained variance"]
    return (f"# Damage-reward probe\n\n`{command}`\n\nDamage hit rate (share of path steps whose "
            "viewport sees at least a quarter of the damaged cap), images with a cap only.\n\n"
            + markdown_table(rows, columns) + "\n\n![hit rates](hit_rates.png)\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_script_args(Args, __doc__.splitlines()[0], argv, {"quick": QUICK_OVERRIDES})
    if min(args.splits, args.eval_paths, args.torch_threads) < 1:
        usage_error(SCRIPT, "--splits, --eval-paths and --torch-threads must be at least 1")
    if args.settings.reward.damage_hit <= 0:
        usage_error(SCRIPT, "--settings.reward.damage-hit must be above 0 (it is what this probe "
                            f"trains with), got {args.settings.reward.damage_hit}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.torch_threads)
    command = " ".join([f"experiments/{SCRIPT}", *(sys.argv[1:] if argv is None else argv)])
    console = Console(stderr=True, quiet=not args.progress)
    cache = args.feature_cache(quick_default=args.quick, progress=args.progress)
    if not has_cap(cache).any():
        usage_error(SCRIPT, f"{args.dataset_label}: no image has a located damaged cap to aim at")
    splits = repeated_splits(list(cache.ref_ids), n=args.splits, test_fraction=args.test_fraction,
                             seed=args.split_seed)
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for k, split in enumerate(splits):
        records.append(run_split(k, cache.subset(np.asarray(split.train)),
                                 cache.subset(np.asarray(split.test)), args))
        summary = summarize(records)
        atomic_write_json(out / "results.json", {"command": command, "config": asdict(args),
                                                 "summary": summary, "splits": records})
        atomic_write_text(out / "report.md", report_text(summary, records, command))
        plot_grouped_bars([f"{side} {name}" for side in ("train", "test") for name in AGENTS],
                          {f"split {r['split'] + 1}": [r["hit_rate"][side][name]
                                                       for side in ("train", "test")
                                                       for name in AGENTS] for r in records},
                          out / "hit_rates.png", ylabel="damage hit rate", ylim=(0.0, 1.0),
                          title="Hit rate with a reward for looking at the damage")
    console.print(report_text(summary, records, command), markup=False, highlight=False)
    print(json_line(summary) if args.json else f"report: {out / 'report.md'}")
    return summary


if __name__ == "__main__":
    main()
