"""Issue 13, sections 3 and 4: what ``rl-scaniqa score`` and the Scorer refuse or flag.

Each probe gives the bad input, checks the exact exit code (2 for arguments, refused before any
image is read; 1 for an image that cannot be judged while the others are scored) and that the
message names the file or option and the problem.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import rl_scaniqa.agents.scorer as scorer_module
from rl_scaniqa.agents.cli import main
from rl_scaniqa.agents.scorer import (
    MAX_UPSAMPLING,
    Scorer,
    ScorerError,
    ood_threshold,
    tensor_to_erp,
)
from rl_scaniqa.envs.data.imageio import write_image
from rl_scaniqa.envs.errors import ImageError
from rl_scaniqa.envs.features.backbones import check_device
from rl_scaniqa.envs.features.cache import FeatureStats
from tests.test_scorer import GRID, K, T, model_dir, panorama, scorer  # noqa: F401 (fixtures)


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "one.png"
    write_image(path, panorama(9))
    return path


@pytest.fixture()
def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image is decoded: the checks must come before the work."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was read before the arguments were checked")

    monkeypatch.setattr(scorer_module, "read_erp", refuse)


def score_args(model: Path, image: Path, *extra: str) -> list[str]:
    return ["score", str(image), "--model", str(model), "--no-progress", *extra]


# ---------------------------------------------------------------- §4 arguments, exit 2

@pytest.mark.parametrize(("option", "value", "problem"), [
    ("--device", "tpu", "unknown device 'tpu'"),
    ("--seed", "-1", "must be >= 0, got -1"),
    ("--seed", "x", "'x' is not an integer"),
])
def test_bad_device_and_seed_are_argparse_errors(model_dir: Path, image: Path, no_reading: None,
                                                 capsys: pytest.CaptureFixture, option: str,
                                                 value: str, problem: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(score_args(model_dir, image, option, value))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: {problem}" in err and err.startswith("usage: rl-scaniqa score")


def test_cuda_on_a_build_without_gpu_is_an_argparse_error(model_dir: Path, image: Path,
                                                          no_reading: None,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    # Forced, so that the test means the same on a GPU machine.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        main(score_args(model_dir, image, "--device", "cuda"))
    assert exit_info.value.code == 2
    assert "argument --device: device 'cuda': this torch build" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cache", "--dataset", "csv", "--root", ".", "--device", "cuda:1"])
    assert "sees no CUDA GPU" in capsys.readouterr().err


def test_check_device_passes_what_exists() -> None:
    assert check_device("auto") == "auto" and check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device 'xla'"):
        check_device("xla")


def test_csv_naming_a_directory_is_refused_before_scoring(model_dir: Path, image: Path,
                                                          tmp_path: Path, no_reading: None,
                                                          capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(score_args(model_dir, image, "--csv", str(folder)))
    assert exit_info.value.code == 2
    assert f"argument --csv: {folder} is a directory" in capsys.readouterr().err
    assert list(folder.iterdir()) == []


def test_plot_naming_an_existing_file_is_refused(model_dir: Path, image: Path, tmp_path: Path,
                                                 no_reading: None,
                                                 capsys: pytest.CaptureFixture) -> None:
    existing = tmp_path / "plots.png"
    existing.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(score_args(model_dir, image, "--plot", str(existing)))
    assert exit_info.value.code == 2
    assert f"argument --plot: {existing} exists and is not a folder" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"


@pytest.mark.parametrize("k", ["1000000000", str(10**15)])
def test_absurd_k_is_refused_for_memory(model_dir: Path, image: Path, no_reading: None,
                                        capsys: pytest.CaptureFixture, k: str) -> None:
    assert main(score_args(model_dir, image, "--k", k)) == 2
    err = capsys.readouterr().err
    assert err.startswith("rl-scaniqa score: error: ") and f"k={k} paths" in err
    assert "GiB of memory is free; lower --k or --batch-size" in err


def test_k_that_fits_one_image_but_not_the_batch(model_dir: Path, image: Path, no_reading: None,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    scorer = Scorer.from_pretrained(model_dir, device="cpu", k=100)
    per_image = scorer.memory_need(1)
    assert scorer.memory_need(8) == 8 * per_image
    # Room for 4 images' scanpath arrays, not for the default batch of 8.
    monkeypatch.setattr(scorer_module, "available_memory", lambda: 4 * per_image)
    assert main(score_args(model_dir, image, "--k", "100")) == 2
    assert "for a batch of 8 image(s)" in capsys.readouterr().err
    with pytest.raises(ScorerError, match="batch of 8"):
        next(scorer.score_many([image], batch_size=8, progress=False))
    scorer.check_memory(4)


def test_memory_need_follows_k_t_and_dim(scorer: Scorer) -> None:
    dim = scorer.model.assessor.config.feature_dim
    assert scorer.memory_need(2) == 2 * K * ((T + 1) * (8 + 4 * dim) + 4 * dim)


# ---------------------------------------------------------------- §3(a) minimum size

def test_min_width_follows_the_viewport_geometry(scorer: Scorer) -> None:
    assert scorer.min_erp_width == int(np.ceil(360 * GRID.size / (GRID.fov_deg * MAX_UPSAMPLING)))
    assert scorer.min_erp_width == 64  # 32 px viewports of 90 degrees


@pytest.mark.parametrize("shape", [(4, 8), (1, 2), (31, 62)])
def test_too_small_images_are_refused_naming_the_file(model_dir: Path, scorer: Scorer,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture,
                                                      shape: tuple[int, int]) -> None:
    height, width = shape
    tiny = tmp_path / f"tiny{width}x{height}.png"
    write_image(tiny, cv2.resize(panorama(1), (width, height), interpolation=cv2.INTER_AREA))
    good = tmp_path / "good.png"
    write_image(good, panorama(2, width=64))  # exactly the minimum: scored
    with pytest.raises(ImageError, match=f"tiny{width}x{height}.png: ERP of {width}x{height} "
                                         "pixels is too small.*at least 64x32"):
        scorer.score(tiny)
    assert main(["score", str(tiny), str(good), "--model", str(model_dir), "--json",
                 "--no-progress"]) == 1
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert records[0]["score"] is None and "too small" in records[0]["error"]
    assert records[0]["error"].startswith(str(tiny))
    assert records[1]["score"] is not None
    assert "1 of 2 images could not be scored" in captured.err


# ---------------------------------------------------------------- §3(b) tensors

def test_tensor_inputs_score_like_the_array(scorer: Scorer) -> None:
    array = panorama(4)
    tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255.0
    np.testing.assert_array_equal(tensor_to_erp(tensor), array)
    single = scorer.score(tensor)
    assert isinstance(single, scorer_module.ScoreResult) and single.path == "<tensor>"
    reference = scorer.score(array)
    assert single.paths == reference.paths and single.score == pytest.approx(reference.score)
    batch = torch.stack([tensor, torch.from_numpy(panorama(5)).permute(2, 0, 1).float() / 255.0])
    results = scorer.score(batch)
    assert isinstance(results, list) and [r.path for r in results] == ["<tensor[0]>", "<tensor[1]>"]
    assert results[0].paths == reference.paths
    assert results[0].score == pytest.approx(reference.score, abs=1e-5)
    assert results[1].score != pytest.approx(results[0].score)


@pytest.mark.parametrize(("tensor", "problem"), [
    (torch.rand(1, 3, 64, 128) * 255.0, r"values must lie in 0\.\.1"),
    (torch.rand(3, 64, 128) - 0.5, r"values must lie in 0\.\.1"),
    (torch.full((3, 64, 128), float("nan")), "NaN or infinite"),
    (torch.rand(64, 128, 3), r"shape \(3, H, W\) or \(N, 3, H, W\), got \(64, 128, 3\)"),
    (torch.randint(0, 255, (3, 64, 128), dtype=torch.uint8), "expected a float tensor"),
    (torch.rand(3, 64, 64), "aspect ratio"),
    (torch.rand(2, 3, 16, 32), "too small"),
])
def test_bad_tensors_are_clear_errors(scorer: Scorer, tensor: torch.Tensor, problem: str) -> None:
    with pytest.raises(ImageError, match=problem):
        scorer.score(tensor)


def test_a_bad_tensor_in_a_stream_is_a_result_error(scorer: Scorer) -> None:
    good = torch.from_numpy(panorama(4)).permute(2, 0, 1).float() / 255.0
    results = list(scorer.score_many([good, good * 2.0], progress=False))
    assert results[0].ok and not results[1].ok and "0..1" in results[1].error


# ---------------------------------------------------------------- §3(c) out of distribution

def test_ood_threshold_is_the_chi_square_quantile() -> None:
    rng = np.random.default_rng(0)
    dim = 86
    # Standard-normal features: the share of distances above the threshold is about 1 %.
    distances = np.sqrt(np.mean(rng.standard_normal((20000, dim)) ** 2, axis=1))
    share = float(np.mean(distances > ood_threshold(dim)))
    assert 0.005 < share < 0.015
    assert ood_threshold(dim) == pytest.approx(1.1784, abs=1e-3)


def test_global_distance_is_the_standardised_rms() -> None:
    stats = FeatureStats(global_mean=np.array([1.0, 0.0], np.float32),
                         global_std=np.array([2.0, 1.0], np.float32),
                         viewport_mean=np.zeros(2, np.float32), viewport_std=np.ones(2, np.float32))
    assert stats.global_distance(np.array([5.0, 3.0])) == pytest.approx(np.sqrt((4 + 9) / 2))
    assert stats.global_distance(np.array([1.0, 0.0])) == 0.0


def test_constant_and_grey_images_lie_far_from_the_training_features() -> None:
    """On the shipped model (stats of its Synth360 + Real360 training features), not a random one."""
    from rl_scaniqa.envs.data.datasets.synth360 import render_reference

    shipped = Scorer.from_pretrained(device="cpu", k=2)
    reference = render_reference(101, width=1024, seed=0)
    clean = shipped.score(reference)
    grey = np.repeat(cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    greyed = shipped.score(grey)
    constant = shipped.score(np.full((512, 1024, 3), 128, np.uint8))
    assert clean.ood is False and clean.ood_distance < shipped.ood_threshold
    assert greyed.ood is True and greyed.ood_distance > 1.5 * clean.ood_distance
    assert constant.ood is True and constant.ood_distance > 3.0 * clean.ood_distance
