import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from rl_scaniqa.assessor.losses import combined_loss, mse_loss
from rl_scaniqa.assessor.model import (
    AssessorCheckpointError,
    AssessorConfig,
    QualityAssessor,
    load_extra,
)

D, L = 12, 8


def make_model(seed: int = 0, **overrides) -> QualityAssessor:
    torch.manual_seed(seed)
    config = AssessorConfig(feature_dim=D, hidden_dim=16, attention_dim=8, **overrides)
    return QualityAssessor(config)


def batch(b: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, L, D, generator=g), torch.randn(b, D, generator=g)


def test_output_shapes_range_and_attention_rows_sum_to_one():
    model = make_model().eval()
    paths, glob = batch()
    scores, alpha = model(paths, glob, return_attention=True)
    assert scores.shape == (5,) and alpha.shape == (5, L)
    assert torch.all((scores > 0) & (scores < 1))
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(5))
    assert torch.equal(model(paths, glob), scores)


def test_padding_positions_do_not_change_the_output():
    model = make_model().eval()
    paths, glob = batch(b=3)
    lengths = [8, 5, 1]
    mask = torch.arange(L).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    scores, alpha = model(paths, glob, mask, return_attention=True)
    garbage = paths.clone()
    garbage[~mask] = float("nan")   # even NaN padding must not leak
    scores_garbage, _ = model(garbage, glob, mask, return_attention=True)
    torch.testing.assert_close(scores_garbage, scores)
    assert torch.all(alpha[~mask] == 0)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(3))
    # A masked path scores the same as the same path truncated to its real length.
    for row, length in enumerate(lengths):
        alone = model(paths[row:row + 1, :length], glob[row:row + 1])
        torch.testing.assert_close(alone, scores[row:row + 1])


def test_path_order_does_not_matter_but_content_and_global_do():
    # Attention pooling is a weighted set mean: permuting the visit order keeps the score.
    model = make_model().eval()
    paths, glob = batch()
    permuted = paths[:, torch.randperm(L)]
    torch.testing.assert_close(model(permuted, glob), model(paths, glob))
    assert not torch.allclose(model(paths, glob + 1.0), model(paths, glob))
    assert not torch.allclose(model(paths + 1.0, glob), model(paths, glob))


def test_attention_depends_on_the_global_feature():
    model = make_model().eval()
    paths, glob = batch()
    _, alpha = model(paths, glob, return_attention=True)
    _, alpha_other = model(paths, torch.randn_like(glob), return_attention=True)
    assert not torch.allclose(alpha, alpha_other)


def test_gradients_reach_every_parameter():
    model = make_model()
    paths, glob = batch(b=6)
    target = torch.linspace(0.1, 0.9, 6)
    loss, _ = combined_loss(model(paths, glob), target, pred_weak=model(paths * 0.9, glob))
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_bad_inputs_raise():
    model = make_model()
    paths, glob = batch()
    with pytest.raises(ValueError, match=r"path_features must be \(B, L, 12\)"):
        model(paths[..., :5], glob)
    with pytest.raises(ValueError, match="global_features must be"):
        model(paths, glob[:3])
    with pytest.raises(ValueError, match="mask must be a bool"):
        model(paths, glob, torch.ones(5, L))
    mask = torch.ones(5, L, dtype=torch.bool)
    mask[2] = False
    with pytest.raises(ValueError, match=r"no valid viewport in path\(s\) \[2\]"):
        model(paths, glob, mask)
    with pytest.raises(ValueError, match="positive int"):
        AssessorConfig(feature_dim=0)
    with pytest.raises(ValueError, match="dropout"):
        AssessorConfig(feature_dim=4, dropout=1.0)


def test_predict_image_mean_std_and_mode_restored():
    model = make_model(dropout=0.5)
    model.train()
    paths, glob = batch(b=15)
    image_global = glob[0]
    mean, std = model.predict_image(paths.numpy(), image_global.numpy())
    assert model.training   # predict_* restores the mode it found
    model.eval()
    with torch.no_grad():
        per_path = model(paths, image_global.expand(15, -1)).double()
    assert mean == pytest.approx(per_path.mean().item())
    assert std == pytest.approx(per_path.std(correction=0).item())
    single_mean, single_std = model.predict_image(paths[:1], image_global)
    assert single_std == 0.0 and single_mean == pytest.approx(per_path[0].item())
    with pytest.raises(ValueError, match="paths_features must be"):
        model.predict_image(paths[0], image_global)


def test_save_load_round_trip_is_exact(tmp_path):
    model = make_model(dropout=0.2)
    paths, glob = batch()
    model.eval()
    expected = model(paths, glob)
    stats = {"global_mean": [0.1, 0.2], "mos_scale": [1.0, 5.0]}
    weights = model.save(tmp_path / "ckpt", extra=stats)
    assert weights == tmp_path / "ckpt" / "assessor.safetensors"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["assessor.json",
                                                                   "assessor.safetensors"]
    loaded = QualityAssessor.load(tmp_path / "ckpt")
    assert loaded.config == model.config and not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(loaded(paths, glob), expected)
    assert load_extra(tmp_path / "ckpt") == stats


