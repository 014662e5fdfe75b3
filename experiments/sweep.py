#!/usr/bin/env python
"""Sweep RL-ScanIQA's reward and loss weights on Ray Tune, with ASHA early stopping.

The paper's method has 13 reward and loss weights. This script searches

- the step-reward weights λ_ent, λ_ssim, λ_nov, λ_eqb (``settings.reward.lambda_*``),
- the set-reward weights β_cov, β_jac (``settings.reward.beta_*``),
- the task-reward weights (``settings.reward.task_mse``, ``task_rank``),
- the assessor's loss weights for ranking, consistency, triplet and cross-ranking
  (``settings.assessor.loss_*``; the MSE weight stays 1 as the scale the others are relative to),

around the reference values. Each trial co-trains a model on the *fit* references and reports
the validation SRCC (K paths per validation image, the assessor's score vs MOS) to Tune from the
co-training callback every ``--validate-every`` rollouts; ASHA stops the trials that trail at
each rung. The data split is the one ``experiments/run_ppo.py`` uses for the same
``--split-seed``, ``--test-fraction`` and ``--val-fraction``: test references are never loaded
into a trial.

Ray runs locally by default (``ray.init(num_cpus=--num-cpus, include_dashboard=False)``);
``--address ADDR`` joins an existing cluster (``auto`` for the local one). Outputs in ``--out``:
``results.json`` and ``results.md`` (one row per trial: weights, best and last validation SRCC,
validations reached, ASHA-stopped or not) and ``best_config.json``, which
``experiments/run_ppo.py --config best_config.json`` accepts (data arguments at the top level,
the co-training settings nested under ``"settings"``, exactly run_ppo's argument layout).

Install the extra first: ``pip install "rl-scaniqa[sweep]"`` (Ray Tune).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rl_scaniqa.agents.checkpoint import save_checkpoint
from rl_scaniqa.agents.cotrain import resume_or_warm_up, setup_cotraining, train_to_budget
from rl_scaniqa.agents.data_args import DataArgs
from rl_scaniqa.agents.evaluation import evaluate_agent
from rl_scaniqa.agents.reporting import markdown_table
from rl_scaniqa.agents.script_args import parse_script_args, usage_error
from rl_scaniqa.agents.settings import CoTrainSettings
from rl_scaniqa.envs.data.datasets.splits import fit_val_test_split
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.progress import ProgressHandle, progress_bar
from rl_scaniqa.envs.storage import atomic_write_json, atomic_write_text

METRIC = "val_srcc"
#: The co-training checkpoint's folder inside a Tune checkpoint.
TRIAL_CHECKPOINT = "cotrain"
#: Tune's experiment folder under ``<out>/ray``.
EXPERIMENT = "sweep"
#: Arguments a resumed sweep may change: they do not change what the trials compute.
RESUMABLE_FIELDS = ("resume", "json", "progress", "address", "num_cpus")
#: Reported when the validation SRCC is undefined (constant predictions): below any real value.
UNDEFINED_SRCC = -1.0

#: The searched weights: dotted settings name → (distribution, low, high). "loguniform" for the
#: task weights, whose reference value (2) sits inside a range spanning a factor of 8.
SEARCH_SPACE: dict[str, tuple[str, float, float]] = {
    "reward.lambda_entropy": ("uniform", 0.0, 1.0),
    "reward.lambda_ssim": ("uniform", 0.0, 2.0),
    "reward.lambda_novelty": ("uniform", 0.0, 2.0),
    "reward.lambda_equator": ("uniform", 0.0, 0.5),
    "reward.beta_coverage": ("uniform", 0.0, 0.5),
    "reward.beta_jaccard": ("uniform", 0.0, 0.5),
    "reward.task_mse": ("loguniform", 0.5, 4.0),
    "reward.task_rank": ("loguniform", 0.5, 4.0),
    "assessor.loss_rank": ("uniform", 0.0, 0.5),
    "assessor.loss_consistency": ("uniform", 0.0, 0.5),
    "assessor.loss_triplet": ("uniform", 0.0, 0.6),
    "assessor.loss_cross_rank": ("uniform", 0.0, 0.5),
}

#: Arguments shared with ``run_ppo.py``'s ``Args`` that the best config carries over.
DATA_FIELDS = ("dataset", "root", "dataset_options", "backbone", "n_lon", "n_lat", "fov", "size",
               "augmentations", "cache_dir", "test_fraction", "val_fraction", "split_seed")


@dataclass
class Args(DataArgs):
    """Arguments of ``sweep.py`` (nested settings: options like ``--settings.total-timesteps``)."""

    test_fraction: float = 0.2
    """Fraction of the references held out for the final test (never loaded by a trial)."""
    val_fraction: float = 0.2
    """Fraction of the training references held out for validation SRCC."""
    split_seed: int = 0
    """Seed of the fit / validation / test split by reference content."""
    num_samples: int = 16
    """Trials (random configurations)."""
    validate_every: int = 5
    """Rollouts between validations (each is one ASHA time step)."""
    eval_paths: int = 5
    """K paths per validation image."""
    grace_period: int = 2
    """Validations every trial gets before ASHA may stop it."""
    reduction_factor: int = 3
    """ASHA keeps 1 in this many trials at each rung."""
    address: str = ""
    """Ray cluster to join ('auto' = the running local one); empty = start a local Ray."""
    num_cpus: int = 2
    """CPUs of the local Ray (ignored with --address)."""
    cpus_per_trial: float = 1.0
    """CPUs reserved per trial (each trial runs torch with this many threads)."""
    seed: int = 0
    """Seed of the random search (which configurations); trials train with settings.seed."""
    out: str = "runs/sweep"
    """Output folder."""
    resume: bool = False
    """Continue the interrupted sweep in --out: its unfinished and failed trials resume from
    their last validation (run with the same arguments)."""
    quick: bool = False
    """Smoke run: the small Synth360, 2 trials, a tiny budget."""
    json: bool = False
    """Print the summary as JSON on the last line."""
    progress: bool = True
    """Show progress and the results table (on stderr)."""
    # 60k PPO steps: a trial that ASHA keeps runs about 2 minutes on one core.
    settings: CoTrainSettings = field(
        default_factory=lambda: CoTrainSettings(total_timesteps=60_000))
    """Co-training settings of every trial; total-timesteps: the budget of a trial ASHA keeps."""


#: Values ``--quick`` switches on (explicit options and ``--config`` still win).
QUICK_OVERRIDES: dict[str, Any] = {
    "num_samples": 2, "validate_every": 2, "eval_paths": 3, "grace_period": 1,
    "settings": {"total_timesteps": 1_120, "n_paths": 3,
                 "ppo": {"n_envs": 2, "n_steps": 70, "batch_size": 70, "n_epochs": 1},
                 "assessor": {"warmup_steps": 20, "cotrain_steps": 40}},
}


# ----------------------------------------------------------------------------- data


@dataclass
class SweepData:
    """What every trial trains and validates on."""

    fit: FeatureCache
    val: FeatureCache
    stats: FeatureStats
    info: dict[str, Any]


def load_data(args: Args) -> SweepData:
    """The fit and validation references, split as ``run_ppo.py`` splits them."""
    cache = args.feature_cache(quick_default=args.quick, progress=args.progress)
    return split_fit_val(cache, args)


def split_fit_val(cache: FeatureCache, args: Args) -> SweepData:
    """Drop the test references, then hold ``val_fraction`` of the rest out for validation."""
    split = fit_val_test_split(list(cache.ref_ids), test_fraction=args.test_fraction,
                               val_fraction=args.val_fraction, seed=args.split_seed)
    fit, val = cache.subset(split.fit), cache.subset(split.val)
    if len(val) < 3:
        raise ValueError(f"validation holds {len(val)} images (< 3), too few for an SRCC; raise "
                         "--val-fraction or use a larger dataset")
    return SweepData(fit=fit, val=val, stats=FeatureStats.fit(fit),
                     info={"n_fit": len(fit), "n_val": len(val),
                           "val_refs": sorted(set(val.ref_ids)),
                           "test_refs_excluded": list(split.test_refs)})


# ----------------------------------------------------------------------------- trials


def settings_for(base: Mapping[str, Any], config: Mapping[str, Any]) -> CoTrainSettings:
    """The base settings (``asdict`` form) with the trial's weights (nested config) applied."""
    values = json.loads(json.dumps(base))
    for group, changes in config.items():
        values[group].update({name: float(value) for name, value in changes.items()})
    return CoTrainSettings.from_dict(values)


