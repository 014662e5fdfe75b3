#!/usr/bin/env python
"""Leave one Real360 place out: does the score fall as the damage grows on real photographs?

For each Real360 place (one photo, or every photo of one place: the geovisio walk, Times Square),
RL-ScanIQA (PPO + co-trained assessor, ``run_ppo.py``'s settings) and the no-path SVR baseline
are trained on Synth360 plus every *other* place, then score the held-out place's images. BRISQUE
(Mittal et al. 2012, trained on LIVE; the ``brisque`` package of the dev extra, never needed at
runtime) scores the same image files at their stored size, next to them.

The measure needs no MOS: within each distortion group (one photo x one kind x one scope: the
photo's reference as level 0 plus its distorted levels) the score should fall as the level rises.
Reported: the mean over groups of the Spearman correlation of score with -level, overall, by
scope (global / local cap), by distortion kind and over the four kinds of issue 11's first
measurement (JPEG, JPEG2000, blur, noise), per method (issue 11's targets: mean >= 0.90,
local caps >= 0.85), plus each place's own mean.

Outputs in ``--out``: ``folds/<place>.json`` (one per finished fold, written atomically; a rerun
with the same configuration skips finished folds, and a killed fold continues from its last
checkpoint), ``brisque.json`` (BRISQUE score per image, kept across reruns), ``results.json``,
``report.md`` and ``within_group_srcc.png``. With ``--json`` the last line printed is the summary.
"""

from __future__ import annotations

import pickle
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console

from rl_scaniqa.agents.baselines import SVRBaseline
from rl_scaniqa.agents.cotrain import cotrain
from rl_scaniqa.agents.data_args import DataArgs
from rl_scaniqa.agents.evaluation import SeededPolicyAgent, evaluate_agent
from rl_scaniqa.agents.reporting import markdown_table, plot_grouped_bars
from rl_scaniqa.agents.script_args import parse_script_args, usage_error
from rl_scaniqa.agents.settings import SMOKE_SETTINGS, CoTrainSettings
from rl_scaniqa.assessor.metrics import within_group_srcc
from rl_scaniqa.envs.data.datasets import load_dataset
from rl_scaniqa.envs.data.datasets.real360 import default_real360_root
from rl_scaniqa.envs.data.imageio import read_erp
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.progress import TrainingProgress, progress_bar
from rl_scaniqa.envs.storage import (
    atomic_write_json,
    atomic_write_text,
    default_home,
    json_line,
    read_own_json,
    strict_json,
)

SCRIPT = "real360_check.py"
RL, SVR, BRISQUE = "RL-ScanIQA", "SVR (nss)", "BRISQUE"
#: Prefix of Real360 groups and images in the combined cache (``envs/data/datasets/combined.py``).
PART = "real360/"
FORMAT = "rl-scaniqa real360 check v1"
#: Fields that only change how the check runs or reports, not what it measures.
REPORTING_FIELDS = ("out", "json", "progress", "threads", "places", "checkpoint_every", "brisque")


@dataclass
class Args(DataArgs):
    """Arguments of ``real360_check.py`` (nested settings: options like ``--settings.ppo.n-envs``)."""

    extra_dataset: str = "real360"
    """The real photographs held out place by place (must be real360)."""
    places: str = ""
    """Comma-separated places to hold out (empty = every place); finished folds of the others
    are still reported."""
    eval_paths: int = 15
    """K paths per held-out image."""
    brisque: bool = True
    """Score the held-out images with BRISQUE too."""
    out: str = "runs/real360_check"
    """Output folder (rerun with the same folder to resume)."""
    threads: int = 1
    """Torch CPU threads (1 is fastest for these small networks on a busy machine)."""
    checkpoint_every: int = 10
    """Rollouts between checkpoints of a fold's training (0 = none)."""
    quick: bool = False
    """Smoke run: the small Synth360, two places, a tiny training budget."""
    json: bool = False
    """Print the summary as JSON on the last line."""
    progress: bool = True
    """Show the progress bars (on stderr)."""
    settings: CoTrainSettings = field(default_factory=CoTrainSettings)
    """Co-training settings of every fold's model."""


QUICK_OVERRIDES: dict[str, Any] = {"eval_paths": 5, "settings": SMOKE_SETTINGS}
QUICK_PLACES = 2
#: The kinds of issue 11's first measurement (BRISQUE 0.79 there), reported apart for comparison.
FOUR_KINDS = ("jpeg", "jpeg2000", "blur", "noise")


