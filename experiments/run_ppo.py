#!/usr/bin/env python
"""Train RL-ScanIQA (PPO scanpath policy + co-trained quality assessor) and evaluate it.

Reads top to bottom like a CleanRL script:

1. arguments (a dataclass; ``--help`` lists them, ``--config FILE.json`` loads a sweep's best);
2. data: the dataset's feature cache (built on first use, with the augmented views the
   assessor's losses need), split by reference content into train / validation / test;
3. the assessor is warmed up on random paths, then PPO and the assessor train together;
4. the held-out references are scored with K paths per image → ``results.json``,
   ``results.md``, a scatter plot and the scanpaths of the best and worst predicted images.

Checkpoints (SB3 zip for PPO, safetensors for the assessor, JSON for the rest) are written
atomically every few rollouts; ``--resume DIR`` continues a killed run from its last one.
``--quick`` is a smoke run of a few minutes; the defaults are what ``make demo`` runs.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from rl_scaniqa.agents.checkpoint import has_checkpoint
from rl_scaniqa.agents.cotrain import (
    resume_or_warm_up,
    setup_cotraining,
    to_model,
    train_to_budget,
)
from rl_scaniqa.agents.data_args import DataArgs
from rl_scaniqa.agents.evaluation import AgentEvaluation, SeededPolicyAgent, evaluate_agent
from rl_scaniqa.agents.reporting import (
    markdown_table,
    plot_prediction_scatter,
    plot_scanpath_panels,
)
from rl_scaniqa.agents.policy import ScanpathPolicy
from rl_scaniqa.agents.script_args import parse_script_args, usage_error, with_values
from rl_scaniqa.agents.settings import CoTrainSettings
from rl_scaniqa.assessor.model import QualityAssessor
from rl_scaniqa.envs.data.datasets.splits import fit_val_test_split
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.storage import (
    atomic_write_json,
    atomic_write_text,
    json_line,
)

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Args(DataArgs):
    """Arguments of ``run_ppo.py`` (nested settings are options like ``--settings.ppo.n-envs``)."""

    test_fraction: float = 0.2
    """Fraction of the references held out for the final test."""
    val_fraction: float = 0.1
    """Fraction of the training references held out for validation SRCC."""
    split_seed: int = 0
    """Seed of the fit / validation / test split by reference content."""
    eval_paths: int = 15
    """K paths per test image at evaluation."""
    validate_every: int = 10
    """Rollouts between validations (0 = never)."""
    checkpoint_every: int = 10
    """Rollouts between checkpoints (0 = only at the end)."""
    out: str = "runs/run_ppo"
    """Output folder."""
    resume: str = ""
    """Continue the run in this folder from its last checkpoint."""
    allow_changes: bool = False
    """With --resume: let the options given replace the run's own (e.g. a larger
    --settings.total-timesteps); without it, an option that differs from the run's is an error."""
    quick: bool = False
    """Smoke run: small data, few timesteps."""
    json: bool = False
    """Print the results as JSON on the last line."""
    torch_threads: int = 1
    """Torch CPU threads; 1 is fastest for these small networks on a busy machine."""
    progress: bool = True
    """Show the live progress display (on stderr)."""
    settings: CoTrainSettings = field(default_factory=CoTrainSettings)
    """Co-training settings of the model."""


#: Values ``--quick`` switches on (explicit options and ``--config`` still win).
QUICK_OVERRIDES: dict[str, Any] = {
    "eval_paths": 5, "validate_every": 5, "checkpoint_every": 5,
    "settings": {"total_timesteps": 6_000, "n_paths": 5,
                 "ppo": {"n_envs": 4, "n_steps": 70, "batch_size": 140, "n_epochs": 2},
                 "assessor": {"warmup_steps": 100, "cotrain_steps": 220}},
}


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    cache: FeatureCache
    fit: FeatureCache
    val: FeatureCache | None
    test: FeatureCache
    stats: FeatureStats
    split: dict[str, list[str]]


