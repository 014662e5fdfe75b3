"""Reports that people read: Markdown tables and PNG figures, written atomically.

Used by ``experiments/run_ppo.py``, ``experiments/reproduce.py`` and ``rl-scaniqa score``.
matplotlib runs on the non-interactive Agg backend, so nothing here needs a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from rl_scaniqa.envs.data.geometry import ViewportGrid  # noqa: E402
from rl_scaniqa.envs.render import draw_scanpaths  # noqa: E402
from rl_scaniqa.envs.storage import atomic_path  # noqa: E402


def format_value(value: object, digits: int = 3) -> str:
    """A table cell: floats rounded, nan as an en dash."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str],
                   headers: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` restricted to ``columns``."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(column, "")) for column in columns) + " |")
    return "\n".join(lines) + "\n"


def mean_std(summary: Mapping[str, Mapping[str, float]], metric: str) -> str:
    """``0.912 ± 0.013`` from a :func:`rl_scaniqa.assessor.metrics.summarize` entry."""
    entry = summary[metric]
    if math.isnan(entry["std"]):
        return format_value(entry["mean"])
    return f"{format_value(entry['mean'])} ± {format_value(entry['std'])}"


def _save(figure: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_prediction_scatter(predicted: np.ndarray, mos: np.ndarray, path: str | Path, *,
                            title: str, uncertainty: np.ndarray | None = None,
                            annotation: str = "") -> Path:
    """Predicted score vs MOS with the identity line (error bars = std over paths)."""
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.errorbar(mos, predicted, yerr=uncertainty, fmt="o", ms=4, alpha=0.75, elinewidth=0.8,
                  capsize=0, color="tab:blue")
    low = float(min(np.min(mos), np.min(predicted)))
    high = float(max(np.max(mos), np.max(predicted)))
    axis.plot([low, high], [low, high], "--", color="grey", lw=1, label="ideal")
    axis.set_xlabel("MOS")
    axis.set_ylabel("predicted score")
    axis.set_title(title)
    if annotation:
        axis.text(0.03, 0.97, annotation, transform=axis.transAxes, va="top", fontsize=9,
                  bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    return _save(figure, Path(path))


def plot_scanpath_panels(thumbnails: Sequence[np.ndarray], paths: Sequence[np.ndarray],
                         grid: ViewportGrid, titles: Sequence[str], path: str | Path, *,
                         columns: int = 2, suptitle: str = "") -> Path:
    """ERP thumbnails with their K scanpaths drawn (one colour per path), in a grid of panels."""
    count = len(thumbnails)
    rows = max(1, math.ceil(count / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, thumbnail, image_paths, title in zip(axes.flat, thumbnails, paths, titles):
        axis.imshow(draw_scanpaths(thumbnail, [list(p) for p in image_paths], grid))
        axis.set_title(title, fontsize=9)
    if suptitle:
        figure.suptitle(suptitle)
    figure.tight_layout()
    return _save(figure, Path(path))


def plot_curve(x: Sequence[float], series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
               path: str | Path, *, xlabel: str, ylabel: str, title: str) -> Path:
    """Lines with ± std bands: ``series`` maps a label to (means, stds) over ``x``."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, (means, stds) in series.items():
        means_a, stds_a = np.asarray(means, float), np.nan_to_num(np.asarray(stds, float))
        axis.plot(x, means_a, "o-", label=label)
        axis.fill_between(x, means_a - stds_a, means_a + stds_a, alpha=0.2)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(figure, Path(path))


def plot_distance_profiles(edges: np.ndarray, profiles: Mapping[str, np.ndarray],
                           path: str | Path, *, title: str) -> Path:
    """One line per agent: the fraction of its steps in each bin of distance from the damage.

    ``edges`` are the bin edges in degrees (great-circle distance from the damaged cap's centre
    to the visited viewport's centre), ``profiles`` map an agent to its fractions per bin.
    """
    edges = np.asarray(edges, dtype=np.float64)
    centres = (edges[:-1] + edges[1:]) / 2.0
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, fractions in profiles.items():
        axis.plot(centres, np.asarray(fractions, dtype=np.float64), "o-", ms=3, label=label)
    axis.set_xlabel("distance of the visited viewport from the damaged cap's centre (°)")
    axis.set_ylabel("fraction of path steps")
    axis.set_xlim(float(edges[0]), float(edges[-1]))
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, Path(path))


def plot_grouped_bars(labels: Sequence[str], series: Mapping[str, Sequence[float]],
                      path: str | Path, *, ylabel: str, title: str,
                      ylim: tuple[float, float] | None = None,
                      target: float | None = None) -> Path:
    """One group of bars per label, one bar per series (e.g. methods), with an optional target
    line; a nan value leaves its bar out."""
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(labels) * max(len(series), 1)), 4))
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(labels), dtype=np.float64)
    for k, (name, values) in enumerate(series.items()):
        axis.bar(positions + (k - (len(series) - 1) / 2) * width,
                 np.asarray(values, dtype=np.float64), width, label=name)
    if target is not None:
        axis.axhline(target, color="black", linewidth=0.8, linestyle="--", label=f"target {target:g}")
    axis.set_xticks(positions, list(labels), rotation=30, ha="right")
    if ylim is not None:
        axis.set_ylim(*ylim)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="lower left")
    return _save(figure, Path(path))
