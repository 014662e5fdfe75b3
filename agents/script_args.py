"""Experiment-script arguments: dataclasses parsed by ``tyro``, plus ``--config`` and presets.

A script declares its arguments as a dataclass with defaults and a docstring under each field
(the help text). ``tyro`` turns nested dataclass fields into dotted options (``--ppo.n-envs 4``,
``--reward.task-mse 1.5``) and booleans into ``--flag/--no-flag``. On top of that,
:func:`parse_script_args` reads ``--config FILE.json``, a (possibly partial, nested) JSON document
of values, and *presets*: sets of values switched on by a boolean field (``--quick``).
Precedence, lowest first: the dataclass defaults, the preset, the ``--config`` file, the command
line, so ``--quick --settings.n-paths 15`` really uses 15 paths. The reward sweep writes its best
configuration in exactly the ``--config`` JSON form.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
import sys
from typing import Any, NoReturn, TypeVar

import tyro

T = TypeVar("T")


def with_values(instance: T, values: Mapping[str, Any], where: str = "arguments") -> T:
    """A copy of the dataclass ``instance`` with the (nested) ``values`` set.

    Fields not named in ``values`` keep their value in ``instance``; unknown names raise
    ``ValueError`` naming them.
    """
    known = {spec.name for spec in fields(instance)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {where} {unknown}; known: {sorted(known)}")
    changes: dict[str, Any] = {}
    for name, value in values.items():
        current = getattr(instance, name)
        if is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}.{name} must be an object, got {value!r}")
            changes[name] = with_values(current, value, f"{where}.{name}")
        else:
            changes[name] = value
    return replace(instance, **changes)  # type: ignore[type-var]


def usage_error(prog: str, message: str) -> NoReturn:
    """Exit like argparse does for a bad argument: ``<prog>: error: <message>`` on stderr, status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def key_value(text: str) -> tuple[str, str]:
    """``"hm-root=HMData"`` → ``("hm_root", "HMData")`` (dashes in keys become underscores)."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    return key.replace("-", "_"), value


def key_values(text: str) -> dict[str, str]:
    """``"condition=good-15s,hm_root=HMData"`` → a dict (empty text → empty dict)."""
    return dict(key_value(item) for item in text.split(",") if item.strip())


def _read_config(parser: argparse.ArgumentParser, path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        parser.error(f"--config {path}: {error}")
    if not isinstance(values, dict):
        parser.error(f"--config {path}: expected a JSON object")
    return values


def parse_script_args(cls: type[T], description: str, argv: Sequence[str] | None = None,
                      presets: Mapping[str, Mapping[str, Any]] | None = None) -> T:
    """Parse ``argv`` (default: ``sys.argv[1:]``) into an instance of ``cls``.

    ``presets`` maps a boolean field name to the (nested) values it switches on; a preset is on
    when its flag is set on the command line, else in the ``--config`` file, else by default.
    Bad options, bad values and an unreadable ``--config`` exit with status 2, argparse style.
    """
    presets = presets or {}
    # The pre-parser only picks out --config and the preset flags; tyro parses everything else.
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", type=Path, default=None)
    for flag in presets:
        pre.add_argument("--" + flag.replace("_", "-"), dest=flag, default=None,
                         action=argparse.BooleanOptionalAction)
    known, rest = pre.parse_known_args(argv)
    config = _read_config(pre, known.config)
    switches = {flag: getattr(known, flag) for flag in presets if getattr(known, flag) is not None}
    default = cls()
    for flag, preset in presets.items():
        if switches.get(flag, config.get(flag, getattr(default, flag))):
            default = with_values(default, preset)
    try:
        default = with_values(default, config)
    except (TypeError, ValueError) as error:
        pre.error(f"--config {known.config}: {error}")
    default = with_values(default, switches)
    order = ["the defaults", *(f"--{flag.replace('_', '-')}" for flag in presets), "--config",
             "the command line"]
    return tyro.cli(cls, default=default, args=rest, description=(
        f"{description}\n\n--config FILE.json loads argument values from a JSON document nested "
        f"like the options (a partial one is fine). Precedence, lowest first: {', '.join(order)}."))
