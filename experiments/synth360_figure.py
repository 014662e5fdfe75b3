"""Draw the README's Synth360 example: a reference, one local distortion and its pseudo-MOS.

Everything is rendered in memory from the seed (no dataset folder needed), with exactly the
generator's code: the reference of one content, one local (kind, level) planned as the generator
plans it, the outline of its spherical cap, and the per-viewport SSIM that the pseudo-MOS pools.

    .venv/bin/python experiments/synth360_figure.py --out docs/images/synth360_example.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rl_scaniqa.envs.data.datasets.synth360 import (  # noqa: E402
    MosFormula,
    distort,
    plan_distortions,
    render_reference,
    viewport_ssim,
)
from rl_scaniqa.envs.data.distortions import DISTORTIONS, LEVELS, local_mask  # noqa: E402
from rl_scaniqa.envs.storage import atomic_path  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/synth360_example.png"),
                        help="output PNG (default: docs/images/synth360_example.png)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--content", type=int, default=8, help="content index (default 8)")
    parser.add_argument("--kind", choices=DISTORTIONS, default="blur", help="distortion kind (default blur)")
    parser.add_argument("--level", type=int, choices=LEVELS, default=5, help="distortion level (default 5)")
    parser.add_argument("--width", type=int, default=1024, help="ERP width in pixels (default 1024)")
    return parser.parse_args(argv)


def make_figure(args: argparse.Namespace) -> Path:
    """Render the three panels and write them atomically to ``args.out``."""
    reference = render_reference(args.content, width=args.width, seed=args.seed)
    spec = plan_distortions(reference, args.content, [(args.kind, "local")], seed=args.seed, levels=(args.level,))[0]
    distorted = distort(reference, spec)
    formula = MosFormula()
    ssim = viewport_ssim(reference, distorted, formula=formula)
    mos = formula.mos(formula.pool(ssim))

    height, width = reference.shape[:2]
    yaw, pitch, radius, feather = spec.cap
    mask = local_mask(height, width, yaw, pitch, radius, feather)
    grid = formula.grid

    fig, axes = plt.subplots(1, 3, figsize=(12.5, 2.6), gridspec_kw={"width_ratios": [2, 2, 1.15]})
    axes[0].imshow(reference)
    axes[0].set_title(f"reference c{args.content:03d}  (MOS 5.00)", fontsize=9)
    axes[1].imshow(distorted)
    axes[1].contour(mask, levels=[0.5], colors="yellow", linewidths=0.8)
    axes[1].set_title(f"local {args.kind}, level {args.level}: pseudo-MOS {mos:.2f}", fontsize=9)
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    image = axes[2].imshow(ssim.reshape(grid.n_lat, grid.n_lon), cmap="magma", vmin=min(0.8, ssim.min()), vmax=1.0)
    worst = np.argsort(ssim)[:formula.worst_k]
    for index in worst:
        row, col = divmod(int(index), grid.n_lon)
        axes[2].add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.2))
    axes[2].set_title(f"viewport SSIM (worst {formula.worst_k} boxed)", fontsize=9)
    axes[2].set_xticks(range(grid.n_lon), [f"{y:.0f}" for y in grid.centers_deg[:grid.n_lon, 0]], fontsize=6)
    axes[2].set_yticks(range(grid.n_lat), [f"{p:+.1f}" for p in grid.centers_deg[::grid.n_lon, 1]], fontsize=6)
    axes[2].set_xlabel("yaw (deg)", fontsize=7)
    axes[2].set_ylabel("pitch (deg)", fontsize=7)
    fig.colorbar(image, ax=axes[2], fraction=0.05, pad=0.03).ax.tick_params(labelsize=6)
    fig.tight_layout()

    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return args.out


def main(argv: list[str] | None = None) -> int:
    print(make_figure(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
