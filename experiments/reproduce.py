#!/usr/bin/env python
"""Reproduce the paper's tables: in-dataset, cross-dataset, cross-distortion and ablation protocols.

Every method is evaluated on the same train/test partitions ("tasks"):

- ``in-dataset``: ``--splits`` reference splits (80/20 by reference content, seeds
  ``split_seed, split_seed + 1, ...``); per split RL-ScanIQA is trained on the training references,
  every scanpath baseline is scored by *that split's* co-trained assessor, and the SVR baseline is
  fitted on the same training images. Mean ± std over splits of SRCC / PLCC / KRCC / RMSE.
- ``cross-dataset`` (``--train A --test B``): trained on all of A, tested on all of B, no
  fine-tuning; ``--splits`` independent training seeds.
- ``cross-distortion``: reference splits as in-dataset, but the training side keeps only the
  distortion types not in ``--test-distortions`` (pristine references included) and the test side
  only those types: shift in distortion *and* content, our stand-in for cross-dataset tests when
  only Synth360 is at hand.
- ``ablation``: per reference split, the full model and one model per ablated part (step rewards,
  diversity reward, task reward, augmentation losses: their weights set to 0), RL paths vs human
  paths where the dataset has them, K ∈ ``--k-values`` paths at inference (from the full model) and
  T ∈ ``--t-values`` steps per path (a model per T, since the policy's observation has T + 1
  history slots): accuracy against policy + assessor milliseconds per image. Backbone calls per
  image stay V + 1 whatever K and T are, because viewport features are cached.

Outputs in ``--out``: ``results.json`` (config, every task's per-method metrics, the summary), a
Markdown ``report.md`` laid out like the paper's tables (Table 1 in-dataset, Table 2 cross-dataset
/ cross-distortion, Table 3 ablations, with the published numbers where the dataset matches), and
the figures ``srcc_vs_k.png`` (and ``srcc_vs_t.png`` for the ablation), ``scanpaths.png``
(scanpaths of the highest- and lowest-MOS test images of the first task) and, where the labels
locate the damage (Synth360's local distortions), ``cap_distance.png`` (each agent's steps
against their distance from the damaged cap). ``results.json`` is
rewritten atomically after every finished task, and a rerun with the same ``--out`` and
configuration skips the finished tasks (``--splits`` may grow between runs: task k only depends
on its own seed). With ``--json`` the last printed line is a JSON object with one entry per
method: the mean and std over tasks of each metric.

Where-to-look diagnostics (:mod:`rl_scaniqa.agents.damage`): every method entry also carries
``srcc_local`` (SRCC among the test images with a located damaged cap) and ``damage_hit_rate``
(share of path steps on those images whose viewport sees at least a quarter of the cap). When the
test images have caps, two reference rows join the table: the oracle (each path takes the
viewports that see most of the cap) and the anti-oracle (those that see least of it); on images
without a cap both take the random-paths baseline's paths. The SVR row has no paths: its
``damage_hit_rate`` is null. On datasets without cap labels both diagnostics are null.
``viewports_seen`` (every dataset) is the number of distinct viewports an image's K paths visit
together, mean over the test images: how much the assessor's average over paths has to go on.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from rl_scaniqa.agents.baselines import (
    CUBE_FACE_PATH_LENGTH,
    AllViewportsAgent,
    CubeFaceAgent,
    DamageOracleAgent,
    EntropyGreedyAgent,
    EquatorSweepAgent,
    HumanScanpathAgent,
    RandomPathAgent,
    SVRBaseline,
    all_viewports_kwargs,
    human_scanpaths_from_records,
)
from rl_scaniqa.agents.cotrain import CoTrainRun, cotrain
from rl_scaniqa.agents.damage import (
    DISTANCE_BIN_EDGES,
    damage_hit_rate,
    distance_profile,
    has_cap,
    local_srcc,
)
from rl_scaniqa.agents.damage_locator import DamageLocatorAgent, fit_damage_locator
from rl_scaniqa.agents.data_args import DataArgs
from rl_scaniqa.agents.evaluation import AgentEvaluation, ScanpathAgent, evaluate_agent
from rl_scaniqa.agents.reporting import (
    markdown_table,
    mean_std,
    plot_curve,
    plot_distance_profiles,
    plot_scanpath_panels,
)
from rl_scaniqa.agents.script_args import parse_script_args
from rl_scaniqa.agents.settings import SMOKE_SETTINGS, CoTrainSettings
from rl_scaniqa.assessor.metrics import evaluate, summarize
from rl_scaniqa.envs.data.datasets import load_dataset, repeated_splits
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.progress import TrainingProgress, progress_bar
from rl_scaniqa.envs.storage import atomic_path, atomic_write_json, atomic_write_text, read_own_json

PROTOCOLS = ("in-dataset", "cross-dataset", "cross-distortion", "ablation")
METRICS = ("srcc", "plcc", "krcc", "rmse")
#: Where-to-look diagnostics of every method (null where they do not apply).
DIAGNOSTICS = ("srcc_local", "damage_hit_rate", "viewports_seen")
#: What the summary averages over tasks per method.
SUMMARY_KEYS = (*METRICS, *DIAGNOSTICS, "ms_per_image")
RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"
#: Checkpoints of the trainings of unfinished tasks, one folder per training.
CHECKPOINTS_NAME = "checkpoints"
RESULTS_FORMAT = "rl_scaniqa.reproduce"

RL = "RL-ScanIQA"
RANDOM = "Random paths"
EQUATOR = "Equator sweep"
ENTROPY = "Entropy-greedy (Assessor360-like)"
CUBE = "Cube faces (MC360IQA-like)"
HUMAN = "Human scanpaths"
CEILING = "All viewports (ceiling)"
SVR = "SVR on NSS features (no paths)"
# Reference rows, not methods; one name says "oracle", the other "anti", never both.
ORACLE = "Oracle: viewports on the damage (reference)"
ANTI = "Anti: viewports farthest from the damage (reference)"
# Blind at test time but fitted on the training images' damage labels: a reference, not a method.
LOCATOR = "Damage locator: fitted on the training labels (reference)"

#: Ablated variants: overrides of the co-training settings (weights set to 0).
ABLATIONS: dict[str, dict[str, Any]] = {
    "w/o step rewards": {"reward": {"lambda_entropy": 0.0, "lambda_ssim": 0.0,
                                    "lambda_novelty": 0.0, "lambda_equator": 0.0}},
    "w/o diversity reward": {"reward": {"beta_coverage": 0.0, "beta_jaccard": 0.0}},
    "w/o task reward": {"reward": {"task_mse": 0.0, "task_rank": 0.0}},
    "w/o augmentation losses": {"assessor": {"loss_consistency": 0.0, "loss_triplet": 0.0,
                                             "loss_cross_rank": 0.0}},
}
FULL = f"{RL} (full)"
#: Paths per image drawn in the scanpath figure.
PANEL_PATHS = 3

#: The paper's published SRCC / PLCC (DINOv2 ViT-S/14 features; DESIGN.md, "Published numbers").
PUBLISHED_IN_DATASET = {"jufe": (0.816, 0.902), "oiqa": (0.941, 0.967), "cviqd": (0.970, 0.970)}
PUBLISHED_CROSS = {("cviqd", "oiqa"): (0.901, 0.913), ("cviqd", "jufe"): (0.800, 0.822),
                   ("jufe", "cviqd"): (0.771, 0.802), ("jufe", "oiqa"): (0.755, 0.833)}
PUBLISHED_HUMAN = {"jufe": (0.724, 0.752)}


@dataclass
class Args(DataArgs):
    """Arguments of ``reproduce.py`` (nested settings: options like ``--settings.ppo.n-envs``)."""

    protocol: str = "in-dataset"
    """in-dataset | cross-dataset (reads --train/--test) | cross-distortion | ablation."""
    train: str = ""
    """Cross-dataset: training dataset name."""
    train_root: str = ""
    """Cross-dataset: its folder."""
    train_options: str = ""
    """Cross-dataset: its loader options."""
    test: str = ""
    """Cross-dataset: test dataset name."""
    test_root: str = ""
    """Cross-dataset: its folder."""
    test_options: str = ""
    """Cross-dataset: its loader options."""
    test_distortions: str = "jpeg2000,noise,underexposure"
    """Cross-distortion: distortion types held out for testing."""
    splits: int = 10
    """Reference splits (cross-dataset: training seeds)."""
    split_seed: int = 0
    """Seed of the first split; split k uses split_seed + k."""
    test_fraction: float = 0.2
    """Fraction of the references held out for testing in each split."""
    eval_paths: int = 15
    """K paths per test image."""
    k_values: str = "1,3,5,10,15"
    """K values of the accuracy-vs-K curve."""
    t_values: str = "3,5,7,9"
    """Ablation: T values (a model is trained per T)."""
    out: str = "runs/reproduce"
    """Output folder (rerun with the same folder to resume)."""
    threads: int = 1
    """Torch intra-op threads (1 is several times faster than 2 on a busy 2-core machine)."""
    checkpoint_every: int = 10
    """Rollouts between checkpoints of each training, so a killed rerun resumes it (0 = none)."""
    quick: bool = False
    """Smoke run: the small Synth360, 2 splits, a tiny training budget."""
    json: bool = False
    """Print one JSON line per method summary as the last line."""
    progress: bool = True
    """Show the progress bar (on stderr)."""
    settings: CoTrainSettings = field(default_factory=CoTrainSettings)
    """Co-training settings of every trained model."""


QUICK_OVERRIDES: dict[str, Any] = {
    "splits": 2, "eval_paths": 5, "k_values": "1,3,5", "t_values": "3,7",
    "settings": SMOKE_SETTINGS,
}

#: Config fields that may change between a run and its resumption.
RESUMABLE_FIELDS = ("out", "json", "progress", "splits", "threads", "checkpoint_every")


def int_list(text: str, name: str) -> list[int]:
    """``"1,3,5"`` → ``[1, 3, 5]`` (positive, sorted, unique)."""
    try:
        values = sorted({int(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated integers, got {text!r}") from None
    if not values or values[0] < 1:
        raise ValueError(f"--{name} needs positive integers, got {text!r}")
    return values


def check_args(args: Args) -> None:
    """Reject inconsistent arguments before any data is touched."""
    if args.protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {args.protocol!r}")
    if args.protocol == "cross-dataset" and not (args.train and args.test):
        raise ValueError("--protocol cross-dataset needs --train A and --test B (with "
                         "--train-root / --test-root unless a side is the default synth360)")
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.splits < 1:
        raise ValueError(f"--splits must be at least 1, got {args.splits}")
    if not 0.0 < args.test_fraction < 1.0:
        raise ValueError(f"--test-fraction must lie in (0, 1), got {args.test_fraction}")
    int_list(args.k_values, "k-values")
    int_list(args.t_values, "t-values")


# ----------------------------------------------------------------------------- data


@dataclass
class Source:
    """One dataset as a feature cache, plus its human scanpaths (image id → paths), if any."""

    name: str
    cache: FeatureCache
    human: dict[str, list[list[int]]]


@dataclass
class Task:
    """One train/test partition every method is evaluated on."""

    index: int
    label: str
    seed: int
    train: FeatureCache
    test: FeatureCache
    human: dict[str, list[list[int]]]
    info: dict[str, Any]


def load_source(name: str, root: str, options_text: str, args: Args) -> Source:
    """The dataset's feature cache (built on first use) and its human scanpaths."""
    cache = args.feature_cache(dataset=name, root=root, options_text=options_text,
                               quick_default=args.quick, progress=args.progress)
    options = args.loader_options(name, options_text)
    human = (human_scanpaths_from_records(load_dataset(name, root, **options), args.grid())
             if root else {})
    return Source(name=name, cache=cache, human=human)


