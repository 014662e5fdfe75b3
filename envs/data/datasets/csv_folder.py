"""A generic dataset: any folder with a ``labels.csv``, so users can bring their own panoramas.

Layout expected in ``root``::

    labels.csv           header row, then one row per image
    <images>             paths in labels.csv are relative to root; absolute ones are taken as
                         they are. Either must lie inside root unless ``allow_outside_root``.

Columns (names matched ignoring case and surrounding spaces, any order):

- ``path`` (required): image file; only its existence is checked.
- ``mos`` (required): raw score, any finite number.
- ``ref`` (optional): reference content id. Empty or absent: the image's file stem, i.e. each
  image is its own content (splits then cannot group distorted versions of one scene; give
  ``ref`` whenever several images share a scene).
- ``distortion`` (optional): type name; empty or absent: ``"unknown"``.
- ``level`` (optional): integer level (``3`` or ``3.0``); empty or absent: 0.
- ``scope`` (optional) and any other column: kept as strings in ``extra`` under the column name.

Synth360 (``load_dataset("synth360", root)``) is read with this loader.
"""

from __future__ import annotations

import math
from pathlib import Path

from rl_scaniqa.envs.data.datasets.records import (
    PanoramaRecord,
    PathLike,
    parse_flag,
    parse_score,
    read_csv_table,
    require_directory,
)
from rl_scaniqa.envs.errors import DatasetError, LabelError

CSV_LABELS_NAME = "labels.csv"
CSV_REQUIRED_COLUMNS = ("path", "mos")
CSV_KNOWN_COLUMNS = ("path", "mos", "ref", "distortion", "level")


def load_csv_folder(root: PathLike, *, labels: PathLike = CSV_LABELS_NAME,
                    allow_outside_root: bool | str = False) -> list[PanoramaRecord]:
    """Load a folder in the csv layout (see the module docstring).

    Args:
        root: the dataset folder.
        labels: label file; a relative path is taken relative to ``root``.
        allow_outside_root: accept image paths (``../``, absolute, or through a symlink) that
            lead outside ``root``. Off by default: a label file from elsewhere must not make
            the loader read arbitrary files. ``"true"``/``"false"`` as given on a command line.

    Records come in row order. ``image_id`` is the ``path`` cell as written (POSIX separators),
    unique because a path may appear once only.

    Raises:
        LabelError: missing or empty file, missing required column, duplicate column, a row with
            the wrong column count, empty path, bad mos or level, or a path listed twice.
        DatasetError: missing root, or a listed image that does not exist.
    """
    folder = require_directory(root, "csv dataset")
    outside_allowed = parse_flag(allow_outside_root, "allow_outside_root")
    inside = folder.resolve()
    label_path = Path(labels).expanduser()
    if not label_path.is_absolute():
        label_path = folder / label_path
    if not label_path.is_file():
        raise LabelError(f"label file {label_path} does not exist")
    (header_number, header), *rows = read_csv_table(label_path)
    columns = _column_positions(label_path, header_number, header)
    if not rows:
        raise LabelError(f"{label_path}: no data rows after the header (line {header_number})")

    records = []
    first_seen: dict[Path, str] = {}
    for number, cells in rows:
        where = f"{label_path}, line {number}"
        values = {name: cells[position] for name, position in columns.items()}
        mos = parse_score(values["mos"], where, "mos")
        level = _parse_level(values.get("level", ""), where)
        written = values["path"]
        if not written:
            raise LabelError(f"{where}: path is empty")
        image_path = Path(written).expanduser()
        if not image_path.is_absolute():
            image_path = folder / image_path
        key = image_path.resolve()
        if not outside_allowed and not key.is_relative_to(inside):
            raise LabelError(f"{where}: image {written!r} lies outside the dataset folder "
                             f"{folder}; pass allow_outside_root=True (dataset option "
                             "allow_outside_root=true) if that is intended")
        if key in first_seen:
            raise LabelError(
                f"{where}: image {written!r} is listed twice (first at {first_seen[key]})"
            )
        first_seen[key] = where
        if not image_path.is_file():
            raise DatasetError(f"{where}: image {image_path} does not exist")
        records.append(
            PanoramaRecord(
                path=image_path,
                mos=mos,
                ref_id=values.get("ref") or image_path.stem,
                distortion=values.get("distortion") or "unknown",
                level=level,
                extra={
                    name: value for name, value in values.items() if name not in CSV_KNOWN_COLUMNS
                },
                image_id=Path(written).as_posix(),
            )
        )
    return records


def _column_positions(path: Path, number: int, header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for position, name in enumerate(header):
        key = name.strip().lower()
        if not key:
            raise LabelError(
                f"{path}, line {number}: column {position + 1} of the header has no name"
            )
        if key in columns:
            raise LabelError(f"{path}, line {number}: column {key!r} appears twice in the header")
        columns[key] = position
    missing = [name for name in CSV_REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise LabelError(
            f"{path}, line {number}: header lacks column(s) {', '.join(missing)}; found {header}"
        )
    return columns


def _parse_level(text: str, where: str) -> int:
    if not text:
        return 0
    value = parse_score(text, where, "level")
    if value != math.floor(value) or value < 0:
        raise LabelError(f"{where}: level {text!r} is not a non-negative integer")
    return int(value)