def load_data(args: Args) -> Data:
    cache = args.feature_cache(quick_default=args.quick, progress=args.progress)
    split = fit_val_test_split(list(cache.ref_ids), test_fraction=args.test_fraction,
                               val_fraction=args.val_fraction, seed=args.split_seed)
    fit = cache.subset(split.fit)
    val = cache.subset(split.val) if split.val else None
    return Data(cache=cache, fit=fit, val=val, test=cache.subset(split.test),
                stats=FeatureStats.fit(fit),
                split={"train_refs": sorted(set(fit.ref_ids)),
                       "val_refs": sorted(set(val.ref_ids)) if val is not None else [],
                       "test_refs": list(split.test_refs)})


# ----------------------------------------------------------------------------- evaluation


def evaluate_on(policy: ScanpathPolicy, assessor: QualityAssessor, cache: FeatureCache,
                settings: CoTrainSettings, stats: FeatureStats, n_paths: int,
                progress: bool = False) -> AgentEvaluation:
    """K paths per image of ``cache`` with the policy, scored by the assessor, and the metrics."""
    return evaluate_agent(SeededPolicyAgent(policy, settings.seed), assessor, cache, range(len(cache)),
                          n_paths=n_paths, path_length=settings.path_length,
                          env_kwargs=settings.env_kwargs(stats), seed=settings.seed,
                          progress=progress)


# ----------------------------------------------------------------------------- display


class LiveDisplay:
    """A rich live view: progress (steps/s, ETA) and the latest training statistics."""

    ROWS = (("step/entropy", "reward: entropy"), ("step/ssim", "reward: 1-SSIM"),
            ("step/novelty", "reward: novelty"), ("step/equator", "reward: equator"),
            ("set/coverage", "sphere coverage"), ("set/jaccard", "path Jaccard"),
            ("task/mse", "task reward: -MSE"), ("task/rank", "task reward: rank"),
            ("assessor/total", "assessor loss"), ("assessor/mse", "assessor MSE"),
            ("train/ent_coef", "entropy coef"), ("val/srcc", "validation SRCC"),
            ("val/plcc", "validation PLCC"))

    def __init__(self, total: int, done: int, enabled: bool):
        self.enabled = enabled
        # On stderr, like every display: stdout carries only the results (one JSON line with --json).
        console = Console(stderr=True)
        self.progress = Progress(TextColumn("PPO"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]} steps/s"), TextColumn("eta"),
                                 TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("train", total=total, completed=done, rate="–")
        self.stats: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.start_steps = done
        self.live = (Live(self._render(), console=console, refresh_per_second=2, transient=False)
                     if enabled else None)

    def _render(self) -> Group:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="cyan")
        table.add_column(justify="right")
        for key, label in self.ROWS:
            if isinstance(self.stats.get(key), float):
                table.add_row(label, f"{self.stats[key]:.4f}")
        return Group(self.progress, table)

    def update(self, stats: dict[str, Any]) -> None:
        self.stats = dict(stats)
        steps = int(stats.get("timesteps", 0))
        rate = (steps - self.start_steps) / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(self.task, completed=steps, rate=f"{rate:,.0f}")
        if self.live is not None:
            self.live.update(self._render())

    def __enter__(self) -> LiveDisplay:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)


# ----------------------------------------------------------------------------- outputs