#: Narrows a task's (train, test) cache indices, e.g. to some distortion types.
Selector = Callable[[FeatureCache, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def reference_tasks(source: Source, args: Args, select: Selector | None = None) -> list[Task]:
    """One task per reference split; ``select`` may narrow the train and test indices."""
    cache = source.cache
    tasks = []
    splits = repeated_splits(list(cache.ref_ids), n=args.splits,
                             test_fraction=args.test_fraction, seed=args.split_seed)
    for k, split in enumerate(splits):
        train, test = np.asarray(split.train), np.asarray(split.test)
        if select is not None:
            train, test = select(cache, train, test)
        tasks.append(Task(index=k, label=f"split {k + 1}", seed=args.settings.seed + k,
                          train=cache.subset(train), test=cache.subset(test), human=source.human,
                          info={"split_seed": split.seed, "train_refs": list(split.train_refs),
                                "test_refs": list(split.test_refs)}))
    return tasks


def distortion_selector(held_out: Sequence[str]) -> Selector:
    """Train on the other types (pristine references included), test on ``held_out`` only."""
    held = set(held_out)

    def select(cache: FeatureCache, train: np.ndarray,
               test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kinds = np.asarray(cache.distortions)
        return train[~np.isin(kinds[train], list(held))], test[np.isin(kinds[test], list(held))]

    return select


def build_tasks(args: Args) -> tuple[list[Task], dict[str, Any]]:
    """The protocol's tasks and a description of the data for the report."""
    if args.protocol == "cross-dataset":
        train = load_source(args.train, args.train_root, args.train_options, args)
        test = load_source(args.test, args.test_root, args.test_options, args)
        if (train.cache.dim, train.cache.backbone) != (test.cache.dim, test.cache.backbone):
            raise ValueError(f"cross-dataset needs the same features on both sides: {args.train} "
                             f"has {train.cache.backbone} (D={train.cache.dim}), {args.test} has "
                             f"{test.cache.backbone} (D={test.cache.dim})")
        tasks = [Task(index=k, label=f"seed {k + 1}", seed=args.settings.seed + k,
                      train=train.cache, test=test.cache, human=test.human, info={})
                 for k in range(args.splits)]
        return tasks, {"train": args.train, "test": args.test, "cache": test.cache,
                       "n_train": len(train.cache), "n_test": len(test.cache)}
    source = load_source(args.dataset, args.root, args.dataset_options, args)
    if args.protocol == "cross-distortion":
        held = [kind.strip() for kind in args.test_distortions.split(",") if kind.strip()]
        present = sorted(set(source.cache.distortions))
        missing = [kind for kind in held if kind not in present]
        if not held or missing:
            raise ValueError(f"--test-distortions {args.test_distortions!r}: {missing or 'empty'} "
                             f"not among the dataset's distortion types {present}")
        tasks = reference_tasks(source, args, distortion_selector(held))
        empty = [task.label for task in tasks if len(task.test) < 3 or len(task.train) < 3]
        if empty:
            raise ValueError(f"cross-distortion leaves fewer than 3 train or test images in "
                             f"{empty}; hold out other types or use a larger test fraction")
        train_kinds = sorted(set(present) - set(held))
        return tasks, {"dataset": args.dataset_label, "cache": source.cache, "train_kinds": train_kinds,
                       "test_kinds": held}
    return reference_tasks(source, args), {"dataset": args.dataset_label, "cache": source.cache}


# ----------------------------------------------------------------------------- training


def checkpoint_folder(args: Args, task: Task, training: str) -> Path:
    """Where one training of ``task`` checkpoints (removed once the task's results are saved)."""
    slug = "".join(c if c.isalnum() else "-" for c in training.lower()).strip("-")
    return Path(args.out) / CHECKPOINTS_NAME / f"task{task.index}" / slug


def train_model(settings: CoTrainSettings, args: Args, task: Task, tracker: TrainingProgress,
                training: str) -> CoTrainRun:
    """One co-trained model on all training images of ``task`` (statistics fitted on them).

    Checkpointed every ``args.checkpoint_every`` rollouts, so a rerun of a killed reproduction
    continues this training instead of starting it again.
    """
    tracker.start(f"{task.label}: training {training}", settings.total_timesteps)
    run = cotrain(settings, task.train, stats=FeatureStats.fit(task.train),
                  checkpoint_dir=checkpoint_folder(args, task, training),
                  checkpoint_every=args.checkpoint_every, on_update=tracker.update)
    tracker.finish()
    return run


def reward_figures(run: CoTrainRun) -> dict[str, float]:
    """The last rollout's reward statistics (``RewardStatsCallback``): mean and spread over the K
    paths of an image of the task and step terms, and the task reward's share of that spread."""
    return {name: round(float(value), 6) for name, value in run.callback.latest.items()
            if name.split("/")[0] in ("task", "step", "set", "return", "spread", "share")
            and isinstance(value, (int, float))}


def variant_settings(base: CoTrainSettings, overrides: Mapping[str, Any],
                     seed: int) -> CoTrainSettings:
    """``base`` with nested ``overrides`` and the task's seed."""
    values = asdict(base)
    for group, changes in overrides.items():
        if isinstance(changes, Mapping):
            values[group].update(changes)
        else:
            values[group] = changes
    values["seed"] = seed
    return CoTrainSettings.from_dict(values)


# ----------------------------------------------------------------------------- evaluation


def metrics_of(evaluation: AgentEvaluation, cache: FeatureCache) -> dict[str, Any]:
    """The protocol metrics, the where-to-look diagnostics and the time of one evaluation on
    ``cache`` (the cache its scanpaths index)."""
    scanpaths = evaluation.scanpaths
    return {**evaluation.metrics,
            "srcc_local": local_srcc(cache, scanpaths.image_indices, evaluation.predicted),
            "damage_hit_rate": damage_hit_rate(scanpaths, cache),
            "viewports_seen": scanpaths.viewports_seen(),
            "ms_per_image": evaluation.ms_per_image}


def human_subset(task: Task) -> np.ndarray:
    """Test images (positions in ``task.test``) that have recorded human scanpaths."""
    return np.asarray([i for i, image in enumerate(task.test.image_ids) if image in task.human],
                      dtype=np.int64)


def path_agents(grid: ViewportGrid, seed: int,
                with_caps: bool) -> dict[str, tuple[ScanpathAgent, dict[str, int]]]:
    """The scanpath baselines and their ``run_agent`` overrides of K and T (if any); the oracle
    and anti-oracle reference rows only ``with_caps`` (test labels that locate the damage)."""
    agents: dict[str, tuple[ScanpathAgent, dict[str, int]]] = {
        RANDOM: (RandomPathAgent(seed=seed), {}),
        EQUATOR: (EquatorSweepAgent(grid), {}),
        ENTROPY: (EntropyGreedyAgent(grid, seed=seed), {}),
        CUBE: (CubeFaceAgent(grid), {"path_length": CUBE_FACE_PATH_LENGTH}),
        CEILING: (AllViewportsAgent(), all_viewports_kwargs(grid)),
    }
    if with_caps:
        agents[ORACLE] = (DamageOracleAgent(grid, seed=seed), {})
        agents[ANTI] = (DamageOracleAgent(grid, least=True, seed=seed), {})
    return agents


def evaluate_paths(agent: ScanpathAgent, run: CoTrainRun, settings: CoTrainSettings, task: Task,
                   indices: Sequence[int], n_paths: int,
                   path_length: int | None = None) -> AgentEvaluation:
    return evaluate_agent(agent, run.assessor, task.test, indices, n_paths=n_paths,
                          path_length=path_length or settings.path_length,
                          env_kwargs=settings.env_kwargs(run.stats), seed=task.seed)


def evaluate_svr(task: Task) -> dict[str, Any]:
    """The no-path baseline fitted on the task's training images."""
    model = SVRBaseline().fit(task.train, np.arange(len(task.train)))
    started = time.perf_counter()
    scores = model.predict(task.test, np.arange(len(task.test)))
    seconds = time.perf_counter() - started
    predicted = task.test.mos_scale.denormalize(scores)
    everything = np.arange(len(task.test))
    # No paths, so no hit rate and no viewports: null, not 0 (it did not look away from the damage).
    return {**evaluate(predicted, task.test.mos),
            "srcc_local": local_srcc(task.test, everything, predicted), "damage_hit_rate": None,
            "viewports_seen": None,
            "ms_per_image": 1000.0 * seconds / len(task.test), "best_params": model.best_params}


def visit_frequencies(evaluations: Mapping[str, AgentEvaluation],
                      n_viewports: int) -> dict[str, list[float]]:
    """Per method: how often each viewport is chosen (fraction of all actions; starts excluded)."""
    result = {}
    for name, evaluation in evaluations.items():
        counts = np.bincount(evaluation.scanpaths.paths[..., 1:].ravel(), minlength=n_viewports)
        result[name] = (counts / counts.sum()).tolist()
    return result


def cap_distance_profiles(evaluations: Mapping[str, AgentEvaluation],
                          cache: FeatureCache) -> dict[str, list[float]]:
    """Per method: its steps on images with a cap, as fractions per distance bin from the cap."""
    return {name: distance_profile(evaluation.scanpaths, cache).tolist()
            for name, evaluation in evaluations.items()}


def panel_record(task: Task, evaluations: Mapping[str, AgentEvaluation]) -> dict[str, Any]:
    """Paths of the highest- and lowest-MOS test images for the scanpath figure.

    Methods evaluated on a subset of the test images (human scanpaths) are drawn only when
    both images are in their subset.
    """
    order = np.argsort(task.test.mos, kind="stable")
    chosen = [int(order[-1]), int(order[0])]
    predicted: dict[str, list[float]] = {}
    paths: dict[str, list[list[list[int]]]] = {}
    for name, evaluation in evaluations.items():
        rows = {int(image): row for row, image in enumerate(evaluation.scanpaths.image_indices)}
        if all(image in rows for image in chosen):
            predicted[name] = [float(evaluation.predicted[rows[image]]) for image in chosen]
            paths[name] = [evaluation.scanpaths.paths[rows[image]].tolist() for image in chosen]
    return {"images": chosen, "image_ids": [task.test.image_ids[i] for i in chosen],
            "mos": [float(task.test.mos[i]) for i in chosen], "predicted": predicted,
            "paths": paths}


def methods_task(task: Task, args: Args, tracker: TrainingProgress) -> dict[str, Any]:
    """In-dataset / cross protocols: RL-ScanIQA, every baseline, and the K curve, on one task."""
    settings = variant_settings(args.settings, {}, task.seed)
    run = train_model(settings, args, task, tracker, RL)
    tracker.handle.describe(f"{task.label}: scoring methods")
    everything = np.arange(len(task.test))
    evaluations = {RL: evaluate_paths(run.policy, run, settings, task, everything,
                                      args.eval_paths)}
    with_caps = bool(has_cap(task.test).any())
    for name, (agent, overrides) in path_agents(task.test.grid, task.seed, with_caps).items():
        evaluations[name] = evaluate_paths(agent, run, settings, task, everything,
                                           overrides.get("n_paths", args.eval_paths),
                                           overrides.get("path_length"))
    if with_caps and has_cap(task.train).any():
        locator = fit_damage_locator(task.train, run.stats, np.arange(len(task.train)),
                                     run.env.get_attr("feature_clip", [0])[0])
        evaluations[LOCATOR] = evaluate_paths(DamageLocatorAgent(locator), run, settings, task,
                                              everything, args.eval_paths)
    with_human = human_subset(task)
    if with_human.size >= 3:
        evaluations[HUMAN] = evaluate_paths(HumanScanpathAgent(task.human, task.test.grid), run,
                                            settings, task, with_human, args.eval_paths)
    methods = {name: metrics_of(e, task.test) for name, e in evaluations.items()}
    methods[SVR] = evaluate_svr(task)
    k_curve: dict[str, dict[str, Any]] = {RL: {}, RANDOM: {}}
    for k in int_list(args.k_values, "k-values"):
        k_curve[RL][str(k)] = metrics_of(evaluate_paths(run.policy, run, settings, task,
                                                        everything, k), task.test)
        k_curve[RANDOM][str(k)] = metrics_of(evaluate_paths(RandomPathAgent(task.seed), run,
                                                            settings, task, everything, k),
                                             task.test)
    shown = {name: evaluations[name] for name in (RL, ENTROPY, RANDOM, HUMAN)
             if name in evaluations}
    visited = {name: evaluations[name] for name in (RL, RANDOM, EQUATOR, ENTROPY, HUMAN)
               if name in evaluations}
    record = {"methods": methods, "k_curve": k_curve, "panels": panel_record(task, shown),
              "visits": visit_frequencies(visited, task.test.grid.n_viewports),
              "timesteps": int(run.ppo.num_timesteps), "training": reward_figures(run)}
    if with_caps:
        record["cap_distance"] = cap_distance_profiles(evaluations, task.test)
    return record


def ablation_task(task: Task, args: Args, tracker: TrainingProgress) -> dict[str, Any]:
    """Ablation protocol on one split: variants, RL vs human paths, K and T curves."""
    base = args.settings
    full_settings = variant_settings(base, {}, task.seed)
    full = train_model(full_settings, args, task, tracker, FULL)
    everything = np.arange(len(task.test))
    evaluations = {FULL: evaluate_paths(full.policy, full, full_settings, task, everything,
                                        args.eval_paths)}
    evaluations[RANDOM] = evaluate_paths(RandomPathAgent(task.seed), full, full_settings, task,
                                         everything, args.eval_paths)
    methods = {name: metrics_of(e, task.test) for name, e in evaluations.items()}
    with_human = human_subset(task)
    if with_human.size >= 3:
        human = evaluate_paths(HumanScanpathAgent(task.human, task.test.grid), full, full_settings,
                               task, with_human, args.eval_paths)
        evaluations[HUMAN] = human
        methods[HUMAN] = metrics_of(human, task.test)
        # RL on exactly the images the human row is measured on, for a like-for-like pair.
        methods[f"{RL} (images with human paths)"] = metrics_of(evaluate_paths(
            full.policy, full, full_settings, task, with_human, args.eval_paths), task.test)
    for name, overrides in ABLATIONS.items():
        settings = variant_settings(base, overrides, task.seed)
        run = train_model(settings, args, task, tracker, name)
        methods[name] = metrics_of(evaluate_paths(run.policy, run, settings, task, everything,
                                                  args.eval_paths), task.test)
    k_curve: dict[str, dict[str, Any]] = {RL: {}, RANDOM: {}}
    for k in int_list(args.k_values, "k-values"):
        k_curve[RL][str(k)] = metrics_of(evaluate_paths(full.policy, full, full_settings, task,
                                                        everything, k), task.test)
        k_curve[RANDOM][str(k)] = metrics_of(evaluate_paths(RandomPathAgent(task.seed), full,
                                                            full_settings, task, everything, k),
                                             task.test)
    t_curve: dict[str, dict[str, Any]] = {RL: {}}
    for t in int_list(args.t_values, "t-values"):
        if t == base.path_length:
            t_curve[RL][str(t)] = methods[FULL]
            continue
        settings = variant_settings(base, {"path_length": t}, task.seed)
        run = train_model(settings, args, task, tracker, f"T={t}")
        t_curve[RL][str(t)] = metrics_of(evaluate_paths(run.policy, run, settings, task,
                                                        everything, args.eval_paths), task.test)
    return {"methods": methods, "k_curve": k_curve, "t_curve": t_curve,
            "panels": panel_record(task, evaluations),
            "visits": visit_frequencies(evaluations, task.test.grid.n_viewports),
            "timesteps": int(full.ppo.num_timesteps)}


def trainings_per_task(args: Args) -> int:
    if args.protocol != "ablation":
        return 1
    extra_t = [t for t in int_list(args.t_values, "t-values") if t != args.settings.path_length]
    return 1 + len(ABLATIONS) + len(extra_t)


# ----------------------------------------------------------------------------- results


def comparable_config(args: Args) -> dict[str, Any]:
    return {key: value for key, value in asdict(args).items() if key not in RESUMABLE_FIELDS}


def claim_checkpoints(out: Path, args: Args) -> None:
    """Refuse training checkpoints of another configuration; mark them as this one's."""
    path = out / CHECKPOINTS_NAME / "config.json"
    if path.is_file():
        if read_own_json(path, "the unfinished trainings afresh") != comparable_config(args):
            raise ValueError(f"{path.parent} holds training checkpoints of another "
                             "configuration; use another --out or the same arguments to resume")
        return
    atomic_write_json(path, comparable_config(args))


def load_finished(out: Path, args: Args) -> list[dict[str, Any]]:
    """Task records of an earlier run of the same configuration in ``out`` (empty if none)."""
    path = out / RESULTS_NAME
    if not path.is_file():
        return []
    document = read_own_json(path, "afresh")
    if document.get("format") != RESULTS_FORMAT:
        raise ValueError(f"{path}: not a reproduce.py results file")
    if document.get("config") != comparable_config(args):
        raise ValueError(f"{path} holds results of another configuration; use another --out "
                         "or the same arguments to resume it")
    return list(document.get("tasks", []))


def summarize_methods(tasks: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Method → metric → {mean, std} over the tasks, plus ``splits`` (how many tasks)."""
    names: list[str] = []
    for task in tasks:
        names.extend(name for name in task["methods"] if name not in names)
    summary = {}
    for name in names:
        rows = [task["methods"][name] for task in tasks if name in task["methods"]]
        stats = summarize([{key: _number(row.get(key)) for key in SUMMARY_KEYS} for row in rows])
        summary[name] = {key: {"mean": stats[key]["mean"], "std": stats[key]["std"]}
                         for key in SUMMARY_KEYS}
        summary[name]["splits"] = len(rows)
    return summary


def _number(value: Any) -> float:
    """A task record's metric as a float: null (no value, e.g. the SVR's hit rate, or NaN that
    went through strict JSON) and a key absent from an older results file become NaN."""
    return math.nan if value is None else float(value)


def summarize_curve(tasks: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Curve name → x → metric → {mean, std} over tasks."""
    curves: dict[str, dict[str, Any]] = {}
    for name in tasks[0].get(key, {}):
        points = tasks[0][key][name]
        curves[name] = {}
        for x in points:
            stats = summarize([{m: task[key][name][x][m] for m in (*METRICS, "ms_per_image")}
                               for task in tasks])
            curves[name][x] = {m: {"mean": s["mean"], "std": s["std"]} for m, s in stats.items()}
    return curves


def paired_deltas(tasks: Sequence[Mapping[str, Any]], reference: str,
                  others: Sequence[str]) -> list[dict[str, Any]]:
    """Per-task SRCC of ``reference`` minus each other method: mean, std and wins."""
    rows = []
    for other in others:
        pairs = [(task["methods"][reference]["srcc"], task["methods"][other]["srcc"])
                 for task in tasks if reference in task["methods"] and other in task["methods"]]
        if not pairs:
            continue
        deltas = np.asarray([a - b for a, b in pairs], dtype=np.float64)
        rows.append({"method": other, "delta": float(deltas.mean()),
                     "std": float(deltas.std(ddof=1)) if len(deltas) > 1 else math.nan,
                     "wins": f"{int((deltas > 0).sum())}/{len(deltas)}"})
    return rows


# ----------------------------------------------------------------------------- report


def _published_rows(args: Args, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    if args.protocol in ("in-dataset", "ablation") and args.dataset_label.lower() in PUBLISHED_IN_DATASET:
        srcc, plcc = PUBLISHED_IN_DATASET[args.dataset_label.lower()]
        rows = [{"method": "RL-ScanIQA, paper (DINOv2)", "srcc": srcc, "plcc": plcc}]
        if args.protocol == "ablation" and args.dataset_label.lower() in PUBLISHED_HUMAN:
            h_srcc, h_plcc = PUBLISHED_HUMAN[args.dataset_label.lower()]
            rows.append({"method": "Human scanpaths, paper (DINOv2)", "srcc": h_srcc,
                         "plcc": h_plcc})
        return rows
    pair = (args.train.lower(), args.test.lower())
    if args.protocol == "cross-dataset" and pair in PUBLISHED_CROSS:
        srcc, plcc = PUBLISHED_CROSS[pair]
        return [{"method": "RL-ScanIQA, paper (DINOv2)", "srcc": srcc, "plcc": plcc}]
    return []


def _table(summary: Mapping[str, Mapping[str, Any]], names: Sequence[str],
           published: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for name in names:
        if name not in summary:
            continue
        entry = summary[name]
        rows.append({"method": name, **{m: mean_std(entry, m) for m in (*METRICS, *DIAGNOSTICS)},
                     "ms": mean_std(entry, "ms_per_image"), "splits": entry["splits"]})
    for row in published:
        rows.append({"method": row["method"], "srcc": f"{row['srcc']:.3f}",
                     "plcc": f"{row['plcc']:.3f}", "krcc": "–", "rmse": "–", "srcc_local": "–",
                     "damage_hit_rate": "–", "viewports_seen": "–", "ms": "–", "splits": "–"})
    return markdown_table(rows, ["method", *METRICS, *DIAGNOSTICS, "ms", "splits"],
                          ["Method", "SRCC", "PLCC", "KRCC", "RMSE", "SRCC (local)",
                           "Damage hit rate", "Viewports seen", "ms/image", "Tasks"])


def _curve_table(curve: Mapping[str, Mapping[str, Any]], axis: str) -> str:
    rows = []
    for name, points in curve.items():
        for x, entry in points.items():
            rows.append({"method": name, "x": x, "srcc": mean_std(entry, "srcc"),
                         "plcc": mean_std(entry, "plcc"), "ms": mean_std(entry, "ms_per_image")})
    return markdown_table(rows, ["method", "x", "srcc", "plcc", "ms"],
                          ["Paths from", axis, "SRCC", "PLCC", "ms/image (policy+assessor)"])


def write_figures(out: Path, tasks: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                  k_curve: Mapping[str, Any], t_curve: Mapping[str, Any],
                  test_cache: FeatureCache) -> list[str]:
    """The report's figures; returns their file names."""
    names = []
    if k_curve:
        ks = sorted(int(k) for k in next(iter(k_curve.values())))
        series = {name: ([points[str(k)]["srcc"]["mean"] for k in ks],
                         [points[str(k)]["srcc"]["std"] for k in ks])
                  for name, points in k_curve.items()}
        if CEILING in summary:
            ceiling = summary[CEILING]["srcc"]
            series[CEILING] = ([ceiling["mean"]] * len(ks), [ceiling["std"]] * len(ks))
        plot_curve(ks, series, out / "srcc_vs_k.png", xlabel="K (paths per image)",
                   ylabel="SRCC", title="Accuracy vs number of scanpaths")
        names.append("srcc_vs_k.png")
    if t_curve:
        ts = sorted(int(t) for t in t_curve[RL])
        plot_curve(ts, {RL: ([t_curve[RL][str(t)]["srcc"]["mean"] for t in ts],
                             [t_curve[RL][str(t)]["srcc"]["std"] for t in ts])},
                   out / "srcc_vs_t.png", xlabel="T (steps per path)", ylabel="SRCC",
                   title="Accuracy vs path length (a model per T)")
        names.append("srcc_vs_t.png")
    with_visits = [task["visits"] for task in tasks if "visits" in task]
    if with_visits:
        plot_visits({name: np.mean([visits[name] for visits in with_visits], axis=0)
                     for name in with_visits[0]}, test_cache.grid, out / "viewport_visits.png",
                    title=f"Where the agents look: fraction of actions per viewport "
                          f"(mean over {len(with_visits)} task(s))")
        names.append("viewport_visits.png")
    with_caps = [task["cap_distance"] for task in tasks if "cap_distance" in task]
    if with_caps:
        plot_distance_profiles(
            DISTANCE_BIN_EDGES, {name: np.mean([profiles[name] for profiles in with_caps], axis=0)
                                 for name in with_caps[0]}, out / "cap_distance.png",
            title=f"Where the steps land on local-distortion test images (mean over "
                  f"{len(with_caps)} task(s))")
        names.append("cap_distance.png")
    panels = tasks[0].get("panels")
    if panels:
        methods = list(panels["paths"])
        lookup = {image_id: i for i, image_id in enumerate(test_cache.image_ids)}
        thumbnails, paths, titles = [], [], []
        for row, (image_id, mos) in enumerate(zip(panels["image_ids"], panels["mos"])):
            quality = "highest MOS" if row == 0 else "lowest MOS"
            for method in methods:
                thumbnails.append(test_cache.thumbnails[lookup[image_id]])
                # A few paths stay readable; all K drawn together cover the whole panorama.
                paths.append(np.asarray(panels["paths"][method][row])[:PANEL_PATHS])
                titles.append(f"{method}\n{quality}: {Path(image_id).name} (MOS {mos:.2f}, "
                              f"pred {panels['predicted'][method][row]:.2f})")
        plot_scanpath_panels(thumbnails, paths, test_cache.grid, titles, out / "scanpaths.png",
                             columns=len(methods), suptitle=f"First {PANEL_PATHS} scanpaths on the "
                             "first task's highest- and lowest-MOS test images")
        names.append("scanpaths.png")
    return names


def plot_visits(frequencies: Mapping[str, np.ndarray], grid: ViewportGrid, path: Path, *,
                title: str) -> None:
    """One n_lat x n_lon heat map per method (rows top to bottom = pitch +90 to -90)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(frequencies), figsize=(3.2 * len(frequencies), 2.2),
                                squeeze=False)
    high = max(float(np.max(values)) for values in frequencies.values())
    for axis, (name, values) in zip(axes[0], frequencies.items()):
        image = axis.imshow(np.asarray(values).reshape(grid.n_lat, grid.n_lon), cmap="viridis",
                            vmin=0.0, vmax=high, extent=(-180, 180, -90, 90), aspect="auto")
        axis.set_title(name, fontsize=8)
        axis.set_xlabel("yaw (°)", fontsize=7)
        axis.set_ylabel("pitch (°)", fontsize=7)
        axis.tick_params(labelsize=6)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    figure.suptitle(title, fontsize=9, y=1.08)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)


def report_text(args: Args, data: Mapping[str, Any], document: Mapping[str, Any],
                figures: Sequence[str], command: str) -> str:
    """The Markdown report."""
    summary, settings = document["summary"], args.settings
    cache: FeatureCache = data["cache"]
    grid = cache.grid
    tasks = document["tasks"]
    wall = sum(task["seconds"] for task in tasks)
    lines = [f"# RL-ScanIQA — {args.protocol} protocol", "",
             f"Command: `{command}`", "",
             f"- Features: `{cache.backbone}` (D = {cache.dim}), grid {grid.key()} (V = "
             f"{grid.n_viewports}); backbone calls per image: V + 1 = {grid.n_viewports + 1}, "
             "whatever K and T (features are cached; ms/image below is policy + assessor only).",
             f"- K = {args.eval_paths} paths of T = {settings.path_length} steps at evaluation "
             f"(cube faces: one path of the 6 faces; ceiling: one path of all {grid.n_viewports} "
             "viewports).",
             f"- Training per model: {settings.total_timesteps:,} PPO steps ({settings.ppo.n_envs} "
             f"envs x {settings.ppo.n_steps} steps per rollout), assessor warm-up "
             f"{settings.assessor.warmup_steps} steps, then "
             f"{settings.assessor.cotrain_steps:,} assessor steps spread over the run.",
             f"- Tasks finished: {len(tasks)} of {args.splits}; compute {wall / 60:.1f} min "
             f"({torch.get_num_threads()} torch threads).", ""]
    published = _published_rows(args, data)
    path_methods = [RL, RANDOM, EQUATOR, ENTROPY, CUBE, HUMAN, SVR, CEILING, LOCATOR, ORACLE, ANTI]
    if args.protocol == "in-dataset":
        lines += [f"## Table 1 — in-dataset, {args.dataset_label} (mean ± std over {len(tasks)} "
                  f"reference splits, {1 - args.test_fraction:.0%}/{args.test_fraction:.0%})", "",
                  "All scanpath rows are scored by the same co-trained assessor of each split; the "
                  "SVR is fitted on the same training images.", "",
                  _table(summary, path_methods, published)]
    elif args.protocol in ("cross-dataset", "cross-distortion"):
        if args.protocol == "cross-dataset":
            heading = (f"## Table 2 — cross-dataset, {args.train} → {args.test} (trained on all of "
                       f"{args.train}: {data['n_train']} images; tested on all of {args.test}: "
                       f"{data['n_test']} images; mean ± std over {len(tasks)} training seeds)")
        else:
            heading = (f"## Table 2 (stand-in) — cross-distortion on {args.dataset_label}: train on "
                       f"{', '.join(data['train_kinds'])}; test on {', '.join(data['test_kinds'])} "
                       f"of held-out references (mean ± std over {len(tasks)} reference splits)")
        lines += [heading, "", _table(summary, path_methods, published)]
    else:
        variants = [FULL, *ABLATIONS, HUMAN, f"{RL} (images with human paths)", RANDOM]
        lines += [f"## Table 3 — ablations, {args.dataset_label} (mean ± std over {len(tasks)} reference "
                  "splits; every variant is trained from scratch with the same budget)", "",
                  _table(summary, variants, published)]
        if HUMAN not in summary:
            lines += ["RL vs human paths: this dataset carries no human scanpaths (JUFE with "
                      "`--dataset-options hm_root=HMData` does), so that row is absent.", ""]
    if ORACLE in summary:
        lines += ["SRCC (local): SRCC among the test images with a local distortion (a damaged "
                  "cap the labels locate). Damage hit rate: share of path steps on those images "
                  "whose viewport sees at least a quarter of the cap, on the env's sphere "
                  "sampling (the SVR has no paths). The oracle and anti rows are references "
                  "that read the labels, not methods: their paths take the viewports that see "
                  "most / least of the cap, and the random paths' on images without one. The "
                  "damage locator is blind at test time but was fitted on the training images' "
                  "labels (`agents/damage_locator.py`): it walks each image's viewports in the "
                  "order of a small network's damage score of their features, so its hit rate is "
                  "what the candidate features tell about where the damage is.", ""]
    if args.protocol != "ablation" and RL in summary:
        deltas = paired_deltas(tasks, RL, [RANDOM, EQUATOR, ENTROPY, CUBE, HUMAN, SVR, CEILING,
                                           LOCATOR, ORACLE, ANTI])
        lines += ["### RL-ScanIQA against each method, paired per task", "",
                  "SRCC of RL-ScanIQA minus SRCC of the method on the same task (positive = "
                  "RL-ScanIQA better); wins = tasks where RL-ScanIQA is ahead.", "",
                  markdown_table(deltas, ["method", "delta", "std", "wins"],
                                 ["Method", "Δ SRCC (mean)", "std", "RL-ScanIQA ahead"])]
    if document.get("k_curve"):
        lines += ["## Accuracy vs cost: K paths per image", "",
                  _curve_table(document["k_curve"], "K")]
    if document.get("t_curve"):
        lines += ["## Accuracy vs cost: T steps per path (a model trained per T)", "",
                  _curve_table(document["t_curve"], "T")]
    for figure in figures:
        lines += [f"![{figure}]({figure})", ""]
    return "\n".join(lines) + "\n"


def write_results(out: Path, args: Args, data: Mapping[str, Any], tasks: list[dict[str, Any]],
                  command: str) -> dict[str, Any]:
    """``results.json`` (atomically), then the report and its figures; returns the summary."""
    tasks = sorted(tasks, key=lambda task: task["index"])
    document = {"format": RESULTS_FORMAT, "config": comparable_config(args),
                "protocol": args.protocol, "command": command, "tasks": tasks,
                "summary": summarize_methods(tasks),
                "k_curve": summarize_curve(tasks, "k_curve"),
                "t_curve": summarize_curve(tasks, "t_curve")}
    atomic_write_json(out / RESULTS_NAME, document)
    figures = write_figures(out, tasks, document["summary"], document["k_curve"],
                            document["t_curve"], data["cache"])
    atomic_write_text(out / REPORT_NAME, report_text(args, data, document, figures, command))
    return document["summary"]


# ----------------------------------------------------------------------------- main


def json_summary(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """What ``--json`` prints: method → metric → {mean, std} (nan → null), for the protocol's
    metrics, ``srcc_local``, ``damage_hit_rate`` and ``ms_per_image``."""
    def clean(value: float) -> float | None:
        return None if value is None or not math.isfinite(value) else value

    return {name: {metric: {"mean": clean(entry[metric]["mean"]),
                            "std": clean(entry[metric]["std"])}
                   for metric in SUMMARY_KEYS} | {"splits": entry["splits"]}
            for name, entry in summary.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_script_args(Args, __doc__.splitlines()[0], argv, {"quick": QUICK_OVERRIDES})
    check_args(args)
    torch.set_num_threads(args.threads)
    command = " ".join(["experiments/reproduce.py", *(sys.argv[1:] if argv is None else argv)])
    console = Console(stderr=True, quiet=not args.progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    finished = load_finished(out, args)
    claim_checkpoints(out, args)
    tasks, data = build_tasks(args)
    done = {record["index"] for record in finished}
    pending = [task for task in tasks if task.index not in done]
    console.print(f"[bold]{args.protocol}[/]: {len(tasks)} tasks, {len(done)} already finished in "
                  f"{out}; {trainings_per_task(args)} model(s) per task")
    records = [record for record in finished if record["index"] < len(tasks)]
    summary = {}
    if records:
        summary = write_results(out, args, data, records, command)
    total = len(pending) * trainings_per_task(args) * args.settings.total_timesteps
    with progress_bar("reproduce", total, unit="step", enabled=args.progress) as bar:
        tracker = TrainingProgress(bar)
        for task in pending:
            started = time.perf_counter()
            run_task = ablation_task if args.protocol == "ablation" else methods_task
            record = {"index": task.index, "label": task.label, "seed": task.seed,
                      "n_train": len(task.train), "n_test": len(task.test), **task.info,
                      **run_task(task, args, tracker)}
            record["seconds"] = time.perf_counter() - started
            records.append(record)
            summary = write_results(out, args, data, records, command)
            shutil.rmtree(out / CHECKPOINTS_NAME / f"task{task.index}", ignore_errors=True)
            best = record["methods"].get(RL) or record["methods"].get(FULL)
            console.print(f"{task.label} done in {record['seconds'] / 60:.1f} min: "
                          f"{RL} SRCC {best['srcc']:.3f}")
    if not summary:
        raise RuntimeError("no task produced results")
    console.print((out / REPORT_NAME).read_text(), markup=False, highlight=False, soft_wrap=True)
    result = json_summary(summary)
    print(json.dumps(result) if args.json else f"report: {out / REPORT_NAME}")
    return result


if __name__ == "__main__":
    main()