# ----------------------------------------------------------------------------- BRISQUE


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only (dicts, lists, numbers, strings): any class or function in the
    stream is refused, so a tampered file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refers to {module}.{name}; only plain data is accepted")


class PinnedBrisque:
    """BRISQUE of the ``brisque`` package, version 0.2.0: its LIVE-trained SVM and feature scaler.

    Two changes to the package's own loading, nothing to its features or model: the model files
    must have the SHA-256 pinned here, and the scaler's pickle is read as plain data
    (:class:`PlainDataUnpickler`) instead of with ``pickle.load``. One shim: the package turns
    every feature into a Python float with ``float(f)``, which NumPy >= 2.4 refuses for the
    one-element arrays its fits return; the features are made scalars first. And one speed-up:
    the local means are OpenCV filters instead of ``scipy.signal.convolve2d`` (same values).

    Scores are BRISQUE's: about 0 (clean) to 100 (bad); :meth:`quality` is their negative.
    """

    VERSION = "0.2.0"
    SHA256 = {"svm.txt": "19526fb799c4c7992ccc109fcfecddb25976ba024b194cd3ee275d27e8909c8d",
              "normalize.pickle": "a91753fe7088efe0b40e4d091315201fdb067966fc6785cf465e1eab060acda9"}
    N_FEATURES = 36

    def __init__(self) -> None:
        try:
            version = metadata.version("brisque")
            from brisque import BRISQUE
            from brisque.models import MODEL_PATH
            from libsvm import svmutil
        except (ImportError, metadata.PackageNotFoundError) as error:
            raise RuntimeError(f"BRISQUE needs the dev extra (pip install -e '.[dev]'): {error}") from None
        if version != self.VERSION:
            raise RuntimeError(f"BRISQUE: brisque {version} is installed; this check pins "
                               f"{self.VERSION} (pip install brisque=={self.VERSION})")
        files = {name: Path(MODEL_PATH) / name for name in self.SHA256}
        for name, path in files.items():
            digest = sha256(path.read_bytes()).hexdigest()
            if digest != self.SHA256[name]:
                raise RuntimeError(f"BRISQUE: {path} has SHA-256 {digest}, not the pinned "
                                   f"{self.SHA256[name]}; reinstall brisque=={self.VERSION}")
        scale = self._scale_params(files["normalize.pickle"])

        class ScalarFeatureBrisque(BRISQUE):  # type: ignore[misc]
            def __init__(self) -> None:  # the package's loader, minus its pickle.load
                self.url = False
                self.model = svmutil.svm_load_model(str(files["svm.txt"]))
                self.scale_params = scale

            def calculate_mscn_coefficients(self, image: np.ndarray, kernel_size: int = 6,
                                            sigma: float = 7 / 6) -> np.ndarray:
                # The package's formula with its zero-padded 'same' convolutions done by OpenCV
                # (the kernel is symmetric, so correlation = convolution): a 2048 px score takes
                # 1.2 s instead of 2.6 s, the coefficients equal to 1e-9 (tests/test_real360.py).
                kernel = self.gaussian_kernel2d(kernel_size, sigma=sigma)
                image = np.asarray(image, dtype=np.float64)
                mean = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_CONSTANT)
                square = cv2.filter2D(image ** 2, -1, kernel, borderType=cv2.BORDER_CONSTANT)
                return (image - mean) / (np.sqrt(np.abs(mean ** 2 - square)) + 1 / 255)

            def scale_features(self, features: Sequence[Any]) -> np.ndarray:
                scalars = [np.asarray(value, dtype=np.float64).item() for value in features]
                return super().scale_features(scalars)

        self._model = ScalarFeatureBrisque()

    @classmethod
    def _scale_params(cls, path: Path) -> dict[str, list[float]]:
        with path.open("rb") as stream:
            try:
                params = PlainDataUnpickler(stream).load()
            except pickle.UnpicklingError as error:
                raise RuntimeError(f"BRISQUE: {path}: {error}") from None
        if not (isinstance(params, dict) and all(
                len(params.get(key, ())) == cls.N_FEATURES for key in ("min_", "max_"))):
            raise RuntimeError(f"BRISQUE: {path} is not {cls.N_FEATURES} min_/max_ values")
        return {key: [float(value) for value in params[key]] for key in ("min_", "max_")}

    def score(self, image: np.ndarray) -> float:
        """BRISQUE of an RGB ``uint8`` image (lower is better)."""
        return float(self._model.score(image))

    def quality(self, image: np.ndarray) -> float:
        """Higher is better: ``-score``."""
        return -self.score(image)