def write_outputs(out: Path, args: Args, data: Data, result: AgentEvaluation,
                  wall_seconds: float) -> dict[str, Any]:
    """results.json, results.md and the figures; returns the JSON document."""
    metrics = result.metrics
    scanpaths = result.scanpaths
    test = data.test
    per_image = [
        {"image_id": test.image_ids[i], "ref": test.ref_ids[i], "distortion": test.distortions[i],
         "level": int(test.levels[i]), "mos": float(test.mos[i]),
         "predicted": float(result.predicted[i]), "std": float(result.predicted_std[i]),
         "paths": scanpaths.paths[i].tolist()}
        for i in range(len(test))]
    document = {
        "method": "RL-ScanIQA", "dataset": args.dataset_label, "backbone": test.backbone,
        "grid": test.grid.key(), "srcc": metrics["srcc"], "plcc": metrics["plcc"],
        "krcc": metrics["krcc"], "rmse": metrics["rmse"], "n_test_images": len(test),
        "mapping": metrics["mapping"], "eval_paths": args.eval_paths,
        "ms_per_image": result.ms_per_image, "wall_seconds": wall_seconds,
        "split": data.split, "args": asdict(args), "per_image": per_image}
    atomic_write_json(out / "results.json", document)

    errors = np.abs(result.predicted - test.mos)
    order = np.argsort(result.predicted)
    best, worst = int(order[-1]), int(order[0])
    plot_prediction_scatter(result.predicted, test.mos, out / "scatter.png",
                            title=f"RL-ScanIQA on held-out {args.dataset_label} references",
                            uncertainty=result.predicted_std,
                            annotation=f"SRCC {metrics['srcc']:.3f}\nPLCC {metrics['plcc']:.3f}")
    plot_scanpath_panels(
        [test.thumbnails[best], test.thumbnails[worst]],
        [scanpaths.paths[best], scanpaths.paths[worst]], test.grid,
        [f"highest predicted: {test.image_ids[best]} (MOS {test.mos[best]:.2f}, "
         f"pred {result.predicted[best]:.2f})",
         f"lowest predicted: {test.image_ids[worst]} (MOS {test.mos[worst]:.2f}, "
         f"pred {result.predicted[worst]:.2f})"],
        out / "scanpaths.png", suptitle=f"K={args.eval_paths} scanpaths per image")
    row = {"method": "RL-ScanIQA", "srcc": metrics["srcc"], "plcc": metrics["plcc"],
           "krcc": metrics["krcc"], "rmse": metrics["rmse"], "n": len(test),
           "ms": result.ms_per_image}
    text = (f"# RL-ScanIQA on {args.dataset_label} ({test.backbone} features)\n\n"
            f"Held-out references: {len(data.split['test_refs'])} "
            f"({len(test)} images), K = {args.eval_paths} paths of T = "
            f"{args.settings.path_length} steps, {args.settings.total_timesteps} PPO steps, "
            f"wall time {wall_seconds / 60:.1f} min.\n\n"
            + markdown_table([row], ["method", "srcc", "plcc", "krcc", "rmse", "n", "ms"],
                             ["Method", "SRCC", "PLCC", "KRCC", "RMSE (after logistic)", "Images",
                              "ms/image (policy+assessor)"])
            + "\nPLCC and RMSE are taken after the 4-parameter logistic fit of the predictions "
              "to the MOS (the usual IQA protocol); the mean absolute error of the raw "
              f"predictions is {errors.mean():.3f} on the MOS scale "
              f"({test.mos_scale.low:g}–{test.mos_scale.high:g}).\n\n"
            "![predicted vs MOS](scatter.png)\n\n![scanpaths](scanpaths.png)\n")
    atomic_write_text(out / "results.md", text)
    return document


# ----------------------------------------------------------------------------- main


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"settings": {"seed": 0}}`` → ``{"settings.seed": 0}``."""
    items: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            items.update(flat(value, f"{prefix}{key}."))
        else:
            items[prefix + key] = value
    return items


def nested(items: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flat`."""
    values: dict[str, Any] = {}
    for dotted, value in items.items():
        *groups, name = dotted.split(".")
        target = values
        for group in groups:
            target = target.setdefault(group, {})
        target[name] = value
    return values


