"""Tests for rl_scaniqa.envs.data.datasets: records, MOS scales, splits and the four loaders."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from dataset_fixtures import (
    JUFE_OFFSETS,
    cviqd_mos,
    jufe_base_mos,
    jufe_distorted_names,
    jufe_rows,
    make_csv_folder,
    make_cviqd,
    make_jufe,
    make_oiqa,
    oiqa_mos,
    write_hm_file,
    write_image,
    write_sheet,
)

from rl_scaniqa.envs.data.datasets import (
    DATASET_NAMES,
    MOS_SCALES,
    MosScale,
    PanoramaRecord,
    load_cviqd,
    load_dataset,
    load_jufe,
    load_oiqa,
    mos_scale_for,
    oiqa_group_layout,
    repeated_splits,
    split_by_reference,
)
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.errors import DatasetError, LabelError


def where(path: Path, line: int, unit: str = "line") -> str:
    """Regex for the ``<file>, line N`` location every label error carries."""
    return re.escape(f"{path}, {unit} {line}") + r"\b"


def summary(records: list[PanoramaRecord]) -> list[tuple[str, float, str, str, int]]:
    return [(r.image_id, r.mos, r.ref_id, r.distortion, r.level) for r in records]


def record(ref: str, mos: float = 3.0, name: str = "a.png") -> PanoramaRecord:
    return PanoramaRecord(path=Path(name), mos=mos, ref_id=ref, distortion="jpeg", level=1)


# ------------------------------------------------------------------------- records and scales


def test_record_defaults_and_validation(tmp_path: Path) -> None:
    extra = {"k": 1}
    rec = PanoramaRecord(
        path=str(tmp_path / "img7.png"),
        mos=np.float32(4.5),
        ref_id="r",
        distortion="blur",
        level=np.int64(2),
        extra=extra,
    )
    assert rec.path == tmp_path / "img7.png" and rec.image_id == "img7"
    assert type(rec.mos) is float and type(rec.level) is int
    extra["k"] = 2
    assert rec.extra == {"k": 1}, "a record must not alias the caller's mapping"
    assert hash(rec) == hash(
        PanoramaRecord(tmp_path / "img7.png", 4.5, "r", "blur", 2, {"other": 0})
    )
    for bad in (
        {"mos": float("nan")},
        {"level": -1},
        {"level": 1.5},
        {"ref_id": ""},
        {"distortion": ""},
    ):
        fields = {"path": "x.png", "mos": 1.0, "ref_id": "r", "distortion": "d", "level": 0, **bad}
        with pytest.raises(ValueError):
            PanoramaRecord(**fields)


def test_mos_scale_round_trip_scalar_and_array() -> None:
    scale = MosScale(1.0, 5.0)
    assert scale.normalize(1.0) == 0.0 and scale.normalize(5.0) == 1.0 and scale.normalize(3) == 0.5
    assert isinstance(scale.normalize(3), float)
    values = np.array([[1.0, 2.5], [4.0, 5.0]], dtype=np.float32)
    normalised = scale.normalize(values)
    assert normalised.shape == (2, 2) and normalised.dtype == np.float32
    np.testing.assert_allclose(scale.denormalize(normalised), values, rtol=1e-6)
    integers = scale.normalize(np.array([1, 3, 5]))
    assert integers.dtype == np.float64
    np.testing.assert_allclose(integers, [0.0, 0.5, 1.0])
    assert MosScale.from_dict(scale.to_dict()) == scale


def test_mos_scale_does_not_clip() -> None:
    scale = MOS_SCALES["cviqd"]
    assert scale.normalize(110.0) == pytest.approx(1.1)
    assert scale.normalize(-10.0) == pytest.approx(-0.1)
    assert scale.denormalize(1.2) == pytest.approx(120.0)
    for low, high in ((1.0, 1.0), (5.0, 1.0), (0.0, float("inf"))):
        with pytest.raises(ValueError):
            MosScale(low, high)


def test_mos_scale_for() -> None:
    assert mos_scale_for("CVIQD", []) == MosScale(0, 100)
    assert mos_scale_for("oiqa", []) == MosScale(1, 10)
    assert mos_scale_for("jufe", []) == MosScale(1, 5)
    assert mos_scale_for("synth360", [record("a", 9.0)]) == MosScale(1, 5)
    assert mos_scale_for("csv", [record("a", 2.0), record("b", 7.5), record("c", 3.0)]) == MosScale(
        2.0, 7.5
    )
    with pytest.raises(DatasetError, match="all 2 records have MOS 3"):
        mos_scale_for("csv", [record("a"), record("b")])
    with pytest.raises(DatasetError, match="zero records"):
        mos_scale_for("csv", [])
    with pytest.raises(DatasetError, match="known: cviqd, oiqa, jufe, synth360, real360, csv"):
        mos_scale_for("live", [])


# ------------------------------------------------------------------------------------ splits


def _refs(n_refs: int, per_ref: int = 3) -> list[str]:
    return [f"ref-{r:02d}" for r in range(n_refs) for _ in range(per_ref)]


def test_split_by_reference_separates_contents() -> None:
    refs = _refs(16)
    split = split_by_reference(refs, test_fraction=0.2, seed=3)
    assert len(split.test_refs) == 3 and len(split.train_refs) == 13  # round(3.2)
    assert not set(split.train_refs) & set(split.test_refs)
    assert sorted(split.train + split.test) == list(range(len(refs)))
    assert list(split.train) == sorted(split.train) and list(split.test) == sorted(split.test)
    assert {refs[i] for i in split.test} == set(split.test_refs)
    assert {refs[i] for i in split.train} == set(split.train_refs)
    assert split.seed == 3


def test_split_fraction_rounding_and_bounds() -> None:
    assert len(split_by_reference(_refs(258, 1)).test_refs) == 52  # 51.6
    assert len(split_by_reference(_refs(10, 1), test_fraction=0.25).test_refs) == 3  # 2.5 rounds up
    two = split_by_reference(["a", "b"], test_fraction=0.01)
    assert len(two.test_refs) == 1 and len(two.train_refs) == 1
    assert len(split_by_reference(["a", "b", "c"], test_fraction=0.99).train_refs) == 1
    with pytest.raises(DatasetError, match="at least 2 distinct"):
        split_by_reference(["a", "a", "a"])
    with pytest.raises(DatasetError):
        split_by_reference([])
    with pytest.raises(ValueError):
        split_by_reference(["a", "b"], test_fraction=1.0)
    with pytest.raises(TypeError):
        split_by_reference([1, 2])


def test_split_determinism_seeds_and_item_types() -> None:
    refs = _refs(16)
    records = [record(ref) for ref in refs]
    assert split_by_reference(refs, seed=5) == split_by_reference(records, seed=5)
    assert split_by_reference(refs, seed=5) == split_by_reference(list(refs), seed=5)
    # The test set depends on the set of contents, not on the order of the items.
    assert (
        split_by_reference(refs[::-1], seed=5).test_refs
        == split_by_reference(refs, seed=5).test_refs
    )
    test_sets = {split_by_reference(refs, seed=s).test_refs for s in range(10)}
    assert len(test_sets) > 5


def test_repeated_splits() -> None:
    refs = _refs(16)
    splits = repeated_splits(refs, n=10, seed=7)
    assert len(splits) == 10 and [s.seed for s in splits] == list(range(7, 17))
    assert splits[4] == split_by_reference(refs, seed=11)
    assert all(not set(s.train_refs) & set(s.test_refs) for s in splits)
    with pytest.raises(ValueError):
        repeated_splits(refs, n=0)


# ------------------------------------------------------------------------------------- CVIQD


@pytest.fixture(scope="module")
def cviqd_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cviqd(tmp_path_factory.mktemp("cviqd"), n_groups=16, labels="mat-cell")


def test_cviqd_release_mat_layout(cviqd_full: Path) -> None:
    records = load_dataset("cviqd", cviqd_full)
    assert len(records) == 544
    assert [r.image_id for r in records] == [f"{i:03d}" for i in range(1, 545)]
    assert Counter(r.distortion for r in records) == {
        "jpeg": 176,
        "avc": 176,
        "hevc": 176,
        "reference": 16,
    }
    assert sorted({r.ref_id for r in records}) == [f"cviqd-{g:02d}" for g in range(1, 17)]
    by_id = {r.image_id: r for r in records}
    assert (by_id["001"].distortion, by_id["001"].level, by_id["001"].ref_id) == (
        "jpeg",
        1,
        "cviqd-01",
    )
    assert (by_id["011"].distortion, by_id["011"].level) == ("jpeg", 11)
    assert (by_id["012"].distortion, by_id["012"].level) == ("avc", 1)
    assert (by_id["033"].distortion, by_id["033"].level) == ("hevc", 11)
    assert (by_id["034"].distortion, by_id["034"].level, by_id["034"].ref_id) == (
        "reference",
        0,
        "cviqd-01",
    )
    assert (by_id["035"].distortion, by_id["035"].ref_id) == ("jpeg", "cviqd-02")
    assert by_id["544"].is_reference and by_id["544"].ref_id == "cviqd-16"
    assert all(r.mos == cviqd_mos(r.extra["index"]) for r in records)
    assert all(r.path == cviqd_full / f"{r.image_id}.png" for r in records)
    for ref_id in {r.ref_id for r in records}:
        group = [r for r in records if r.ref_id == ref_id]
        assert len(group) == 34 and sum(r.is_reference for r in group) == 1


def test_cviqd_vector_mat_and_text_labels_agree(tmp_path: Path) -> None:
    cell = load_cviqd(make_cviqd(tmp_path / "cell", n_groups=2))
    vector = load_cviqd(make_cviqd(tmp_path / "vector", n_groups=2, labels="mat-vector"))
    text_root = make_cviqd(tmp_path / "text", n_groups=2, labels="txt")
    text = load_cviqd(text_root)
    explicit = load_cviqd(text_root, labels=text_root / "cviqd_labels.txt")
    assert summary(cell) == summary(vector) == summary(text) == summary(explicit)
    assert len(cell) == 68


def test_cviqd_label_for_missing_image(tmp_path: Path) -> None:
    root = make_cviqd(tmp_path, n_groups=2, labels="txt")
    (root / "040.png").unlink()
    with pytest.raises(
        DatasetError, match=where(root / "cviqd_labels.txt", 40) + ".*040.png does not exist"
    ):
        load_cviqd(root)


def test_cviqd_missing_image_in_mat_names_entry(tmp_path: Path) -> None:
    root = make_cviqd(tmp_path, n_groups=2)
    (root / "005.png").unlink()
    with pytest.raises(DatasetError, match=where(root / "CVIQ.mat", 5, "entry") + ".*005.png"):
        load_cviqd(root)


def test_cviqd_unlabelled_image(tmp_path: Path) -> None:
    root = make_cviqd(tmp_path, n_groups=2)
    write_image(root / "069.png")
    with pytest.raises(
        LabelError, match=re.escape(f"{root / 'CVIQ.mat'}: no label for 1 image(s)") + ".*069.png"
    ):
        load_cviqd(root)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("003.png 1.0 extra", "expected 2 fields"),
        ("003.png abc", "score 'abc' is not a number"),
        ("003.png nan", "score 'nan' is not finite"),
        ("001.png 5.0", "duplicate label for '001.png'"),
        ("photo.png 5.0", "not of the form NNN.png"),
    ],
)
def test_cviqd_malformed_text_rows(tmp_path: Path, line: str, message: str) -> None:
    root = make_cviqd(tmp_path, n_groups=1, labels="txt")
    label = root / "cviqd_labels.txt"
    lines = label.read_text().splitlines()
    lines[2] = line
    label.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelError, match=where(label, 3) + ".*" + re.escape(message)):
        load_cviqd(root)


def test_cviqd_same_image_twice_under_two_names(tmp_path: Path) -> None:
    root = make_cviqd(tmp_path, n_groups=1, labels="txt")
    label = root / "cviqd_labels.txt"
    label.write_text(label.read_text() + "1 50.0\n")
    with pytest.raises(LabelError, match=where(label, 35) + ".*labelled twice"):
        load_cviqd(root)


def test_cviqd_bad_label_files(tmp_path: Path) -> None:
    root = make_cviqd(tmp_path, n_groups=1, labels="txt")
    label = root / "cviqd_labels.txt"
    label.write_text("\n  \n")
    with pytest.raises(LabelError, match=re.escape(f"label file {label} is empty")):
        load_cviqd(root)
    label.unlink()
    with pytest.raises(LabelError, match=re.escape(f"no CVIQD label file in {root}")):
        load_cviqd(root)
    with pytest.raises(LabelError, match="label file not found"):
        load_cviqd(root, labels="nope.txt")
    (root / "a.txt").write_text("001.png 1\n")
    (root / "b.txt").write_text("001.png 1\n")
    with pytest.raises(LabelError, match="several possible CVIQD label files.*a.txt, b.txt"):
        load_cviqd(root)


def test_cviqd_bad_mat_files(tmp_path: Path) -> None:
    root = make_cviqd(tmp_path, n_groups=1, labels="mat-vector")
    scipy.io.savemat(root / "CVIQ.mat", {"MOS": np.ones(34)})
    with pytest.raises(
        LabelError,
        match=re.escape(f"{root / 'CVIQ.mat'}: no variable 'CVIQ' (variables found: MOS)"),
    ):
        load_cviqd(root)
    scipy.io.savemat(root / "CVIQ.mat", {"CVIQ": np.ones((34, 3))})
    with pytest.raises(LabelError, match=r"shape \(34, 3\)"):
        load_cviqd(root)
    values = np.ones(34)
    values[9] = np.nan
    scipy.io.savemat(root / "CVIQ.mat", {"CVIQ": values})
    with pytest.raises(LabelError, match=where(root / "CVIQ.mat", 10, "entry") + ".*not finite"):
        load_cviqd(root)
    (root / "CVIQ.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(LabelError, match="not a readable MATLAB file"):
        load_cviqd(root)


def test_cviqd_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_cviqd(tmp_path / "missing")
    root = make_cviqd(tmp_path / "a", n_groups=1)
    write_image(root / "preview.png")
    with pytest.raises(DatasetError, match="unexpected image .*preview.png"):
        load_cviqd(root)
    root = make_cviqd(tmp_path / "b", n_groups=1)
    write_image(root / "1.png")
    with pytest.raises(DatasetError, match="are both CVIQD image number 1"):
        load_cviqd(root)


# -------------------------------------------------------------------------------------- OIQA


@pytest.fixture(scope="module")
def oiqa_full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_oiqa(tmp_path_factory.mktemp("oiqa"), n_refs=16)


def test_oiqa_layout(oiqa_full: Path) -> None:
    records = load_dataset("oiqa", oiqa_full)
    assert len(records) == 320
    assert [r.extra["index"] for r in records] == list(range(1, 321))
    assert Counter(r.distortion for r in records) == {
        "jpeg": 80,
        "jpeg2000": 80,
        "noise": 80,
        "blur": 80,
    }
    assert Counter((r.distortion, r.level) for r in records) == {
        pair: 16 for pair in oiqa_group_layout()
    }
    assert sorted(Counter(r.ref_id for r in records).items()) == [
        (f"oiqa-{r:02d}", 20) for r in range(1, 17)
    ]
    by_id = {r.image_id: r for r in records}
    # The release readme's order: JPEG, JPEG2000, noise, blur, 5 levels each.
    assert [
        (by_id[f"img{i}"].distortion, by_id[f"img{i}"].level) for i in (1, 5, 6, 11, 16, 20)
    ] == [
        ("jpeg", 1),
        ("jpeg", 5),
        ("jpeg2000", 1),
        ("noise", 1),
        ("blur", 1),
        ("blur", 5),
    ]
    assert by_id["img21"].ref_id == "oiqa-02" and by_id["img21"].distortion == "jpeg"
    assert all(r.mos == oiqa_mos(r.extra["index"]) for r in records)
    assert not any(r.is_reference for r in records)


def test_oiqa_release_folder_png_and_custom_layout(tmp_path: Path) -> None:
    root = make_oiqa(tmp_path, n_refs=2, suffix=".png", release_layout=True)
    records = load_oiqa(root)
    assert len(records) == 40 and records[0].path == root / "distorted_images" / "img1.png"
    layout = oiqa_group_layout(("jpeg", "jpeg2000", "blur", "noise"))
    custom = {r.image_id: r for r in load_dataset("oiqa", root, group_layout=layout)}
    assert (custom["img11"].distortion, custom["img16"].distortion) == ("blur", "noise")
    # A 10-image group regroups the 40 images into 4 references.
    small = load_oiqa(root, group_layout=oiqa_group_layout(("jpeg", "blur")))
    assert len({r.ref_id for r in small}) == 4
    with pytest.raises(ValueError, match="twice"):
        load_oiqa(root, group_layout=[("jpeg", 1), ("jpeg", 1)])


def test_oiqa_errors(tmp_path: Path) -> None:
    root = make_oiqa(tmp_path, n_refs=1)
    label = root / "oiqa_mos.txt"
    original = label.read_text()
    label.write_text(original + "img21 5.0\n")
    with pytest.raises(DatasetError, match=where(label, 21) + ".*img21 does not exist"):
        load_oiqa(root)
    label.write_text(original.replace("img7 ", "image7 "))
    with pytest.raises(LabelError, match=where(label, 7) + ".*not of the form img<N>"):
        load_oiqa(root)
    label.write_text(original.replace("img7 ", "img7.jpg "))
    assert len(load_oiqa(root)) == 20, "a name with its extension is the same image"
    label.write_text(original.replace("img7 ", "img3 "))
    with pytest.raises(LabelError, match=where(label, 7) + ".*duplicate label for 'img3'"):
        load_oiqa(root)
    label.write_text(original.replace("img7 ", "img3.jpg "))
    with pytest.raises(LabelError, match=where(label, 7) + ".*img3 is labelled twice"):
        load_oiqa(root)
    label.write_text("\n".join(original.splitlines()[:-1]) + "\n")
    with pytest.raises(
        LabelError, match=re.escape(f"{label}: no label for 1 image(s)") + ".*img20.jpg"
    ):
        load_oiqa(root)
    label.write_text(original)
    write_image(root / "img2.png")
    with pytest.raises(DatasetError, match="are both OIQA image number 2"):
        load_oiqa(root)


# -------------------------------------------------------------------------------------- JUFE


def test_jufe_xlsx_mean_condition(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=3, fmt="xlsx")
    records = load_dataset("jufe", root)
    assert len(records) == 3 + 12
    # Reference first, then by distortion name: blur, brightness, noise, stitching.
    assert [r.image_id for r in records[:5]] == [
        "1",
        "1_len3_gb_1",
        "1_len2_bd_2",
        "1_len1_gn_3",
        "1_len2_st_2",
    ]
    assert [r.ref_id for r in records] == ["jufe-001"] * 5 + ["jufe-002"] * 5 + ["jufe-003"] * 5
    assert Counter(r.distortion for r in records) == {
        "reference": 3,
        "brightness": 3,
        "blur": 3,
        "noise": 3,
        "stitching": 3,
    }
    for rec in records:
        assert rec.mos == pytest.approx(jufe_base_mos(rec.image_id))
        assert rec.extra["condition"] == "mean"
        assert rec.extra["conditions_used"] == ("bad-15s", "bad-5s", "good-15s", "good-5s")
        assert rec.extra["starting_points"] == ("bad", "good")
        assert rec.extra["condition_mos"]["good-15s"] == pytest.approx(
            jufe_base_mos(rec.image_id) + JUFE_OFFSETS[("good", 15)]
        )
        assert rec.extra["condition_std"] == {key: 0.5 for key in rec.extra["conditions_used"]}
        assert rec.extra["scene"] == f"scene{rec.image_id.split('_')[0]}"
        if rec.is_reference:
            assert (
                rec.level == 0
                and "len" not in rec.extra
                and rec.path == root / "ref" / f"{rec.image_id}.png"
            )
        else:
            _, length, _, level = rec.image_id.split("_")
            assert rec.level == int(level) and rec.extra["len"] == int(length[3:])
            assert rec.path == root / "dis" / f"{rec.image_id}.png"


@pytest.mark.parametrize(
    ("condition", "keys", "offset"),
    [
        ("good-15s", ("good-15s",), 0.4),
        ("Bad_5", ("bad-5s",), -0.2),
        ("good", ("good-15s", "good-5s"), 0.3),
        ("15s", ("bad-15s", "good-15s"), 0.0),
    ],
)
def test_jufe_condition_option(
    tmp_path: Path, condition: str, keys: tuple[str, ...], offset: float
) -> None:
    records = load_jufe(make_jufe(tmp_path, n_refs=2, fmt="csv"), condition=condition)
    for rec in records:
        assert rec.extra["conditions_used"] == keys
        assert rec.mos == pytest.approx(jufe_base_mos(rec.image_id) + offset)
        assert len(rec.extra["condition_mos"]) == 4
        assert rec.extra["starting_points"] == tuple(sorted({k.split("-")[0] for k in keys}))


def test_jufe_condition_errors(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=1, fmt="csv")
    for bad in ("best", "good-15s-x", "middle-5s", "0s"):
        with pytest.raises(ValueError, match="unknown JUFE condition"):
            load_jufe(root, condition=bad)
    with pytest.raises(
        DatasetError,
        match="condition 'good-10s' matches no rows.*bad-15s, bad-5s, good-15s, good-5s",
    ):
        load_jufe(root, condition="good-10s")


def test_jufe_xls_and_csv_read_like_xlsx(tmp_path: Path) -> None:
    def summary(root: Path) -> list[tuple[str, float, str, int]]:
        return [(r.image_id, round(r.mos, 9), r.distortion, r.level) for r in load_jufe(root)]

    xlsx = summary(make_jufe(tmp_path / "x", n_refs=2, fmt="xlsx"))
    assert summary(make_jufe(tmp_path / "s", n_refs=2, fmt="xls")) == xlsx
    assert summary(make_jufe(tmp_path / "c", n_refs=2, fmt="csv")) == xlsx


def test_jufe_unlabelled_references_are_not_records(tmp_path: Path) -> None:
    records = load_jufe(make_jufe(tmp_path, n_refs=2, fmt="xlsx", label_refs=False))
    assert len(records) == 8 and not any(r.is_reference for r in records)


def _rewrite_jufe_sheet(root: Path, rows: list[list[object]]) -> Path:
    return write_sheet(root / "jufe_mos.xlsx", rows)


def test_jufe_row_errors(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=1, fmt="xlsx")
    rows = jufe_rows(1)
    sheet = root / "jufe_mos.xlsx"

    def expect(error: type[Exception], changed: list[list[object]], pattern: str) -> None:
        _rewrite_jufe_sheet(root, changed)
        with pytest.raises(error, match=pattern):
            load_jufe(root)

    # Sheet row numbers are 1-based with the header on row 1, so rows[k] is on row k + 1.
    expect(
        LabelError,
        rows[:6] + rows[7:],
        re.escape("image '1_len2_bd_2' has no row for condition(s) good-15s"),
    )
    expect(
        LabelError,
        rows + [rows[5]],
        where(sheet, 22, "row") + ".*second row for image '1_len2_bd_2' under condition good-5s",
    )
    changed = [list(r) for r in rows]
    changed[9][1] = "9_len1_bd_1.png"
    expect(
        DatasetError,
        changed,
        where(sheet, 10, "row") + ".*labelled image '9_len1_bd_1' does not exist",
    )
    changed = [list(r) for r in rows]
    changed[3][2] = "n/a"
    expect(LabelError, changed, where(sheet, 4, "row") + ".*average 'n/a' is not a number")
    changed = [list(r) for r in rows]
    changed[3][7] = "middle"
    expect(LabelError, changed, where(sheet, 4, "row") + ".*startingPoint 'middle'")
    changed = [list(r) for r in rows]
    changed[3][6] = "long"
    expect(LabelError, changed, where(sheet, 4, "row") + ".*explorationTime 'long'")
    changed = [list(r) for r in rows]
    changed[3][8] = "other scene"
    expect(LabelError, changed, where(sheet, 4, "row") + ".*Scene 'other scene' differs")
    expect(
        LabelError,
        [[c for i, c in enumerate(r) if i != 2] for r in rows],
        where(sheet, 1, "row") + ".*lacks column\\(s\\) average",
    )
    expect(LabelError, rows[:1], "no data rows after the header")
    expect(
        LabelError,
        [r for r in rows if "_gn_" not in str(r[1])],
        re.escape(f"{sheet}: no label for 1 image(s)") + ".*1_len1_gn_3.png",
    )


def test_jufe_csv_row_with_wrong_column_count(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=1, fmt="csv")
    label = root / "jufe_mos.csv"
    lines = label.read_text().splitlines()
    lines[4] = lines[4] + ",surplus"
    label.write_text("\n".join(lines) + "\n")
    with pytest.raises(LabelError, match=where(label, 5) + ".*expected 9 columns"):
        load_jufe(root)


def test_jufe_layout_errors(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=1, fmt="csv")
    write_image(root / "dis" / "1_bd_1.png")
    with pytest.raises(DatasetError, match="unexpected image .*1_bd_1.png"):
        load_jufe(root)
    (root / "dis" / "1_bd_1.png").unlink()
    write_image(root / "ref" / "first.png")
    with pytest.raises(DatasetError, match="unexpected image .*first.png"):
        load_jufe(root)
    with pytest.raises(DatasetError, match="no dis/ folder"):
        load_jufe(tmp_path / "ref")
    (root / "ref" / "first.png").unlink()
    (root / "jufe_mos.csv").unlink()
    with pytest.raises(LabelError, match=r"no JUFE label file .*\*\.xls, \*\.xlsx, \*\.csv"):
        load_jufe(root)


# ------------------------------------------------------------------------ JUFE head movements


def test_jufe_head_movement_scanpaths(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=1, fmt="csv")
    grid = ViewportGrid()
    stem = jufe_distorted_names(1)[0]
    samples_a = [
        (10.0, 5.0, 0),
        (10.0, 10.0, 1),
        (15.0, 12.0, 1),
        (100.0, -30.0, 1),
        (-170.0, 80.0, 1),
        (-170.0, 80.0, 0),
    ]
    samples_b = [(0.0, 0.0, 0)]
    samples_c = [(-60.0, 30.0, 1), (-60.0, 30.0, 1)]
    write_hm_file(root / "HMData" / stem / "10.csv", samples_b)
    write_hm_file(root / "HMData" / stem / "2.csv", samples_a)
    write_hm_file(root / "HMData" / "1" / "s1.csv", samples_c, extra_columns=False)
    records = {r.image_id: r for r in load_jufe(root, hm_root="HMData")}

    expected_a = [grid.nearest(lon, lat) for lon, lat, valid in samples_a if valid]
    collapsed = [i for k, i in enumerate(expected_a) if k == 0 or i != expected_a[k - 1]]
    assert collapsed == [grid.nearest(10, 10), grid.nearest(100, -30), grid.nearest(-170, 80)]
    distorted = records[stem].extra
    assert distorted["human_scanpaths"] == [collapsed, []]
    assert distorted["human_scanpath_subjects"] == ["2", "10"]
    assert distorted["human_scanpath_grid"] == grid.key()
    assert (distorted["start_yaw"], distorted["start_pitch"]) == (10.0, 10.0)
    assert records["1"].extra["human_scanpaths"] == [[grid.nearest(-60, 30)]]
    other = records[jufe_distorted_names(1)[1]].extra
    assert other["human_scanpaths"] == [] and "start_yaw" not in other

    coarse = load_jufe(root, hm_root=root / "HMData", grid=ViewportGrid(n_lon=4, n_lat=2))
    assert {r.image_id: r for r in coarse}["1"].extra["human_scanpath_grid"] == ViewportGrid(
        n_lon=4, n_lat=2
    ).key()


def test_jufe_head_movement_lon_conventions(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=1, fmt="csv")
    signed = [(-90.0, 0.0, 1), (170.0, 20.0, 1), (-10.0, -50.0, 1)]
    write_hm_file(root / "signed" / "1" / "a.csv", signed)
    write_hm_file(
        root / "wrapped" / "1" / "a.csv", [(lon % 360.0, lat, v) for lon, lat, v in signed]
    )
    # records[0] is the reference "1", the image these paths belong to.
    a = load_jufe(root, hm_root="signed")[0].extra
    b = load_jufe(root, hm_root="wrapped")[0].extra
    assert (
        a["human_scanpaths"]
        == b["human_scanpaths"]
        == [[ViewportGrid().nearest(lon, lat) for lon, lat, _ in signed]]
    )
    assert b["start_yaw"] == pytest.approx(-90.0)
    forced = load_jufe(root, hm_root="wrapped", hm_lon_convention="signed")[0].extra
    assert forced["start_yaw"] == pytest.approx(270.0)
    write_hm_file(root / "wrapped" / "1" / "b.csv", [(-20.0, 0.0, 1)])
    with pytest.raises(DatasetError, match="mix negative lon with lon above 180"):
        load_jufe(root, hm_root="wrapped")
    with pytest.raises(ValueError, match="hm_lon_convention"):
        load_jufe(root, hm_root="wrapped", hm_lon_convention="radians")


def test_jufe_vectorised_nearest_matches_grid_nearest_on_ties(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=1, fmt="csv")
    rng = np.random.default_rng(0)
    # Random directions plus exact ties: cell borders in yaw and pitch, the poles.
    samples = [
        (float(lon), float(lat), 1)
        for lon, lat in zip(rng.uniform(-180, 180, 300), rng.uniform(-90, 90, 300), strict=True)
    ]
    samples += [
        (-135.0, 0.0, 1),
        (0.0, 0.0, 1),
        (45.0, 45.0, 1),
        (180.0, -45.0, 1),
        (90.0, 90.0, 1),
        (-30.0, -90.0, 1),
        # Ties where a plain argmax of the float dot products picks a higher index.
        (45.0, 0.0, 1),
        (135.0, -22.5, 1),
        (-45.0, 33.75, 1),
        (-112.5, -45.0, 1),
        (180.0, -67.5, 1),
    ]
    write_hm_file(root / "HM" / "1" / "a.csv", samples)
    path = load_jufe(root, hm_root="HM")[0].extra["human_scanpaths"][0]
    expected = [ViewportGrid().nearest(lon, lat) for lon, lat, _ in samples]
    assert path == [i for k, i in enumerate(expected) if k == 0 or i != expected[k - 1]]


def test_jufe_head_movement_errors(tmp_path: Path) -> None:
    root = make_jufe(tmp_path, n_refs=1, fmt="csv")
    hm_file = write_hm_file(root / "HM" / "1" / "a.csv", [(0.0, 0.0, 1), (10.0, 0.0, 2)])
    with pytest.raises(LabelError, match=where(hm_file, 3) + ".*valid '2'"):
        load_jufe(root, hm_root="HM")
    write_hm_file(hm_file, [(0.0, 95.0, 1)])
    with pytest.raises(LabelError, match=where(hm_file, 2) + ".*lat 95 is outside"):
        load_jufe(root, hm_root="HM")
    hm_file.write_text("lon,lat\n0,0\n")
    with pytest.raises(LabelError, match=where(hm_file, 1) + ".*lacks column\\(s\\) valid"):
        load_jufe(root, hm_root="HM")
    hm_file.write_text("lon,lat,valid\nx,0,1\n")
    with pytest.raises(LabelError, match=where(hm_file, 2) + ".*lon 'x' is not a number"):
        load_jufe(root, hm_root="HM")
    hm_file.unlink()
    with pytest.raises(DatasetError, match="holds no .csv files"):
        load_jufe(root, hm_root="HM")
    write_hm_file(root / "HM" / "7_len1_bd_1" / "a.csv", [(0.0, 0.0, 1)])
    write_hm_file(hm_file, [(0.0, 0.0, 1)])
    with pytest.raises(DatasetError, match="names no JUFE image"):
        load_jufe(root, hm_root="HM")
    with pytest.raises(DatasetError, match="head-movement root .* does not exist"):
        load_jufe(root, hm_root="absent")


# --------------------------------------------------------------------------------------- csv

CSV_ROWS = [
    ["images/ref_a.png", 4.5, "a", "reference", 0, "global"],
    ["images/a_blur_2.png", 3.25, "a", "blur", 2, "local"],
    ["images/b_noise_1.png", 2.0, "b", "noise", "1.0", "global"],
]


def test_csv_folder_and_synth360(tmp_path: Path) -> None:
    root = make_csv_folder(tmp_path, CSV_ROWS)
    # Without the generator's manifest the folder is not Synth360, whatever its labels say.
    with pytest.raises(DatasetError, match="not a Synth360 dataset"):
        load_dataset("synth360", root)
    (root / "synth360.json").write_text('{"dataset": "other"}')
    with pytest.raises(DatasetError, match="not a Synth360 manifest"):
        load_dataset("synth360", root)
    (root / "synth360.json").write_text('{"dataset": "synth360"}')
    for name in ("csv", "synth360"):
        records = load_dataset(name, root)
        assert [r.image_id for r in records] == [row[0] for row in CSV_ROWS]
        assert [r.ref_id for r in records] == ["a", "a", "b"]
        assert [(r.distortion, r.level) for r in records] == [
            ("reference", 0),
            ("blur", 2),
            ("noise", 1),
        ]
        assert [r.mos for r in records] == [4.5, 3.25, 2.0]
        assert [r.extra for r in records] == [
            {"scope": "global"},
            {"scope": "local"},
            {"scope": "global"},
        ]
        assert records[0].path == root / "images" / "ref_a.png"
    assert mos_scale_for("synth360", records) == MosScale(1, 5)
    assert mos_scale_for("csv", records) == MosScale(2.0, 4.5)


def test_csv_minimal_columns_defaults_and_extra(tmp_path: Path) -> None:
    root = make_csv_folder(
        tmp_path,
        [["x/one.jpg", 1.5, "outdoor"], ["two.png", 2.5, ""]],
        header=["Path", " MOS ", "note"],
    )
    records = load_dataset("csv", root)
    assert [(r.ref_id, r.distortion, r.level) for r in records] == [
        ("one", "unknown", 0),
        ("two", "unknown", 0),
    ]
    assert [r.extra for r in records] == [{"note": "outdoor"}, {"note": ""}]
    absolute = make_csv_folder(
        tmp_path / "abs", [[str(root / "two.png"), 3.0]], header=["path", "mos"]
    )
    # An absolute path elsewhere needs the opt-in; one inside the root does not.
    assert load_dataset("csv", absolute, allow_outside_root=True)[0].path == root / "two.png"
    inside = make_csv_folder(tmp_path / "in", [[str(tmp_path / "in" / "a.png"), 3.0]],
                             header=["path", "mos"])
    assert load_dataset("csv", inside)[0].path == tmp_path / "in" / "a.png"


@pytest.mark.parametrize(
    ("row", "error", "message"),
    [
        (["images/ref_a.png", "4", "a", "reference", "0"], LabelError, "expected 6 columns"),
        (
            ["images/b.png", "high", "b", "noise", "1", "global"],
            LabelError,
            "mos 'high' is not a number",
        ),
        (
            ["images/b.png", "NaN", "b", "noise", "1", "global"],
            LabelError,
            "mos 'NaN' is not finite",
        ),
        (
            ["images/b.png", "2", "b", "noise", "1.5", "global"],
            LabelError,
            "level '1.5' is not a non-negative integer",
        ),
        (
            ["images/a_blur_2.png", "2", "b", "noise", "1", "global"],
            LabelError,
            "is listed twice (first at",
        ),
        (
            ["images/missing.png", "2", "b", "noise", "1", "global"],
            DatasetError,
            "missing.png does not exist",
        ),
        (["", "2", "b", "noise", "1", "global"], LabelError, "path is empty"),
    ],
)
def test_csv_bad_rows(tmp_path: Path, row: list[str], error: type[Exception], message: str) -> None:
    root = make_csv_folder(tmp_path, CSV_ROWS)
    label = root / "labels.csv"
    label.write_text(label.read_text() + ",".join(row) + "\n")
    with pytest.raises(error, match=where(label, 5) + ".*" + re.escape(message)):
        load_dataset("csv", root)


def test_csv_bad_files(tmp_path: Path) -> None:
    root = make_csv_folder(tmp_path, CSV_ROWS)
    label = root / "labels.csv"
    label.write_text("")
    with pytest.raises(LabelError, match=re.escape(f"label file {label} is empty")):
        load_dataset("csv", root)
    label.write_text("path,mos,ref\n")
    with pytest.raises(LabelError, match=re.escape(f"{label}: no data rows")):
        load_dataset("csv", root)
    label.write_text("path,score\nimages/ref_a.png,1\n")
    with pytest.raises(LabelError, match=where(label, 1) + ".*lacks column\\(s\\) mos"):
        load_dataset("csv", root)
    label.write_text("path,mos,mos\nimages/ref_a.png,1,2\n")
    with pytest.raises(LabelError, match="column 'mos' appears twice"):
        load_dataset("csv", root)
    label.unlink()
    with pytest.raises(LabelError, match=re.escape(f"label file {label} does not exist")):
        load_dataset("csv", root)


# ------------------------------------------------------------------------------ load_dataset


def test_load_dataset_names_and_options(tmp_path: Path) -> None:
    assert DATASET_NAMES == ("cviqd", "oiqa", "jufe", "csv", "synth360", "real360")
    with pytest.raises(
        DatasetError, match="unknown dataset 'live'; known: cviqd, oiqa, jufe, csv, synth360"
    ):
        load_dataset("live", tmp_path)
    with pytest.raises(
        DatasetError,
        match="does not take option\\(s\\) conditon; accepted: labels, condition, hm_root",
    ):
        load_dataset("jufe", tmp_path, conditon="mean")
    root = make_csv_folder(tmp_path, CSV_ROWS)
    assert len(load_dataset(" CSV ", root)) == 3


def test_records_split_end_to_end(cviqd_full: Path) -> None:
    records = load_cviqd(cviqd_full)
    split = split_by_reference(records, seed=1)
    assert len(split.test) == 3 * 34 and len(split.train) == 13 * 34
    assert not {records[i].ref_id for i in split.train} & {records[i].ref_id for i in split.test}


def test_fit_val_test_split_is_the_two_step_split_by_reference() -> None:
    from rl_scaniqa.envs.data.datasets import fit_val_test_split

    refs = [f"r{k % 17}" for k in range(170)]
    split = fit_val_test_split(refs, test_fraction=0.2, val_fraction=0.25, seed=3)
    outer = split_by_reference(refs, test_fraction=0.2, seed=3)
    inner = split_by_reference([refs[i] for i in outer.train], test_fraction=0.25, seed=4)
    assert split.test == outer.test and split.test_refs == outer.test_refs
    assert split.fit == tuple(outer.train[i] for i in inner.train)
    assert split.val == tuple(outer.train[i] for i in inner.test)
    sides = [{refs[i] for i in part} for part in (split.fit, split.val, split.test)]
    assert all(a.isdisjoint(b) for a, b in [(sides[0], sides[1]), (sides[0], sides[2]), (sides[1], sides[2])])
    assert fit_val_test_split(refs, val_fraction=0.0, seed=3).val == ()


@pytest.mark.parametrize("escape", ["../outside.png", "ABSOLUTE", "link/inside.png"])
def test_csv_paths_outside_the_root_are_refused_unless_allowed(tmp_path: Path, escape) -> None:
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "inside.png").write_bytes(b"x")
    (root / "link").symlink_to(tmp_path / "elsewhere")
    (root / "ok.png").write_bytes(b"x")
    written = str(outside) if escape == "ABSOLUTE" else escape
    (root / "labels.csv").write_text(f"path,mos\nok.png,1\n{written},2\n")
    with pytest.raises(LabelError, match=r"labels.csv, line 3: image .* lies outside the dataset"):
        load_dataset("csv", root)
    with pytest.raises(DatasetError, match="expected true or false"):
        load_dataset("csv", root, allow_outside_root="maybe")
    records = load_dataset("csv", root, allow_outside_root="true")
    assert [r.mos for r in records] == [1.0, 2.0]

