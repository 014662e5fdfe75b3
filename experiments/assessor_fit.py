#!/usr/bin/env python
"""Does the quality assessor fit? The assessor alone on random paths against the SVR on the same features.

Issue 10 §3: given all V viewports, the co-trained assessor scored well below an SVR on the
same features. This script finds out why, one setting at a time. Per reference split (80/20 by
reference, seeds ``split_seed + k``; the training side split again into fit and validation
references), each variant trains an assessor alone (:class:`AssessorTrainer` on random paths
with the co-training losses and augmented views, no PPO) for ``--steps`` optimiser steps and
validates every ``--validate-every`` steps with all V viewports. The checkpoint with the best
validation SRCC is scored on the test references twice: with all V viewports, and with K random
paths of T + 1 viewports (the mean over paths, as the env scores an image). The SVR baseline
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
from collections.abc import Mapping
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
from rl_scaniqa.agents.data_args import DataArgs
from rl_scaniqa.agents.reporting import markdown_table, mean_std, plot_curve
from rl_scaniqa.agents.script_args import parse_script_args, usage_error
from rl_scaniqa.agents.settings import AssessorSettings
from rl_scaniqa.assessor.metrics import srcc, summarize
from rl_scaniqa.assessor.model import AssessorConfig, QualityAssessor
from rl_scaniqa.envs.data.datasets.splits import fit_val_test_split
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.progress import progress_bar
from rl_scaniqa.envs.storage import atomic_write_json, atomic_write_text, json_line

SCRIPT = "assessor_fit.py"

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
    path_length: int = 7
    """T: the random paths have T + 1 viewports, as in the env."""
    eval_paths: int = 15
    """K random paths per test image."""
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


def score_random_paths(assessor: QualityAssessor, cache: FeatureCache, stats: FeatureStats, *,
                       n_paths: int, length: int, seed: int) -> np.ndarray:
    """Normalised score of each image: the mean over ``n_paths`` random paths from its start."""
    rng = np.random.default_rng(seed)
    viewports = stats.standardize_viewports(cache.viewport_features)
    globals_ = stats.standardize_global(cache.global_features)
    scores = np.zeros(len(cache))
    for _ in range(n_paths):
        paths = random_paths(rng, np.asarray(cache.start_viewports), viewports.shape[1], length)
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
    trainer = AssessorTrainer(
        assessor, fit, stats, np.arange(len(fit)), path_length=args.path_length + 1,
        start_viewport=int(fit.start_viewports[0]), seed=args.seed,
        config=AssessorTrainingConfig(learning_rate=settings.learning_rate,
                                      batch_size=settings.batch_size,
                                      loss_weights=settings.loss_weights()))
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
            "test_srcc_paths": srcc(score_random_paths(assessor, test, stats, n_paths=args.eval_paths,
                                                       length=args.path_length + 1,
                                                       seed=args.seed + k), test.mos),
            "seconds": time.perf_counter() - started}
    return record


# ----------------------------------------------------------------------------- report


def summarize_runs(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Method → metric → {mean, std} over splits, plus the paired difference to the SVR."""
    names = list(records[0]["methods"])
    summary: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = []
        for record in records:
            entry = record["methods"][name]
            svr = record["methods"]["SVR"]["test_srcc_all"]
            row = {key: float(value) for key, value in entry.items()
                   if key in ("val_srcc_best", "best_step", "test_srcc_all", "test_srcc_all_last",
                               "test_srcc_paths")}
            row["minus_svr"] = row["test_srcc_all"] - svr
            rows.append(row)
        stats = summarize(rows)
        summary[name] = {key: {"mean": value["mean"], "std": value["std"]} for key, value in stats.items()}
    return summary


def report_text(summary: Mapping[str, Mapping[str, Any]], args: Args, command: str,
                n_images: int) -> str:
    columns = ["val_srcc_best", "best_step", "test_srcc_all", "minus_svr", "test_srcc_all_last",
               "test_srcc_paths"]
    def cell(entry: Mapping[str, Any], column: str) -> str:
        if column not in entry:
            return "–"
        return f"{entry[column]['mean']:.0f}" if column == "best_step" else mean_std(entry, column)

    rows = [{"method": name, **{column: cell(entry, column) for column in columns}}
            for name, entry in summary.items()]
    return (f"# Assessor fit: the assessor alone vs the SVR on the same features\n\n"
            f"Made by `{command}` ({args.splits} reference splits of {n_images} images, "
            f"{args.steps} steps per training, validation every {args.validate_every}, "
            f"{args.backbone} features). Mean ± std over splits.\n\n"
            + markdown_table(rows, ["method", *columns],
                             ["Method", "Best val SRCC", "At step", "Test SRCC, all V viewports",
                              "minus SVR (paired)", f"Test SRCC at the last step ({args.steps})",
                              f"Test SRCC, K={args.eval_paths} random paths"])
            + "\n![validation SRCC](validation_srcc.png)\n")


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