def trial(config: dict[str, Any], *, data: SweepData, base: dict[str, Any], eval_paths: int,
          validate_every: int, threads: int) -> None:
    """One Ray Tune trial: co-train with the trial's weights, report validation SRCC to Tune.

    Every report carries the run's checkpoint, so a trial of a resumed sweep continues from its
    last validation (and Tune's iteration count, which ASHA stops by, continues with it).
    """
    from ray import tune

    torch.set_num_threads(threads)
    settings = settings_for(base, config)

    def validate(policy: Any, assessor: Any) -> dict[str, float]:
        evaluation = evaluate_agent(
            policy, assessor, data.val, np.arange(len(data.val)), n_paths=eval_paths,
            path_length=settings.path_length, seed=settings.seed,
            env_kwargs=settings.env_kwargs(data.stats))
        return {"srcc": evaluation.metrics["srcc"], "plcc": evaluation.metrics["plcc"]}

    def report(srcc: float, plcc: float) -> None:
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(run, Path(folder) / TRIAL_CHECKPOINT)
            tune.report({METRIC: srcc if math.isfinite(srcc) else UNDEFINED_SRCC,
                         "val_plcc": plcc if math.isfinite(plcc) else UNDEFINED_SRCC,
                         "timesteps": int(run.ppo.num_timesteps)},
                        checkpoint=tune.Checkpoint.from_directory(folder))

    def on_update(stats: dict[str, Any]) -> None:
        if stats["rollouts"] % validate_every == 0:
            report(stats["val/srcc"], stats["val/plcc"])

    run = setup_cotraining(settings, data.fit, stats=data.stats, validate=validate,
                           validate_every=validate_every, on_update=on_update)
    checkpoint = tune.get_checkpoint()
    done = 0
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            done = resume_or_warm_up(run, settings, Path(folder) / TRIAL_CHECKPOINT)
    else:
        done = resume_or_warm_up(run, settings, None)
    train_to_budget(run, settings, done, None)
    if run.callback.rollouts % validate_every != 0:
        # The budget ended between validations: report where the trial actually finished.
        report(**validate(run.policy, run.assessor))


