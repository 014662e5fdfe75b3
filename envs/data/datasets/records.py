"""The record every dataset loader returns, MOS scales, and label-file helpers the loaders share.

A :class:`PanoramaRecord` is one scored panorama: where the image is, its raw MOS on the dataset's
own scale, the reference content it derives from (the unit of train/test splitting), its
distortion type and level. Records keep the *raw* MOS; models that need a common 0..1 target go
through :class:`MosScale`, and predictions are mapped back with :meth:`MosScale.denormalize`.

The second half of the module holds the small readers the loaders have in common (label-file
discovery, ``name score`` text files, score parsing). They raise :class:`LabelError` or
:class:`DatasetError` with the file and line in the message, so every loader reports bad input
the same way.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rl_scaniqa.envs.errors import DatasetError, LabelError

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class PanoramaRecord:
    """One scored panorama.

    Attributes:
        path: the image file (loaders only check that it exists; they never decode it).
        mos: raw mean opinion score on the dataset's own scale (see :data:`MOS_SCALES`).
        ref_id: the reference content this image derives from, e.g. ``"cviqd-03"``; images that
            share a ``ref_id`` always land on the same side of a split.
        distortion: distortion type name, or ``"reference"`` for a pristine image.
        level: distortion level (1 = mildest); 0 for references and for unknown levels.
        extra: dataset-specific fields (see each loader's docstring). Copied into a new dict on
            construction so a record never aliases the caller's mapping.
        image_id: identifier unique within the dataset; defaults to the file name stem.
    """

    path: Path
    mos: float
    ref_id: str
    distortion: str
    level: int
    # Excluded from the hash: dict values are unhashable, and path/ids already identify a record.
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)
    image_id: str = ""

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise field types through object.__setattr__ once, here, so that
        # every consumer can rely on Path / float / int regardless of what the loader passed.
        object.__setattr__(self, "path", Path(self.path))
        mos = float(self.mos)
        if not math.isfinite(mos):
            raise ValueError(f"record {self.path}: MOS must be finite, got {self.mos!r}")
        object.__setattr__(self, "mos", mos)
        if isinstance(self.level, bool) or int(self.level) != self.level or self.level < 0:
            raise ValueError(
                f"record {self.path}: level must be a non-negative int, got {self.level!r}"
            )
        object.__setattr__(self, "level", int(self.level))
        if not self.ref_id:
            raise ValueError(f"record {self.path}: ref_id must not be empty")
        if not self.distortion:
            raise ValueError(f"record {self.path}: distortion must not be empty")
        object.__setattr__(self, "extra", dict(self.extra))
        if not self.image_id:
            object.__setattr__(self, "image_id", self.path.stem)

    @property
    def is_reference(self) -> bool:
        """True for a pristine (undistorted) image."""
        return self.distortion == "reference"


@dataclass(frozen=True)
class MosScale:
    """A linear map between a dataset's MOS range ``[low, high]`` and ``[0, 1]``.

    ``normalize(low) == 0`` and ``normalize(high) == 1``. Values outside the range are **not
    clipped**: the map is extrapolated linearly (a prediction above ``high`` normalises above 1,
    a normalised 1.2 denormalises above ``high``), so ``denormalize(normalize(x)) == x`` for every
    finite ``x`` and out-of-range values stay visible instead of being silently flattened. Clip
    explicitly (``np.clip``) where a bounded value is wanted.

    Both methods accept a Python number (returning ``float``) or any array-like (returning a
    numpy array of the same shape; floating dtypes are kept, integer input becomes float64).
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.high <= self.low:
            raise ValueError(
                f"MosScale needs finite low < high, got low={self.low!r}, high={self.high!r}"
            )
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))

    @property
    def span(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def normalize(self, x: ArrayLike) -> float | np.ndarray:
        """Map raw MOS to the 0..1 scale: ``(x - low) / (high - low)``, not clipped."""
        values = _as_float_array(x)
        out = (values - self.low) / self.span
        return float(out) if out.ndim == 0 else out

    def denormalize(self, y: ArrayLike) -> float | np.ndarray:
        """Map 0..1 scores back to raw MOS: ``low + y * (high - low)``, not clipped."""
        values = _as_float_array(y)
        out = self.low + values * self.span
        return float(out) if out.ndim == 0 else out

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form, saved beside trained models."""
        return {"low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MosScale:
        """Inverse of :meth:`to_dict`."""
        return cls(low=float(data["low"]), high=float(data["high"]))


def _as_float_array(x: ArrayLike) -> np.ndarray:
    values = np.asarray(x)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    return values


#: Published MOS ranges of the datasets with a fixed rating scale.
MOS_SCALES: dict[str, MosScale] = {
    "cviqd": MosScale(0.0, 100.0),
    "oiqa": MosScale(1.0, 10.0),
    "jufe": MosScale(1.0, 5.0),
    "synth360": MosScale(1.0, 5.0),
    "real360": MosScale(1.0, 5.0),
}


def mos_scale_for(name: str, records: Sequence[PanoramaRecord]) -> MosScale:
    """The MOS scale of dataset ``name``.

    Datasets in :data:`MOS_SCALES` use their published range whatever the records hold. For
    ``"csv"`` (user data with an unknown rating scale) the scale is the min and max MOS of
    ``records``; pass the *whole* dataset, not one split, so train and test share one scale.

    Raises:
        DatasetError: unknown name; ``"csv"`` with no records or with a single distinct MOS.
    """
    key = name.strip().lower()
    if key in MOS_SCALES:
        return MOS_SCALES[key]
    if "+" in key:
        # A combination (``synth360+real360``): one shared scale, or the targets would not mean
        # the same thing on both sides.
        scales = {part: MOS_SCALES.get(part) for part in key.split("+")}
        if None in scales.values() or len(set(scales.values())) != 1:
            listed = ", ".join(f"{part} {scale.low:g}-{scale.high:g}" if scale else f"{part} unknown"
                               for part, scale in scales.items())
            raise DatasetError(f"datasets combined as {name!r} need one shared published MOS "
                               f"scale; got {listed}")
        return next(iter(scales.values()))  # type: ignore[return-value]
    if key != "csv":
        known = ", ".join([*MOS_SCALES, "csv"])
        raise DatasetError(f"no MOS scale for dataset {name!r}; known: {known}")
    if not records:
        raise DatasetError("cannot derive a MOS scale for a csv dataset from zero records")
    mos = np.array([record.mos for record in records], dtype=np.float64)
    low, high = float(mos.min()), float(mos.max())
    if high <= low:
        raise DatasetError(
            "cannot derive a MOS scale for a csv dataset: "
            f"all {len(records)} records have MOS {low:g}"
        )
    return MosScale(low, high)


# --------------------------------------------------------------------------------------------
# Helpers shared by the loaders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreLine:
    """One labelled image read from a label file; ``where`` is e.g. ``"/d/labels.txt, line 12"``."""

    name: str
    score: float
    where: str


def require_directory(root: PathLike, dataset: str) -> Path:
    """``root`` as a Path, or DatasetError if it is not an existing folder."""
    folder = Path(root).expanduser()
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise DatasetError(f"{dataset} root {folder} {problem}")
    return folder


def find_label_file(
    root: Path,
    labels: PathLike | None,
    *,
    dataset: str,
    suffixes: Sequence[str],
    preferred: Sequence[str] = (),
) -> Path:
    """Locate a dataset's label file.

    With ``labels`` given: a relative path is looked up in ``root`` first, then in the working
    directory. Without it: the first of ``preferred`` (file names) present in ``root``, else the
    single file in ``root`` whose suffix is in ``suffixes``.

    Raises:
        LabelError: the named file does not exist, no candidate exists, or several candidates
            exist (the message lists them and asks for ``labels=``).
    """
    if labels is not None:
        given = Path(labels).expanduser()
        tried = [given] if given.is_absolute() else [root / given, given]
        for candidate in tried:
            if candidate.is_file():
                return candidate
        raise LabelError(f"{dataset} label file not found: {' or '.join(str(p) for p in tried)}")
    for name in preferred:
        if (root / name).is_file():
            return root / name
    wanted = {suffix.lower() for suffix in suffixes}
    candidates = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in wanted)
    if not candidates:
        expected = ", ".join([*preferred, *(f"*{s}" for s in suffixes)])
        raise LabelError(f"no {dataset} label file in {root} (expected {expected})")
    if len(candidates) > 1:
        listed = ", ".join(p.name for p in candidates)
        raise LabelError(
            f"several possible {dataset} label files in {root} ({listed}); pass labels=<path>"
        )
    return candidates[0]


def parse_score(value: object, where: str, what: str = "score") -> float:
    """A finite float from a label cell, or LabelError naming ``where`` (file and line)."""
    text = "" if value is None else str(value).strip()
    if not text:
        raise LabelError(f"{where}: {what} is empty")
    try:
        score = float(text)
    except ValueError:
        raise LabelError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(score):
        raise LabelError(f"{where}: {what} {text!r} is not finite")
    return score


def parse_flag(value: bool | str, name: str) -> bool:
    """A boolean loader option, given as a bool or as command-line text (true/false, 1/0, yes/no)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise DatasetError(f"option {name}={value!r}: expected true or false")


def read_text_lines(path: Path) -> list[str]:
    """A label file's lines (UTF-8, BOM tolerated), or LabelError if unreadable or empty."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelError(f"label file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"label file {path} cannot be read as UTF-8 text: {exc}") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise LabelError(f"label file {path} is empty")
    return lines


# Real label files separate name and score by spaces, tabs or a comma.
_FIELD_SEPARATOR = re.compile(r"[\s,]+")


def read_name_score_file(path: Path) -> list[ScoreLine]:
    """Parse a ``<image name> <score>`` text file, one image per line.

    Blank lines are allowed (they hold no row). Every other line must have exactly two fields and
    a finite score; a name may appear once only.

    Raises:
        LabelError: missing or empty file, wrong field count, bad score, or duplicate name; the
            message names the file and line(s).
    """
    rows: list[ScoreLine] = []
    first_seen: dict[str, str] = {}
    for number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        fields = _FIELD_SEPARATOR.split(line.strip())
        if len(fields) != 2:
            raise LabelError(
                f"{where}: expected 2 fields '<image> <score>', got {len(fields)}: {line.strip()!r}"
            )
        name, score_text = fields
        if name in first_seen:
            raise LabelError(f"{where}: duplicate label for {name!r} (first at {first_seen[name]})")
        first_seen[name] = where
        rows.append(ScoreLine(name=name, score=parse_score(score_text, where), where=where))
    return rows


def read_csv_table(path: Path) -> list[tuple[int, list[str]]]:
    """A CSV file's non-blank rows, header first, each with its line number.

    Cells are stripped of surrounding spaces; blank lines hold no row and are dropped; every row
    must have as many cells as the header. The result always holds at least the header.

    Raises:
        LabelError: missing, unreadable or empty file; a malformed row (line number in the message).
    """
    reader = csv.reader(read_text_lines(path))
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                rows.append((reader.line_num, [cell.strip() for cell in cells]))
    except csv.Error as exc:
        raise LabelError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
    header = rows[0][1]
    for number, cells in rows[1:]:
        if len(cells) != len(header):
            raise LabelError(
                f"{path}, line {number}: expected {len(header)} columns "
                f"({', '.join(header)}), got {len(cells)}"
            )
    return rows


def check_all_labelled(label_path: Path, folder: Path, unlabelled: Sequence[Path]) -> None:
    """LabelError naming ``label_path`` and the first few images it has no row for, if any."""
    if not unlabelled:
        return
    shown = ", ".join(path.name for path in unlabelled[:5])
    more = f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else ""
    raise LabelError(
        f"{label_path}: no label for {len(unlabelled)} image(s) in {folder}: {shown}{more}"
    )


def numbered_images(folder: Path, suffixes: Iterable[str], name_pattern: re.Pattern[str],
                    dataset: str, naming: str) -> dict[int, Path]:
    """``{number: path}`` of the images in ``folder`` whose stem matches ``name_pattern``.

    The pattern's first group is the image number (>= 1). A file with a wanted suffix but another
    name, or two files with one number (``001.png`` and ``1.png``), is a ``DatasetError`` that
    names the files and the expected ``naming``.
    """
    images: dict[int, Path] = {}
    for path in files_with_suffix(folder, suffixes):
        match = name_pattern.match(path.stem)
        if match is None or int(match.group(1)) < 1:
            raise DatasetError(f"unexpected image {path}: {dataset} images are named {naming}")
        index = int(match.group(1))
        if index in images:
            raise DatasetError(f"{images[index]} and {path} are both {dataset} image number {index}")
        images[index] = path
    return images


def files_with_suffix(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files directly in ``folder`` whose suffix (any case) is in ``suffixes``, sorted."""
    wanted = {suffix.lower() for suffix in suffixes}
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted)