def brisque_qualities(paths: Mapping[str, str], store: Path, progress: bool) -> dict[str, float]:
    """BRISQUE quality of every image (id → file), kept in ``store`` across reruns (saved every
    20 images, atomically, so an interrupted run loses at most 20 scores)."""
    done: dict[str, float] = read_own_json(store, "scoring afresh") if store.is_file() else {}
    unscored = [image for image in paths if image not in done]
    if unscored:
        scorer = PinnedBrisque()
        with progress_bar("BRISQUE", len(unscored), unit="image", enabled=progress) as bar:
            for count, image in enumerate(unscored, 1):
                done[image] = scorer.quality(read_erp(paths[image]))
                bar.advance()
                if count % 20 == 0 or count == len(unscored):
                    atomic_write_json(store, done)
    return {image: done[image] for image in paths}


# ----------------------------------------------------------------------------- data


@dataclass
class RealImage:
    """What the within-group check needs of one Real360 image."""

    place: str
    photo: str
    kind: str
    scope: str
    level: int


def real360_images(root: Path) -> dict[str, RealImage]:
    """Image id (as in the combined cache) → photo, kind, scope and level, from the labels."""
    return {PART + record.image_id: RealImage(place=PART + record.ref_id, photo=record.extra["photo"],
                                              kind=record.distortion, scope=record.extra["scope"],
                                              level=int(record.level))
            for record in load_dataset("real360", root)}


def distortion_groups(images: Mapping[str, RealImage]) -> dict[str, list[str]]:
    """Group name ``photo/kind/scope`` → its image ids, each with the photo's reference first."""
    references = {image.photo: image_id for image_id, image in images.items() if image.level == 0}
    groups: dict[str, list[str]] = {}
    for image_id, image in images.items():
        if image.level == 0:
            continue
        name = f"{image.photo}/{image.kind}/{image.scope}"
        groups.setdefault(name, [references[image.photo]]).append(image_id)
    return groups


# ----------------------------------------------------------------------------- folds


def comparable_config(args: Args) -> dict[str, Any]:
    return {key: value for key, value in asdict(args).items() if key not in REPORTING_FIELDS}


def fold_path(out: Path, place: str) -> Path:
    return out / "folds" / f"{place.removeprefix(PART)}.json"


def load_fold(path: Path, args: Args) -> dict[str, Any] | None:
    """A finished fold of this configuration, None if there is none; another configuration's
    is an error (its numbers would silently mix with these)."""
    if not path.is_file():
        return None
    fold = read_own_json(path, "the fold afresh")
    if fold.get("format") != FORMAT or fold.get("config") != comparable_config(args):
        raise ValueError(f"{path} holds a fold of another configuration; use another --out or "
                         "the same arguments")
    return dict(fold)


def run_fold(cache: FeatureCache, place: str, args: Args,
             tracker: TrainingProgress) -> dict[str, Any]:
    """Train RL-ScanIQA and the SVR without ``place``, score ``place``'s images with both."""
    held = np.asarray([ref == place for ref in cache.ref_ids])
    train, test = cache.subset(np.flatnonzero(~held)), cache.subset(np.flatnonzero(held))
    settings = args.settings
    started = time.perf_counter()
    # One folder per fold: the checkpoint writer keeps a ``.previous`` sibling of its folder,
    # and removing the fold's folder removes both.
    fold_folder = Path(args.out) / "checkpoints" / place.removeprefix(PART)
    checkpoints = fold_folder / "model"
    tracker.start(f"held out: {place.removeprefix(PART)}", settings.total_timesteps)
    run = cotrain(settings, train, stats=FeatureStats.fit(train), checkpoint_dir=checkpoints,
                  checkpoint_every=args.checkpoint_every, on_update=tracker.update)
    tracker.finish()
    rows = np.arange(len(test))
    rl = evaluate_agent(SeededPolicyAgent(run.policy, settings.seed), run.assessor, test, rows,
                        n_paths=args.eval_paths, path_length=settings.path_length,
                        env_kwargs=settings.env_kwargs(run.stats), seed=settings.seed)
    svr = test.mos_scale.denormalize(SVRBaseline().fit(train, np.arange(len(train))).predict(test, rows))
    shutil.rmtree(fold_folder, ignore_errors=True)
    return {"format": FORMAT, "config": comparable_config(args), "place": place,
            "n_train": len(train), "n_test": len(test), "seconds": time.perf_counter() - started,
            "scores": {image: {RL: float(rl.predicted[i]), SVR: float(svr[i])}
                       for i, image in enumerate(test.image_ids)}}