def test_save_to_a_safetensors_file_name(tmp_path):
    model = make_model()
    target = tmp_path / "best.safetensors"
    model.save(target)
    assert (tmp_path / "best.json").is_file()
    assert QualityAssessor.load(target).config == model.config
    assert load_extra(target) == {}


def test_load_rejects_mismatched_config(tmp_path):
    make_model().save(tmp_path)
    with pytest.raises(AssessorCheckpointError, match="does not match the expected"):
        QualityAssessor.load(tmp_path, expected=AssessorConfig(feature_dim=384))


def test_load_rejects_weights_from_another_save(tmp_path):
    make_model().save(tmp_path / "a")
    QualityAssessor(AssessorConfig(feature_dim=D, hidden_dim=32)).save(tmp_path / "b")
    # b's weights (hidden 32) with a's config (hidden 16): an interrupted or mixed save.
    shutil.copy(tmp_path / "a" / "assessor.json", tmp_path / "b" / "assessor.json")
    with pytest.raises(AssessorCheckpointError, match="files from different saves"):
        QualityAssessor.load(tmp_path / "b")


def test_load_rejects_tensors_that_do_not_fit(tmp_path):
    model = make_model()
    weights = model.save(tmp_path)
    state = load_file(str(weights))
    metadata = {"format": "rl_scaniqa.assessor",
                "config": json.dumps(model.config.to_dict(), sort_keys=True)}
    state["head.0.weight"] = torch.zeros(3, 3)
    del state["att_score.weight"]
    state["extra.bias"] = torch.zeros(2)
    save_file(state, str(weights), metadata=metadata)
    with pytest.raises(AssessorCheckpointError) as info:
        QualityAssessor.load(tmp_path)
    message = str(info.value)
    assert "missing: ['att_score.weight']" in message
    assert "unexpected: ['extra.bias']" in message
    assert "head.0.weight (3, 3)" in message and str(weights) in message


def test_load_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(AssessorCheckpointError, match="config file not found"):
        QualityAssessor.load(tmp_path)
    weights = make_model().save(tmp_path)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(AssessorCheckpointError, match="unreadable safetensors"):
        QualityAssessor.load(tmp_path)
    (tmp_path / "assessor.json").write_text("{broken")
    with pytest.raises(AssessorCheckpointError, match="unreadable JSON"):
        QualityAssessor.load(tmp_path)
    document = {"format": "rl_scaniqa.assessor", "version": 1, "config": {"hidden_dim": 8}}
    (tmp_path / "assessor.json").write_text(json.dumps(document))
    with pytest.raises(AssessorCheckpointError, match="invalid assessor config.*feature_dim"):
        QualityAssessor.load(tmp_path)
    document["config"] = {"feature_dim": 8, "width": 3}
    (tmp_path / "assessor.json").write_text(json.dumps(document))
    with pytest.raises(AssessorCheckpointError, match="unknown AssessorConfig field.*width"):
        QualityAssessor.load(tmp_path)
    (tmp_path / "assessor.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(AssessorCheckpointError, match="not an assessor checkpoint"):
        QualityAssessor.load(tmp_path)
    make_model().save(tmp_path)
    weights.unlink()
    with pytest.raises(AssessorCheckpointError, match="weights file not found"):
        QualityAssessor.load(tmp_path)


def test_assessor_learns_a_synthetic_quality_function():
    # Quality = the worst viewport of the path (a local distortion) plus a global term,
    # squashed into [0.1, 0.9]; the assessor must find it through attention pooling.
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, dim = 384, 16
    paths = torch.as_tensor(rng.normal(size=(n, L, dim)), dtype=torch.float32)
    glob = torch.as_tensor(rng.normal(size=(n, dim)), dtype=torch.float32)
    raw = 0.7 * paths[..., 0].min(dim=1).values + 0.3 * glob[:, 1]
    target = 0.1 + 0.8 * (raw - raw.min()) / (raw.max() - raw.min())
    train, test = slice(0, 320), slice(320, n)
    model = QualityAssessor(AssessorConfig(feature_dim=dim, hidden_dim=64, attention_dim=32,
                                           dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        idx = torch.as_tensor(rng.choice(320, 32, replace=False))
        # Plain MSE: this checks the model can represent and fit the function (the ranking
        # term of the combined loss deliberately stretches the score spread, see losses.py).
        loss = mse_loss(model(paths[train][idx], glob[train][idx]), target[train][idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pred = model.predict(paths[test], glob[test])
    mse = float(np.mean((pred - target[test].numpy()) ** 2))
    variance = float(target[test].var(correction=0))
    # A constant predictor scores 1.0 on this ratio; 3 seeds of this setup reach 0.04-0.09.
    assert mse < 0.2 * variance, (mse, variance)
