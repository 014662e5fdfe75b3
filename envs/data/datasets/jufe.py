"""JUFE: 258 references and 1032 distorted panoramas rated under four viewing conditions, MOS ~1..5.

Layout expected in ``root``::

    ref/1.png ... ref/258.png                         references (optional folder)
    dis/<ref>_len<k>_<bd|gb|gn|st>_<level>.png        distorted images, levels 1..3
    <labels>.xls | .xlsx | .csv                       header row, one row per image x condition

Only existence of the images is checked. ``bd``/``gb``/``gn``/``st`` become the distortion names
``brightness``/``blur``/``noise``/``stitching``; ``ref_id`` is ``jufe-001`` .. ``jufe-258`` from
the leading number; ``len<k>`` is kept as ``extra["len"]``.

Label sheet: the first non-empty row is the header; columns are matched ignoring case, spaces
and underscores. Used columns: ``imgName`` (file name, with or without extension or folder),
``average`` (MOS), ``std`` (optional), ``explorationTime`` (seconds: ``5``, ``15``, ``"5s"``,
``"15 sec"`` ...), ``startingPoint`` (a text starting with ``good`` or ``bad``, any case) and
``Scene`` (optional, kept). ``session``, ``distortionType`` and ``level`` are not used: type and
level come from the file name. Each row is one viewing *condition*, written ``"<start>-<T>s"``
(``"good-5s"``, ``"bad-15s"`` ...). Every labelled image must have exactly one row for every
condition that appears in the sheet, so that averages over conditions are comparable.

References are loaded only when the sheet has rows for them (``imgName`` ``1``, ``1.png`` ...);
unlabelled references are not records.

Head-movement scanpaths (optional, ``hm_root=``)::

    <hm_root>/<image stem>/<subject>.csv     e.g. HMData/1_len1_bd_1/07.csv, HMData/1/07.csv

Each file has a header with at least ``lon``, ``lat`` and ``valid`` (``pitch``, ``yaw``, ``roll``
may be present and are not used: ``lon``/``lat`` are the viewing direction on the panorama,
whereas headset Euler angles follow SDK-specific sign and zero conventions). Assumptions:

- ``lat`` and ``lon`` are in degrees; ``lat`` in -90..90, positive up; ``lon`` 0 is the centre
  of the ERP and grows towards increasing ERP columns. ``lon`` may be signed (-180..180) or
  0..360 (the same angle, wrapped to -180..180 here); ``hm_lon_convention="auto"`` picks 0..360
  when any valid sample in the loaded files exceeds 180, signed otherwise, and refuses files
  that mix negative values with values above 180.
- ``valid`` is ``1``/``0`` or ``true``/``false``; only valid rows are used. A file with no valid
  row gives an empty path (kept, so paths stay aligned with ``human_scanpath_subjects``).

Each valid sample maps to the nearest viewport centre of ``grid`` (the same rule as
:meth:`ViewportGrid.nearest`), and consecutive repeats are collapsed. Per record, ``extra`` then
holds ``human_scanpaths`` (list of index lists, one per subject file in natural name order),
``human_scanpath_subjects`` (the file stems), ``human_scanpath_grid`` (``grid.key()``) and, when
any sample exists, ``start_yaw``/``start_pitch`` (degrees) of the first valid sample of the
first non-empty path. Records without an HM folder get empty lists and no start. A folder that
names no image is an error; a folder for an existing but unlabelled reference is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rl_scaniqa.envs.data.datasets.records import (
    PanoramaRecord,
    PathLike,
    check_all_labelled,
    files_with_suffix,
    find_label_file,
    parse_score,
    read_csv_table,
    require_directory,
)
from rl_scaniqa.envs.errors import DatasetError, LabelError

if TYPE_CHECKING:
    from rl_scaniqa.envs.data.geometry import ViewportGrid

JUFE_DISTORTIONS: dict[str, str] = {
    "bd": "brightness",
    "gb": "blur",
    "gn": "noise",
    "st": "stitching",
}
JUFE_LABEL_SUFFIXES = (".xls", ".xlsx", ".csv")
JUFE_REQUIRED_COLUMNS = ("imgName", "average", "explorationTime", "startingPoint")
JUFE_STARTING_POINTS = ("good", "bad")
HM_LON_CONVENTIONS = ("auto", "signed", "0-360")

_DISTORTED_NAME = re.compile(r"^(\d+)_len(\d+)_(bd|gb|gn|st)_(\d+)$")
_REFERENCE_NAME = re.compile(r"^(\d+)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:s|sec|secs|second|seconds)?$")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Two dot products closer than this may be a geometric tie; those samples go through
# ViewportGrid.nearest itself so that its tie rule (lowest index) decides.
_TIE_TOLERANCE = 1e-9


@dataclass
class _Image:
    """One image on disk and, once the sheet is read, its per-condition ratings."""

    path: Path
    ref_number: int
    distortion: str
    level: int
    length: int | None
    mos: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    scene: str | None = None


def load_jufe(
    root: PathLike,
    *,
    labels: PathLike | None = None,
    condition: str = "mean",
    hm_root: PathLike | None = None,
    grid: ViewportGrid | None = None,
    hm_lon_convention: str = "auto",
) -> list[PanoramaRecord]:
    """Load JUFE from ``root`` (layout in the module docstring).

    Args:
        root: folder holding ``dis/``, optionally ``ref/``, and the label sheet.
        labels: label sheet (.xls via xlrd, .xlsx via openpyxl, or .csv; the first worksheet is
            read); relative paths are looked up in ``root`` first. Default: the single such file
            in ``root``.
        condition: which ratings form ``mos``. ``"mean"`` (default, as in the paper): mean over
            all conditions in the sheet; ``"good"``/``"bad"``: mean over that starting point's
            durations; ``"5s"``/``"15s"``: mean over starting points for that duration;
            ``"good-15s"`` (also ``"good_15"``, ``"Good 15s"``): one condition.
        hm_root: folder of head-movement CSVs (relative paths against ``root``); None skips them.
        grid: viewport grid for the scanpath indices; default ``ViewportGrid()``.
        hm_lon_convention: ``"auto"``, ``"signed"`` (-180..180) or ``"0-360"``.

    Records are ordered by reference number, the reference first, then distortion name, level
    and ``len``. ``image_id`` is the file stem (``"12"``, ``"12_len2_gn_3"``). ``extra`` holds
    ``condition`` (normalised), ``conditions_used``, ``condition_mos`` and, with a ``std``
    column, ``condition_std`` (dicts over all conditions), ``starting_points`` (those used),
    ``len`` (distorted images), ``scene`` (with a ``Scene`` column), and the scanpath fields.

    Raises:
        LabelError: missing/empty/malformed sheet or row, duplicate image x condition row, an
            image missing a condition, an unlabelled distorted image, bad HM file rows.
        DatasetError: missing root or ``dis/``, an unexpected file name, a labelled image that
            does not exist, a condition absent from the sheet, an HM folder naming no image.
        ValueError: malformed ``condition`` or ``hm_lon_convention``.
    """
    folder = require_directory(root, "JUFE")
    if hm_lon_convention not in HM_LON_CONVENTIONS:
        raise ValueError(
            f"hm_lon_convention must be one of {HM_LON_CONVENTIONS}, got {hm_lon_convention!r}"
        )
    wanted = _parse_condition(condition)
    images = _scan_images(folder)
    label_path = find_label_file(folder, labels, dataset="JUFE", suffixes=JUFE_LABEL_SUFFIXES)
    labelled = _read_labels(label_path, images, folder)

    check_all_labelled(
        label_path,
        folder / "dis",
        [
            image.path
            for image in images.values()
            if image.distortion != "reference" and not image.mos
        ],
    )
    conditions = sorted({key for image in labelled.values() for key in image.mos})
    for stem, image in labelled.items():
        missing = [key for key in conditions if key not in image.mos]
        if missing:
            first = next(iter(image.where.values()))
            raise LabelError(
                f"{first}: image {stem!r} has no row for condition(s) {', '.join(missing)} "
                f"in {label_path}"
            )
    selected = _select_conditions(wanted, conditions, label_path)

    scanpaths: dict[str, dict[str, Any]] = {}
    if hm_root is not None:
        scanpaths = _load_head_movements(
            folder, Path(hm_root), images, labelled, _grid_or_default(grid), hm_lon_convention
        )

    records = []
    for stem, image in sorted(labelled.items(), key=lambda item: _order_key(item[1], item[0])):
        extra: dict[str, Any] = {
            "condition": wanted,
            "conditions_used": selected,
            "condition_mos": dict(image.mos),
            "starting_points": tuple(sorted({key.split("-")[0] for key in selected})),
        }
        if image.std:
            extra["condition_std"] = dict(image.std)
        if image.length is not None:
            extra["len"] = image.length
        if image.scene is not None:
            extra["scene"] = image.scene
        extra.update(scanpaths.get(stem, {}))
        records.append(
            PanoramaRecord(
                path=image.path,
                mos=float(np.mean([image.mos[key] for key in selected])),
                ref_id=f"jufe-{image.ref_number:03d}",
                distortion=image.distortion,
                level=image.level,
                extra=extra,
            )
        )
    return records


def _order_key(image: _Image, stem: str) -> tuple[int, int, str, int, int, str]:
    is_distorted = int(image.distortion != "reference")
    return image.ref_number, is_distorted, image.distortion, image.level, image.length or 0, stem


# ------------------------------------------------------------------------------ images on disk


def _scan_images(folder: Path) -> dict[str, _Image]:
    distorted_folder = folder / "dis"
    if not distorted_folder.is_dir():
        raise DatasetError(f"JUFE root {folder} has no dis/ folder of distorted images")
    images: dict[str, _Image] = {}
    for path in files_with_suffix(distorted_folder, _IMAGE_SUFFIXES):
        match = _DISTORTED_NAME.match(path.stem)
        if match is None:
            raise DatasetError(
                f"unexpected image {path}: JUFE distorted images are named "
                "<ref>_len<k>_<bd|gb|gn|st>_<level>.png"
            )
        ref_number, length, code, level = match.groups()
        _add_image(
            images,
            path,
            _Image(path, int(ref_number), JUFE_DISTORTIONS[code], int(level), int(length)),
        )
    reference_folder = folder / "ref"
    if reference_folder.is_dir():
        for path in files_with_suffix(reference_folder, _IMAGE_SUFFIXES):
            if _REFERENCE_NAME.match(path.stem) is None:
                raise DatasetError(
                    f"unexpected image {path}: JUFE references are named <number>.png"
                )
            _add_image(images, path, _Image(path, int(path.stem), "reference", 0, None))
    return images


def _add_image(images: dict[str, _Image], path: Path, image: _Image) -> None:
    if path.stem in images:
        raise DatasetError(
            f"{images[path.stem].path} and {path} have the same name; "
            "JUFE image names must be unique"
        )
    images[path.stem] = image


# ------------------------------------------------------------------------------ label sheet


def _read_labels(label_path: Path, images: dict[str, _Image], root: Path) -> dict[str, _Image]:
    """Fill ``images[stem].mos`` etc. from the sheet; return the labelled images by stem."""
    rows, unit = _read_sheet(label_path)
    if not rows:
        raise LabelError(f"label file {label_path} is empty")
    header_number, header = rows[0]
    columns = _column_positions(label_path, header_number, unit, header)
    if len(rows) == 1:
        raise LabelError(f"{label_path}: no data rows after the header ({unit} {header_number})")

    wanted = ("imgname", "average", "std", "explorationtime", "startingpoint", "scene")
    used = [key for key in wanted if key in columns]
    labelled: dict[str, _Image] = {}
    for number, cells in rows[1:]:
        where = f"{label_path}, {unit} {number}"
        cell = {key: _cell(cells, columns, key, where) for key in used}
        stem = _image_stem(cell["imgname"])
        if not stem:
            raise LabelError(f"{where}: imgName is empty")
        start = _starting_point(cell["startingpoint"], where)
        key = f"{start}-{_duration(cell['explorationtime'], where)}"
        image = images.get(stem)
        if image is None:
            raise DatasetError(
                f"{where}: labelled image {stem!r} does not exist "
                f"(looked for {root}/dis/{stem}.png and {root}/ref/{stem}.png)"
            )
        if key in image.mos:
            raise LabelError(
                f"{where}: second row for image {stem!r} under condition {key} "
                f"(first at {image.where[key]})"
            )
        if "scene" in cell:
            if image.scene is not None and cell["scene"] != image.scene:
                first = next(iter(image.where.values()))
                raise LabelError(
                    f"{where}: Scene {cell['scene']!r} differs from {image.scene!r} "
                    f"given for {stem!r} at {first}"
                )
            image.scene = cell["scene"]
        image.mos[key] = parse_score(cell["average"], where, "average")
        image.where[key] = where
        if "std" in cell:
            image.std[key] = parse_score(cell["std"], where, "std")
        labelled[stem] = image
    return labelled


def _read_sheet(path: Path) -> tuple[list[tuple[int, list[Any]]], str]:
    """Non-empty rows of the first worksheet with their 1-based numbers, and the unit name."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return [(number, list(cells)) for number, cells in read_csv_table(path)], "line"
    raw = _xlsx_rows(path) if suffix in (".xlsx", ".xlsm") else _xls_rows(path)
    return [(number, cells) for number, cells in raw if any(_cell_text(c) for c in cells)], "row"


