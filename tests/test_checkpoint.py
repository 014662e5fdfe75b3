"""Co-training checkpoints: a resumed run continues where it stopped; damaged files fall back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rl_scaniqa.agents.checkpoint import (
    ASSESSOR_OPTIMIZER_NAME,
    PPO_NAME,
    PROGRESS_NAME,
    CheckpointError,
    has_checkpoint,
    previous_of,
    restore_checkpoint,
)
from rl_scaniqa.agents.cotrain import cotrain, setup_cotraining
from training_fixtures import tiny_cache, tiny_settings


@pytest.fixture(scope="module")
def cache():
    return tiny_cache()


def settings(total: int):
    return tiny_settings(total_timesteps=total)


def parameters(run) -> dict[str, torch.Tensor]:
    return {**{f"ppo.{k}": v.clone() for k, v in run.ppo.policy.state_dict().items()},
            **{f"assessor.{k}": v.clone() for k, v in run.assessor.state_dict().items()}}


def test_a_rerun_continues_from_the_checkpoint_and_keeps_the_one_before(cache, tmp_path):
    folder = tmp_path / "checkpoint"
    first = cotrain(settings(96), cache, checkpoint_dir=folder, checkpoint_every=1)
    assert first.resumed_from is None and has_checkpoint(folder)
    progress = json.loads((folder / PROGRESS_NAME).read_text())
    assert progress.pop("wall_seconds") > 0
    scaling = progress.pop("reward_scaling")
    assert scaling["count"] > 90 and scaling["var"] > 0  # the return statistics of 96 steps
    assert progress == {"num_timesteps": 96, "rollouts": 4, "reward_env_timesteps": 96}
    # The checkpoint before the last save is kept, complete.
    assert json.loads((previous_of(folder) / PROGRESS_NAME).read_text())["num_timesteps"] == 96

    resumed = cotrain(settings(144), cache, checkpoint_dir=folder, checkpoint_every=1)
    assert resumed.resumed_from == 96 and resumed.earlier_seconds > 0
    assert resumed.ppo.num_timesteps == 144 and resumed.callback.rollouts == 6
    assert resumed.env.num_timesteps == 144


def test_restore_loads_the_saved_weights_exactly(cache, tmp_path):
    folder = tmp_path / "checkpoint"
    trained = cotrain(settings(48), cache, checkpoint_dir=folder, checkpoint_every=1)
    fresh = setup_cotraining(settings(48), cache, stats=trained.stats)
    before = parameters(fresh)
    assert restore_checkpoint(fresh, folder) == 48
    for name in ("mean", "var", "count"):  # PPO goes on with the same reward scale
        assert getattr(fresh.reward_scaling.ret_rms, name) == getattr(trained.reward_scaling.ret_rms, name)
    after, expected = parameters(fresh), parameters(trained)
    assert any(not torch.equal(before[name], after[name]) for name in after)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(after[name].numpy(), tensor.numpy(), err_msg=name)


@pytest.mark.parametrize("damaged", [PPO_NAME, "assessor.safetensors", "assessor.json",
                                     ASSESSOR_OPTIMIZER_NAME, PROGRESS_NAME])
def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(cache, tmp_path, damaged):
    folder = tmp_path / "checkpoint"
    cotrain(settings(48), cache, checkpoint_dir=folder, checkpoint_every=1)
    # Make the previous checkpoint an earlier one, then damage the latest.
    progress = json.loads((previous_of(folder) / PROGRESS_NAME).read_text())
    progress["num_timesteps"] = 24
    (previous_of(folder) / PROGRESS_NAME).write_text(json.dumps(progress))
    data = (folder / damaged).read_bytes()
    (folder / damaged).write_bytes(data[: len(data) // 2])

    run = setup_cotraining(settings(48), cache)
    with pytest.warns(UserWarning, match="previous checkpoint"):
        assert restore_checkpoint(run, folder) == 24

    (previous_of(folder) / PROGRESS_NAME).write_text("{\"num_timesteps\": ")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        restore_checkpoint(run, folder)


def test_no_checkpoint_means_a_fresh_start(cache, tmp_path):
    run = setup_cotraining(settings(48), cache)
    assert not has_checkpoint(tmp_path / "nothing")
    assert restore_checkpoint(run, tmp_path / "nothing") is None
