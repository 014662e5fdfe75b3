"""Folders that a generator writes (Synth360, Real360): manifest, ``images/``, ``labels.csv``.

Both generators distort references with :func:`~rl_scaniqa.envs.data.datasets.synth360.distort`
and label them with the Synth360 pseudo-MOS; what they share beyond that lives here:

- a :class:`GeneratedLayout` names the dataset, its manifest file and the image names it owns;
- :func:`prepare_folder` makes a destination ready (reusing a finished identical dataset,
  refusing foreign files or another configuration unless ``overwrite``);
- :func:`write_distortion_group` writes one reference and its distorted images and returns their
  label rows;
- :func:`write_labels` writes ``labels.csv`` last and atomically, so a folder with a matching
  manifest and a complete ``labels.csv`` is finished;
- :func:`load_generated` checks the manifest before reading the folder as the csv layout.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rl_scaniqa.envs.data.datasets.csv_folder import load_csv_folder
from rl_scaniqa.envs.data.datasets.records import PanoramaRecord, PathLike, require_directory
from rl_scaniqa.envs.data.imageio import write_image
from rl_scaniqa.envs.errors import DatasetError
from rl_scaniqa.envs.storage import atomic_write_text

if TYPE_CHECKING:
    from rl_scaniqa.envs.data.datasets.synth360 import DistortionSpec, MosFormula
    from rl_scaniqa.envs.progress import ProgressHandle

LABELS_NAME = "labels.csv"
IMAGES_DIR = "images"
#: Columns every generated ``labels.csv`` starts with (read by the ``csv`` loader; the cap
#: columns are what the damage diagnostics read).
LABEL_COLUMNS: tuple[str, ...] = (
    "path", "mos", "ref", "distortion", "level", "scope", "cap_yaw", "cap_pitch", "cap_radius",
)

LabelRow = tuple[object, ...]


@dataclass(frozen=True)
class GeneratedLayout:
    """What tells one generator's folders apart: its name, manifest and owned image names."""

    dataset: str
    """Loader name, also the manifest's ``"dataset"`` entry."""
    title: str
    """Name in messages, e.g. ``"Synth360"``."""
    manifest_name: str
    """Manifest file in the folder's root."""
    image_pattern: re.Pattern[str]
    """File names under ``images/`` this generator writes (and may delete when regenerating)."""
    generate_hint: str
    """How to make one, for the message when a folder is not one."""


def format_mos(value: float) -> str:
    """A MOS cell: six decimals keep the strict level ordering tiny MOS steps carry; more is noise."""
    return f"{value:.6f}"


def _read_manifest(path: Path, layout: GeneratedLayout) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: unreadable {layout.title} manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("dataset") != layout.dataset:
        raise DatasetError(f"{path}: not a {layout.title} manifest")
    return manifest


def load_generated(root: PathLike, layout: GeneratedLayout, *, labels: PathLike = LABELS_NAME,
                   allow_outside_root: bool | str = False) -> list[PanoramaRecord]:
    """Load a generated folder: the csv layout, checked to be one ``layout``'s generator wrote.

    Raises:
        DatasetError: ``root`` has no readable manifest of this generator; plus whatever
            :func:`load_csv_folder` raises.
    """
    folder = require_directory(root, f"{layout.title} dataset")
    manifest_path = folder / layout.manifest_name
    if not manifest_path.is_file():
        raise DatasetError(f"{folder}: not a {layout.title} dataset (no {layout.manifest_name}); "
                           f"{layout.generate_hint}, or load your own labelled folder as --dataset csv")
    _read_manifest(manifest_path, layout)
    return load_csv_folder(folder, labels=labels, allow_outside_root=allow_outside_root)


def is_complete(root: Path, n_images: int) -> bool:
    """``labels.csv`` lists ``n_images`` rows and every listed image exists."""
    labels = root / LABELS_NAME
    if not labels.is_file():
        return False
    with open(labels, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return len(rows) == n_images and all((root / row["path"]).is_file() for row in rows)


def prepare_folder(root: Path, manifest: dict[str, Any], overwrite: bool, layout: GeneratedLayout) -> bool:
    """Make ``root`` ready for generation; return True when it already holds this exact dataset.

    Raises:
        DatasetError: ``root`` holds another configuration of this generator (without
            ``overwrite``), an unreadable manifest, or files that are not such a dataset.
    """
    manifest_path = root / layout.manifest_name
    if manifest_path.is_file():
        existing = _read_manifest(manifest_path, layout)
        if existing == manifest:
            if is_complete(root, manifest["n_images"]):
                return True
        elif not overwrite:
            changed = sorted(k for k in set(existing) | set(manifest) if existing.get(k) != manifest.get(k))
            raise DatasetError(
                f"{manifest_path}: folder holds {layout.title} generated with other settings "
                f"(differs in: {', '.join(changed)}); pass overwrite=True (--overwrite) or choose another folder")
        # Our own folder, stale or unfinished: drop the old labels first so that it can never
        # look complete while images of two configurations are mixed.
        (root / LABELS_NAME).unlink(missing_ok=True)
        manifest_path.unlink()
        images = root / IMAGES_DIR
        if images.is_dir():
            for path in images.iterdir():
                if layout.image_pattern.match(path.name):
                    path.unlink()
    elif root.exists():
        if not root.is_dir():
            raise DatasetError(f"{root}: exists and is not a folder")
        foreign = [p.name for p in root.iterdir() if not (p.name == IMAGES_DIR and p.is_dir() and not any(p.iterdir()))]
        if foreign:
            raise DatasetError(
                f"{root}: folder is not empty and has no {layout.manifest_name}, so it is not a "
                f"{layout.title} dataset (found {', '.join(sorted(foreign)[:5])}); choose an empty or new folder")
    return False


def write_distortion_group(images: Path, name: str, ref_id: str, reference: np.ndarray,
                           specs: Iterable[DistortionSpec], formula: MosFormula,
                           bar: ProgressHandle) -> list[LabelRow]:
    """Write ``<name>_ref.png`` and every ``<name>_<kind>_<scope>_<level>.png`` of ``specs``.

    Returns the label rows (:data:`LABEL_COLUMNS`), the reference first with MOS at the top of
    the scale; each distorted image gets the pseudo-MOS against ``reference``.
    """
    from rl_scaniqa.envs.data.datasets.synth360 import ReferenceViews, distort

    write_image(images / f"{name}_ref.png", reference)
    rows: list[LabelRow] = [(f"{IMAGES_DIR}/{name}_ref.png", format_mos(formula.mos_high), ref_id,
                             "reference", 0, "none", "", "", "")]
    bar.advance()
    scorer = ReferenceViews(reference, formula)
    for spec in specs:
        distorted = distort(reference, spec)
        mos = formula.mos(formula.pool(scorer.ssim(distorted)))
        file_name = f"{name}_{spec.kind}_{spec.scope}_{spec.level}.png"
        write_image(images / file_name, distorted)
        cap = ("", "", "") if spec.cap is None else tuple(f"{value:.3f}" for value in spec.cap[:3])
        rows.append((f"{IMAGES_DIR}/{file_name}", format_mos(mos), ref_id, spec.kind, spec.level,
                     spec.scope, *cap))
        bar.advance()
    return rows


def write_labels(root: Path, columns: Sequence[str], rows: Iterable[LabelRow]) -> None:
    """Write ``labels.csv`` atomically (last, so that its presence means the folder is finished)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    atomic_write_text(root / LABELS_NAME, buffer.getvalue())