def resumed_args(args: Args, out: Path) -> Args:
    """The run's own arguments, with the options given now where ``--allow-changes`` lets them.

    Options that only change how the run reports (``--json``, ``--progress``, threads) may
    always differ; any other option given with a value unlike the run's is an error without
    ``--allow-changes``, so that what ``config.json`` and ``model.json`` record is what ran.
    """
    path = out / "config.json"
    if not path.is_file():
        usage_error("run_ppo.py", f"--resume {out}: no run_ppo.py run there (no config.json)")
    try:
        saved = flat(json.loads(path.read_text()))
    except json.JSONDecodeError as error:
        usage_error("run_ppo.py", f"--resume {out}: {path} is not valid JSON ({error})")
    given, default = flat(json.loads(json.dumps(asdict(args)))), flat(asdict(Args()))
    reporting = {"resume", "allow_changes", "json", "progress", "torch_threads"}
    changed = {key: value for key, value in given.items()
               if key not in reporting | {"out"} and value != default.get(key)
               and value != saved.get(key)}
    if changed and not args.allow_changes:
        listed = ", ".join(f"--{key.replace('_', '-')} {value!r} (the run has "
                           f"{saved.get(key)!r})" for key, value in changed.items())
        usage_error("run_ppo.py", f"--resume {out}: {listed}; add --allow-changes to apply them")
    merged = with_values(Args(), nested({**saved, **changed,
                                         **{key: given[key] for key in reporting}}))
    if changed:
        atomic_write_json(path, asdict(merged))
    return merged


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_script_args(Args, __doc__.splitlines()[0], argv, {"quick": QUICK_OVERRIDES})
    out = Path(args.resume or args.out)
    if args.resume:
        args = resumed_args(args, out)
    else:
        if has_checkpoint(out / CHECKPOINT_DIR):
            usage_error("run_ppo.py", f"--out {out} holds the checkpoint of an earlier run; continue it with "
                        f"--resume {out} or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", asdict(args))
    console = Console(stderr=True, quiet=not args.progress)
    # Small matrices: more threads only add synchronisation, and oversubscribed cores make
    # PPO an order of magnitude slower (measured: 37 vs 1725 steps/s on a loaded 2-core machine).
    torch.set_num_threads(args.torch_threads)
    started = time.perf_counter()

    data = load_data(args)
    console.print(f"[bold]data[/]: {len(data.cache)} images, {len(set(data.cache.ref_ids))} "
                  f"references -> fit {len(data.fit)}, val {len(data.val or [])}, test "
                  f"{len(data.test)}; features {data.cache.backbone} (D={data.cache.dim})")
    settings = args.settings

    def validate(policy: Any, assessor: Any) -> dict[str, float]:
        assert data.val is not None
        metrics = evaluate_on(policy, assessor, data.val, settings, data.stats,
                              n_paths=min(5, settings.n_paths)).metrics
        return {"srcc": metrics["srcc"], "plcc": metrics["plcc"]}

    display = LiveDisplay(settings.total_timesteps, 0, args.progress)
    run = setup_cotraining(
        settings, data.fit, stats=data.stats,
        validate=validate if data.val is not None and len(data.val) >= 3 else None,
        validate_every=args.validate_every, checkpoint_dir=out / CHECKPOINT_DIR,
        checkpoint_every=args.checkpoint_every, on_update=display.update,
        tensorboard_log=str(out / "tensorboard"))
    done = resume_or_warm_up(run, settings, out / CHECKPOINT_DIR, progress=args.progress)
    if run.resumed_from is not None:
        console.print(f"[bold]resume[/]: {done} of {settings.total_timesteps} steps done")
    display.start_steps = done
    display.progress.update(display.task, completed=done)
    with display:
        train_to_budget(run, settings, done, out / CHECKPOINT_DIR)

    model = to_model(run, settings, data.cache, metadata={
        "dataset": args.dataset_label, "command": " ".join(["experiments/run_ppo.py", *(argv or sys.argv[1:])]),
        "seed": settings.seed, "timesteps": int(run.ppo.num_timesteps)})
    model.save(out / "model")
    result = evaluate_on(run.policy, run.assessor, data.test, settings, data.stats,
                         n_paths=args.eval_paths, progress=args.progress)
    # Earlier processes of a resumed run count too: the run's wall time, not this process's.
    document = write_outputs(out, args, data, result,
                             run.earlier_seconds + time.perf_counter() - started)
    summary = {key: document[key] for key in ("srcc", "plcc", "krcc", "rmse", "n_test_images",
                                              "ms_per_image", "wall_seconds")}
    summary["out"] = str(out)
    # Plain text: as markup, rich would take the Markdown image links' [labels] for style tags.
    console.print((out / "results.md").read_text(), markup=False, highlight=False)
    print(json_line(summary) if args.json else f"results: {out / 'results.json'}")
    return summary


if __name__ == "__main__":
    main()
