"""Script arguments: tyro options, presets, --config precedence and round trip; KEY=VALUE options."""

import json
from dataclasses import asdict, dataclass, field

import pytest

from rl_scaniqa.agents.script_args import key_value, key_values, parse_script_args, with_values


@dataclass
class Inner:
    steps: int = 100
    """Optimiser steps per round."""
    rate: float = 0.5


@dataclass
class Outer:
    name: str = "run"
    quick: bool = False
    """Smoke run."""
    progress: bool = True
    # A factory default that differs from Inner's own defaults must survive partial updates.
    inner: Inner = field(default_factory=lambda: Inner(rate=0.25))


PRESETS = {"quick": {"name": "smoke", "inner": {"steps": 3}}}


def parse(argv, presets=PRESETS):
    return parse_script_args(Outer, "test script", argv, presets)


def write_config(tmp_path, document):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_nested_options_and_boolean_flags():
    assert parse([]) == Outer()
    args = parse(["--inner.steps", "4", "--name", "x", "--no-progress", "--quick"])
    assert args == Outer(name="x", quick=True, progress=False, inner=Inner(steps=4, rate=0.25))


def test_precedence_defaults_preset_config_command_line(tmp_path):
    quick = parse(["--quick"])
    assert quick == Outer(name="smoke", quick=True, inner=Inner(steps=3, rate=0.25))
    # An explicit value equal to the default still wins over the preset.
    explicit = parse(["--quick", "--inner.steps", "100"])
    assert explicit.inner.steps == 100 and explicit.name == "smoke"
    # The config file beats the preset, the command line beats the config file.
    config = write_config(tmp_path, {"inner": {"steps": 7}, "name": "file"})
    from_file = parse(["--quick", "--config", config])
    assert (from_file.inner.steps, from_file.name, from_file.inner.rate) == (7, "file", 0.25)
    assert parse(["--config", config, "--quick", "--name", "cli"]).name == "cli"
    # A preset switched on in the config file applies beneath the file's own values.
    on_in_file = parse(["--config", write_config(tmp_path, {"quick": True, "inner": {"rate": 1.0}})])
    assert on_in_file == Outer(name="smoke", quick=True, inner=Inner(steps=3, rate=1.0))
    # ... and the command line can switch it off again.
    assert parse(["--config", str(tmp_path / "c.json"), "--no-quick"]).name == "run"


def test_config_round_trip(tmp_path):
    args = parse(["--quick", "--inner.rate", "2.0", "--no-progress"])
    assert parse(["--config", write_config(tmp_path, asdict(args))], presets={}) == args


@pytest.mark.parametrize("argv", [["--bogus", "1"], ["--inner.steps", "x"], ["--inner.steps"],
                                  ["--config", "/nonexistent/c.json"]])
def test_bad_command_lines_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        parse(argv)
    assert raised.value.code == 2
    assert capsys.readouterr().err


def test_bad_config_documents_exit_with_status_2_naming_the_problem(tmp_path, capsys):
    for document, message in (({"inner": {"stepz": 7}}, "stepz"), ([1, 2], "JSON object"),
                              ({"inner": 3}, "must be an object")):
        with pytest.raises(SystemExit) as raised:
            parse(["--config", write_config(tmp_path, document)])
        assert raised.value.code == 2 and message in capsys.readouterr().err


def test_help_shows_the_field_docstrings_and_config(capsys):
    with pytest.raises(SystemExit) as raised:
        parse(["--help"])
    assert raised.value.code == 0
    text = capsys.readouterr().out
    for expected in ("test script", "--config FILE.json", "--inner.steps", "Optimiser steps per round",
                     "--quick, --no-quick", "Smoke run"):
        assert expected in text


def test_with_values_keeps_unnamed_fields_and_rejects_unknown_ones():
    base = Outer(name="kept")
    assert with_values(base, {"inner": {"steps": 1}}) == Outer(name="kept", inner=Inner(1, 0.25))
    assert base.inner.steps == 100
    with pytest.raises(ValueError, match="arguments.inner.*stepz"):
        with_values(base, {"inner": {"stepz": 1}})


def test_key_values():
    assert key_value(" hm-root = HMData ") == ("hm_root", "HMData")
    assert key_values("condition=good-15s, hm_root=HM") == {"condition": "good-15s", "hm_root": "HM"}
    assert key_values("") == {}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        key_values("condition")