# ----------------------------------------------------------------------------- summary


def summarize_groups(srcc: Mapping[str, float], images: Mapping[str, RealImage],
                     groups: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Mean within-group SRCC overall, by scope, by kind and by place."""
    def mean_where(key: Any) -> dict[str, float]:
        buckets: dict[str, list[float]] = {}
        for name, value in srcc.items():
            buckets.setdefault(key(images[groups[name][-1]]), []).append(value)
        return {label: float(np.mean(values)) for label, values in sorted(buckets.items())}

    four = [value for name, value in srcc.items() if images[groups[name][-1]].kind in FOUR_KINDS]
    return {"mean": float(np.mean(list(srcc.values()))), "groups": len(srcc),
            "four_kinds": float(np.mean(four)) if four else float("nan"),
            "by_scope": mean_where(lambda image: image.scope),
            "by_kind": mean_where(lambda image: image.kind),
            "by_kind_scope": mean_where(lambda image: f"{image.kind}, {image.scope}"),
            "by_place": mean_where(lambda image: image.place.removeprefix(PART))}


def method_scores(folds: Sequence[Mapping[str, Any]],
                  brisque: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Method → image id → score, over the finished folds (BRISQUE on the same images)."""
    scores: dict[str, dict[str, float]] = {RL: {}, SVR: {}}
    for fold in folds:
        for image, values in fold["scores"].items():
            for method in scores:
                scores[method][image] = values[method]
    if brisque:
        scores[BRISQUE] = {image: brisque[image] for image in scores[RL]}
    return scores


def summarize(folds: Sequence[Mapping[str, Any]], brisque: Mapping[str, float],
              images: Mapping[str, RealImage]) -> dict[str, Any]:
    held = {fold["place"] for fold in folds}
    groups = {name: members for name, members in distortion_groups(images).items()
              if images[members[-1]].place in held}
    rows = [(name, image) for name, members in groups.items() for image in members]
    levels = [images[image].level for _, image in rows]
    names = [name for name, _ in rows]
    summary: dict[str, Any] = {}
    for method, scores in method_scores(folds, brisque).items():
        srcc = within_group_srcc([scores[image] for _, image in rows], levels, names)
        summary[method] = summarize_groups(srcc, images, groups)
    return summary


def report_text(summary: Mapping[str, Any], folds: Sequence[Mapping[str, Any]], args: Args,
                command: str, all_places: Sequence[str]) -> str:
    methods = list(summary)
    scopes = sorted({scope for entry in summary.values() for scope in entry["by_scope"]})
    kinds = sorted({kind for entry in summary.values() for kind in entry["by_kind"]})
    kind_scopes = sorted({key for entry in summary.values() for key in entry["by_kind_scope"]})
    places = sorted({place for entry in summary.values() for place in entry["by_place"]})

    def table(section: str, labels: Sequence[str], header: str) -> str:
        rows = [{"label": label, **{m: summary[m][section].get(label, float("nan")) for m in methods}}
                for label in labels]
        return markdown_table(rows, ["label", *methods], [header, *methods])

    overall = [{"method": m, "mean": summary[m]["mean"], "groups": summary[m]["groups"],
                "four_kinds": summary[m]["four_kinds"],
                **{scope: summary[m]["by_scope"].get(scope, float("nan")) for scope in scopes}}
               for m in methods]
    settings = args.settings
    minutes = sum(fold["seconds"] for fold in folds) / 60
    return (
        "# Real360, leave one place out: within-group SRCC of score against damage level\n\n"
        f"Made by `{command}` ({len(folds)} of {len(all_places)} places held out; "
        f"{settings.total_timesteps:,} PPO steps per fold, K = {args.eval_paths} paths of "
        f"T = {settings.path_length}, {args.backbone} features; {minutes:.1f} min of training "
        "and scoring).\n\n"
        "Each fold trains on Synth360 plus every other Real360 place and scores the held-out "
        "place. A group is one photo x one distortion kind x one scope: the photo's reference "
        "(level 0) and its distorted levels; its SRCC is that of the score against -level (1 = "
        "the score falls at every step of damage). BRISQUE scores the same files at their "
        "stored size and is not trained here (LIVE, 2012). Targets (issue 11): mean >= 0.90, "
        "local caps >= 0.85.\n\n"
        + markdown_table(overall, ["method", "mean", *scopes, "four_kinds", "groups"],
                         ["Method", "Mean", *(f"{scope} scope" for scope in scopes),
                          "JPEG, JPEG2000, blur, noise", "Groups"])
        + "\n## By distortion kind\n\n" + table("by_kind", kinds, "Kind")
        + "\n## By distortion kind and scope\n\n" + table("by_kind_scope", kind_scopes, "Kind, scope")
        + "\n## By held-out place\n\n" + table("by_place", places, "Place")
        + "\n![within-group SRCC by kind and scope](within_group_srcc.png)\n")


def plot_summary(summary: Mapping[str, Any], path: Path) -> None:
    """The mean, each scope and each kind: one bar per method."""
    first = next(iter(summary.values()))
    labels = ["mean", *first["by_scope"], *first["by_kind"]]
    series = {method: [entry["mean"], *(entry["by_scope"].get(label, entry["by_kind"].get(label, np.nan))
                                        for label in labels[1:])]
              for method, entry in summary.items()}
    plot_grouped_bars(labels, series, path, ylabel="mean within-group SRCC", ylim=(-1.0, 1.0),
                      title="Real360, leave one place out", target=0.90)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_script_args(Args, __doc__.splitlines()[0], argv, {"quick": QUICK_OVERRIDES})
    if args.extra_dataset != "real360":
        usage_error(SCRIPT, f"--extra-dataset must be real360 (the photos held out), got "
                    f"{args.extra_dataset!r}")
    if args.threads < 1 or args.eval_paths < 1:
        usage_error(SCRIPT, "--threads and --eval-paths must be at least 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        usage_error(SCRIPT, f"--out {out} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    command = " ".join(["experiments/real360_check.py", *(sys.argv[1:] if argv is None else argv)])
    console = Console(stderr=True, quiet=not args.progress)

    root = Path(args.extra_root) if args.extra_root else default_real360_root(default_home())
    images = real360_images(root)
    all_places = sorted({image.place for image in images.values()})
    wanted = [PART + name.strip() for name in args.places.split(",") if name.strip()]
    unknown = [name.removeprefix(PART) for name in wanted if name not in all_places]
    if unknown:
        usage_error(SCRIPT, f"--places: {', '.join(unknown)} not in {root} (places: "
                    f"{', '.join(p.removeprefix(PART) for p in all_places)})")
    places = wanted or (all_places[:QUICK_PLACES] if args.quick else all_places)
    finished = {place: fold for place in all_places
                if (fold := load_fold(fold_path(out, place), args)) is not None}
    pending = [place for place in places if place not in finished]
    cache = args.feature_cache(quick_default=args.quick, progress=args.progress)
    console.print(f"[bold]real360 check[/]: {len(all_places)} places, {len(finished)} finished in "
                  f"{out}, {len(pending)} to run; {len(cache)} images ({cache.backbone})")
    with progress_bar("folds", len(pending) * args.settings.total_timesteps, unit="step",
                      enabled=args.progress) as bar:
        tracker = TrainingProgress(bar)
        for place in pending:
            fold = run_fold(cache, place, args, tracker)
            atomic_write_json(fold_path(out, place), fold)
            finished[place] = fold
    folds = [finished[place] for place in all_places if place in finished]
    if not folds:
        raise RuntimeError("no fold finished")
    brisque = {}
    if args.brisque:
        held = {image for fold in folds for image in fold["scores"]}
        files = dict(zip(cache.image_ids, cache.paths))
        brisque = brisque_qualities({image: files[image] for image in sorted(held)},
                                    out / "brisque.json", args.progress)
    summary = summarize(folds, brisque, images)
    document = {"format": FORMAT, "command": command, "config": asdict(args),
                "places": [fold["place"] for fold in folds], "summary": summary,
                "folds": folds}
    atomic_write_json(out / "results.json", document)
    report = report_text(summary, folds, args, command, all_places)
    atomic_write_text(out / "report.md", report)
    plot_summary(summary, out / "within_group_srcc.png")
    console.print(report, markup=False, highlight=False, soft_wrap=True)
    result = strict_json({method: {key: entry[key] for key in ("mean", "four_kinds", "groups",
                                                               "by_scope", "by_kind")}
                          for method, entry in summary.items()})
    print(json_line(result) if args.json else f"report: {out / 'report.md'}")
    return result


if __name__ == "__main__":
    main()
