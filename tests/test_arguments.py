"""Dataclass arguments: nesting, presets, --config precedence; KEY=VALUE options; strict JSON."""

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from rl_scaniqa.agents.arguments import key_value, key_values, parse_dataclass
from rl_scaniqa.envs.storage import json_line, strict_json


@dataclass
class Inner:
    steps: int = 100
    rate: float = 0.5


@dataclass
class Outer:
    name: str = "run"
    quick: bool = False
    inner: Inner = field(default_factory=Inner)


PRESETS = {"quick": {"name": "smoke", "inner": {"steps": 3}}}


def test_preset_applies_only_where_nothing_more_specific_was_said(tmp_path):
    assert parse_dataclass(Outer, "t", [], presets=PRESETS) == Outer()
    quick = parse_dataclass(Outer, "t", ["--quick"], presets=PRESETS)
    assert quick == Outer(name="smoke", quick=True, inner=Inner(steps=3))
    # An explicit value equal to the default still wins over the preset.
    explicit = parse_dataclass(Outer, "t", ["--quick", "--inner.steps", "100"], presets=PRESETS)
    assert explicit.inner.steps == 100 and explicit.name == "smoke"
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"inner": {"steps": 7}, "quick": True}))
    from_file = parse_dataclass(Outer, "t", ["--config", str(config)], presets=PRESETS)
    assert from_file.inner.steps == 7 and from_file.name == "smoke"


def test_bad_config_and_unknown_fields_exit_with_a_message(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"inner": {"stepz": 7}}))
    with pytest.raises(SystemExit):
        parse_dataclass(Outer, "t", ["--config", str(config)])
    assert "stepz" in capsys.readouterr().err


def test_key_values():
    assert key_value(" hm-root = HMData ") == ("hm_root", "HMData")
    assert key_values("condition=good-15s, hm_root=HM") == {"condition": "good-15s", "hm_root": "HM"}
    assert key_values("") == {}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        key_values("condition")


def test_strict_json_replaces_non_finite_numbers():
    document = {"srcc": float("nan"), "values": np.array([1.0, np.inf]), "n": np.int64(3)}
    assert strict_json(document) == {"srcc": None, "values": [1.0, None], "n": 3}
    assert json.loads(json_line(document)) == {"srcc": None, "values": [1.0, None], "n": 3}
