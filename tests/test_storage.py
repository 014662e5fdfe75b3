import json
import os

import numpy as np
import pytest

from rl_scaniqa.envs.storage import (
    atomic_path,
    atomic_write_json,
    default_home,
    json_line,
    strict_json,
)


def test_atomic_write_json_round_trip(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_default_home_honours_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("RL_SCANIQA_HOME", str(tmp_path / "home"))
    assert default_home() == tmp_path / "home"


def test_atomic_write_uses_umask_permissions(tmp_path):
    target = tmp_path / "shared.txt"
    previous = os.umask(0o022)
    try:
        atomic_write_json(target, [1])
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == 0o644


def test_strict_json_replaces_non_finite_numbers():
    document = {"srcc": float("nan"), "values": np.array([1.0, np.inf]), "n": np.int64(3)}
    assert strict_json(document) == {"srcc": None, "values": [1.0, None], "n": 3}
    assert json.loads(json_line(document)) == {"srcc": None, "values": [1.0, None], "n": 3}
