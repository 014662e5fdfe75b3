"""Checkpoints of a co-training run, so that a killed run continues where it stopped.

A checkpoint is a folder:

- ``ppo.zip``: SB3's PPO archive (policy, value head and optimiser);
- ``assessor.safetensors`` + ``assessor.json``: the assessor's weights and config;
- ``assessor_optimizer.pt``: the assessor optimiser's state (tensors and ints only, read back
  with ``torch.load(weights_only=True)``);
- ``progress.json``: the PPO timesteps and rollouts done, the reward schedule's clock, the
  reward scaling's running statistics and the run's wall time so far.

Every save builds a complete new folder beside the old one and then swaps it in; the checkpoint
before it is kept as ``<folder>.previous``. A crash mid-save or a truncated file therefore never
costs more than one checkpoint interval: :func:`restore_checkpoint` falls back to the previous
checkpoint, with a warning, when the latest cannot be read.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rl_scaniqa.assessor.model import QualityAssessor
from rl_scaniqa.envs.errors import RLScanIQAError
from rl_scaniqa.envs.storage import atomic_write_json

if TYPE_CHECKING:
    from rl_scaniqa.agents.cotrain import CoTrainRun

PPO_NAME = "ppo.zip"
ASSESSOR_OPTIMIZER_NAME = "assessor_optimizer.pt"
PROGRESS_NAME = "progress.json"
PROGRESS_KEYS = ("num_timesteps", "rollouts", "reward_env_timesteps")

# What reading a truncated or corrupt checkpoint file raises, by the library that reads it
# (AssessorCheckpointError and CheckpointError are ValueErrors).
_UNREADABLE = (OSError, EOFError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile,
               pickle.UnpicklingError)


class CheckpointError(RLScanIQAError, ValueError):
    """Neither the latest nor the previous checkpoint of a run can be read."""


def previous_of(folder: Path) -> Path:
    """Where the checkpoint before the latest one is kept."""
    return folder.with_name(folder.name + ".previous")


def has_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` (or its previous copy) holds a checkpoint to resume from."""
    folder = Path(folder)
    return any((candidate / PROGRESS_NAME).is_file()
               for candidate in (folder, previous_of(folder)))


def save_checkpoint(run: CoTrainRun, folder: str | Path) -> None:
    """Write everything a resume needs into ``folder``, replacing the checkpoint there."""
    folder = Path(folder)
    staging = folder.with_name(f".{folder.name}.saving")
    if staging.exists():
        shutil.rmtree(staging)  # left by a save that was killed: never a complete checkpoint
    staging.mkdir(parents=True)
    run.ppo.save(staging / PPO_NAME)
    run.assessor.save(staging)
    torch.save(run.trainer.state_dict(), staging / ASSESSOR_OPTIMIZER_NAME)
    # progress.json last: its presence marks the folder complete.
    atomic_write_json(staging / PROGRESS_NAME, {
        "num_timesteps": int(run.ppo.num_timesteps), "rollouts": run.callback.rollouts,
        "reward_env_timesteps": int(run.env.num_timesteps), "wall_seconds": run.wall_seconds,
        "reward_scaling": _scaling_state(run)})
    previous = previous_of(folder)
    if folder.exists():
        if previous.exists():
            shutil.rmtree(previous)
        folder.rename(previous)
    staging.rename(folder)


def _scaling_state(run: CoTrainRun) -> dict[str, Any] | None:
    """The reward scaling's running statistics as JSON (``None`` when the run has none)."""
    scaling = run.reward_scaling
    if scaling is None:
        return None
    # The running returns are not kept: a resumed run starts new episodes, which resets them.
    return {"mean": float(scaling.ret_rms.mean), "var": float(scaling.ret_rms.var),
            "count": float(scaling.ret_rms.count)}


def _checked_scaling(state: Any) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"mean": float(state["mean"]), "var": float(state["var"]), "count": float(state["count"])}


def _restore_scaling(run: CoTrainRun, state: dict[str, Any] | None, folder: Path) -> None:
    scaling = run.reward_scaling
    if (scaling is None) != (state is None):
        raise CheckpointError(f"{folder / PROGRESS_NAME}: the checkpoint was saved "
                              f"{'without' if state is None else 'with'} reward scaling but the run "
                              f"has {'it' if scaling is not None else 'none'} (ppo.normalize_reward)")
    if scaling is None or state is None:
        return
    scaling.ret_rms.mean = np.asarray(state["mean"], dtype=np.float64)
    scaling.ret_rms.var = np.asarray(state["var"], dtype=np.float64)
    scaling.ret_rms.count = state["count"]


def read_progress(folder: Path) -> dict[str, Any]:
    """``progress.json`` of one checkpoint folder, checked."""
    path = folder / PROGRESS_NAME
    try:
        document: Any = json.loads(path.read_text())
        progress: dict[str, Any] = {key: int(document[key]) for key in PROGRESS_KEYS}
        progress["wall_seconds"] = float(document.get("wall_seconds", 0.0))
        progress["reward_scaling"] = _checked_scaling(document.get("reward_scaling"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path}: unreadable progress record ({error})") from error
    return progress


def _load(run: CoTrainRun, folder: Path) -> int:
    progress = read_progress(folder)
    # set_parameters reads only tensors from the zip (weights_only), never the pickled data.
    run.ppo.set_parameters(str(folder / PPO_NAME), exact_match=True)
    run.assessor.load_state_dict(QualityAssessor.load(folder).state_dict())
    run.trainer.load_state_dict(torch.load(folder / ASSESSOR_OPTIMIZER_NAME, weights_only=True))
    run.ppo.num_timesteps = progress["num_timesteps"]
    run.callback.log.rollouts = progress["rollouts"]
    run.env.num_timesteps = progress["reward_env_timesteps"]
    _restore_scaling(run, progress["reward_scaling"], folder)
    run.earlier_seconds = progress["wall_seconds"]
    run.started = time.perf_counter()
    return int(progress["num_timesteps"])


def restore_checkpoint(run: CoTrainRun, folder: str | Path) -> int | None:
    """Load the checkpoint in ``folder`` into ``run``; returns the timesteps already done.

    ``None`` when there is no checkpoint. Falls back to the previous checkpoint, with a
    warning, when the latest is missing or damaged; raises :class:`CheckpointError` naming
    both when neither can be read.
    """
    folder = Path(folder)
    if not has_checkpoint(folder):
        return None
    failures = []
    for candidate in (folder, previous_of(folder)):
        if not (candidate / PROGRESS_NAME).is_file():
            failures.append(f"{candidate}: no {PROGRESS_NAME}")
            continue
        try:
            done = _load(run, candidate)
        except _UNREADABLE as error:
            failures.append(f"{candidate}: {error}")
            continue
        if failures:
            warnings.warn(f"resuming from the previous checkpoint {candidate}: "
                          f"{'; '.join(failures)}", stacklevel=2)
        return done
    raise CheckpointError("no readable checkpoint to resume from: " + "; ".join(failures))
