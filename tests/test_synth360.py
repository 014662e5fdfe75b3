"""Tests for the Synth360 generator: determinism, labels, layout, local caps, folder handling."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rl_scaniqa.envs.data.datasets import load_dataset
from rl_scaniqa.envs.data.datasets.synth360 import (
    LABEL_COLUMNS,
    MANIFEST_NAME,
    SYNTH360_VERSION,
    DistortionSpec,
    MosFormula,
    _combinations,
    distort,
    generate_synth360,
    plan_distortions,
    pseudo_mos,
    render_reference,
    viewport_ssim,
)
from rl_scaniqa.envs.data.distortions import DISTORTIONS, local_mask
from rl_scaniqa.envs.data.imageio import read_erp
from rl_scaniqa.envs.errors import DatasetError

# Tiny configuration: 2 contents x (3 combinations x 3 levels + reference) = 20 images of 256 x 128.
TINY = {"n_refs": 2, "width": 256, "seed": 0, "combos_per_ref": 3, "progress": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synth360(tmp_path_factory.mktemp("synth") / "tiny", **TINY)


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_layout_columns_and_manifest(tiny: Path) -> None:
    rows = _rows(tiny)
    assert len(rows) == 2 * (3 * 3 + 1)
    assert tuple(rows[0]) == LABEL_COLUMNS
    assert LABEL_COLUMNS[:6] == ("path", "mos", "ref", "distortion", "level", "scope")
    on_disk = sorted(p.name for p in (tiny / "images").iterdir())
    assert on_disk == sorted(Path(r["path"]).name for r in rows)
    for row in rows:
        name = Path(row["path"]).name
        if row["distortion"] == "reference":
            assert name == f"{row['ref']}_ref.png" and row["level"] == "0" and row["scope"] == "none"
            assert row["cap_yaw"] == ""
        else:
            assert name == f"{row['ref']}_{row['distortion']}_{row['scope']}_{row['level']}.png"
            assert row["distortion"] in DISTORTIONS and row["scope"] in ("global", "local")
            assert (row["cap_yaw"] != "") == (row["scope"] == "local")
    image = read_erp(tiny / rows[0]["path"])
    assert image.shape == (128, 256, 3)
    manifest = json.loads((tiny / MANIFEST_NAME).read_text())
    assert manifest["version"] == SYNTH360_VERSION and manifest["seed"] == 0
    assert manifest["width"] == 256 and manifest["height"] == 128 and manifest["n_images"] == 20
    assert manifest["mos_formula"]["worst_k"] == MosFormula().worst_k


def test_loads_through_the_dataset_api(tiny: Path) -> None:
    records = load_dataset("synth360", tiny)
    assert len(records) == 20
    assert {r.ref_id for r in records} == {"c000", "c001"}
    assert all(r.path.is_file() for r in records)
    assert Counter(r.extra["scope"] for r in records)["none"] == 2


def test_mos_falls_strictly_with_level_and_references_are_on_top(tiny: Path) -> None:
    groups: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    reference_mos = {}
    for row in _rows(tiny):
        if row["distortion"] == "reference":
            reference_mos[row["ref"]] = float(row["mos"])
        else:
            groups.setdefault((row["ref"], row["distortion"], row["scope"]), []).append(
                (int(row["level"]), float(row["mos"])))
    assert len(groups) == 6
    for key, items in groups.items():
        items.sort()
        mos = [m for _, m in items]
        assert [level for level, _ in items] == [1, 3, 5]
        assert np.all(np.diff(mos) < 0), f"{key}: MOS by level {mos}"
        assert max(mos) < reference_mos[key[0]], f"{key}: reference not on top"
        assert 1.0 <= min(mos)
    assert set(reference_mos.values()) == {5.0}


def test_generation_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = generate_synth360(tmp_path / "again", **TINY)
    for row in _rows(tiny):
        assert (again / row["path"]).read_bytes() == (tiny / row["path"]).read_bytes(), row["path"]
    assert (again / "labels.csv").read_bytes() == (tiny / "labels.csv").read_bytes()
    other = generate_synth360(tmp_path / "other", **{**TINY, "seed": 1})
    assert (other / "images/c000_ref.png").read_bytes() != (tiny / "images/c000_ref.png").read_bytes()


def test_render_reference_depends_on_seed_and_content() -> None:
    first = render_reference(3, width=128, seed=5)
    np.testing.assert_array_equal(first, render_reference(3, width=128, seed=5))
    assert first.shape == (64, 128, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, render_reference(3, width=128, seed=6))
    assert not np.array_equal(first, render_reference(4, width=128, seed=5))
    # Natural-image statistics, not a flat fill: plenty of grey levels and edges.
    assert len(np.unique(first)) > 100 and first.std() > 20


def test_render_reference_rejects_bad_arguments() -> None:
    for kwargs in ({"width": 100 + 1}, {"width": 32}, {"seed": -1}):
        with pytest.raises(ValueError):
            render_reference(0, **kwargs)
    with pytest.raises(ValueError):
        render_reference(-1)


def test_local_distortion_stays_inside_its_feathered_cap() -> None:
    reference = render_reference(0, width=256)
    for kind in DISTORTIONS:
        spec = plan_distortions(reference, 0, [(kind, "local")], levels=(5,))[0]
        assert spec.cap is not None
        out = distort(reference, spec)
        yaw, pitch, radius, feather = spec.cap
        mask = local_mask(128, 256, yaw, pitch, radius, feather)
        np.testing.assert_array_equal(out[mask == 0], reference[mask == 0], err_msg=kind)
        assert np.any(out[mask > 0.5] != reference[mask > 0.5]), kind


def test_local_damage_counts_more_than_its_area() -> None:
    reference = render_reference(1, width=256)
    spec = plan_distortions(reference, 1, [("noise", "local")], levels=(5,))[0]
    ssim = viewport_ssim(reference, distort(reference, spec))
    formula = MosFormula()
    damage = formula.pool(ssim)
    assert damage > np.mean(1 - ssim), "the worst-viewport term must outweigh plain averaging"
    # The most damaged viewport looks at the cap.
    worst_yaw, worst_pitch = np.radians(formula.grid.centers_deg[np.argmin(ssim)])
    cap_yaw, cap_pitch = np.radians(spec.cap[:2])
    cos_distance = (np.sin(worst_pitch) * np.sin(cap_pitch)
                    + np.cos(worst_pitch) * np.cos(cap_pitch) * np.cos(worst_yaw - cap_yaw))
    assert np.degrees(np.arccos(cos_distance)) < 45.0 + spec.cap[2]


def test_pseudo_mos_of_the_reference_is_the_top() -> None:
    reference = render_reference(2, width=256)
    assert pseudo_mos(reference, reference) == pytest.approx(5.0, abs=1e-6)
    assert MosFormula().mos(0.0) == 5.0 and MosFormula().mos(10.0) < 1.01
    with pytest.raises(ValueError):
        pseudo_mos(reference, reference[:, :128])


def test_combinations_are_balanced_with_distinct_kinds() -> None:
    plan = _combinations(0, 14, 4)
    usage = Counter(combo for combos in plan for combo in combos)
    assert len(usage) == 14 and max(usage.values()) - min(usage.values()) <= 1
    for combos in plan:
        assert len({kind for kind, _ in combos}) == len(combos) == 4
    assert _combinations(0, 5, 4) == plan[:5], "content i must not depend on n_refs"


def test_distortion_levels_share_their_random_field() -> None:
    reference = render_reference(0, width=128)
    specs = plan_distortions(reference, 0, [("noise", "global")], levels=(1, 5))
    assert isinstance(specs[0], DistortionSpec) and specs[0].seed == specs[1].seed
    mild = distort(reference, specs[0]).astype(float) - reference
    heavy = distort(reference, specs[1]).astype(float) - reference
    assert np.corrcoef(mild.ravel(), heavy.ravel())[0, 1] > 0.5


def test_rerun_is_a_noop_and_other_settings_need_overwrite(tiny: Path, tmp_path: Path) -> None:
    stamp = {p: p.stat().st_mtime_ns for p in tiny.rglob("*") if p.is_file()}
    assert generate_synth360(tiny, **TINY) == tiny
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*") if p.is_file()} == stamp

    folder = generate_synth360(tmp_path / "data", **TINY)
    with pytest.raises(DatasetError, match="seed"):
        generate_synth360(folder, **{**TINY, "seed": 3})
    generate_synth360(folder, **{**TINY, "seed": 3, "n_refs": 1, "overwrite": True})
    assert len(_rows(folder)) == 10
    assert sorted(p.name for p in (folder / "images").iterdir()) == sorted(Path(r["path"]).name for r in _rows(folder))


def test_unfinished_folder_is_regenerated(tmp_path: Path) -> None:
    folder = generate_synth360(tmp_path / "data", **{**TINY, "n_refs": 1})
    (folder / "labels.csv").unlink()
    (folder / "images" / "c000_ref.png").unlink()
    generate_synth360(folder, **{**TINY, "n_refs": 1})
    assert len(_rows(folder)) == 10 and (folder / "images" / "c000_ref.png").is_file()


def test_foreign_or_broken_folders_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a Synth360"):
        generate_synth360(foreign, **TINY)
    assert (foreign / "notes.txt").read_text() == "mine"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DatasetError, match=MANIFEST_NAME):
        generate_synth360(broken, **TINY)


@pytest.mark.parametrize("kwargs", [{"n_refs": 0}, {"width": 255}, {"levels": (0, 1)}, {"levels": ()},
                                    {"combos_per_ref": 8}, {"seed": -2}])
def test_bad_arguments_are_rejected(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_synth360(tmp_path / "x", **{**TINY, **kwargs})


def test_cli_synth_writes_under_the_data_home_without_out(tmp_path, monkeypatch, capsys):
    from rl_scaniqa.agents.cli import main

    monkeypatch.setenv("RL_SCANIQA_HOME", str(tmp_path / "home"))
    assert main(["synth", "--refs", "1", "--width", "256", "--seed", "3", "--no-progress"]) == 0
    root = tmp_path / "home" / "synth360-seed3"
    assert (root / "labels.csv").is_file() and str(root) in capsys.readouterr().out
    # Not inside the folder of the default data, which the scripts refuse to provision over.
    assert not (tmp_path / "home" / "synth360").exists()
