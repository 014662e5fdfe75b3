"""CVIQD (CVIQ database): 16 references and 528 compressed panoramas, MOS 0..100.

Layout expected in ``root``::

    001.png ... 544.png     images (only existence is checked)
    CVIQ.mat                labels, variable ``CVIQ`` (see below)
      or  <any>.txt         labels as lines ``001.png 64.66``

Images are numbered in consecutive groups of 34, one group per reference content. Within group
``g`` (0-based), positions 1-11 are JPEG levels 1-11, 12-22 H.264/AVC levels 1-11, 23-33
H.265/HEVC levels 1-11, and position 34 is the reference (distortion ``"reference"``, level 0).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import scipy.io

from rl_scaniqa.envs.data.datasets.records import (
    PanoramaRecord,
    PathLike,
    ScoreLine,
    check_all_labelled,
    find_label_file,
    numbered_images,
    parse_score,
    read_name_score_file,
    require_directory,
)
from rl_scaniqa.envs.errors import DatasetError, LabelError

CVIQD_GROUP_SIZE = 34
CVIQD_LEVELS = 11
CVIQD_CODECS = ("jpeg", "avc", "hevc")
CVIQD_MAT_NAME = "CVIQ.mat"
CVIQD_MAT_VARIABLE = "CVIQ"

_IMAGE_NAME = re.compile(r"^(\d+)$")
_LABEL_NAME = re.compile(r"^(\d+)(?:\.png)?$", re.IGNORECASE)


def cviqd_image_info(index: int) -> tuple[str, str, int]:
    """``(ref_id, distortion, level)`` of CVIQD image number ``index`` (1-based: ``001.png``)."""
    if index < 1:
        raise ValueError(f"CVIQD image numbers start at 1, got {index}")
    group, position = divmod(index - 1, CVIQD_GROUP_SIZE)
    ref_id = f"cviqd-{group + 1:02d}"
    if position == CVIQD_GROUP_SIZE - 1:
        return ref_id, "reference", 0
    codec, level = divmod(position, CVIQD_LEVELS)
    return ref_id, CVIQD_CODECS[codec], level + 1


def load_cviqd(root: PathLike, *, labels: PathLike | None = None) -> list[PanoramaRecord]:
    """Load CVIQD from ``root`` (layout in the module docstring).

    Args:
        root: folder holding ``NNN.png`` and the label file.
        labels: label file (``.mat`` or text); relative paths are looked up in ``root`` first.
            Default: ``root/CVIQ.mat`` if present, else the single ``*.txt`` in ``root``.

    ``CVIQ.mat`` may hold, in variable ``CVIQ``, either the release's N x 2 cell array of
    ``{image name, MOS}`` rows, or a numeric N-vector (N x 1 or 1 x N) whose entry ``i`` is the
    MOS of image ``i + 1``. MATLAB v7.3 (HDF5) files are not supported (re-save with ``-v7``).

    Every labelled image must exist, every ``*.png`` in ``root`` must be labelled, and no image
    may be labelled twice. Records come in image-number order; ``image_id`` is the file stem
    (``"001"``), ``ref_id`` is ``cviqd-01`` .. ``cviqd-16``, ``extra`` holds ``{"index": n}``.

    Raises:
        LabelError: missing/empty/malformed label file, bad or duplicate label, unlabelled image.
        DatasetError: missing root, a labelled image that does not exist, an unexpected ``.png``
            name, or two files with the same number.
    """
    folder = require_directory(root, "CVIQD")
    label_path = find_label_file(
        folder, labels, dataset="CVIQD", suffixes=(".mat", ".txt"), preferred=(CVIQD_MAT_NAME,)
    )
    entries = (
        _read_cviq_mat(label_path)
        if label_path.suffix.lower() == ".mat"
        else read_name_score_file(label_path)
    )
    images = numbered_images(folder, (".png",), _IMAGE_NAME, "CVIQD",
                             "NNN.png (001.png ... 544.png)")

    labelled: dict[int, ScoreLine] = {}
    for entry in entries:
        match = _LABEL_NAME.match(entry.name)
        if match is None or int(match.group(1)) < 1:
            raise LabelError(f"{entry.where}: image name {entry.name!r} is not of the form NNN.png")
        index = int(match.group(1))
        if index in labelled:
            raise LabelError(
                f"{entry.where}: image {index:03d} is labelled twice "
                f"(first at {labelled[index].where})"
            )
        if index not in images:
            raise DatasetError(
                f"{entry.where}: labelled image {folder / f'{index:03d}.png'} does not exist"
            )
        labelled[index] = entry

    check_all_labelled(label_path, folder, [images[i] for i in sorted(set(images) - set(labelled))])

    records = []
    for index in sorted(labelled):
        ref_id, distortion, level = cviqd_image_info(index)
        records.append(
            PanoramaRecord(
                path=images[index],
                mos=labelled[index].score,
                ref_id=ref_id,
                distortion=distortion,
                level=level,
                extra={"index": index},
            )
        )
    return records


def _read_cviq_mat(path: Path) -> list[ScoreLine]:
    try:
        contents = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise LabelError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with save(..., '-v7')"
        ) from None
    except (
        Exception
    ) as exc:  # scipy reports corrupt files as MatReadError, ValueError, IndexError...
        raise LabelError(f"{path}: not a readable MATLAB file ({exc})") from None
    if CVIQD_MAT_VARIABLE not in contents:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise LabelError(f"{path}: no variable {CVIQD_MAT_VARIABLE!r} (variables found: {found})")
    data = np.asarray(contents[CVIQD_MAT_VARIABLE])
    if data.size == 0:
        raise LabelError(f"{path}: variable {CVIQD_MAT_VARIABLE!r} is empty")
    if data.dtype == object:
        return _cell_rows(path, data)
    if data.ndim != 2 or min(data.shape) != 1:
        raise LabelError(
            f"{path}: variable {CVIQD_MAT_VARIABLE!r} has shape {data.shape}; "
            "expected an N-vector of MOS or an N x 2 cell array {name, MOS}"
        )
    return [
        ScoreLine(
            name=f"{i + 1:03d}.png",
            score=parse_score(value, f"{path}, entry {i + 1}"),
            where=f"{path}, entry {i + 1}",
        )
        for i, value in enumerate(data.ravel())
    ]


def _cell_rows(path: Path, cells: np.ndarray) -> list[ScoreLine]:
    """Rows of the release's ``{name, MOS}`` cell array (scipy gives an object array of arrays)."""
    if cells.ndim != 2 or cells.shape[1] != 2:
        raise LabelError(
            f"{path}: cell array {CVIQD_MAT_VARIABLE!r} has shape {cells.shape}; "
            "expected N x 2 {name, MOS}"
        )
    rows = []
    seen: dict[str, str] = {}
    for i, (name_cell, score_cell) in enumerate(cells, start=1):
        where = f"{path}, entry {i}"
        name_values = np.asarray(name_cell).ravel()
        score_values = np.asarray(score_cell).ravel()
        if name_values.size != 1 or score_values.size != 1:
            raise LabelError(
                f"{where}: expected one name and one MOS, "
                f"got {name_values.size} and {score_values.size} values"
            )
        name = str(name_values[0]).strip()
        if name in seen:
            raise LabelError(f"{where}: duplicate label for {name!r} (first at {seen[name]})")
        seen[name] = where
        rows.append(ScoreLine(name=name, score=parse_score(score_values[0], where), where=where))
    return rows
