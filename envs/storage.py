"""Atomic file writes and the user data folder.

Caches, checkpoints and results are written to a temporary file in the destination folder and
then renamed over the target, so an interrupted process never leaves a half-written file where a
complete one is expected (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; see exclusive_lock.
    fcntl = None  # type: ignore[assignment]

HOME_ENV_VAR = "RL_SCANIQA_HOME"


def default_home() -> Path:
    """The folder for generated data and caches: ``$RL_SCANIQA_HOME`` or ``~/.cache/rl_scaniqa``."""
    configured = os.environ.get(HOME_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rl_scaniqa"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    The temporary name keeps the target's suffix so that writers which infer the format from the
    extension (OpenCV, matplotlib) still work. On any exception the temporary file is removed and
    ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'd before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None``.

    Python's ``json`` writes ``NaN``/``Infinity``, which strict parsers (``jq``, browsers,
    ``JSON.parse``) reject; an undefined metric (constant predictions) becomes ``null`` instead.
    NumPy scalars and arrays are converted to plain Python values on the way.
    """
    if isinstance(obj, dict):
        return {key: strict_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(value) for value in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return strict_json(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_line(obj: Any) -> str:
    """One line of strict JSON (see :func:`strict_json`), for ``--json`` outputs."""
    return json.dumps(strict_json(obj), allow_nan=False)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented strict JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(strict_json(obj), indent=2, allow_nan=False) + "\n")


def read_own_json(path: str | os.PathLike[str], afresh: str) -> Any:
    """A JSON file a script wrote itself (results, folds, stored scores).

    Raises:
        ValueError: the file is not valid JSON; the message names it and says that moving it
            away starts ``afresh`` (e.g. "the fold afresh").
    """
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); move it away to start "
                         f"{afresh}") from None


@contextlib.contextmanager
def exclusive_lock(lock_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive advisory ``fcntl`` lock on ``lock_path`` (created if needed).

    Used where several processes may build the same thing at once (vector-env workers that all
    start by building the default data, two CLI runs of one cache): the others wait, then find
    the result. Without ``fcntl`` (Windows) there is no lock; build in one process there.
    """
    target = Path(lock_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
