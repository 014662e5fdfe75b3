"""experiments/reproduce.py end to end on a tiny random cache, resumption, and task building."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rl_scaniqa.envs.features.random_cache import random_feature_cache
from json_output import json_lines

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "reproduce.py"

TINY = ["--eval-paths", "2", "--k-values", "1,2", "--settings.total-timesteps", "140",
        "--settings.n-paths", "2", "--settings.path-length", "3", "--settings.ppo.n-envs", "2",
        "--settings.ppo.n-steps", "35", "--settings.ppo.batch-size", "35",
        "--settings.ppo.n-epochs", "1", "--settings.ppo.embed-dim", "8",
        "--settings.ppo.hidden-dim", "8", "--settings.ppo.attention-dim", "8",
        "--settings.assessor.warmup-steps", "5", "--settings.assessor.cotrain-steps", "4",
        "--settings.assessor.batch-size", "8", "--settings.assessor.hidden-dim", "16",
        "--settings.assessor.attention-dim", "8", "--json"]  # progress on: it must stay on stderr


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def tiny_cache(distortions=None):
    cache = random_feature_cache(30, dim=8, n_refs=10, seed=5)
    if distortions is not None:
        cache = dataclasses.replace(cache, distortions=list(distortions))
    return cache


def with_caps(cache):
    """Synth360-like labels: two images in three are local distortions with a damaged cap (so a
    test split of 6 images has enough of them for an SRCC), the third has none."""
    rng = np.random.default_rng(11)
    caps = np.full((len(cache), 3), np.nan, dtype=np.float32)
    local = np.flatnonzero(np.arange(len(cache)) % 3 != 2)
    caps[local] = np.stack([rng.uniform(-180, 180, local.size), rng.uniform(-60, 60, local.size),
                            rng.uniform(25, 40, local.size)], axis=1)
    return dataclasses.replace(cache, caps=caps)


def assert_diagnostics(reproduce, summary):
    """Every entry carries srcc, srcc_local and damage_hit_rate as {mean, std} objects."""
    assert any("oracle" in name.lower() and "anti" not in name.lower() for name in summary)
    assert any("anti" in name.lower() and "oracle" not in name.lower() for name in summary)
    for name, entry in summary.items():
        for metric in ("srcc", "srcc_local", "damage_hit_rate"):
            assert set(entry[metric]) == {"mean", "std"}, (name, metric)
        assert entry["srcc_local"]["mean"] is not None, name
        if name == reproduce.SVR:
            assert entry["damage_hit_rate"]["mean"] is None  # no paths
            assert entry["viewports_seen"]["mean"] is None
        else:
            assert 0.0 <= entry["damage_hit_rate"]["mean"] <= 1.0, name
            assert 1.0 <= entry["viewports_seen"]["mean"] <= tiny_cache().grid.n_viewports, name
    oracle, anti = summary[reproduce.ORACLE], summary[reproduce.ANTI]
    assert oracle["damage_hit_rate"]["mean"] > summary[reproduce.RANDOM]["damage_hit_rate"]["mean"]
    assert anti["damage_hit_rate"]["mean"] == 0.0


@pytest.fixture
def fake_data(reproduce, monkeypatch):
    """Replace dataset loading by random caches with caps; counts trainings."""
    cache = with_caps(tiny_cache())
    human = {image: [[12, 13, 20, 4]] for image in cache.image_ids[::2]}
    calls = {"trainings": 0, "sources": []}

    def load_source(name, root, options, args):
        calls["sources"].append(name)
        return reproduce.Source(name=name, cache=cache, human=human)

    original = reproduce.cotrain

    def counting_cotrain(*args, **kwargs):
        calls["trainings"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(reproduce, "load_source", load_source)
    monkeypatch.setattr(reproduce, "cotrain", counting_cotrain)
    return calls


def last_json(capsys):
    return json_lines(capsys.readouterr().out)[-1]


@pytest.mark.slow
def test_in_dataset_end_to_end_and_resume(reproduce, fake_data, tmp_path, capsys):
    out = tmp_path / "run"
    reproduce.main(["--protocol", "in-dataset", "--splits", "1", "--out", str(out), *TINY])
    summary = last_json(capsys)
    expected = {reproduce.RL, reproduce.RANDOM, reproduce.EQUATOR, reproduce.ENTROPY,
                reproduce.CUBE, reproduce.CEILING, reproduce.HUMAN, reproduce.SVR,
                reproduce.ORACLE, reproduce.ANTI, reproduce.LOCATOR}
    assert set(summary) == expected
    assert_diagnostics(reproduce, summary)
    for entry in summary.values():
        assert set(entry) >= {"srcc", "plcc", "krcc", "rmse"}
        assert set(entry["srcc"]) == {"mean", "std"}
        assert entry["splits"] == 1
    assert fake_data["trainings"] == 1
    for name in ("results.json", "report.md", "srcc_vs_k.png", "scanpaths.png",
                 "viewport_visits.png", "cap_distance.png"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "Table 1" in report and "RL-ScanIQA against each method" in report
    assert "SRCC (local)" in report and "Damage hit rate" in report
    assert reproduce.ORACLE in report and reproduce.ANTI in report

    # One more split: the finished one is skipped, only the new one is trained.
    reproduce.main(["--protocol", "in-dataset", "--splits", "2", "--out", str(out), *TINY])
    summary = last_json(capsys)
    assert fake_data["trainings"] == 2
    assert summary[reproduce.RL]["splits"] == 2
    document = json.loads((out / "results.json").read_text())
    assert [task["index"] for task in document["tasks"]] == [0, 1]
    # The splits differ by reference content, and test images never share a train reference.
    for task in document["tasks"]:
        assert not set(task["train_refs"]) & set(task["test_refs"])
    assert len({tuple(task["test_refs"]) for task in document["tasks"]}) > 1

    # Another configuration in the same folder is refused instead of mixed in.
    with pytest.raises(ValueError, match="another configuration"):
        reproduce.main(["--protocol", "in-dataset", "--splits", "2", "--out", str(out),
                        "--eval-paths", "3", *TINY[2:]])


def test_a_killed_task_resumes_its_training_from_the_checkpoint(reproduce, fake_data, tmp_path,
                                                                 monkeypatch, capsys):
    out = tmp_path / "run"
    arguments = ["--protocol", "in-dataset", "--splits", "1", "--out", str(out),
                 "--checkpoint-every", "1", *TINY]
    original = reproduce.cotrain
    runs = []

    def killed_after_training(*args, **kwargs):
        runs.append(original(*args, **kwargs))
        raise KeyboardInterrupt  # killed while scoring, after the training's last checkpoint

    monkeypatch.setattr(reproduce, "cotrain", killed_after_training)
    with pytest.raises(KeyboardInterrupt):
        reproduce.main(arguments)
    folder = out / reproduce.CHECKPOINTS_NAME / "task0"
    assert runs[0].resumed_from is None and any(folder.iterdir())

    def resuming(*args, **kwargs):
        runs.append(original(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(reproduce, "cotrain", resuming)
    reproduce.main(arguments)
    assert runs[1].resumed_from == 140 and runs[1].ppo.num_timesteps == 140
    summary = last_json(capsys)
    assert summary[reproduce.RL]["splits"] == 1
    assert_diagnostics(reproduce, summary)
    # The finished task's checkpoints go; the configuration they belonged to stays recorded.
    assert not folder.exists() and (out / reproduce.CHECKPOINTS_NAME / "config.json").is_file()
    (out / reproduce.RESULTS_NAME).unlink()  # as if killed during the first task
    with pytest.raises(ValueError, match="training checkpoints of another configuration"):
        reproduce.main([*arguments[:-len(TINY)], *TINY[2:]])


@pytest.mark.slow
def test_ablation_trains_every_variant_and_the_t_curve(reproduce, fake_data, tmp_path, capsys):
    out = tmp_path / "ablation"
    reproduce.main(["--protocol", "ablation", "--splits", "1", "--t-values", "2,3",
                    "--out", str(out), *TINY])
    summary = last_json(capsys)
    # full + 4 ablations + T=2 (T=3 is the full model itself)
    assert fake_data["trainings"] == 1 + len(reproduce.ABLATIONS) + 1
    assert {reproduce.FULL, *reproduce.ABLATIONS, reproduce.RANDOM, reproduce.HUMAN} <= set(summary)
    document = json.loads((out / "results.json").read_text())
    assert set(document["t_curve"][reproduce.RL]) == {"2", "3"}
    assert set(document["k_curve"][reproduce.RL]) == {"1", "2"}
    assert (out / "srcc_vs_t.png").is_file()
    assert "Table 3" in (out / "report.md").read_text()


def test_without_cap_labels_there_are_no_reference_rows_and_the_diagnostics_are_null(reproduce):
    grid = tiny_cache().grid
    assert reproduce.ORACLE not in reproduce.path_agents(grid, 0, with_caps=False)
    assert {reproduce.ORACLE, reproduce.ANTI} <= set(reproduce.path_agents(grid, 0, with_caps=True))
    # Task records as results.json holds them: NaN went through strict JSON as null, the SVR's
    # hit rate is null, and a record of an older run lacks the diagnostics altogether.
    metrics = {"srcc": 0.5, "plcc": 0.5, "krcc": 0.4, "rmse": 0.1, "ms_per_image": 1.0}
    tasks = [{"methods": {"A": {**metrics, "srcc_local": None, "damage_hit_rate": None}}},
             {"methods": {"A": metrics}}]
    entry = reproduce.json_summary(reproduce.summarize_methods(tasks))["A"]
    assert entry["srcc"]["mean"] == 0.5
    assert entry["srcc_local"] == {"mean": None, "std": None}
    assert entry["damage_hit_rate"] == {"mean": None, "std": None}


def test_variant_settings_zero_the_ablated_weights(reproduce):
    base = reproduce.CoTrainSettings()
    settings = reproduce.variant_settings(base, reproduce.ABLATIONS["w/o task reward"], seed=4)
    assert (settings.reward.task_mse, settings.reward.task_rank) == (0.0, 0.0)
    assert settings.reward.lambda_ssim == base.reward.lambda_ssim and settings.seed == 4
    augmentation = reproduce.variant_settings(base, reproduce.ABLATIONS["w/o augmentation losses"],
                                              seed=0)
    assert augmentation.assessor.loss_weights().triplet == 0.0
    assert augmentation.assessor.loss_mse == base.assessor.loss_mse


def test_cross_distortion_tasks_hold_out_types_and_references(reproduce, monkeypatch):
    kinds = ["reference", "jpeg", "blur", "noise", "jpeg2000"] * 6
    cache = tiny_cache(kinds)
    monkeypatch.setattr(reproduce, "load_source",
                        lambda *a: reproduce.Source(name="synth", cache=cache, human={}))
    args = reproduce.Args(protocol="cross-distortion", test_distortions="noise,jpeg2000", splits=2,
                          test_fraction=0.3)
    tasks, data = reproduce.build_tasks(args)
    assert data["train_kinds"] == ["blur", "jpeg", "reference"]
    for task in tasks:
        assert set(task.train.distortions) <= {"reference", "jpeg", "blur"}
        assert set(task.test.distortions) <= {"noise", "jpeg2000"} and len(task.test) > 0
        assert not set(task.train.ref_ids) & set(task.test.ref_ids)
    with pytest.raises(ValueError, match="not among"):
        reproduce.build_tasks(dataclasses.replace(args, test_distortions="stitching"))


def test_cross_dataset_trains_on_all_of_a_and_tests_on_all_of_b(reproduce, monkeypatch):
    caches = {"a": tiny_cache(), "b": random_feature_cache(12, dim=8, seed=9)}
    monkeypatch.setattr(reproduce, "load_source",
                        lambda name, *a: reproduce.Source(name=name, cache=caches[name], human={}))
    args = reproduce.Args(protocol="cross-dataset", train="a", test="b", splits=2)
    tasks, _ = reproduce.build_tasks(args)
    assert [task.seed for task in tasks] == [0, 1]
    assert all(len(task.train) == 30 and len(task.test) == 12 for task in tasks)
    caches["b"] = random_feature_cache(12, dim=4, seed=9)
    with pytest.raises(ValueError, match="same features"):
        reproduce.build_tasks(args)


@pytest.mark.parametrize("argv, message", [
    (["--protocol", "nope"], "--protocol"),
    (["--protocol", "cross-dataset"], "--train A"),
    (["--k-values", "0,3"], "positive"),
    (["--splits", "0"], "--splits"),
])
def test_bad_arguments_are_rejected(reproduce, argv, message):
    args = reproduce.parse_script_args(reproduce.Args, "", argv)
    with pytest.raises(ValueError, match=message):
        reproduce.check_args(args)


def test_paired_deltas_count_wins(reproduce):
    tasks = [{"methods": {"A": {"srcc": 0.9}, "B": {"srcc": 0.8}}},
             {"methods": {"A": {"srcc": 0.7}, "B": {"srcc": 0.75}}}]
    (row,) = reproduce.paired_deltas(tasks, "A", ["B"])
    assert row["wins"] == "1/2"
    assert row["delta"] == pytest.approx(0.025)
    assert row["std"] == pytest.approx(np.std([0.1, -0.05], ddof=1))


def test_panels_skip_methods_that_did_not_see_both_images(reproduce):
    from types import SimpleNamespace

    test = dataclasses.replace(tiny_cache(), mos=np.linspace(1, 5, 30).astype(np.float32))
    task = reproduce.Task(index=0, label="t", seed=0, train=test, test=test, human={}, info={})

    def evaluation(indices):
        indices = np.asarray(indices)
        paths = np.stack([np.full((2, 3), i) for i in indices])
        return SimpleNamespace(predicted=indices / 10.0,
                               scanpaths=SimpleNamespace(image_indices=indices, paths=paths))

    panels = reproduce.panel_record(task, {"all": evaluation(range(30)),
                                           "subset": evaluation([29, 3, 0]),
                                           "partial": evaluation([29, 5])})
    assert panels["images"] == [29, 0]
    assert set(panels["paths"]) == {"all", "subset"}
    # Rows of a subset evaluation are looked up by image, not by position.
    assert panels["paths"]["subset"][1][0] == [0, 0, 0]
    assert panels["predicted"]["subset"] == [2.9, 0.0]
