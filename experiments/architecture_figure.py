"""Draw the RL-ScanIQA architecture figure (data flow from pixels to metrics) with matplotlib.

    .venv/bin/python experiments/architecture_figure.py --out docs/images/architecture.png

Boxes name the real modules and objects of the package; the figure is referenced by
``docs/architecture.md``. Nothing is computed: the figure is a diagram drawn from the layout
below.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from rl_scaniqa.envs.storage import atomic_path  # noqa: E402

DEFAULT_OUT = Path("docs/images/architecture.png")

# Fill colours per stage (colour-blind-safe pastel tones).
PIXELS = "#dbe9f6"
CACHE = "#fde6c8"
RL = "#dcefd9"
ASSESS = "#eadcf0"
METRIC = "#eeeeee"


@dataclass(frozen=True)
class Box:
    """A labelled box: centre (x, y), size (w, h) in axis units, title and detail lines."""

    x: float
    y: float
    w: float
    h: float
    title: str
    detail: str
    color: str


BOXES = {
    "erp": Box(1.25, 8.2, 2.1, 1.3, "ERP panorama",
               "uint8 H x 2H RGB\n"
               "read_erp / as_erp_array", PIXELS),
    "views": Box(4.15, 8.2, 2.9, 1.3, "Viewports (gnomonic)",
                 "ViewportGrid 8 x 4, FOV 90°, 224 px\n"
                 "extract_viewports: cached cv2.remap maps\n"
                 "+ global view (224 x 448)", PIXELS),
    "backbone": Box(7.3, 8.2, 2.6, 1.3, "Frozen backbone",
                    "nss | dinov2 | nss+dinov2\n"
                    "V + 1 calls per image\n"
                    "(+ augmented views)", PIXELS),
    "cache": Box(10.55, 8.2, 3.1, 1.3, "FeatureCache (safetensors)",
                 "viewport (V, D), global (D,), entropy (V,)\n"
                 "SSIM (V, V), thumbnail, MOS\n"
                 "keyed by fingerprint + backbone + grid", CACHE),
    "env": Box(10.55, 5.3, 3.1, 1.55, "Panorama360Env-v0",
               "obs: global, candidates, history,\n"
               "visited, step, path (standardised)\n"
               "r_t = step terms; end: set reward\n"
               "info at path end: path features", RL),
    "policy": Box(6.2, 5.3, 3.3, 1.55, "ScanpathPolicy (SB3 PPO)",
                  "ScanpathExtractor: GRU over path -> h\n"
                  "logit_j = vᵀ tanh(W_h h + W_g g + W_f f_j + b)\n"
                  "visited masked; value MLP on [h; g]", RL),
    "wrapper": Box(10.55, 2.45, 3.1, 1.4, "AssessorRewardVecWrapper",
                   "at each path end:\n"
                   "w_mse(t)·(−(q̂ − q)²) + w_rank(t)·rank\n"
                   "weights ramp 0 -> 2", ASSESS),
    "assessor": Box(6.2, 2.45, 3.3, 1.4, "QualityAssessor",
                    "attention pooling over the path's\n"
                    "L = T + 1 features, conditioned on g\n"
                    "sigmoid score on the 0–1 MOS scale", ASSESS),
    "trainer": Box(2.0, 2.45, 2.7, 1.4, "Co-training callbacks",
                   "after each rollout: AssessorTrainer\n"
                   "on policy + random paths (5 losses);\n"
                   "anneals ent_coef 0.02 -> 0.005", ASSESS),
    "metrics": Box(2.0, 5.3, 2.7, 1.55, "Evaluation",
                   "run_agent: K paths per image\n"
                   "score = mean of K, std = spread\n"
                   "SRCC, KRCC; PLCC, RMSE\n"
                   "after 4-param logistic", METRIC),
}

#: (from box, (fx, fy), to box, (fx, fy), label, label offset (dx, dy), connection style).
#: (fx, fy) is a point relative to the box: (0, 0) is the centre, (±1, ±1) the corners.
ARROWS = (
    ("erp", (1, 0), "views", (-1, 0), "", (0, 0), "arc3"),
    ("views", (1, 0), "backbone", (-1, 0), "", (0, 0), "arc3"),
    ("backbone", (1, 0), "cache", (-1, 0), "", (0, 0), "arc3"),
    ("cache", (0, -1), "env", (0, 1), "table look-ups\n(no pixels in step)", (0.95, 0.05),
     "arc3"),
    ("env", (-1, 0.3), "policy", (1, 0.3), "observation", (0, 0.28), "arc3"),
    ("policy", (1, -0.3), "env", (-1, -0.3), "action", (0, -0.28), "arc3"),
    ("env", (0, -1), "wrapper", (0, 1), "info at path end:\npath_features, mos", (0.9, 0.0),
     "arc3"),
    ("wrapper", (-1, 0.25), "assessor", (1, 0.25), "path", (0, 0.2), "arc3"),
    ("assessor", (1, -0.35), "wrapper", (-1, -0.35), "q̂", (0, -0.2), "arc3"),
    ("wrapper", (-0.75, 1), "policy", (0.7, -1), "reward + task reward\n(PPO rollout buffer)",
     (0.1, 0.05), "arc3"),
    ("trainer", (1, 0), "assessor", (-1, 0), "train", (0, 0.2), "arc3"),
    ("policy", (-1, 0), "metrics", (1, 0), "trained policy", (0, 0.2), "arc3"),
    ("assessor", (-0.6, 1), "metrics", (0.6, -1), "trained assessor", (0.15, 0.0), "arc3"),
)


def _anchor(box: Box, fx: float, fy: float) -> tuple[float, float]:
    return box.x + fx * box.w / 2, box.y + fy * box.h / 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output PNG (default: {DEFAULT_OUT})")
    parser.add_argument("--dpi", type=int, default=110, help="resolution (default 110)")
    return parser.parse_args(argv)


def _draw_box(axis: plt.Axes, box: Box) -> None:
    patch = FancyBboxPatch((box.x - box.w / 2, box.y - box.h / 2), box.w, box.h,
                           boxstyle="round,pad=0.02,rounding_size=0.12", linewidth=1.1,
                           edgecolor="#444444", facecolor=box.color, zorder=2)
    axis.add_patch(patch)
    axis.text(box.x, box.y + box.h / 2 - 0.2, box.title, ha="center", va="center",
              fontsize=10.5, fontweight="bold", zorder=3)
    axis.text(box.x, box.y - 0.12, box.detail, ha="center", va="center", fontsize=8.2,
              linespacing=1.3, zorder=3)


def _draw_arrow(axis: plt.Axes, start: tuple[float, float], end: tuple[float, float], label: str,
                offset: tuple[float, float], style: str) -> None:
    arrow = FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, linewidth=1.3,
                            color="#333333", connectionstyle=style, shrinkA=2, shrinkB=2, zorder=1)
    axis.add_patch(arrow)
    if label:
        x = (start[0] + end[0]) / 2 + offset[0]
        y = (start[1] + end[1]) / 2 + offset[1]
        axis.text(x, y, label, ha="center", va="center", fontsize=8, style="italic",
                  color="#222222", zorder=4,
                  bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none",
                        "alpha": 0.85})


def make_figure(out: Path, dpi: int = 110) -> Path:
    """Draw the diagram and write it atomically to ``out``."""
    figure, axis = plt.subplots(figsize=(12.6, 8.0))
    axis.set_xlim(0, 12.4)
    axis.set_ylim(1.4, 9.6)
    axis.axis("off")

    # Stage bands with their names, behind the boxes.
    bands = ((7.35, 9.05, "offline, once per dataset: rl-scaniqa cache / prepare_feature_cache"),
             (1.55, 6.25, "training and evaluation: experiments/run_ppo.py "
                          "(agents.cotrain, agents.evaluation)"))
    for low, high, name in bands:
        axis.add_patch(FancyBboxPatch((0.05, low), 12.3, high - low,
                                      boxstyle="round,pad=0.02,rounding_size=0.15",
                                      facecolor="#fafafa", edgecolor="#bbbbbb", linestyle="--",
                                      linewidth=0.9, zorder=0))
        axis.text(0.2, high + 0.18, name, ha="left", va="center", fontsize=9, color="#555555")

    for box in BOXES.values():
        _draw_box(axis, box)
    for source, source_at, target, target_at, label, offset, style in ARROWS:
        _draw_arrow(axis, _anchor(BOXES[source], *source_at), _anchor(BOXES[target], *target_at),
                    label, offset, style)
    axis.set_title("RL-ScanIQA: data flow from pixels to metrics", fontsize=13, pad=6)
    figure.tight_layout()
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