def _xlsx_rows(path: Path) -> list[tuple[int, list[Any]]]:
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (
        Exception
    ) as exc:  # openpyxl reports corrupt files as zipfile, KeyError, InvalidFileException...
        raise LabelError(
            f"{path}: cannot be read as an .xlsx workbook ({type(exc).__name__}: {exc})"
        ) from None
    try:
        sheet = workbook.worksheets[0]
        return [
            (number, list(row))
            for number, row in enumerate(sheet.iter_rows(values_only=True), start=1)
        ]
    finally:
        workbook.close()


def _xls_rows(path: Path) -> list[tuple[int, list[Any]]]:
    import io

    import xlrd

    try:
        # xlrd prints diagnostics to stdout by default; keep library output off the user's console.
        book = xlrd.open_workbook(str(path), logfile=io.StringIO())
    except (
        Exception
    ) as exc:  # xlrd signals corrupt files with XLRDError, CompDocError, struct.error...
        raise LabelError(
            f"{path}: cannot be read as an .xls workbook ({type(exc).__name__}: {exc})"
        ) from None
    sheet = book.sheet_by_index(0)
    return [(number + 1, sheet.row_values(number)) for number in range(sheet.nrows)]


def _normalise_column(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", _cell_text(name).lower())


def _column_positions(path: Path, number: int, unit: str, header: Sequence[Any]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for position, name in enumerate(header):
        key = _normalise_column(name)
        if not key:
            continue
        if key in columns:
            raise LabelError(
                f"{path}, {unit} {number}: column {_cell_text(name)!r} appears twice in the header"
            )
        columns[key] = position
    missing = [name for name in JUFE_REQUIRED_COLUMNS if _normalise_column(name) not in columns]
    if missing:
        raise LabelError(
            f"{path}, {unit} {number}: header lacks column(s) {', '.join(missing)}; "
            f"found {[_cell_text(h) for h in header]}"
        )
    return columns


def _cell(cells: Sequence[Any], columns: dict[str, int], key: str, where: str) -> str:
    position = columns[key]
    if position >= len(cells):
        raise LabelError(
            f"{where}: row has {len(cells)} cells, column {key!r} is number {position + 1}"
        )
    return _cell_text(cells[position])


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    # Spreadsheets store whole numbers as floats (imgName 12 -> 12.0, explorationTime 5 -> 5.0).
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _image_stem(text: str) -> str:
    name = text.replace("\\", "/").rsplit("/", 1)[-1]
    path = Path(name)
    return path.stem if path.suffix.lower() in _IMAGE_SUFFIXES else name


def _starting_point(text: str, where: str) -> str:
    lowered = text.lower()
    for option in JUFE_STARTING_POINTS:
        if lowered.startswith(option):
            return option
    raise LabelError(f"{where}: startingPoint {text!r} is neither 'good' nor 'bad'")


def _format_duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _duration(text: str, where: str) -> str:
    match = _DURATION.match(text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise LabelError(
            f"{where}: explorationTime {text!r} is not a positive duration in seconds "
            "(e.g. 5, 15, '15s')"
        )
    return _format_duration(float(match.group(1)))


# ------------------------------------------------------------------------------ conditions


def _parse_condition(condition: str) -> str:
    """Normalise ``condition`` to ``mean``, ``good``, ``bad``, ``<T>s`` or ``<start>-<T>s``."""
    text = re.sub(r"[\s_]+", "-", str(condition).strip().lower())
    if text in ("mean", *JUFE_STARTING_POINTS):
        return text
    parts = text.split("-")
    accepted = "'mean', 'good', 'bad', '<T>s' or '<good|bad>-<T>s' (e.g. 'good-15s')"
    duration = _DURATION.match(parts[-1])
    if duration is None or float(duration.group(1)) <= 0 or len(parts) > 2:
        raise ValueError(f"unknown JUFE condition {condition!r}; accepted: {accepted}")
    seconds = _format_duration(float(duration.group(1)))
    if len(parts) == 1:
        return seconds
    if parts[0] not in JUFE_STARTING_POINTS:
        raise ValueError(f"unknown JUFE condition {condition!r}; accepted: {accepted}")
    return f"{parts[0]}-{seconds}"


def _select_conditions(wanted: str, conditions: Sequence[str], label_path: Path) -> tuple[str, ...]:
    if wanted == "mean":
        chosen = list(conditions)
    elif wanted in JUFE_STARTING_POINTS:
        chosen = [key for key in conditions if key.split("-")[0] == wanted]
    elif "-" in wanted:
        chosen = [key for key in conditions if key == wanted]
    else:
        chosen = [key for key in conditions if key.split("-")[1] == wanted]
    if not chosen:
        raise DatasetError(
            f"condition {wanted!r} matches no rows of {label_path}; "
            f"conditions there: {', '.join(conditions)}"
        )
    return tuple(chosen)


# ------------------------------------------------------------------------------ head movements


def _empty_scanpaths(grid: ViewportGrid) -> dict[str, Any]:
    return {"human_scanpaths": [], "human_scanpath_subjects": [], "human_scanpath_grid": grid.key()}


def _grid_or_default(grid: ViewportGrid | None) -> ViewportGrid:
    # Imported here: scanpaths are optional, and geometry pulls in OpenCV.
    from rl_scaniqa.envs.data.geometry import ViewportGrid

    return grid if grid is not None else ViewportGrid()


def _natural_key(text: str) -> list[Any]:
    # "2.csv" before "10.csv": digit runs compare as numbers (re.split alternates text/digits).
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _load_head_movements(
    root: Path,
    hm_root: Path,
    images: dict[str, _Image],
    labelled: dict[str, _Image],
    viewport_grid: ViewportGrid,
    lon_convention: str,
) -> dict[str, dict[str, Any]]:
    folder = require_directory(
        hm_root if hm_root.is_absolute() else root / hm_root, "JUFE head-movement"
    )
    samples: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for image_folder in sorted(
        (p for p in folder.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name)
    ):
        stem = image_folder.name
        if stem not in images:
            raise DatasetError(
                f"head-movement folder {image_folder} names no JUFE image "
                f"(no dis/{stem}.png or ref/{stem}.png)"
            )
        if stem not in labelled:
            continue  # an unlabelled reference is not a record: nothing to attach paths to
        files = sorted(
            files_with_suffix(image_folder, (".csv",)), key=lambda p: _natural_key(p.stem)
        )
        if not files:
            raise DatasetError(f"head-movement folder {image_folder} holds no .csv files")
        samples[stem] = [(path.stem, *_read_hm_file(path)) for path in files]

    convention = _resolve_lon_convention(lon_convention, samples, folder)
    result = {stem: _empty_scanpaths(viewport_grid) for stem in labelled}
    for stem, subject_samples in samples.items():
        entry = result[stem]
        for subject, lon, lat in subject_samples:
            yaw = ((lon + 180.0) % 360.0) - 180.0 if convention == "0-360" else lon
            indices = _nearest_viewports(viewport_grid, yaw, lat)
            if indices.size:
                indices = indices[np.concatenate(([True], indices[1:] != indices[:-1]))]
            entry["human_scanpaths"].append([int(i) for i in indices])
            entry["human_scanpath_subjects"].append(subject)
            if "start_yaw" not in entry and yaw.size:
                entry["start_yaw"], entry["start_pitch"] = float(yaw[0]), float(lat[0])
    return result


def _read_hm_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(lon, lat)`` in degrees of the valid rows of one subject's head-movement CSV."""
    (header_number, header), *rows = read_csv_table(path)
    columns = {name.lower(): position for position, name in enumerate(header)}
    missing = [name for name in ("lon", "lat", "valid") if name not in columns]
    if missing:
        raise LabelError(
            f"{path}, line {header_number}: header lacks column(s) {', '.join(missing)}; "
            f"found {header}"
        )
    lon: list[float] = []
    lat: list[float] = []
    for number, cells in rows:
        where = f"{path}, line {number}"
        if not _is_valid(cells[columns["valid"]], where):
            continue
        longitude = parse_score(cells[columns["lon"]], where, "lon")
        latitude = parse_score(cells[columns["lat"]], where, "lat")
        if not -90.0 <= latitude <= 90.0:
            raise LabelError(f"{where}: lat {latitude:g} is outside -90..90 degrees")
        if not -180.0 <= longitude <= 360.0:
            raise LabelError(f"{where}: lon {longitude:g} is outside -180..360 degrees")
        lon.append(longitude)
        lat.append(latitude)
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def _is_valid(text: str, where: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "1.0", "true"):
        return True
    if lowered in ("0", "0.0", "false"):
        return False
    raise LabelError(f"{where}: valid {text!r} is not 1/0 or true/false")


def _resolve_lon_convention(
    requested: str, samples: dict[str, list[tuple[str, np.ndarray, np.ndarray]]], folder: Path
) -> str:
    if requested != "auto":
        return requested
    lons = [
        lon for subject_samples in samples.values() for _, lon, _ in subject_samples if lon.size
    ]
    if not lons:
        return "signed"
    every = np.concatenate(lons)
    if every.max() > 180.0 and every.min() < 0.0:
        raise DatasetError(
            f"head-movement files under {folder} mix negative lon with lon above 180; "
            "pass hm_lon_convention='signed' or '0-360'"
        )
    return "0-360" if every.max() > 180.0 else "signed"


def _nearest_viewports(
    grid: ViewportGrid, yaw_deg: np.ndarray, pitch_deg: np.ndarray
) -> np.ndarray:
    """Nearest viewport per sample, vectorised: HM logs hold thousands of samples per subject.

    Smallest angular distance == largest dot product of unit vectors. Near-ties are resolved by
    ``grid.nearest`` itself so the result always equals calling it on every sample.
    """
    if yaw_deg.size == 0:
        return np.zeros(0, dtype=np.int64)
    centres = grid.centers_deg
    dots = _unit_vectors(yaw_deg, pitch_deg) @ _unit_vectors(centres[:, 0], centres[:, 1]).T
    best = np.argmax(dots, axis=1)
    if dots.shape[1] > 1:
        top_two = np.sort(dots, axis=1)[:, -2:]
        for i in np.flatnonzero(top_two[:, 1] - top_two[:, 0] < _TIE_TOLERANCE):
            best[i] = grid.nearest(float(yaw_deg[i]), float(pitch_deg[i]))
    return best.astype(np.int64)


def _unit_vectors(yaw_deg: np.ndarray, pitch_deg: np.ndarray) -> np.ndarray:
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    return np.stack(
        [np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)], axis=1
    )
