"""Draw the RL-ScanIQA architecture figure (layers and the data's way from an ERP to a score).

    .venv/bin/python experiments/architecture_figure.py --out docs/images/architecture.png

One figure, two readings. The horizontal bands are the package's layers in the order that
``tests/test_layers.py`` enforces (lowest at the bottom; a module imports only from its own
layer or below). The numbered boxes are the steps from an ERP file to a score, each drawn in the
band of the layer whose module implements it and naming that module. The figure is referenced by
``docs/architecture.md``; nothing is computed, it is drawn from the layout below.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

from rl_scaniqa.envs.storage import atomic_path  # noqa: E402

DEFAULT_OUT = Path("docs/images/architecture.png")

X_MIN, X_MAX = 0.0, 18.0  # one unit is one inch across
RULE_X = 0.3  # the import-direction arrow, left of the layer names
LABEL_LEFT, LABEL_RIGHT = 0.6, 2.7  # the layer names sit between these
BAND_RIGHT = 17.85


@dataclass(frozen=True)
class Band:
    """One layer: bottom y and height, name, import name / folder and a fill colour."""

    bottom: float
    height: float
    name: str
    where: str
    color: str

    @property
    def middle(self) -> float:
        return self.bottom + self.height / 2


# Lowest layer first, as ``LAYERS`` in tests/test_layers.py (experiments: scripts, above all).
BANDS = {
    "base": Band(0.0, 0.9, "base", "envs/errors.py\nstorage.py, progress.py", "#f2f2f2"),
    "data": Band(0.9, 1.85, "data", "rl_scaniqa.envs.data\nenvs/data/", "#dcebf7"),
    "features": Band(2.75, 1.85, "features", "rl_scaniqa.envs.features\nenvs/features/",
                     "#fdebd3"),
    "env": Band(4.6, 1.85, "env", "rl_scaniqa.envs\nenvs/", "#e1f1dc"),
    "assessor": Band(6.45, 1.85, "assessor", "rl_scaniqa.assessor\nassessor/", "#ece1f2"),
    "agents": Band(8.3, 2.05, "agents", "rl_scaniqa.agents\nagents/", "#fbe0e0"),
    "experiments": Band(10.35, 1.35, "experiments", "scripts only\nexperiments/", "#ffffff"),
}


@dataclass(frozen=True)
class Box:
    """A step: centre x, its layer, width, title, module and detail lines."""

    x: float
    band: str
    w: float
    title: str
    module: str
    detail: str
    h: float = 1.45

    @property
    def y(self) -> float:
        return BANDS[self.band].middle


BOXES = {
    "erp": Box(4.2, "data", 2.7, "1  ERP file → array", "data/imageio.py",
               "read_erp: uint8 (H, 2H, 3)\nRGB, 2:1 checked"),
    "views": Box(7.25, "data", 2.8, "2  Viewports", "data/geometry.py",
                 "ViewportGrid 8 × 4, FOV 90°\nextract_viewports (gnomonic)"),
    "backbone": Box(7.25, "features", 2.8, "3  Frozen backbone", "features/backbones.py",
                    "make_backbone: nss | dinov2\nV viewports + global view"),
    "cache": Box(10.7, "features", 3.1, "4  Feature cache", "features/cache.py",
                 "encode_projected → FeatureCache\nfeatures, entropy, SSIM, MOS"),
    "env": Box(10.7, "env", 3.1, "5  Env observation", "envs/panorama_env.py",
               "Panorama360Env-v0: global,\ncandidates, history; rewards.py"),
    "policy": Box(10.7, "agents", 3.1, "6  Policy picks viewports", "agents/policy.py",
                  "ScanpathPolicy (extractor.py):\nGRU + attention over V"),
    "assessor": Box(14.0, "assessor", 2.9, "7  Assessor scores", "assessor/model.py",
                    "QualityAssessor: each of\nthe K paths → a score"),
    "score": Box(14.0, "agents", 2.9, "8  Image score", "agents/evaluation.py",
                 "score_scanpaths: mean\n(std) of the K path scores"),
    "metrics": Box(16.65, "assessor", 2.1, "9  Metrics", "assessor/metrics.py",
                   "evaluate vs MOS:\nSRCC, KRCC, PLCC, RMSE"),
    "scorer": Box(4.2, "agents", 2.7, "rl-scaniqa score", "agents/scorer.py",
                  "Scorer (CLI: agents/cli.py):\nsteps 1–8 on new files"),
    "cotrain": Box(7.25, "agents", 2.8, "Co-training", "agents/cotrain.py",
                   "callbacks, reward_wrapper,\ncheckpoint → ScanIQAModel"),
    "scripts": Box(7.25, "experiments", 6.0, "Scripts", "experiments/",
                   "run_ppo.py, reproduce.py, sweep.py, bench.py", h=1.0),
}

#: (from, (fx, fy), to, (fx, fy), label, label position (dx, dy) from the arrow's middle, kind).
#: (fx, fy) is relative to the box: (0, 0) is the centre, (±1, ±1) the corners. Kinds: "flow"
#: (the data's way to a score), "call" (who drives it).
ARROWS = (
    ("erp", (1, 0), "views", (-1, 0), "", (0, 0), "flow"),
    ("views", (0, 1), "backbone", (0, -1), "V + 1 crops", (0.75, 0), "flow"),
    ("backbone", (1, 0), "cache", (-1, 0), "", (0, 0), "flow"),
    ("cache", (0, 1), "env", (0, -1), "table look-ups", (0.85, 0), "flow"),
    ("env", (-0.45, 1), "policy", (-0.45, -1), "observation", (-0.78, -0.35), "flow"),
    ("policy", (0.45, -1), "env", (0.45, 1), "action", (0.55, -0.35), "flow"),
    ("env", (1, 0), "assessor", (-0.3, -1), "K paths'\nfeatures", (0.3, -0.45), "flow"),
    ("assessor", (0, 1), "score", (0, -1), "K scores", (0.62, 0), "flow"),
    ("score", (1, 0), "metrics", (0, 1), "vs MOS", (0.35, 0.3), "flow"),
    ("scorer", (0, -1), "erp", (0, 1), "new ERP files", (0.75, 0.9), "call"),
    ("cotrain", (1, 0), "policy", (-1, 0), "PPO", (0, 0.2), "call"),
    ("cotrain", (0.6, -1), "assessor", (-1, 0), "trains", (-0.6, -0.35), "call"),
    ("scripts", (0, -1), "cotrain", (0, 1), "", (0, 0), "call"),
)

FLOW_COLOR = "#1f4e8c"
CALL_COLOR = "#777777"


def _anchor(box: Box, fx: float, fy: float) -> tuple[float, float]:
    return box.x + fx * box.w / 2, box.y + fy * box.h / 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output PNG (default: {DEFAULT_OUT})")
    parser.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")
    return parser.parse_args(argv)


def _draw_band(axis: plt.Axes, band: Band) -> None:
    axis.add_patch(Rectangle((LABEL_LEFT - 0.1, band.bottom), BAND_RIGHT - LABEL_LEFT + 0.1,
                             band.height, facecolor=band.color, edgecolor="#bbbbbb",
                             linewidth=0.8, zorder=0))
    axis.text(LABEL_LEFT, band.middle + 0.12, band.name, ha="left", va="bottom", fontsize=13,
              fontweight="bold", color="#333333", zorder=1)
    axis.text(LABEL_LEFT, band.middle + 0.05, band.where, ha="left", va="top", fontsize=9.5,
              family="monospace", color="#444444", linespacing=1.25, zorder=1)


def _draw_box(axis: plt.Axes, box: Box) -> None:
    edge = FLOW_COLOR if box.title[0].isdigit() else CALL_COLOR
    axis.add_patch(FancyBboxPatch((box.x - box.w / 2, box.y - box.h / 2), box.w, box.h,
                                  boxstyle="round,pad=0.02,rounding_size=0.12", linewidth=1.4,
                                  edgecolor=edge, facecolor="white", zorder=2))
    top = box.y + box.h / 2
    axis.text(box.x, top - 0.22, box.title, ha="center", va="center", fontsize=12,
              fontweight="bold", zorder=3)
    axis.text(box.x, top - 0.5, box.module, ha="center", va="center", fontsize=10,
              family="monospace", color="#8a2a2a", zorder=3)
    axis.text(box.x, top - 0.68, box.detail, ha="center", va="top", fontsize=10,
              linespacing=1.3, zorder=3)


def _draw_arrow(axis: plt.Axes, start: tuple[float, float], end: tuple[float, float], label: str,
                offset: tuple[float, float], kind: str) -> None:
    flow = kind == "flow"
    arrow = FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16,
                            linewidth=2.0 if flow else 1.3, linestyle="-" if flow else "--",
                            color=FLOW_COLOR if flow else CALL_COLOR, shrinkA=2, shrinkB=2,
                            zorder=1.5)
    axis.add_patch(arrow)
    if label:
        x = (start[0] + end[0]) / 2 + offset[0]
        y = (start[1] + end[1]) / 2 + offset[1]
        axis.text(x, y, label, ha="center", va="center", fontsize=10, style="italic",
                  color=FLOW_COLOR if flow else "#444444", zorder=4, linespacing=1.15,
                  bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none",
                        "alpha": 0.75})


def _draw_import_rule(axis: plt.Axes) -> None:
    """A downward arrow beside the layer names: the one allowed import direction."""
    top, bottom = BANDS["experiments"].middle, BANDS["base"].middle
    axis.add_patch(FancyArrowPatch((RULE_X, top), (RULE_X, bottom),
                                   arrowstyle="simple,head_width=1.2,head_length=1.2,"
                                   "tail_width=0.5", mutation_scale=18, facecolor="#c9c9c9",
                                   edgecolor="#888888", zorder=1))
    axis.text(RULE_X, (top + bottom) / 2, "imports", rotation=90, ha="center", va="center",
              fontsize=10.5, color="#333333", zorder=2,
              bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "#888888"})


def _draw_legend(axis: plt.Axes, y: float) -> None:
    x = BAND_RIGHT - 5.6
    axis.plot([x, x + 0.5], [y, y], color=FLOW_COLOR, linewidth=2.0)
    axis.text(x + 0.6, y, "data flow, steps 1–9", ha="left", va="center", fontsize=10.5)
    axis.plot([x + 2.55, x + 3.05], [y, y], color=CALL_COLOR, linewidth=1.3, linestyle="--")
    axis.text(x + 3.15, y, "drives / trains", ha="left", va="center", fontsize=10.5)


def make_figure(out: Path, dpi: int = 100) -> Path:
    """Draw the diagram and write it atomically to ``out``."""
    top = BANDS["experiments"].bottom + BANDS["experiments"].height
    figure, axis = plt.subplots(figsize=(X_MAX - X_MIN, 11.4))
    axis.set_xlim(X_MIN, X_MAX)
    axis.set_ylim(-0.05, top + 1.15)
    axis.axis("off")

    for band in BANDS.values():
        _draw_band(axis, band)
    axis.text(LABEL_RIGHT + 0.15, BANDS["base"].middle,
              "errors (RLScanIQAError …), atomic writes and locks, progress bars: "
              "imported by every layer", ha="left", va="center", fontsize=10.5, color="#444444")
    for box in BOXES.values():
        _draw_box(axis, box)
    for source, source_at, target, target_at, label, offset, kind in ARROWS:
        _draw_arrow(axis, _anchor(BOXES[source], *source_at), _anchor(BOXES[target], *target_at),
                    label, offset, kind)
    _draw_import_rule(axis)

    axis.text(X_MIN + 0.1, top + 0.78, "RL-ScanIQA: layers and the way from an ERP to a score",
              ha="left", va="center", fontsize=15, fontweight="bold")
    axis.text(X_MIN + 0.1, top + 0.32,
              "Layers in the order of tests/test_layers.py, lowest at the bottom: a module imports "
              "only from its own layer or below (the test fails on an upward import).",
              ha="left", va="center", fontsize=10.5, color="#333333")
    _draw_legend(axis, top + 0.78)
    figure.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.995)
    with atomic_path(out) as tmp:
        figure.savefig(tmp, dpi=dpi)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(make_figure(args.out, args.dpi))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
