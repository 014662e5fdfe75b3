"""The ``--json`` contract of every script and CLI command: stdout carries JSON lines only."""

from __future__ import annotations

import json
from typing import Any


def json_lines(stdout: str) -> list[Any]:
    """Every non-empty stdout line parsed as JSON; fails naming the first line that is not."""
    parsed = []
    for number, line in enumerate(stdout.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise AssertionError(f"stdout line {number} is not JSON ({error}): {line[:200]!r}") from None
    assert parsed, "stdout holds no JSON line"
    return parsed
