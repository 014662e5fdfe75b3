"""Command-line arguments from dataclasses, CleanRL style, for the experiment scripts.

A script declares its arguments as a dataclass with defaults; nested dataclass fields become
dotted options (``--ppo.n-envs 4``, ``--reward.task-mse 1.5``), booleans become
``--flag/--no-flag``, and ``--config FILE.json`` loads a (possibly partial, nested) JSON document
of values. A *preset* is a set of values switched on by a boolean field (``--quick``). Precedence,
lowest first: the dataclass defaults, the preset, the ``--config`` file, the command line — so
``--quick --settings.n-paths 15`` really uses 15 paths. The reward sweep writes its best
configuration in exactly the ``--config`` JSON form.
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _option(prefix: str, name: str) -> str:
    return "--" + prefix + name.replace("_", "-")


def _field_default(spec: Field) -> Any:
    if spec.default is not MISSING:
        return spec.default
    if spec.default_factory is not MISSING:  # type: ignore[misc]
        return spec.default_factory()  # type: ignore[misc]
    raise TypeError(f"argument dataclass field {spec.name!r} needs a default")


def _scalar_type(annotation: Any) -> type | None:
    """The callable argparse should convert with, for int/float/str and Optional of them."""
    if annotation in (int, float, str):
        return annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(args) == 1 and args[0] in (int, float, str):
        return args[0]
    return None


def _add_fields(parser: argparse.ArgumentParser, cls: type, prefix: str, dest_prefix: str,
                docs: Mapping[str, str]) -> None:
    hints = typing.get_type_hints(cls)
    for spec in fields(cls):
        default = _field_default(spec)
        hint = hints[spec.name]
        dest = dest_prefix + spec.name
        help_text = docs.get(dest, "")
        if is_dataclass(default):
            _add_fields(parser, type(default), f"{prefix}{spec.name.replace('_', '-')}.",
                        f"{dest}.", docs)
        elif hint is bool:
            parser.add_argument(_option(prefix, spec.name), dest=dest, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction,
                                help=f"{help_text} (default: {default})")
        else:
            convert = _scalar_type(hint)
            if convert is None:
                raise TypeError(f"unsupported argument type {hint!r} for {dest}")
            parser.add_argument(_option(prefix, spec.name), dest=dest, type=convert,
                                default=argparse.SUPPRESS, metavar=spec.name.upper(),
                                help=f"{help_text} (default: {default})")


def dataclass_parser(cls: type, description: str,
                     docs: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one option per (nested) field of ``cls`` and ``--config``.

    ``docs`` maps dotted field names to help texts.
    """
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, metavar="FILE.json",
                        help="JSON document of argument values (nested like the options); "
                             "options given on the command line win")
    _add_fields(parser, cls, "", "", docs or {})
    return parser


def _merge(base: dict[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def build_dataclass(cls: type[T], values: Mapping[str, Any], where: str = "arguments") -> T:
    """Instantiate ``cls`` from a nested mapping; unknown names raise ``ValueError``."""
    specs = {spec.name: spec for spec in fields(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ValueError(f"unknown {where} {unknown}; known: {sorted(specs)}")
    kwargs = {}
    for name, value in values.items():
        default = _field_default(specs[name])
        if is_dataclass(default):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}.{name} must be an object, got {value!r}")
            kwargs[name] = build_dataclass(type(default), value, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


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


def parse_dataclass(cls: type[T], description: str, argv: Sequence[str] | None = None,
                    docs: Mapping[str, str] | None = None,
                    presets: Mapping[str, Mapping[str, Any]] | None = None) -> T:
    """Parse ``argv`` into an instance of ``cls``.

    ``presets`` maps a boolean field name to the (nested) values it switches on. Precedence,
    lowest first: defaults, presets that are on, the ``--config`` file, the command line.
    """
    parser = dataclass_parser(cls, description, docs)
    namespace = vars(parser.parse_args(argv))
    config_path = namespace.pop("config")
    values: dict[str, Any] = {}
    if config_path is not None:
        try:
            values = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            parser.error(f"--config {config_path}: {error}")
        if not isinstance(values, dict):
            parser.error(f"--config {config_path}: expected a JSON object")
    values = _merge(values, _nest(namespace))
    for flag, preset in (presets or {}).items():
        if values.get(flag):
            values = _merge(dict(preset), values)
    try:
        return build_dataclass(cls, values)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
        raise  # parser.error exits; this keeps type checkers informed
