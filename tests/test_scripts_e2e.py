"""End to end through the real entry points, in subprocesses: kill, resume, stale caches.

These are the "done when" checks of the foundation and training issues: ``rl-scaniqa cache``
resumes after being killed and never reuses a stale cache, and ``experiments/run_ppo.py``
continues a killed run from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from rl_scaniqa.envs.data.datasets.synth360 import generate_synth360
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.errors import CacheError
from rl_scaniqa.envs.features.cache import load_cache
from json_output import json_lines

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_synth360(root, n_refs=5, width=256, combos_per_ref=1, progress=False)
    return root


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, RL_SCANIQA_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"process ended (code {process.returncode}) before the condition held")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("condition not reached in time")
        time.sleep(0.05)


@pytest.mark.slow
def test_cache_cli_resumes_after_kill_and_rebuilds_when_stale(tiny_synth, tmp_path):
    cache_dir = tmp_path / "cache"
    command = [sys.executable, "-m", "rl_scaniqa.agents.cli", "cache", "--dataset", "synth360",
               "--root", str(tiny_synth), "--size", "32", "--chunk-size", "2",
               "--augment", "weak,heavy", "--cache-dir", str(cache_dir), "--json",
               "--no-progress"]
    process = subprocess.Popen(command, env=child_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(cache_dir.glob("*.parts/*.safetensors")), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    parts_before = {p.name for p in cache_dir.glob("*.parts/*.safetensors")}
    assert parts_before, "the killed build left no finished chunk"

    done = subprocess.run(command, env=child_env(tmp_path), capture_output=True, text=True,
                          check=True)
    (summary,) = json_lines(done.stdout)
    assert summary["images"] == 20 and summary["augmentations"] == ["weak", "heavy"]
    cache_path = Path(summary["cache"])
    assert not list(cache_dir.glob("*.parts"))  # consolidated, chunks removed

    # A cache built for another grid is rejected with a message naming both.
    with pytest.raises(CacheError, match="grid"):
        load_cache(cache_path, expect_grid=ViewportGrid(size=64))

    # Touching an image makes the dataset fingerprint change: a new cache is built, the old
    # one is never reused for the changed data.
    image = sorted((tiny_synth / "images").glob("*.png"))[0]
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    rebuilt = subprocess.run(command, env=child_env(tmp_path), capture_output=True, text=True,
                             check=True)
    assert json_lines(rebuilt.stdout)[-1]["cache"] != str(cache_path)


@pytest.mark.slow
def test_run_ppo_resumes_a_killed_run(tiny_synth, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, str(REPO / "experiments" / "run_ppo.py"), "--root", str(tiny_synth),
               "--size", "32", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
               "--eval-paths", "2", "--checkpoint-every", "1", "--validate-every", "2",
               "--settings.total-timesteps", "4800", "--settings.n-paths", "2",
               "--settings.path-length", "3", "--settings.ppo.n-envs", "2",
               "--settings.ppo.n-steps", "12", "--settings.ppo.batch-size", "24",
               "--settings.ppo.n-epochs", "1", "--settings.assessor.warmup-steps", "5",
               "--settings.assessor.cotrain-steps", "400", "--json", "--no-progress"]
    process = subprocess.Popen(command, env=child_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    progress_file = out / "checkpoint" / "progress.json"
    wait_for(progress_file.is_file, process, timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # A kill in the middle of a save leaves the checkpoint before it in checkpoint.previous.
    saved = progress_file if progress_file.is_file() else \
        out / "checkpoint.previous" / "progress.json"
    checkpoint = json.loads(saved.read_text())
    killed_at = checkpoint["num_timesteps"]
    assert 0 < killed_at < 4800 and checkpoint["wall_seconds"] > 0

    # With the live display on: it must go to stderr, leaving stdout to the JSON.
    resume = [sys.executable, str(REPO / "experiments" / "run_ppo.py"), "--resume", str(out),
              "--json", "--progress"]
    # An option unlike the run's own is refused, not silently ignored.
    differing = subprocess.run([*resume, "--eval-paths", "3"], env=child_env(tmp_path),
                               capture_output=True, text=True, timeout=120)
    assert differing.returncode == 2 and "--allow-changes" in differing.stderr
    assert "--eval-paths 3 (the run has 2)" in differing.stderr

    resumed = subprocess.run(resume, env=child_env(tmp_path), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    (summary,) = json_lines(resumed.stdout)
    assert summary["n_test_images"] > 0 and "PPO" in resumed.stderr
    # The killed process's time counts in the run's wall time.
    assert summary["wall_seconds"] > checkpoint["wall_seconds"]
    assert json.loads(progress_file.read_text())["num_timesteps"] == 4800
    results = json.loads((out / "results.json").read_text())
    per_image = results["per_image"]
    assert len(per_image) == summary["n_test_images"]
    # The reported SRCC is the Spearman correlation of the reported predictions with the MOS.
    predicted, mos = [row["predicted"] for row in per_image], [row["mos"] for row in per_image]
    assert summary["srcc"] == results["srcc"] == pytest.approx(spearmanr(predicted, mos).statistic,
                                                               abs=1e-12)
    assert (out / "results.md").is_file() and (out / "scatter.png").is_file()
    assert (out / "scanpaths.png").is_file() and (out / "model" / "model.json").is_file()

    # A fresh run into the finished run's folder would overwrite it; a resume needs a run.
    again = subprocess.run(command, env=child_env(tmp_path), capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr

    # --allow-changes extends the finished run, and its config records what ran.
    extended = subprocess.run([*resume, "--settings.total-timesteps", "4824", "--allow-changes"],
                              env=child_env(tmp_path), capture_output=True, text=True,
                              timeout=600)
    assert extended.returncode == 0, extended.stderr[-2000:]
    assert json.loads(progress_file.read_text())["num_timesteps"] == 4824
    assert json.loads((out / "config.json").read_text())["settings"]["total_timesteps"] == 4824
    missing = subprocess.run([sys.executable, str(REPO / "experiments" / "run_ppo.py"),
                              "--resume", str(tmp_path / "no-run")], env=child_env(tmp_path),
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no run_ppo.py run there" in missing.stderr