def param_space() -> dict[str, dict[str, Any]]:
    """:data:`SEARCH_SPACE` as a nested Ray Tune search space."""
    from ray import tune

    space: dict[str, dict[str, Any]] = {}
    for dotted, (kind, low, high) in SEARCH_SPACE.items():
        group, name = dotted.split(".")
        space.setdefault(group, {})[name] = (tune.loguniform(low, high) if kind == "loguniform"
                                             else tune.uniform(low, high))
    return space


def expected_validations(args: Args) -> int:
    """Validations a trial that is never stopped reports (ASHA's ``max_t``)."""
    rollout = args.settings.ppo.n_envs * args.settings.ppo.n_steps
    rollouts = math.ceil(args.settings.total_timesteps / rollout)
    return max(1, rollouts // args.validate_every + (rollouts % args.validate_every != 0))


# ----------------------------------------------------------------------------- outputs


def trial_rows(result_grid: Any, max_t: int) -> list[dict[str, Any]]:
    """One row per trial, best first: weights, best/last validation SRCC, validations reached."""
    rows = []
    for result in result_grid:
        if result.error is not None or not result.metrics:
            rows.append({"trial": Path(result.path).name if result.path else "?", "status": "error",
                         "error": str(result.error), "config": result.config})
            continue
        history = result.metrics_dataframe
        srcc = history[METRIC].to_numpy(dtype=np.float64) if history is not None else np.array([])
        reached = int(result.metrics.get("training_iteration", len(srcc)))
        rows.append({"trial": result.metrics.get("trial_id", "?"),
                     "status": "completed" if reached >= max_t else "stopped by ASHA",
                     "validations": reached, "last_srcc": float(result.metrics[METRIC]),
                     "best_srcc": float(srcc.max()) if srcc.size else float(result.metrics[METRIC]),
                     "timesteps": int(result.metrics.get("timesteps", 0)),
                     "config": result.config})
    ok = [row for row in rows if row["status"] != "error"]
    # The winner ran the full budget (ASHA let it): rank by validations reached, then last SRCC.
    ok.sort(key=lambda row: (row["validations"], row["last_srcc"]), reverse=True)
    return ok + [row for row in rows if row["status"] == "error"]


def best_config(args: Args, best: Mapping[str, Any]) -> dict[str, Any]:
    """``run_ppo.py --config`` document: data arguments and the winning settings."""
    base = asdict(args.settings)
    settings = settings_for(base, best["config"])
    return {**{name: getattr(args, name) for name in DATA_FIELDS}, "settings": asdict(settings)}


def write_outputs(out: Path, args: Args, data: SweepData, rows: list[dict[str, Any]],
                  seconds: float) -> dict[str, Any]:
    """results.json, results.md and best_config.json; returns the summary."""
    completed = [row for row in rows if row["status"] != "error"]
    if not completed:
        first = rows[0].get("error") if rows else "-"
        raise RuntimeError(f"every trial failed; first error: {first}")
    best = completed[0]
    config = best_config(args, best)
    atomic_write_json(out / "best_config.json", config)
    document = {"args": asdict(args), "data": data.info, "search_space": {
        name: {"distribution": kind, "low": low, "high": high}
        for name, (kind, low, high) in SEARCH_SPACE.items()},
        "trials": rows, "best": best, "wall_seconds": seconds}
    atomic_write_json(out / "results.json", document)
    table_rows = []
    for row in completed:
        flat = {f"{group}.{name}": value for group, values in row["config"].items()
                for name, value in values.items()}
        table_rows.append({"trial": row["trial"], "status": row["status"],
                           "validations": row["validations"], "best": row["best_srcc"],
                           "last": row["last_srcc"],
                           **{name.split(".")[1]: flat[name] for name in SEARCH_SPACE}})
    columns = ["trial", "status", "validations", "best", "last",
               *[name.split(".")[1] for name in SEARCH_SPACE]]
    headers = ["Trial", "Status", "Validations", "Best val SRCC", "Last val SRCC",
               *[name.split(".")[1] for name in SEARCH_SPACE]]
    text = (f"# Reward and loss weight sweep ({args.dataset}, {len(rows)} trials, ASHA)\n\n"
            f"Fit images {data.info['n_fit']}, validation images {data.info['n_val']} (references "
            f"{', '.join(data.info['val_refs'])}); test references excluded. "
            f"{args.settings.total_timesteps:,} PPO steps per full trial, validation SRCC with "
            f"K = {args.eval_paths} paths every {args.validate_every} rollouts; wall time "
            f"{seconds / 60:.1f} min.\n\n"
            + markdown_table(table_rows, columns, headers)
            + f"\nBest: trial {best['trial']} (last validation SRCC {best['last_srcc']:.3f}); "
              "`experiments/run_ppo.py --config best_config.json` trains it.\n")
    atomic_write_text(out / "results.md", text)
    return {"best_trial": best["trial"], "best_val_srcc": best["last_srcc"],
            "trials": len(rows), "completed": sum(row["status"] == "completed" for row in rows),
            "best_config": str(out / "best_config.json"), "wall_seconds": seconds}


# ----------------------------------------------------------------------------- main


def run_sweep(args: Args, data: SweepData, out: Path) -> list[dict[str, Any]]:
    """Run the trials on the Ray cluster that ``ray.init`` connected to; rows best first."""
    from ray import cloudpickle, tune
    from ray.tune.schedulers import ASHAScheduler

    if __name__ != "__main__":
        # Imported from a path Ray workers cannot import (a test, a notebook): ship the trial
        # function's module by value instead of by name.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    max_t = expected_validations(args)
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                              grace_period=min(args.grace_period, max_t),
                              reduction_factor=args.reduction_factor)
    trainable = tune.with_resources(
        tune.with_parameters(trial, data=data, base=asdict(args.settings),
                             eval_paths=args.eval_paths, validate_every=args.validate_every,
                             threads=max(1, int(args.cpus_per_trial))),
        {"cpu": args.cpus_per_trial})

    experiment = (out / "ray" / EXPERIMENT).resolve()
    with progress_bar("sweep trials", args.num_samples, unit="trial", enabled=args.progress) as bar:
        if args.resume:
            # Tune restores the search, the scheduler and the callbacks from the experiment state.
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable, param_space=param_space(),
                tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler,
                                            num_samples=args.num_samples,
                                            search_alg=_random_search(args.seed)),
                run_config=tune.RunConfig(
                    name=EXPERIMENT, storage_path=str(experiment.parent), verbose=0,
                    callbacks=[_trial_progress(bar)],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        result_grid = tuner.fit()
    return trial_rows(result_grid, max_t)


def _trial_progress(handle: ProgressHandle) -> Any:
    """A Tune callback that advances ``handle`` as trials end and shows the best SRCC so far."""
    from ray import tune

    class TrialProgress(tune.Callback):
        def __init__(self, bar: ProgressHandle) -> None:
            self.handle: ProgressHandle | None = bar
            self.best = -math.inf

        # Tune pickles its callbacks with the experiment state; the live bar stays in the driver.
        def __getstate__(self) -> dict[str, Any]:
            return {"best": self.best}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.handle, self.best = None, state["best"]

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            self.best = max(self.best, float(result.get(METRIC, -math.inf)))
            if self.handle is not None:
                self.handle.describe(f"sweep trials (best val SRCC {self.best:.3f})")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.handle is not None:
                self.handle.advance()

        on_trial_error = on_trial_complete

    return TrialProgress(handle)


def _random_search(seed: int) -> Any:
    """Seeded random search, so the same ``--seed`` samples the same configurations."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed)


def check_resume(out: Path, args: Args) -> None:
    """A resume needs the sweep's state and the same arguments; a fresh sweep records them."""
    from ray import tune

    config_path = out / "config.json"
    config = {key: value for key, value in asdict(args).items() if key not in RESUMABLE_FIELDS}
    if not args.resume:
        atomic_write_json(config_path, config)
        return
    experiment = (out / "ray" / EXPERIMENT).resolve()
    if not config_path.is_file() or not tune.Tuner.can_restore(str(experiment)):
        usage_error("sweep.py", f"--resume: no interrupted sweep in {out}")
    saved = json.loads(config_path.read_text())
    changed = sorted(key for key in config if saved.get(key) != json.loads(json.dumps(config[key])))
    if changed:
        usage_error("sweep.py", f"--resume with other arguments than the sweep in {out} "
                    f"({', '.join(changed)}); rerun with the sweep's arguments")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    try:
        import ray
    except ImportError:
        raise SystemExit('sweep.py needs Ray Tune: pip install "rl-scaniqa[sweep]" '
                         '(or pip install "ray[tune]")') from None
    args = parse_script_args(Args, __doc__.splitlines()[0], argv, {"quick": QUICK_OVERRIDES})
    if args.num_samples < 1 or args.validate_every < 1:
        usage_error("sweep.py", "--num-samples and --validate-every must be at least 1")
    out = Path(args.out)
    check_resume(out, args)
    started = time.perf_counter()
    data = load_data(args)
    started_ray = not ray.is_initialized()
    if started_ray:
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        # Ray Tune prints its trial tables with print() even at verbose=0; stdout is the JSON's.
        with contextlib.redirect_stdout(sys.stderr):
            rows = run_sweep(args, data, out)
    finally:
        if started_ray:
            ray.shutdown()
    summary = write_outputs(out, args, data, rows, time.perf_counter() - started)
    if args.progress:
        print((out / "results.md").read_text(), file=sys.stderr)
    print(json.dumps(summary) if args.json else f"best config: {out / 'best_config.json'}")
    return summary


if __name__ == "__main__":
    main()
