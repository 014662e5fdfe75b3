"""``--json`` through a pipe, progress on: stdout carries JSON lines only, for the commands not
covered where they are tested end to end (``cache`` and ``run_ppo.py`` in test_scripts_e2e.py,
``reproduce.py`` in test_reproduce.py, ``sweep.py`` in test_sweep.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from json_output import json_lines

from rl_scaniqa.envs.features.provision import load_shipped_cache

REPO = Path(__file__).resolve().parents[1]


def piped(command: list[str], home: Path, timeout: float = 300) -> str:
    """stdout of ``command`` with stdout and stderr pipes (as in ``... --json | jq``)."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, RL_SCANIQA_HOME=str(home)))
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_bench_json_is_one_line(tmp_path):
    (result,) = json_lines(piped([sys.executable, str(REPO / "experiments" / "bench.py"), "projection",
                                  "--quick", "--json"], tmp_path))
    assert result["benchmark"] == "projection"


def test_score_json_is_one_line_per_image(tmp_path):
    # Two shipped thumbnails upscaled to a panorama the scorer accepts; the progress bar is on.
    thumbnails = load_shipped_cache().thumbnails[:2]
    paths = []
    for index, thumbnail in enumerate(thumbnails):
        paths.append(tmp_path / f"pano{index}.png")
        cv2.imwrite(str(paths[-1]), cv2.resize(np.ascontiguousarray(thumbnail[..., ::-1]), (1024, 512)))
    rows = json_lines(piped([sys.executable, "-m", "rl_scaniqa.agents.cli", "score", *map(str, paths),
                             "--json", "--device", "cpu", "--k", "3"], tmp_path))
    assert [Path(row["path"]).name for row in rows] == ["pano0.png", "pano1.png"]


@pytest.mark.slow
def test_build_default_cache_json_is_one_line(tmp_path):
    out = tmp_path / "shipped.safetensors.xz"
    (result,) = json_lines(piped([sys.executable, str(REPO / "experiments" / "build_default_cache.py"),
                                  "--out", str(out), "--json"], tmp_path))
    assert result["path"] == str(out) and result["bytes"] == out.stat().st_size


@pytest.mark.slow
def test_assessor_fit_json_report_and_variant_check(tmp_path):
    from rl_scaniqa.envs.data.datasets.synth360 import generate_synth360

    root = generate_synth360(tmp_path / "synth", n_refs=6, width=128, combos_per_ref=1, levels=(1, 5),
                             progress=False)
    script = str(REPO / "experiments" / "assessor_fit.py")
    out = tmp_path / "fit"
    (summary,) = json_lines(piped([sys.executable, script, "--quick", "--root", str(root),
                                   "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                                   "--json"], tmp_path))
    assert list(summary) == ["SVR", "default", "lr 1e-3"]
    for name in ("default", "lr 1e-3"):
        assert -1.0 <= summary[name]["test_srcc_all"]["mean"] <= 1.0
        assert summary[name]["best_step"]["mean"] in (100.0, 200.0)
        room = summary[name]["test_srcc_oracle_paths"]["mean"] - summary[name]["test_srcc_random_paths"]["mean"]
        assert summary[name]["oracle_minus_random"]["mean"] == pytest.approx(room)
    assert "| lr 1e-3 |" in (out / "report.md").read_text()
    assert "Oracle − random" in (out / "report.md").read_text()
    assert (out / "validation_srcc.png").stat().st_size > 0
    for bad, message in ((["--variants", "lr 9"], "--variants: ['lr 9']; known: default"),
                         (["--training-paths", "human"], "--training-paths must be random or oracle")):
        result = subprocess.run([sys.executable, script, *bad], capture_output=True,
                                text=True, env=dict(os.environ, RL_SCANIQA_HOME=str(tmp_path)))
        assert result.returncode == 2 and message in result.stderr


@pytest.mark.slow
def test_damage_reward_probe_json_and_report(tmp_path):
    from rl_scaniqa.envs.data.datasets.synth360 import generate_synth360

    root = generate_synth360(tmp_path / "synth", n_refs=6, width=128, combos_per_ref=2, levels=(1, 5),
                             progress=False)
    script = str(REPO / "experiments" / "damage_reward_probe.py")
    out = tmp_path / "probe"
    (summary,) = json_lines(piped([sys.executable, script, "--quick", "--root", str(root),
                                   "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                                   "--json"], tmp_path))
    assert summary["splits"] == 1
    for side in ("train", "test"):
        assert set(summary[side]) == {"policy", "locator", "random", "oracle"}
        assert summary[side]["oracle"] >= summary[side]["random"]
    assert "| train policy |" in (out / "report.md").read_text()
    assert (out / "hit_rates.png").stat().st_size > 0
    result = subprocess.run([sys.executable, script, "--settings.reward.damage-hit", "0"],
                            capture_output=True, text=True,
                            env=dict(os.environ, RL_SCANIQA_HOME=str(tmp_path)))
    assert result.returncode == 2 and "--settings.reward.damage-hit must be above 0" in result.stderr
