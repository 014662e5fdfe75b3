"""experiments/sweep.py: a 2-trial, tiny-budget Ray Tune sweep on local Ray, and its outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from rl_scaniqa.agents.settings import CoTrainSettings, PPOSettings
from rl_scaniqa.envs.features.random_cache import random_feature_cache
from json_output import json_lines

pytest.importorskip("ray.tune", reason='Ray Tune is not installed: pip install "rl-scaniqa[sweep]"')

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    path = ROOT / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep():
    return load_script("sweep")


TINY = ["--num-samples", "2", "--validate-every", "1", "--eval-paths", "2", "--grace-period", "1",
        "--num-cpus", "2", "--settings.total-timesteps", "140", "--settings.n-paths", "2",
        "--settings.path-length", "3", "--settings.ppo.n-envs", "2", "--settings.ppo.n-steps", "35",
        "--settings.ppo.batch-size", "35", "--settings.ppo.n-epochs", "1",
        "--settings.ppo.embed-dim", "8", "--settings.ppo.hidden-dim", "8",
        "--settings.ppo.attention-dim", "8", "--settings.assessor.warmup-steps", "5",
        "--settings.assessor.cotrain-steps", "4", "--settings.assessor.batch-size", "8",
        "--settings.assessor.hidden-dim", "16", "--settings.assessor.attention-dim", "8",
        "--json"]  # progress on: it must stay on stderr


@pytest.mark.slow
def test_two_trial_sweep_on_local_ray(sweep, monkeypatch, tmp_path, capsys):
    cache = random_feature_cache(40, dim=8, n_refs=10, seed=2)
    monkeypatch.setattr(sweep, "load_data", lambda args: sweep.split_fit_val(cache, args))
    out = tmp_path / "sweep"
    sweep.main(["--out", str(out), *TINY])
    (summary,) = json_lines(capsys.readouterr().out)
    assert summary["trials"] == 2

    document = json.loads((out / "results.json").read_text())
    rows = document["trials"]
    assert len(rows) == 2 and all(row["status"] != "error" for row in rows)
    # 140 steps in 70-step rollouts, validated after each: a completed trial reports twice.
    assert all(1 <= row["validations"] <= 2 for row in rows)
    # Every trial validated to a defined SRCC (not the placeholder Tune gets for an undefined one),
    # its last one is among those it reached, and the best trial is the first row.
    for row in rows:
        assert row["last_srcc"] != sweep.UNDEFINED_SRCC and row["last_srcc"] <= row["best_srcc"]
    assert document["best"]["trial"] == rows[0]["trial"]
    # The two trials drew different weights from the search space, inside its bounds.
    configs = [row["config"] for row in rows]
    assert configs[0] != configs[1]
    for config in configs:
        for dotted, (_, low, high) in sweep.SEARCH_SPACE.items():
            group, name = dotted.split(".")
            assert low <= config[group][name] <= high
    assert "| Trial |" in (out / "results.md").read_text()

    # The best config is what run_ppo.py --config accepts, with the winner's weights in it.
    run_ppo = load_script("run_ppo")
    best = json.loads((out / "best_config.json").read_text())
    args = run_ppo.parse_script_args(run_ppo.Args, "", ["--config", str(out / "best_config.json")])
    winner = document["best"]["config"]
    assert args.settings.reward.lambda_ssim == pytest.approx(winner["reward"]["lambda_ssim"])
    assert args.settings.assessor.loss_triplet == pytest.approx(winner["assessor"]["loss_triplet"])
    assert args.settings.total_timesteps == 140 and best["settings"]["path_length"] == 3

    # Every report carried the trial's co-training checkpoint: a completed trial's last one is
    # at the full budget, and a resumed sweep continues from them (here: nothing left to run).
    progress = [json.loads(path.read_text())
                for path in out.glob(f"ray/sweep/*/checkpoint_*/{sweep.TRIAL_CHECKPOINT}/progress.json")]
    assert progress and max(entry["num_timesteps"] for entry in progress) == 140
    with pytest.raises(SystemExit) as refused:
        sweep.main(["--out", str(out), "--resume", *TINY, "--eval-paths", "3"])
    assert refused.value.code == 2 and "other arguments" in capsys.readouterr().err
    sweep.main(["--out", str(out), "--resume", *TINY])
    (resumed,) = json_lines(capsys.readouterr().out)
    assert resumed["trials"] == 2 and resumed["best_val_srcc"] == summary["best_val_srcc"]
    with pytest.raises(SystemExit) as missing:
        sweep.main(["--out", str(tmp_path / "elsewhere"), "--resume", *TINY])
    assert missing.value.code == 2 and "no interrupted sweep" in capsys.readouterr().err


def test_expected_validations_is_ashas_max_t(sweep):
    def args(total, every):
        return sweep.Args(validate_every=every, settings=CoTrainSettings(
            total_timesteps=total, ppo=PPOSettings(n_envs=2, n_steps=35)))

    assert sweep.expected_validations(args(140, 1)) == 2
    assert sweep.expected_validations(args(700, 3)) == 4     # 10 rollouts: after 3, 6, 9 and 10
    assert sweep.expected_validations(args(70, 5)) == 1


def test_settings_for_applies_nested_weights(sweep):
    base = sweep.asdict(CoTrainSettings())
    settings = sweep.settings_for(base, {"reward": {"beta_jaccard": 0.05},
                                         "assessor": {"loss_rank": 0.4}})
    assert settings.reward.beta_jaccard == 0.05 and settings.assessor.loss_rank == 0.4
    assert settings.reward.lambda_ssim == CoTrainSettings().reward.lambda_ssim
    with pytest.raises(ValueError):
        sweep.settings_for(base, {"reward": {"no_such_weight": 1.0}})


def test_validation_split_excludes_test_references(sweep):
    cache = random_feature_cache(40, dim=8, n_refs=10, seed=2)
    data = sweep.split_fit_val(cache, sweep.Args())
    seen = set(data.fit.ref_ids) | set(data.val.ref_ids)
    assert not seen & set(data.info["test_refs_excluded"])
    assert not set(data.fit.ref_ids) & set(data.val.ref_ids)

