#!/usr/bin/env python
"""Does the quality assessor fit? The assessor alone on random paths against the SVR on the same features.

Issue 10 §3: given all V viewports, the co-trained assessor scored well below an SVR on the
same features. This script finds out why, one setting at a time. Per reference split (80/20 by
reference, seeds ``split_seed + k``; the training side split again into fit and validation
references), each variant trains an assessor alone (:class:`AssessorTrainer` on random paths
with the co-training losses and augmented views, no PPO) for ``--steps`` optimiser steps and
validates every ``--validate-every`` steps with all V viewports. The checkpoint with the best
validation SRCC is scored on the test references with all V viewports, and with K paths of
T + 1 viewports (the mean over paths, as the env scores an image) of three kinds: random, and
on the images whose labels locate a damaged cap the oracle's and the anti-oracle's
(:func:`~rl_scaniqa.agents.damage.damage_ranking`). Their difference is the room where a path
looks leaves with that assessor, overall and on the images with a cap. The SVR baseline
(global descriptor + mean viewport descriptor, :class:`SVRBaseline`) is fitted on the same fit
images. Variants differ from the defaults (:class:`AssessorSettings`) in one thing each.

Outputs in ``--out``: ``results.json`` (every split's validation curve and test figures),
``report.md`` (mean ± std over splits; paired difference to the SVR) and ``validation_srcc.png``
(validation SRCC against optimiser steps), rewritten after every split. ``--json`` prints the
summary on the last line.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from rl_scaniqa.agents.assessor_training import (
    AssessorTrainer,
    AssessorTrainingConfig,
    random_paths,
)
from rl_scaniqa.agents.baselines import SVRBaseline
from rl_scaniqa.agents.damage import damage_ranking, has_cap, local_srcc
from rl_scaniqa.agents.data_args import DataArgs
from rl_scaniqa.agents.reporting import markdown_table, mean_std, plot_curve
from rl_scaniqa.agents.reward_wrapper import FinishedPath
from rl_scaniqa.agents.script_args import parse_script_args, usage_error
from rl_scaniqa.agents.settings import AssessorSettings
from rl_scaniqa.assessor.metrics import srcc, summarize
from rl_scaniqa.assessor.model import AssessorConfig, QualityAssessor
from rl_scaniqa.envs.data.datasets.splits import fit_val_test_split
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.progress import progress_bar
from rl_scaniqa.envs.storage import atomic_write_json, atomic_write_text, json_line

SCRIPT = "assessor_fit.py"
#: Test paths: random, and where the labels locate a damaged cap the oracle's and anti-oracle's.
PATH_KINDS = ("random", "oracle", "anti")

#: Variant name → changes to the default AssessorSettings (one thing each).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "lr 3e-4": {"learning_rate": 3e-4},
    "lr 1e-3": {"learning_rate": 1e-3},
    "batch 128": {"batch_size": 128},
    "no dropout": {"dropout": 0.0},
    "width 64": {"hidden_dim": 64, "attention_dim": 32},
    "MSE only": {"loss_rank": 0.0, "loss_consistency": 0.0, "loss_triplet": 0.0,
                 "loss_cross_rank": 0.0},
    "dropout 0.3": {"dropout": 0.3},
}


@dataclass
class Args(DataArgs):
    """Arguments of ``assessor_fit.py``."""

    variants: str = ",".join(VARIANTS)
    """Comma-separated variants to train (see VARIANTS in the script)."""
    splits: int = 3
    """Reference splits."""
    split_seed: int = 0
    """Seed of the first split."""
    test_fraction: float = 0.2
    """Fraction of the references held out for testing."""
    val_fraction: float = 0.2
    """Fraction of the training references held out for validation (checkpoint choice)."""
    steps: int = 8000
    """Optimiser steps per training (the co-training default gives about 7,560: 400 warm-up
    + 40 per PPO rollout of 840 steps, 179 rollouts)."""
    validate_every: int = 500
    """Steps between validations."""
    training_paths: str = "random"
    """Paths the assessors train on: random, or oracle (on images with a damaged cap the
    oracle's, as if a policy had learnt them; random on the others)."""
    path_length: int = 7
    """T: the random paths have T + 1 viewports, as in the env."""
    eval_paths: int = 15
    """K paths of each kind per test image."""
    seed: int = 0
    """Seed of the assessors and their random paths."""
    out: str = "runs/assessor_fit"
    """Output folder."""
    threads: int = 1
    """Torch CPU threads."""
    quick: bool = False
    """Smoke run: the small Synth360, 2 variants, 1 split, 200 steps."""
    json: bool = False
    """Print the summary as JSON on the last line."""
    progress: bool = True
    """Show the progress bar (on stderr)."""


QUICK_OVERRIDES: dict[str, Any] = {"variants": "default,lr 1e-3", "splits": 1, "steps": 200,
                                   "validate_every": 100, "eval_paths": 3}


def variant_settings(name: str) -> AssessorSettings:
    return replace(AssessorSettings(), **VARIANTS[name])


# ----------------------------------------------------------------------------- scoring


def score_all_viewports(assessor: QualityAssessor, cache: FeatureCache, stats: FeatureStats) -> np.ndarray:
    """Normalised score of each image of ``cache`` from all V viewports."""
    return assessor.predict(stats.standardize_viewports(cache.viewport_features),
                            stats.standardize_global(cache.global_features))


def path_sampler(cache: FeatureCache, kind: str, length: int) -> Callable[[np.random.Generator], np.ndarray]:
    """A draw of (N, length) paths from the env's default start (:attr:`ViewportGrid.front`):
    random, or on images with a damaged cap the oracle's (``kind="oracle"``) or anti-oracle's
    (``"anti"``) ranking after it.

    The random draws are made for every kind, so images without a cap get the same random
    paths whatever ``kind`` is: the kinds differ only where the labels locate damage. The
    ranked part is fixed (the start is), so it is computed once here, not per draw.
    """
    start = cache.grid.front
    located = np.flatnonzero(has_cap(cache)) if kind != "random" else np.zeros(0, dtype=np.int64)
    tails = np.zeros((0, length - 1), dtype=np.int64)
    if len(located):
        ranking = damage_ranking(cache.grid, cache.caps[located], least=kind == "anti")
        tails = np.stack([order[order != start][:length - 1] for order in ranking])

    def draw(rng: np.random.Generator) -> np.ndarray:
        paths = random_paths(rng, np.full(len(cache), start), cache.viewport_features.shape[1], length)
        paths[located, 1:] = tails
        return paths

    return draw


def score_paths(assessor: QualityAssessor, cache: FeatureCache, stats: FeatureStats, kind: str, *,
                n_paths: int, length: int, seed: int) -> np.ndarray:
    """Normalised score of each image: the mean over ``n_paths`` :func:`path_sampler` draws of ``kind``."""
    rng, draw = np.random.default_rng(seed), path_sampler(cache, kind, length)
    viewports = stats.standardize_viewports(cache.viewport_features)
    globals_ = stats.standardize_global(cache.global_features)
    scores = np.zeros(len(cache))
    for _ in range(n_paths):
        paths = draw(rng)
        scores += assessor.predict(viewports[np.arange(len(cache))[:, None], paths], globals_)
    return scores / n_paths


# ----------------------------------------------------------------------------- one split


def train_variant(name: str, fit: FeatureCache, val: FeatureCache, stats: FeatureStats,
                  args: Args, advance: Any
                  ) -> tuple[QualityAssessor, QualityAssessor, list[dict[str, float]]]:
    """The variant's assessor at its best validation SRCC, at its last step, and the
    validation curve."""
    settings = variant_settings(name)
    torch.manual_seed(args.seed)
    assessor = QualityAssessor(AssessorConfig(feature_dim=fit.dim, hidden_dim=settings.hidden_dim,
                                              attention_dim=settings.attention_dim,
                                              dropout=settings.dropout))
    oracle = args.training_paths == "oracle"
    trainer = AssessorTrainer(
        assessor, fit, stats, np.arange(len(fit)), path_length=args.path_length + 1,
        start_viewport=fit.grid.front, seed=args.seed,
        config=AssessorTrainingConfig(learning_rate=settings.learning_rate,
                                      batch_size=settings.batch_size,
                                      loss_weights=settings.loss_weights(),
                                      policy_path_fraction=1.0 if oracle else 0.0))
    if oracle:
        # As if a policy had learnt the oracle's paths: the images with a cap train on them.
        paths = path_sampler(fit, "oracle", args.path_length + 1)(np.random.default_rng(args.seed))
        trainer.add_paths(FinishedPath(int(row), tuple(int(v) for v in paths[row]))
                          for row in np.flatnonzero(has_cap(fit)))
    curve: list[dict[str, float]] = []
    best_state, best = copy.deepcopy(assessor.state_dict()), -np.inf
    for done in range(0, args.steps, args.validate_every):
        chunk = min(args.validate_every, args.steps - done)
        losses = trainer.train_steps(chunk)
        value = srcc(score_all_viewports(assessor, val, stats), val.mos)
        curve.append({"step": done + chunk, "val_srcc": value, "loss": losses["total"]})
        if value > best:
            best, best_state = value, copy.deepcopy(assessor.state_dict())
        advance(chunk)
    last = copy.deepcopy(assessor)
    assessor.load_state_dict(best_state)
    return assessor, last, curve


def path_figures(assessor: QualityAssessor, test: FeatureCache, stats: FeatureStats, args: Args, *,
                 seed: int) -> dict[str, float]:
    """Test SRCC, overall and among the images with a damaged cap, with K paths of each kind."""
    figures = {}
    for kind in PATH_KINDS:
        scores = score_paths(assessor, test, stats, kind, n_paths=args.eval_paths,
                             length=args.path_length + 1, seed=seed)
        figures[f"test_srcc_{kind}_paths"] = srcc(scores, test.mos)
        figures[f"test_srcc_local_{kind}_paths"] = local_srcc(test, np.arange(len(test)), scores)
    return figures


def run_split(k: int, cache: FeatureCache, args: Args, names: list[str], advance: Any) -> dict[str, Any]:
    split = fit_val_test_split(list(cache.ref_ids), test_fraction=args.test_fraction,
                               val_fraction=args.val_fraction, seed=args.split_seed + k)
    fit, val, test = cache.subset(split.fit), cache.subset(split.val), cache.subset(split.test)
    stats = FeatureStats.fit(fit)
    record: dict[str, Any] = {"split": k, "n_fit": len(fit), "n_val": len(val), "n_test": len(test),
                              "test_refs": list(split.test_refs), "methods": {}}
    svr = SVRBaseline().fit(fit, np.arange(len(fit)))
    record["methods"]["SVR"] = {"test_srcc_all": srcc(svr.predict(test, np.arange(len(test))), test.mos),
                                "params": svr.best_params}
    for name in names:
        started = time.perf_counter()
        assessor, last, curve = train_variant(name, fit, val, stats, args, advance)
        best = max(curve, key=lambda point: point["val_srcc"])
        record["methods"][name] = {
            "val_srcc_best": best["val_srcc"], "best_step": best["step"], "curve": curve,
            "test_srcc_all": srcc(score_all_viewports(assessor, test, stats), test.mos),
            "test_srcc_all_last": srcc(score_all_viewports(last, test, stats), test.mos),
            **path_figures(assessor, test, stats, args, seed=args.seed + k),
            "seconds": time.perf_counter() - started}
    return record


# ----------------------------------------------------------------------------- report


def summarize_runs(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Method → metric → {mean, std} over splits, plus the paired differences to the SVR and
    of oracle to random paths."""
    names = list(records[0]["methods"])
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = []
        for record in records:
            entry = record["methods"][name]
            svr = record["methods"]["SVR"]["test_srcc_all"]
            row = {key: float(value) for key, value in entry.items()
                   if key.startswith("test_srcc") or key in ("val_srcc_best", "best_step")}
            row["minus_svr"] = row["test_srcc_all"] - svr
            if name != "SVR":
                # The room where a path looks leaves with this assessor (paired per split).
                for prefix in ("", "local_"):
                    row[f"{prefix}oracle_minus_random"] = (row[f"test_srcc_{prefix}oracle_paths"]
                                                           - row[f"test_srcc_{prefix}random_paths"])
            rows.append(row)
        stats = summarize(rows)
        summary[name] = {key: {"mean": value["mean"], "std": value["std"]} for key, value in stats.items()}
    return summary


def report_text(summary: Mapping[str, Mapping[str, Any]], args: Args, command: str,
                n_images: int) -> str:
    def cell(entry: Mapping[str, Any], column: str) -> str:
        if column not in entry:
            return "–"
        return f"{entry[column]['mean']:.0f}" if column == "best_step" else mean_std(entry, column)

    def table(columns: list[str], headers: list[str], names: list[str]) -> str:
        rows = [{"method": name, **{column: cell(summary[name], column) for column in columns}}
                for name in names]
        return markdown_table(rows, ["method", *columns], ["Method", *headers])

    variants = [name for name in summary if name != "SVR"]
    fit = table(["val_srcc_best", "best_step", "test_srcc_all", "minus_svr", "test_srcc_all_last",
                 "test_srcc_random_paths"],
                ["Best val SRCC", "At step", "Test SRCC, all V viewports", "minus SVR (paired)",
                 f"Test SRCC at the last step ({args.steps})",
                 f"Test SRCC, K={args.eval_paths} random paths"], list(summary))
    looking = table([f"test_srcc_{kind}_paths" for kind in PATH_KINDS] + ["oracle_minus_random"]
                    + [f"test_srcc_local_{kind}_paths" for kind in PATH_KINDS]
                    + ["local_oracle_minus_random"],
                    ["Random", "Oracle", "Anti", "Oracle − random", "Local: random", "Local: oracle",
                     "Local: anti", "Local: oracle − random"], variants)
    return (f"# Assessor fit: the assessor alone vs the SVR on the same features\n\n"
            f"Made by `{command}` ({args.splits} reference splits of {n_images} images, "
            f"{args.steps} steps per training on {args.training_paths} paths, validation every "
            f"{args.validate_every}, {args.backbone} features). Mean ± std over splits.\n\n" + fit
            + "\n![validation SRCC](validation_srcc.png)\n\n"
            f"## Where a path looks, with each assessor\n\n"
            f"Test SRCC with K={args.eval_paths} paths of T + 1 = {args.path_length + 1} viewports "
            f"from the start: random, or, on the images whose labels locate a damaged cap, the "
            f"oracle's (the viewports that see most of it) or the anti-oracle's (least); the other "
            f"images keep the same random paths. \"Local\": among the images with a cap only. "
            f"Oracle − random is the room a scanpath policy has with this assessor (paired per "
            f"split).\n\n" + looking)


def plot_validation(records: list[dict[str, Any]], path: Path) -> None:
    names = [name for name in records[0]["methods"] if name != "SVR"]
    steps = [point["step"] for point in records[0]["methods"][names[0]]["curve"]]
    series = {}
    for name in names:
        values = np.asarray([[point["val_srcc"] for point in record["methods"][name]["curve"]]
                             for record in records])
        series[name] = (values.mean(axis=0).tolist(),
                        (values.std(axis=0, ddof=1) if len(records) > 1 else np.zeros(len(steps))).tolist())
    plot_curve(steps, series, path, xlabel="assessor optimiser steps",
               ylabel="validation SRCC (all viewports)", title="Assessor fit by variant")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_script_args(Args, __doc__.splitlines()[0], argv, {"quick": QUICK_OVERRIDES})
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if not names or unknown:
        usage_error(SCRIPT, f"--variants: {unknown or 'empty'}; known: {', '.join(VARIANTS)}")
    if args.training_paths not in ("random", "oracle"):
        usage_error(SCRIPT, f"--training-paths must be random or oracle, got {args.training_paths!r}")
    if min(args.splits, args.steps, args.validate_every, args.eval_paths, args.threads) < 1:
        usage_error(SCRIPT, "--splits, --steps, --validate-every, --eval-paths and --threads "
                    "must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    command = " ".join(["experiments/assessor_fit.py", *(sys.argv[1:] if argv is None else argv)])
    console = Console(stderr=True, quiet=not args.progress)
    cache = args.feature_cache(quick_default=args.quick, progress=args.progress)
    records: list[dict[str, Any]] = []
    with progress_bar("assessor fit", args.splits * len(names) * args.steps, unit="step",
                      enabled=args.progress) as bar:
        for k in range(args.splits):
            records.append(run_split(k, cache, args, names, bar.advance))
            # After every split: a long run stopped early still leaves its finished splits.
            summary = summarize_runs(records)
            atomic_write_json(out / "results.json", {"command": command, "config": asdict(args),
                                                     "summary": summary, "splits": records})
            report = report_text(summary, args, command, len(cache))
            atomic_write_text(out / "report.md", report)
            plot_validation(records, out / "validation_srcc.png")
    console.print(report, markup=False, highlight=False, soft_wrap=True)
    print(json_line(summary) if args.json else f"report: {out / 'report.md'}")
    return summary


if __name__ == "__main__":
    main()
