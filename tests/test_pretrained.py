"""The model shipped inside the package loads offline and scores a generated panorama."""

import json

import numpy as np

from rl_scaniqa.agents.scaniqa_model import MODEL_CONFIG_NAME
from rl_scaniqa.agents.scorer import DEFAULT_MODEL_DIR, Scorer
from rl_scaniqa.envs.data.datasets.synth360 import render_reference
from rl_scaniqa.envs.data.distortions import apply_distortion
from rl_scaniqa.envs.features.backbones import make_backbone


def test_shipped_model_records_how_it_was_made():
    document = json.loads((DEFAULT_MODEL_DIR / MODEL_CONFIG_NAME).read_text())
    metadata = document["metadata"]
    assert metadata["command"].startswith("experiments/run_ppo.py")
    assert isinstance(metadata["seed"], int) and metadata["timesteps"] > 0
    # The shipped model must match the embedded default backbone, or scoring would fail offline.
    assert document["backbone"] == make_backbone("nss").name
    assert (DEFAULT_MODEL_DIR / "PROVENANCE.md").is_file()


def test_shipped_model_scores_a_generated_panorama_and_ranks_heavy_damage_lower():
    scorer = Scorer.from_pretrained(device="cpu")
    reference = render_reference(101, width=1024, seed=7)
    clean = scorer.score(reference)
    assert clean.ok and np.isfinite(clean.score) and clean.std >= 0
    assert np.asarray(clean.paths).shape == (15, 8)
    low, high = scorer.model.mos_scale.low, scorer.model.mos_scale.high
    assert low - 0.5 <= clean.score <= high + 0.5
    damaged = apply_distortion(reference, "noise", 5, np.random.default_rng(0))
    assert scorer.score(damaged).score < clean.score
