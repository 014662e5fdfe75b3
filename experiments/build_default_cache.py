"""Rebuild the feature cache that ships with the package (the env's default data).

Generates the small Synth360 and its NSS cache in a temporary data home, makes the image paths
relative (``portable_cache_bytes``) and writes the xz-compressed file over
``envs/features/synth360-quick-nss.safetensors.xz`` (atomically). Run it after any change
to the NSS features, the Synth360 generator or the cache format; ``tests/test_shipped_cache.py``
fails until then. The whole run is small (about 20 s on 2 cores), so there is no ``--quick``.

Usage::

    python experiments/build_default_cache.py            # writes the package file
    python experiments/build_default_cache.py --json     # and prints one JSON line
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rl_scaniqa.agents.script_args import parse_script_args, usage_error
from rl_scaniqa.envs.features.provision import SHIPPED_CACHE, shipped_cache_bytes
from rl_scaniqa.envs.storage import atomic_write_bytes, json_line

PACKAGE_FILE = Path(__file__).resolve().parents[1] / "envs" / "features" / SHIPPED_CACHE


@dataclass
class Args:
    """Arguments of ``build_default_cache.py``."""

    out: str = str(PACKAGE_FILE)
    """File to write (default: the package's shipped cache in this checkout)."""
    json: bool = False
    """Print the result as one JSON line on stdout."""
    progress: bool = True
    """Show progress bars (on stderr)."""


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_script_args(Args, __doc__.splitlines()[0], argv)
    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir():
        usage_error("build_default_cache.py", f"--out {out} must be a file in an existing folder")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rl-scaniqa-default-") as home:
        data = shipped_cache_bytes(home, progress=args.progress)
    atomic_write_bytes(out, data)
    result = {"path": str(out), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
              "seconds": round(time.perf_counter() - start, 1)}
    print(json_line(result) if args.json else f"wrote {out} ({len(data) / 1e6:.2f} MB) in {result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
