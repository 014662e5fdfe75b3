"""Tests of rl_scaniqa.agents.scorer and ``rl-scaniqa score``: a tiny saved model, small ERPs."""

from __future__ import annotations

import csv
import json
import re
import shutil
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from rl_scaniqa.agents.cli import main
from rl_scaniqa.agents.scaniqa_model import ScanIQAModel, build_policy
from rl_scaniqa.agents.scorer import (
    CSV_COLUMNS,
    PREVIEW_SHAPE,
    STAGES,
    Scorer,
    ScorerError,
    find_images,
)
from rl_scaniqa.agents.settings import AssessorSettings, CoTrainSettings, PPOSettings
from rl_scaniqa.assessor.model import AssessorConfig, QualityAssessor
from rl_scaniqa.envs.data.datasets.records import MosScale
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.data.imageio import write_image
from rl_scaniqa.envs.errors import ImageError
from rl_scaniqa.envs.features.backbones import CountingBackbone, NSSBackbone
from rl_scaniqa.envs.features.cache import FeatureStats
from rl_scaniqa.envs.features.random_cache import random_feature_cache

GRID = ViewportGrid(size=32)
K, T = 3, 4
NSS_DIM = NSSBackbone().dim


def panorama(seed: int, width: int = 256) -> np.ndarray:
    """A smooth random ERP with some texture (2:1, uint8 RGB)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 8, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (width, width // 2), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0.0, 6.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised model of small shapes, saved as the lead's ScanIQAModel."""
    cache = random_feature_cache(6, grid=GRID, dim=NSS_DIM, seed=3)
    settings = CoTrainSettings(n_paths=K, path_length=T,
                               ppo=PPOSettings(embed_dim=16, hidden_dim=16, attention_dim=16),
                               assessor=AssessorSettings(hidden_dim=32, attention_dim=16))
    assessor = QualityAssessor(AssessorConfig(NSS_DIM, hidden_dim=32, attention_dim=16))
    model = ScanIQAModel(policy=build_policy(settings, GRID, NSS_DIM), assessor=assessor,
                         feature_stats=FeatureStats.fit(cache), settings=settings, grid=GRID,
                         backbone=NSSBackbone().name, mos_scale=MosScale(1.0, 5.0))
    return model.save(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def scorer(model_dir: Path) -> Scorer:
    return Scorer.from_pretrained(model_dir, device="cpu")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Two good panoramas (one nested), a truncated PNG, a 1:1 image and a text file."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    write_image(root / "a.png", panorama(0))
    write_image(root / "sub" / "c.jpg", panorama(1))
    write_image(root / "square.png", panorama(2)[:, :128])
    good = (root / "a.png").read_bytes()
    (root / "broken.png").write_bytes(good[: len(good) // 2])
    (root / "notes.txt").write_text("not an image")
    return root


def test_scores_a_panorama_end_to_end(scorer: Scorer, tmp_path: Path) -> None:
    path = tmp_path / "pano.png"
    write_image(path, panorama(5))
    result = scorer.score(path)
    assert result.ok and result.path == str(path)
    assert np.isfinite(result.score) and result.std >= 0.0
    assert len(result.paths) == K and all(len(p) == T + 1 for p in result.paths)
    front = GRID.nearest(0.0, 0.0)
    for path_ in result.paths:
        assert path_[0] == front
        assert len(set(path_)) == T + 1 and all(0 <= v < GRID.n_viewports for v in path_)
    assert tuple(result.timings) == STAGES and all(v >= 0.0 for v in result.timings.values())
    assert result.to_dict() == {"path": str(path), "score": result.score, "std": result.std,
                                "ood_distance": result.ood_distance, "ood": result.ood,
                                "paths": result.paths}
    assert result.ood_distance is not None and result.ood_distance > 0.0
    assert result.ood is (result.ood_distance > scorer.ood_threshold)


def test_score_is_the_assessor_mean_on_the_mos_scale(scorer: Scorer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """score/std are the harness's 0-1 mean/std over the K paths mapped to the MOS scale 1..5."""
    import rl_scaniqa.agents.scorer as module
    from rl_scaniqa.agents.evaluation import score_scanpaths

    captured = {}

    def spy(assessor, scanpaths, **kwargs):
        captured["out"] = score_scanpaths(assessor, scanpaths, **kwargs)
        return captured["out"]

    monkeypatch.setattr(module, "score_scanpaths", spy)
    result = scorer.score(panorama(6))
    mean, std, every = captured["out"]
    assert every.shape == (1, K)
    assert result.score == pytest.approx(1.0 + 4.0 * float(mean[0]))
    assert result.std == pytest.approx(4.0 * float(std[0]))


def test_same_seed_same_score_whatever_the_batch(model_dir: Path) -> None:
    images = [panorama(seed) for seed in range(3)]
    first = Scorer.from_pretrained(model_dir, device="cpu", seed=7)
    second = Scorer.from_pretrained(model_dir, device="cpu", seed=7)
    alone = first.score(images[1])
    assert second.score(images[1]).paths == alone.paths
    # Scored in a batch with other images, the image keeps its paths and score.
    batched = list(second.score_many(images, batch_size=3, progress=False))
    assert batched[1].paths == alone.paths
    assert batched[1].score == pytest.approx(alone.score, abs=1e-5)
    other = Scorer.from_pretrained(model_dir, device="cpu", seed=8).score(images[1])
    assert other.paths != alone.paths


def test_backbone_sees_v_plus_one_images_whatever_k_and_t(model_dir: Path) -> None:
    for k, t in ((1, 1), (K, T), (6, 9)):
        backbone = CountingBackbone(NSSBackbone())
        scorer = Scorer.from_pretrained(model_dir, backbone=backbone, device="cpu", k=k, t=t)
        result = scorer.score(panorama(3))
        assert backbone.images == GRID.n_viewports + 1
        assert len(result.paths) == k and {len(p) for p in result.paths} == {t + 1}


def test_k_and_t_are_validated(model_dir: Path) -> None:
    with pytest.raises(ScorerError, match="between 1 and 31"):
        Scorer.from_pretrained(model_dir, device="cpu", t=32)
    with pytest.raises(ScorerError, match="at least 1"):
        Scorer.from_pretrained(model_dir, device="cpu", k=0)


def test_missing_or_mismatched_model_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ScorerError, match="no RL-ScanIQA model here"):
        Scorer.from_pretrained(tmp_path, device="cpu")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    with pytest.raises(ScorerError, match="cannot load"):
        Scorer.from_pretrained(broken, device="cpu")
    with pytest.raises(ScorerError, match="unknown backbone"):
        Scorer.from_pretrained(model_dir, device="cpu", backbone="resnet")
    # Models of earlier versions are refused with the reason.
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    document = json.loads((old / "model.json").read_text())
    for version, reason in ((1, "were trained on native-resolution features"),
                            (2, "have a critic without the episode's progress")):
        (old / "model.json").write_text(json.dumps({**document, "version": version}))
        with pytest.raises(ScorerError, match=f"version {version} models {reason}: retrain"):
            Scorer.from_pretrained(old, device="cpu")


def test_a_bad_file_is_reported_and_the_others_are_scored(scorer: Scorer, folder: Path) -> None:
    files = find_images([folder])
    assert [p.relative_to(folder).as_posix() for p in files] == ["a.png", "broken.png", "square.png",
                                                                 "sub/c.jpg"]
    results = list(scorer.score_many(files, batch_size=2, progress=False))
    by_name = {Path(r.path).name: r for r in results}
    assert [r.path for r in results] == [str(p) for p in files]
    assert by_name["a.png"].ok and by_name["c.jpg"].ok
    broken = by_name["broken.png"]
    assert broken.score is None and broken.paths == [] and "broken.png" in broken.error
    assert "truncated" in broken.error or "IEND" in broken.error
    # A 1:1 image is not an equirectangular panorama: a clear error, not a silent resample.
    square = by_name["square.png"]
    assert not square.ok and "square.png" in square.error and "2:1" in square.error
    with pytest.raises(ImageError, match="square.png"):
        scorer.score(folder / "square.png")


def test_streaming_keeps_the_reader_bounded_and_stops_it(scorer: Scorer) -> None:
    pulled = []

    def images():
        for seed in range(40):
            pulled.append(seed)
            yield panorama(seed % 4)

    stream = scorer.score_many(images(), batch_size=2, queue_size=2, progress=False)
    first = next(stream)
    assert first.ok
    # Queue of 2, a batch of 2 being scored and one the reader holds: never the whole input.
    assert len(pulled) <= 2 + 2 + 2
    stream.close()
    assert not any(t.name == "rl-scaniqa-reader" and t.is_alive() for t in threading.enumerate())
    assert len(pulled) < 40


def test_previews_and_drawing(scorer: Scorer) -> None:
    result = next(scorer.score_many([panorama(4)], previews=True, progress=False))
    assert result.preview is not None and result.preview.shape == (*PREVIEW_SHAPE, 3)
    drawn = scorer.draw(result)
    assert drawn.shape == (*PREVIEW_SHAPE, 3) and not np.array_equal(drawn, result.preview)
    failed = next(scorer.score_many([np.zeros((10, 10, 3), np.uint8)], previews=True,
                                    progress=False))
    with pytest.raises(ValueError, match="no image to draw on"):
        scorer.draw(failed)


def test_cli_json_csv_and_plots(model_dir: Path, folder: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    out_csv, plots = tmp_path / "scores.csv", tmp_path / "plots"
    code = main(["score", str(folder), "--model", str(model_dir), "--device", "cpu", "--json",
                 "--csv", str(out_csv), "--plot", str(plots), "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code != 0  # two of the four images fail
    assert "2 of 4 images could not be scored" in captured.err
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [Path(r["path"]).name for r in records] == ["a.png", "broken.png", "square.png", "c.jpg"]
    good = [r for r in records if "error" not in r]
    assert len(good) == 2
    for record in good:
        assert set(record) == {"path", "score", "std", "ood_distance", "ood", "paths"}
        assert record["ood_distance"] > 0.0 and isinstance(record["ood"], bool)
        assert len(record["paths"]) == K and len(record["paths"][0]) == T + 1
    assert all(r["score"] is None and r["error"] for r in records if "error" in r)

    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [Path(r["path"]).name for r in rows] == ["a.png", "broken.png", "square.png", "c.jpg"]
    assert float(rows[0]["score"]) == pytest.approx(records[0]["score"])
    assert json.loads(rows[0]["paths"]) == records[0]["paths"]
    assert float(rows[0]["ood_distance"]) == pytest.approx(records[0]["ood_distance"])
    assert rows[0]["ood"] == str(records[0]["ood"]).lower()
    assert rows[1]["score"] == "" and rows[1]["error"] and rows[1]["ood"] == ""
    assert not list(tmp_path.glob("*.tmp*"))
    assert sorted(p.name for p in plots.iterdir()) == ["a.png", "c.png"]
    assert cv2.imread(str(plots / "a.png")).shape == (*PREVIEW_SHAPE, 3)


def test_cli_table_and_exit_codes(model_dir: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "one.png"
    write_image(path, panorama(9))
    assert main(["score", str(path), "--model", str(model_dir), "--device", "cpu", "--no-progress",
                 "--k", "2", "--t", "3"]) == 0
    out = capsys.readouterr().out
    assert "one.png" in out and "K=2, T=3" in out and "ood dist" in out
    assert main(["score", str(tmp_path / "empty-folder-does-not-exist"), "--model", str(model_dir),
                 "--device", "cpu", "--json"]) != 0
    assert "file not found" in capsys.readouterr().out
    assert main(["score", str(path), "--model", str(tmp_path)]) == 2
    assert "no RL-ScanIQA model here" in capsys.readouterr().err
    assert main(["score", str(path), "--model", str(model_dir), "--t", "32"]) == 2
    assert "between 1 and 31" in capsys.readouterr().err
    assert main(["score", str(path), "--model", str(model_dir), "--batch-size", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


@pytest.mark.parametrize(("edit", "named"), [
    (lambda doc: doc.update(feature_dim=doc["feature_dim"] + 1), "feature_dim"),
    (lambda doc: doc["settings"]["ppo"].update(embed_dim=8), "settings.ppo.embed_dim"),
    (lambda doc: doc["grid"].update(n_lon=doc["grid"]["n_lon"] - 2), "grid.n_lon"),
    (lambda doc: doc.pop("feature_stats"), "'feature_stats'"),
])
def test_an_edited_model_json_is_a_load_error_naming_the_field(
        model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, edit, named) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(model_dir, edited)
    document = json.loads((edited / "model.json").read_text())
    edit(document)
    (edited / "model.json").write_text(json.dumps(document))
    with pytest.raises(ScorerError, match=re.escape(named)):
        Scorer.from_pretrained(edited, device="cpu")
    path = tmp_path / "one.png"
    write_image(path, panorama(9))
    assert main(["score", str(path), "--model", str(edited), "--device", "cpu"]) == 2
    assert named in capsys.readouterr().err


def test_a_model_without_the_architecture_record_is_still_checked_by_tensor_shapes(
        model_dir: Path, tmp_path: Path) -> None:
    edited = tmp_path / "legacy"
    shutil.copytree(model_dir, edited)
    # Rewrite policy.zip as older versions wrote it: no architecture record in its data entry.
    with zipfile.ZipFile(model_dir / "policy.zip") as source, \
            zipfile.ZipFile(edited / "policy.zip", "w") as target:
        for name in source.namelist():
            data = source.read(name)
            if name == "data":
                data = json.dumps({"policy_class": "ScanpathPolicy"}).encode()
            target.writestr(name, data)
    assert Scorer.from_pretrained(edited, device="cpu").model.grid == GRID
    document = json.loads((edited / "model.json").read_text())
    document["settings"]["ppo"]["hidden_dim"] = 8
    (edited / "model.json").write_text(json.dumps(document))
    with pytest.raises(ScorerError, match="tensors do not fit"):
        Scorer.from_pretrained(edited, device="cpu")
