"""Small on-disk copies of the real dataset layouts, for the loader tests.

Every image is the same tiny file (the loaders only check existence, never decode), so a full
544-image CVIQD tree takes a fraction of a second. Label files use the real formats: CVIQ.mat
written by scipy.io.savemat, text ``name score`` lines, JUFE sheets as .xlsx (openpyxl), .csv,
and .xls. xlwt is not available, so the .xls is a BIFF2 worksheet stream (the Excel 2.x file
format, which xlrd reads through its normal path) written by :func:`write_biff2_xls`.
"""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openpyxl
import scipy.io
from PIL import Image


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (90, 120, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


TINY_PNG = _encoded("PNG")
TINY_JPEG = _encoded("JPEG")


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(TINY_JPEG if path.suffix.lower() in (".jpg", ".jpeg") else TINY_PNG)
    return path


# ------------------------------------------------------------------------------------ CVIQD


def cviqd_mos(index: int) -> float:
    """A distinct, exactly representable MOS per image number."""
    return 20.0 + (index % 300) * 0.25


def make_cviqd(root: Path, *, n_groups: int = 16, labels: str = "mat-cell") -> Path:
    """``root/001.png...`` plus labels as ``"mat-cell"`` (the release's N x 2 cell array),
    ``"mat-vector"`` (N x 1 MOS vector) or ``"txt"`` (``cviqd_labels.txt``, ``NNN.png score``)."""
    root.mkdir(parents=True, exist_ok=True)
    count = 34 * n_groups
    for index in range(1, count + 1):
        write_image(root / f"{index:03d}.png")
    if labels == "mat-cell":
        cells = np.empty((count, 2), dtype=object)
        for i in range(count):
            cells[i, 0] = f"{i + 1:03d}.png"
            cells[i, 1] = np.array([[cviqd_mos(i + 1)]])
        scipy.io.savemat(root / "CVIQ.mat", {"CVIQ": cells})
    elif labels == "mat-vector":
        vector = np.array([[cviqd_mos(i)] for i in range(1, count + 1)])
        scipy.io.savemat(root / "CVIQ.mat", {"CVIQ": vector})
    elif labels == "txt":
        lines = [f"{i:03d}.png {cviqd_mos(i)}" for i in range(1, count + 1)]
        (root / "cviqd_labels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        raise ValueError(labels)
    return root


# ------------------------------------------------------------------------------------- OIQA


def oiqa_mos(index: int) -> float:
    return 1.0 + (index % 36) * 0.25


def make_oiqa(
    root: Path, *, n_refs: int = 16, suffix: str = ".jpg", release_layout: bool = False
) -> Path:
    """``img1...img{20 n_refs}`` in ``root`` (or ``root/distorted_images``) and ``oiqa_mos.txt``."""
    image_folder = root / "distorted_images" if release_layout else root
    count = 20 * n_refs
    for index in range(1, count + 1):
        write_image(image_folder / f"img{index}{suffix}")
    if release_layout:
        for ref in range(1, n_refs + 1):
            write_image(root / "reference_images" / f"img{ref}{suffix}")
    lines = [f"img{i} {oiqa_mos(i)}" for i in range(1, count + 1)]
    (root / "oiqa_mos.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# ------------------------------------------------------------------------------------- JUFE

JUFE_HEADER = [
    "session",
    "imgName",
    "average",
    "std",
    "distortionType",
    "level",
    "explorationTime",
    "startingPoint",
    "Scene",
]
JUFE_CODES = ("bd", "gb", "gn", "st")
#: MOS offset of each (startingPoint, explorationTime) condition from an image's base MOS; they
#: sum to zero, so the mean over the four conditions is the base.
JUFE_OFFSETS = {("good", 5): 0.2, ("good", 15): 0.4, ("bad", 5): -0.2, ("bad", 15): -0.4}


def jufe_distorted_names(n_refs: int) -> list[str]:
    """Four distorted stems per reference, one per type, with varying len and level."""
    return [
        f"{ref}_len{(ref + j) % 3 + 1}_{code}_{(ref + 2 * j) % 3 + 1}"
        for ref in range(1, n_refs + 1)
        for j, code in enumerate(JUFE_CODES)
    ]


def jufe_base_mos(stem: str) -> float:
    return 1.5 + (sum(ord(c) for c in stem) % 20) * 0.125


def jufe_rows(
    n_refs: int, *, label_refs: bool = True, text_cells: bool = False
) -> list[list[object]]:
    """Header plus 4 rows per image. ``text_cells`` writes durations as ``"5s"`` and
    capitalised starting points, as a hand-typed CSV might."""
    stems = jufe_distorted_names(n_refs)
    if label_refs:
        stems = [str(ref) for ref in range(1, n_refs + 1)] + stems
    rows: list[list[object]] = [list(JUFE_HEADER)]
    for stem in stems:
        parts = stem.split("_")
        for session, ((start, seconds), offset) in enumerate(JUFE_OFFSETS.items(), start=1):
            rows.append(
                [
                    session,
                    f"{stem}.png",
                    jufe_base_mos(stem) + offset,
                    0.5,
                    parts[2] if len(parts) == 4 else "ref",
                    int(parts[3]) if len(parts) == 4 else 0,
                    f"{seconds}s" if text_cells else seconds,
                    start.capitalize() if text_cells else start,
                    f"scene{parts[0]}",
                ]
            )
    return rows


def make_jufe(root: Path, *, n_refs: int = 3, fmt: str = "xlsx", label_refs: bool = True) -> Path:
    """``ref/``, ``dis/`` and a label sheet ``jufe_mos.<fmt>`` (fmt: xlsx, csv or xls)."""
    for ref in range(1, n_refs + 1):
        write_image(root / "ref" / f"{ref}.png")
    for stem in jufe_distorted_names(n_refs):
        write_image(root / "dis" / f"{stem}.png")
    rows = jufe_rows(n_refs, label_refs=label_refs, text_cells=fmt == "csv")
    write_sheet(root / f"jufe_mos.{fmt}", rows)
    return root


def write_sheet(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    """Write ``rows`` as .xlsx, .csv or .xls according to the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".xlsx":
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        for row in rows:
            sheet.append(list(row))
        workbook.save(path)
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
    elif path.suffix == ".xls":
        write_biff2_xls(path, rows)
    else:
        raise ValueError(path)
    return path


def _biff_record(opcode: int, payload: bytes) -> bytes:
    return struct.pack("<HH", opcode, len(payload)) + payload


def write_biff2_xls(path: Path, rows: Sequence[Sequence[object]]) -> None:
    """A single-worksheet BIFF2 (Excel 2.x) .xls: BOF, CODEPAGE, one LABEL/NUMBER per cell, EOF."""
    cell_attributes = b"\x00\x00\x00"
    data = _biff_record(0x0009, struct.pack("<HH", 0x0002, 0x0010))  # BOF: BIFF2 worksheet
    data += _biff_record(0x0042, struct.pack("<H", 1252))  # CODEPAGE: Windows-1252
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            position = struct.pack("<HH", r, c) + cell_attributes
            if isinstance(value, str):
                text = value.encode("cp1252")
                data += _biff_record(0x0004, position + bytes([len(text)]) + text)  # LABEL
            else:
                data += _biff_record(0x0003, position + struct.pack("<d", float(value)))  # NUMBER
    data += _biff_record(0x000A, b"")  # EOF
    path.write_bytes(data)


def write_hm_file(
    path: Path, samples: Sequence[tuple[float, float, int]], *, extra_columns: bool = True
) -> Path:
    """One subject's head-movement CSV from ``(lon, lat, valid)`` samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if extra_columns:
            writer.writerow(["pitch", "yaw", "roll", "lat", "lon", "valid"])
            writer.writerows([[lat, lon, 0.0, lat, lon, valid] for lon, lat, valid in samples])
        else:
            writer.writerow(["lon", "lat", "valid"])
            writer.writerows([[lon, lat, valid] for lon, lat, valid in samples])
    return path


# -------------------------------------------------------------------------------------- csv


def make_csv_folder(
    root: Path, rows: Sequence[Sequence[object]], *, header: Sequence[str] | None = None
) -> Path:
    """``root/labels.csv`` with ``header`` and ``rows``; every ``path`` cell gets a tiny image."""
    columns = list(header or ["path", "mos", "ref", "distortion", "level", "scope"])
    path_column = [name.strip().lower() for name in columns].index("path")
    for row in rows:
        write_image(root / str(row[path_column]))
    write_sheet(root / "labels.csv", [columns, *rows])
    return root
