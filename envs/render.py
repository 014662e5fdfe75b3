"""Drawing scanpaths on an equirectangular panorama.

:func:`draw_scanpaths` is shared by ``Panorama360Env.render`` and by reports and the scorer, so a
path looks the same wherever it is shown: each path gets its own colour, every viewport it visits
is outlined on the ERP (the outline is the gnomonic frustum's border, curved on the ERP and split
where it wraps in yaw) and numbered with its position in the path (0 = start viewport).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from rl_scaniqa.envs.data.geometry import ViewportGrid, viewport_outline

#: Hue step between consecutive paths; the golden-ratio conjugate keeps any number of paths apart.
_GOLDEN_HUE_STEP = 0.618033988749895


def path_colors(n_paths: int) -> list[tuple[int, int, int]]:
    """``n_paths`` distinct, saturated RGB colours (deterministic; path k always gets colour k)."""
    colors = []
    for k in range(n_paths):
        red, green, blue = colorsys.hsv_to_rgb((k * _GOLDEN_HUE_STEP) % 1.0, 0.85, 1.0)
        colors.append((int(red * 255), int(green * 255), int(blue * 255)))
    return colors


def draw_scanpaths(erp_rgb: np.ndarray, paths: Sequence[Sequence[int]], grid: ViewportGrid, *,
                   current: int | None = None, size: tuple[int, int] = (256, 512),
                   colors: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Draw ``paths`` over ``erp_rgb`` and return a new ``size`` = (height, width) uint8 RGB image.

    Args:
        erp_rgb: uint8 (H, W, 3) RGB equirectangular image (any resolution; resized to ``size``).
        paths: viewport index sequences of ``grid``; entries < 0 (history padding) are skipped.
        grid: the viewport grid the indices refer to.
        current: viewport to highlight (the agent's current gaze) with a thick white border.
        size: output (height, width); the ERP is resized to it before drawing so line widths and
            text stay legible for small thumbnails.
        colors: one RGB colour per path; default :func:`path_colors`.
    """
    erp = np.asarray(erp_rgb)
    if erp.ndim != 3 or erp.shape[2] != 3 or erp.dtype != np.uint8:
        raise ValueError(f"erp_rgb must be a uint8 (H, W, 3) RGB image, got {erp.dtype} {erp.shape}")
    height, width = size
    canvas = np.ascontiguousarray(cv2.resize(erp, (width, height), interpolation=cv2.INTER_LINEAR))
    palette = list(colors) if colors is not None else path_colors(len(paths))
    if len(palette) < len(paths):
        raise ValueError(f"{len(paths)} paths need as many colours, got {len(palette)}")
    centers = grid.centers_deg
    n_viewports = grid.n_viewports

    # Paths share viewports (all start from the same one by default): trace each outline once.
    outlines: dict[int, list[np.ndarray]] = {}

    def outline(index: int, color: tuple[int, int, int], thickness: int) -> None:
        if index not in outlines:
            yaw, pitch = centers[index]
            outlines[index] = [np.round(line).astype(np.int32)
                               for line in viewport_outline(yaw, pitch, grid.fov_deg, width, height)]
        cv2.polylines(canvas, outlines[index], isClosed=False, color=color, thickness=thickness,
                      lineType=cv2.LINE_AA)

    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.3, width / 1400)
    for k, path in enumerate(paths):
        color = palette[k]
        for order, index in enumerate(path):
            index = int(index)
            if index < 0:
                continue
            if index >= n_viewports:
                raise ValueError(f"path {k} holds viewport {index}, the grid has {n_viewports}")
            outline(index, color, 1)
            yaw, pitch = centers[index]
            # Paths revisit the same viewports (they share the start), so each path writes its
            # numbers at its own small offset from the centre instead of on top of the others.
            x = int((yaw + 180.0) / 360.0 * width) + 9 * (k % 4) - 14
            y = int((90.0 - pitch) / 180.0 * height) + 9 * (k // 4 % 4) - 10
            text = str(order)
            cv2.putText(canvas, text, (x, y), font, scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(canvas, text, (x, y), font, scale, color, 1, cv2.LINE_AA)
    if current is not None:
        if not 0 <= int(current) < n_viewports:
            raise ValueError(f"current viewport {current} is outside 0..{n_viewports - 1}")
        outline(int(current), (255, 255, 255), 3)
    return canvas


def scanpath_text(grid: ViewportGrid, path: Sequence[int], seen_before: Sequence[int] = (),
                  current: int | None = None) -> str:
    """A compact text view of one path on the grid: ``n_lat`` rows by ``n_lon`` columns.

    Each cell shows the position of the viewport's latest visit in ``path`` (0 = start), ``+`` for
    a viewport seen only by an earlier path (``seen_before``), ``.`` otherwise; the current viewport
    is bracketed. Rows are labelled with their pitch.
    """
    order: dict[int, int] = {}
    for position, index in enumerate(path):
        if index >= 0:
            order[int(index)] = position
    earlier = {int(i) for i in seen_before if i >= 0}
    pitches = grid.centers_deg[::grid.n_lon, 1]
    lines = []
    for row in range(grid.n_lat):
        cells = []
        for col in range(grid.n_lon):
            index = row * grid.n_lon + col
            mark = str(order[index]) if index in order else ("+" if index in earlier else ".")
            cells.append(f"[{mark:>2}]" if index == current else f" {mark:>2} ")
        lines.append(f"{pitches[row]:+6.1f}° " + "".join(cells))
    return "\n".join(lines)
