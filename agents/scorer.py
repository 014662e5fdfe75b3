"""Score your own 360° panoramas with a trained RL-ScanIQA model.

The scoring API behind ``rl-scaniqa score``::

    from rl_scaniqa.agents.scorer import Scorer

    scorer = Scorer.from_pretrained()               # the model shipped with the package
    result = scorer.score("pano.jpg")               # ScoreResult
    print(result.score, result.std, result.paths)

    for result in scorer.score_many(["a.png", "b.jpg", "folder/c.tif"]):
        print(result.path, result.error or result.score)

What happens to an image
------------------------
One code path for every image, the same as in training: the ERP is read (:func:`read_erp`), its
viewports, global view and thumbnail are projected and then encoded exactly as the feature-cache
builder does it (:func:`~rl_scaniqa.envs.features.cache.project_image` and
:func:`~rl_scaniqa.envs.features.cache.encode_projected`: V + 1 images through the backbone,
viewport entropies, the viewport SSIM matrix). The rows become an in-memory
:class:`~rl_scaniqa.envs.features.cache.FeatureCache`; the policy walks K scanpaths of T steps on
it through the common evaluation harness (:func:`~rl_scaniqa.agents.evaluation.run_agent`, with
the model's feature standardisation and start rule), and the assessor scores every path
(:func:`~rl_scaniqa.agents.evaluation.score_scanpaths`). Viewport features are computed once per
image: K and T change the number of policy steps, never the number of backbone calls.

Score convention
----------------
``score`` is the mean of the K path scores mapped back to the model's MOS scale
(``model.mos_scale``, e.g. 1..5 for a Synth360 model, 0..100 for CVIQD): **higher is better**.
The map is linear and not clipped, so a prediction may fall slightly outside the scale. ``std``
is the population standard deviation of the K path scores in the same MOS units: how much the
judgement depends on where the model looked.

Reproducibility
---------------
Paths are sampled from the policy (its argmax would give K identical paths). Every image samples
from its own generator seeded with ``seed``, so an image's paths and score depend only on the
image, the model, K, T and the seed: scoring it alone, in a folder or in any batch gives the same
paths, and the same score up to the float rounding of batched arithmetic. (A model trained with
``start="random_equator"`` also draws its start viewports from the env's seed, which depends on
the image's position in its batch.)

K and T
-------
``k`` and ``t`` override the model's K paths and T steps per path. The policy is length-agnostic
(its GRU runs over the path so far) and the assessor pools any number of viewports, so other
values run; T must stay between 1 and V - 1 so that the viewports of a path stay distinct, and
scores drift as T moves away from the value the model was trained with.

What it refuses
---------------
An ERP narrower than :meth:`Scorer.min_erp_width` (derived from the grid: a viewport of ``size``
pixels over ``fov`` degrees would need more than :data:`MAX_UPSAMPLING` viewport pixels per ERP
pixel, i.e. it would be made of interpolation rather than image content) is refused with an
:class:`~rl_scaniqa.envs.errors.ImageError` naming the file. :meth:`Scorer.check_memory`
refuses a K x T x batch whose scanpath arrays cannot fit in the memory available.

Inputs
------
A file path, an ERP array (as :func:`as_erp_array` takes), or a torch tensor as pyiqa users pass
it: float, values in 0..1, ``(3, H, W)`` for one image or ``(N, 3, H, W)`` for a batch
(:meth:`Scorer.score` returns one result per image of a batch).

Out-of-distribution flag
------------------------
Every result carries ``ood_distance``: the standardised RMS distance of the image's global
feature from the model's training features (the diagonal Mahalanobis distance over sqrt(D), see
:meth:`~rl_scaniqa.envs.features.cache.FeatureStats.global_distance`); about 1 for a typical
training image. ``ood`` is True above :func:`ood_threshold`: the distance under which a training
image falls with probability :data:`OOD_QUANTILE` if its standardised features were independent
Gaussians, so that D * distance**2 is chi-square with D degrees of freedom. The model stores only
per-dimension statistics, not its training features, so the threshold is derived, not fitted; a
flagged image lies far from everything the model was trained on, and its score means little.

Streaming
---------
:meth:`Scorer.score_many` overlaps work in two threads: a reader thread decodes and projects
(OpenCV releases the GIL there) into a bounded queue; the calling thread extracts features and
runs policy and assessor on the images that are ready, up to ``batch_size`` at a time. Results
come back in input order. Memory stays flat: at most ``queue_size`` projected images wait in the
queue, and nothing of an image is kept once its result is yielded. A file that cannot be read or
encoded yields a result with ``error`` set; the others go on.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import queue
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, overload

import cv2
import numpy as np
import torch
from scipy.stats import chi2

from rl_scaniqa.agents.evaluation import SeededPolicyAgent, run_agent, score_scanpaths
from rl_scaniqa.agents.policy import ScanpathPolicy
from rl_scaniqa.agents.scaniqa_model import (
    MODEL_CONFIG_NAME,
    ScanIQAModel,
    build_policy,
)
from rl_scaniqa.envs.data.imageio import (
    SUPPORTED_SUFFIXES,
    as_erp_array,
    read_erp,
    write_image,
)
from rl_scaniqa.envs.errors import ImageError, RLScanIQAError
from rl_scaniqa.envs.features.backbones import Backbone, make_backbone, resolve_device
from rl_scaniqa.envs.features.cache import (
    NO_CAP,
    FeatureCache,
    ProjectedImage,
    encode_projected,
    no_augmentations,
    project_image,
)
from rl_scaniqa.envs.progress import progress_bar
from rl_scaniqa.envs.render import draw_scanpaths
from rl_scaniqa.envs.storage import atomic_path, json_line

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_MODEL_DIR",
    "MAX_UPSAMPLING",
    "OOD_QUANTILE",
    "PREVIEW_SHAPE",
    "STAGES",
    "ImageSource",
    "ScoreResult",
    "Scorer",
    "ScorerError",
    "available_memory",
    "find_images",
    "ood_threshold",
    "tensor_to_erp",
    "write_score_outputs",
]

#: Folder of the model shipped inside the package (``from_pretrained()`` with no folder).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "pretrained"
#: (height, width) of the ERP preview kept for drawing when ``previews=True``.
PREVIEW_SHAPE = (512, 1024)
#: Stages timed on every :class:`ScoreResult` (``timings``), in pipeline order.
STAGES = ("decode_ms", "project_ms", "features_ms", "policy_ms", "assessor_ms")
#: Columns of the ``--csv`` table (``paths`` as compact JSON, ``error`` empty when it worked).
CSV_COLUMNS = ("path", "score", "std", "ood_distance", "ood", "paths", "error")
#: What can be scored: an image file, an in-memory ERP array (as :func:`as_erp_array` takes), or
#: a float tensor (3, H, W) in 0..1 (:func:`tensor_to_erp`).
ImageSource = str | os.PathLike | np.ndarray | torch.Tensor
#: Most viewport pixels per ERP pixel (along a line through a viewport's centre) that an image
#: may need: at 2, half the viewport's detail is already interpolated. An ERP of W pixels holds
#: W / 360 pixels per degree, a viewport size / fov, hence the minimum width
#: 360 * size / (fov * MAX_UPSAMPLING) (448 px for the default 224 px, 90 degree grid).
MAX_UPSAMPLING = 2.0
#: Share of training-like images whose ``ood_distance`` lies below :func:`ood_threshold`.
OOD_QUANTILE = 0.99


def ood_threshold(dim: int, quantile: float = OOD_QUANTILE) -> float:
    """The ``ood_distance`` under which a training image falls with probability ``quantile``.

    Under the Gaussian assumption of the module docstring, D * distance**2 is chi-square with D
    degrees of freedom, so the threshold is sqrt(chi2.ppf(quantile, D) / D): 1.17 for D = 86
    (the NSS features), closer to 1 as D grows.
    """
    return math.sqrt(float(chi2.ppf(quantile, dim)) / dim)


def available_memory() -> int | None:
    """Bytes of physical memory free now (``os.sysconf``), or None where the OS cannot say.

    ``SC_AVPHYS_PAGES`` (Linux) counts free pages only, not reclaimable page cache, so it errs on
    the safe side; platforms without it (macOS) fall back to the total physical memory, and
    those without ``os.sysconf`` (Windows) skip the check.
    """
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return int(os.sysconf(pages)) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            continue
    return None


def tensor_to_erp(tensor: torch.Tensor, name: str = "<tensor>") -> np.ndarray:
    """A float tensor ``(3, H, W)`` with values in 0..1 (pyiqa's layout) as a ``uint8`` RGB ERP.

    Values are scaled by 255 and rounded, the inverse of torchvision's ``to_tensor``; the
    result then goes through :func:`as_erp_array` like any array (the 2:1 check included).

    Raises:
        ImageError: naming ``name``, for another shape or dtype, or values outside 0..1 (a
            tensor in 0..255, or normalised with ImageNet's mean and std, would score garbage).
    """
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ImageError(f"{name}: expected a tensor of shape (3, H, W) or (N, 3, H, W), got "
                         f"{tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ImageError(f"{name}: expected a float tensor with values in 0..1, got {tensor.dtype}")
    values = tensor.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(values).all()):
        raise ImageError(f"{name}: tensor holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise ImageError(f"{name}: tensor values must lie in 0..1 (RGB, not normalised), got "
                         f"{low:.4g}..{high:.4g}")
    pixels = (values * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return as_erp_array(np.ascontiguousarray(pixels), name)


class ScorerError(RLScanIQAError, ValueError):
    """A scorer cannot be set up: missing or broken model, unfitting backbone, bad K or T."""


@dataclass
class ScoreResult:
    """The score of one panorama.

    Attributes:
        path: the file, or ``"<array>"`` for an in-memory image.
        score: mean predicted quality on the model's MOS scale, higher is better; None on error.
        std: standard deviation of the K path scores, in MOS units; None on error.
        paths: the K scanpaths, each a list of L = T + 1 viewport indices of the model's grid
            (index 0 is the start viewport); empty on error.
        ood_distance: standardised RMS distance of the image's global feature from the model's
            training features (about 1 for a training image); None on error.
        ood: True when ``ood_distance`` exceeds :func:`ood_threshold`, i.e. the image lies
            outside what the model was trained on and its score means little; None on error.
        error: why the image could not be scored, or None.
        timings: milliseconds spent on this image per stage (:data:`STAGES`; the batched policy
            and assessor stages are shared equally between the images of a batch; a failed image
            has the stages it went through).
        preview: the ERP resized to :data:`PREVIEW_SHAPE`, only when previews were requested.
    """

    path: str
    score: float | None
    std: float | None
    paths: list[list[int]]
    ood_distance: float | None = None
    ood: bool | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    preview: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the image was scored."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """The JSON record: ``path``, ``score``, ``std``, ``ood_distance``, ``ood``, ``paths``,
        and ``error`` if it failed."""
        record: dict[str, Any] = {"path": self.path, "score": self.score, "std": self.std,
                                  "ood_distance": self.ood_distance, "ood": self.ood,
                                  "paths": self.paths}
        if self.error is not None:
            record["error"] = self.error
        return record


def find_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively.

    Files inside folders are kept when their suffix (any case) is one of
    :data:`~rl_scaniqa.envs.data.imageio.SUPPORTED_SUFFIXES`, sorted per folder. A path that does not
    exist is returned as it is, so that scoring reports it as an error.
    """
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES))
        else:
            found.append(path)
    return found


@dataclass
class _Prepared:
    """An image after the reader stage: projected pixels, or the error that stopped it."""

    name: str
    projected: ProjectedImage | None
    preview: np.ndarray | None
    error: str | None
    timings: dict[str, float]


@dataclass
class _Encoded:
    """An image after feature extraction (one cache row), waiting for its policy batch."""

    name: str
    row: dict[str, np.ndarray] | None
    preview: np.ndarray | None
    error: str | None
    timings: dict[str, float]


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, restoring the previous number.

    Policy steps are tiny (a batch of V x D matrices): spreading them over threads costs more than
    it saves, and on a loaded machine (or next to the reader thread) spinning OpenMP workers made
    the 105 steps of an image 10-40x slower in our measurements.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _describe(error: BaseException, name: str) -> str:
    """A one-line error message that names the image (our errors already start with it)."""
    message = str(error) or type(error).__name__
    return message if message.startswith(name) else f"{name}: {message}"


class Scorer:
    """Scores panoramas with a :class:`ScanIQAModel` (see the module docstring).

    Args:
        model: the trained model (policy, assessor, feature statistics, grid, MOS scale).
        backbone: the feature extractor; must produce the model's features (same dimension, and
            normally the same ``name``: another name only warns, for a local copy of the weights).
        k: paths per image (default: the model's K).
        t: steps per path (default: the model's T), 1 <= t <= V - 1.
        seed: seed of the path sampling.
        source: where the model came from, for messages.

    Raises:
        ScorerError: the backbone's feature dimension is not the model's, ``k`` < 1, ``t``
            outside 1..V-1, or ``k`` too large for the memory of even one image
            (:meth:`check_memory`).
    """

    def __init__(self, model: ScanIQAModel, backbone: Backbone, *, k: int | None = None,
                 t: int | None = None, seed: int = 0, source: str = "<in memory>") -> None:
        n_viewports = model.grid.n_viewports
        self.n_paths = model.settings.n_paths if k is None else int(k)
        self.path_length = model.settings.path_length if t is None else int(t)
        if self.n_paths < 1:
            raise ScorerError(f"k (paths per image) must be at least 1, got {self.n_paths}")
        if not 1 <= self.path_length <= n_viewports - 1:
            raise ScorerError(f"t (steps per path) must be between 1 and {n_viewports - 1} "
                              f"(V - 1, so that the viewports of a path stay distinct), "
                              f"got {self.path_length}")
        expected_dim = model.assessor.config.feature_dim
        if backbone.dim != expected_dim:
            raise ScorerError(f"{source}: the model expects {expected_dim}-dimensional "
                              f"{model.backbone} features, backbone {backbone.name} gives "
                              f"{backbone.dim}")
        if backbone.name != model.backbone:
            warnings.warn(f"scoring with backbone {backbone.name}, but the model {source} was "
                          f"trained on {model.backbone} features; scores are only meaningful if "
                          "both compute the same features (e.g. a local copy of the same weights)",
                          stacklevel=2)
        self.model = model
        self.backbone = backbone
        self.seed = int(seed)
        self.source = source
        # Before the policy is built for this K: an absurd K (10**9) fails here, not in numpy.
        self.check_memory(1)
        self.policy = self._policy_for(self.path_length)
        self.ood_threshold = ood_threshold(expected_dim)

    @property
    def min_erp_width(self) -> int:
        """Narrowest ERP (pixels) the grid's viewports can be rendered from (:data:`MAX_UPSAMPLING`)."""
        grid = self.model.grid
        return math.ceil(grid.erp_width / MAX_UPSAMPLING)

    def memory_need(self, batch_size: int) -> int:
        """Bytes of the scanpath arrays of one policy batch of ``batch_size`` images.

        Per image, the harness keeps K paths of L = T + 1 viewport indices (int64) and their
        float32 features (K x L x D), and the assessor repeats the global feature per path
        (K x D float32). Everything else (the backbone, the V x D observations) does not grow
        with K, so this is what an oversized ``k`` or ``batch_size`` would exhaust.
        """
        dim, length = self.model.assessor.config.feature_dim, self.path_length + 1
        return batch_size * self.n_paths * (length * (8 + 4 * dim) + 4 * dim)

    def check_memory(self, batch_size: int) -> None:
        """Refuse a ``batch_size`` x K x T whose scanpath arrays exceed :func:`available_memory`.

        Raises:
            ScorerError: naming K, T, the batch size and both amounts.
        """
        need, free = self.memory_need(batch_size), available_memory()
        if free is not None and need > free:
            raise ScorerError(
                f"k={self.n_paths} paths of t={self.path_length} steps for a batch of "
                f"{batch_size} image(s) need {need / 2**30:.3g} GiB of scanpath arrays, but only "
                f"{free / 2**30:.3g} GiB of memory is free; lower --k or --batch-size")

    @classmethod
    def from_pretrained(cls, model_dir: str | os.PathLike[str] | None = None, *,
                        backbone: str | Backbone | None = None, device: str = "auto",
                        k: int | None = None, t: int | None = None, seed: int = 0,
                        backbone_batch_size: int = 32) -> Scorer:
        """Load a model folder (default: the model shipped in the package) and its backbone.

        Args:
            model_dir: a folder written by :meth:`ScanIQAModel.save`; None for
                :data:`DEFAULT_MODEL_DIR`.
            backbone: None builds the model's own backbone; a spec string (e.g.
                ``"dinov2:/models/dinov2-small"`` for local weights) or a :class:`Backbone`
                replaces it.
            device: ``"auto"`` (the GPU when one is visible), ``"cpu"``, ``"cuda"``, ...
            k, t, seed: as in :class:`Scorer`.
            backbone_batch_size: images per backbone forward pass.

        Raises:
            ScorerError: no model in the folder, a corrupt or inconsistent one, an unknown
                backbone spec, or a bad ``k``/``t``.
            BackboneLoadError: the backbone's weights cannot be loaded.
        """
        directory = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        if not (directory / MODEL_CONFIG_NAME).is_file():
            hint = ("the shipped model is not installed; pass a model folder (--model DIR)"
                    if model_dir is None else f"no {MODEL_CONFIG_NAME} in it")
            raise ScorerError(f"{directory}: no RL-ScanIQA model here ({hint})")
        resolved = resolve_device(device)
        try:
            model = ScanIQAModel.load(directory, device=resolved)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ScorerError(f"{directory}: cannot load the RL-ScanIQA model ({error})") from error
        if backbone is None or isinstance(backbone, str):
            spec = backbone or model.backbone
            try:
                backbone = make_backbone(spec, device=resolved, batch_size=backbone_batch_size)
            except ValueError as error:
                raise ScorerError(f"backbone {spec!r}: {error}") from error
        return cls(model, backbone, k=k, t=t, seed=seed, source=str(directory))

    # ------------------------------------------------------------------ single images

    @overload
    def score(self, image: str | os.PathLike | np.ndarray, *,
              preview: bool = False) -> ScoreResult: ...

    @overload
    def score(self, image: torch.Tensor, *,
              preview: bool = False) -> ScoreResult | list[ScoreResult]: ...

    def score(self, image: ImageSource, *,
              preview: bool = False) -> ScoreResult | list[ScoreResult]:
        """Score one panorama in the calling thread, or each image of a batch tensor.

        ``image`` is a file, an ERP array, a float tensor ``(3, H, W)`` in 0..1 (one result) or
        ``(N, 3, H, W)`` (a list of N results, in order, scored as one policy batch).
        ``preview=True`` keeps a :data:`PREVIEW_SHAPE` copy of the ERP for :meth:`draw`.

        Raises:
            ImageError: the file is missing, unreadable, truncated, not a 2:1 ERP or narrower
                than :attr:`min_erp_width`; a tensor of another shape or dtype or outside 0..1.
            CacheError: the backbone produced NaN/inf features.
        """
        if isinstance(image, torch.Tensor) and image.ndim == 4:
            images: list[ImageSource] = list(image.unbind(0))
            names = [f"<tensor[{i}]>" for i in range(len(images))]
            encoded = [self._encode(self._prepare(item, preview, raise_errors=True, name=name),
                                    raise_errors=True) for item, name in zip(images, names)]
            return self._score_batch(encoded)
        prepared = self._prepare(image, preview, raise_errors=True)
        return self._score_batch([self._encode(prepared, raise_errors=True)])[0]

    def draw(self, result: ScoreResult, erp: np.ndarray | None = None) -> np.ndarray:
        """The result's K paths and score drawn on the panorama, ``uint8 (512, 1024, 3)`` RGB.

        ``erp`` defaults to ``result.preview`` (score with ``preview=True`` / ``previews=True``).

        Raises:
            ValueError: no image to draw on, or the result has no paths (it failed).
        """
        image = result.preview if erp is None else erp
        if image is None:
            raise ValueError(f"{result.path}: no image to draw on; score with previews or pass erp")
        if not result.paths:
            raise ValueError(f"{result.path}: no scanpaths to draw ({result.error})")
        canvas = draw_scanpaths(image, result.paths, self.model.grid, size=PREVIEW_SHAPE)
        caption = f"{Path(result.path).name}   score {result.score:.3f} +/- {result.std:.3f}"
        font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.6
        (width, height), baseline = cv2.getTextSize(caption, font, scale, 1)
        # White on a black box: legible on any content.
        cv2.rectangle(canvas, (0, 0), (width + 16, height + baseline + 12), (0, 0, 0), cv2.FILLED)
        cv2.putText(canvas, caption, (8, height + 6), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
        return canvas

    # ------------------------------------------------------------------ streaming

    def score_many(self, images: Iterable[ImageSource], *, batch_size: int = 8,
                   queue_size: int = 4, progress: bool = True,
                   previews: bool = False) -> Iterator[ScoreResult]:
        """Score many panoramas, yielding one :class:`ScoreResult` per input, in input order.

        A reader thread decodes and projects the images into a queue of at most ``queue_size``;
        this thread extracts features and runs policy and assessor on up to ``batch_size``
        images that are ready. Failures (unreadable file, not an ERP, NaN features) yield a
        result with ``error`` set and do not stop the others. Closing the iterator early stops
        the reader.

        Args:
            images: files, ERP arrays or (3, H, W) tensors (:func:`find_images` expands
                folders).
            batch_size: most images per policy/assessor batch.
            queue_size: most projected images waiting between the threads.
            progress: show a progress bar (count, rate, ETA).
            previews: keep a :data:`PREVIEW_SHAPE` copy of each ERP on its result (for
                :meth:`draw`).

        Raises:
            ScorerError: ``batch_size`` or ``queue_size`` below 1, or a batch too large for
                memory (:meth:`check_memory`), when iteration starts.
        """
        if batch_size < 1 or queue_size < 1:
            raise ScorerError(f"batch_size and queue_size must be positive, got {batch_size} "
                              f"and {queue_size}")
        self.check_memory(batch_size)
        total = len(images) if isinstance(images, Sequence) else None
        handoff: queue.Queue[_Prepared | BaseException | None] = queue.Queue(maxsize=queue_size)
        stop = threading.Event()

        def put(item: _Prepared | BaseException | None) -> bool:
            # Polls, so that a consumer that went away (closed iterator) never leaves us blocked.
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def read_all() -> None:
            try:
                for image in images:
                    if not put(self._prepare(image, previews, raise_errors=False)):
                        return
                put(None)
            except BaseException as error:  # handed to the consumer, which re-raises it
                put(error)

        reader = threading.Thread(target=read_all, name="rl-scaniqa-reader", daemon=True)
        reader.start()
        try:
            with progress_bar("scoring", total, unit="img", enabled=progress) as bar:
                finished = False
                while not finished:
                    item = handoff.get()
                    pending: list[_Encoded] = []
                    while True:
                        if item is None:
                            finished = True
                            break
                        if isinstance(item, BaseException):
                            raise item
                        pending.append(self._encode(item, raise_errors=False))
                        if len(pending) >= batch_size:
                            break
                        try:
                            item = handoff.get_nowait()
                        except queue.Empty:
                            break  # nothing ready: score what we have rather than wait
                    for result in self._score_batch(pending):
                        bar.advance(1)
                        yield result
        finally:
            stop.set()
            reader.join()

    # ------------------------------------------------------------------ stages

    def _prepare(self, image: ImageSource, preview: bool, *, raise_errors: bool,
                 name: str | None = None) -> _Prepared:
        """Decode (or validate) and project one image; failures become the result's error."""
        if name is None:
            name = ("<array>" if isinstance(image, np.ndarray)
                    else "<tensor>" if isinstance(image, torch.Tensor) else str(image))
        timings: dict[str, float] = {}
        try:
            start = time.perf_counter()
            if isinstance(image, np.ndarray):
                erp = as_erp_array(image, name)
            elif isinstance(image, torch.Tensor):
                erp = tensor_to_erp(image, name)
            else:
                erp = read_erp(image)
            self._check_size(erp, name)
            timings["decode_ms"] = _elapsed_ms(start)
            start = time.perf_counter()
            projected = project_image(erp, self.model.grid)
            small = (cv2.resize(erp, PREVIEW_SHAPE[::-1], interpolation=cv2.INTER_AREA)
                     if preview else None)
            timings["project_ms"] = _elapsed_ms(start)
        except Exception as error:  # whatever fails here is about this one image
            if raise_errors:
                raise
            return _Prepared(name, None, None, _describe(error, name), timings)
        return _Prepared(name, projected, small, None, timings)

    def _encode(self, prepared: _Prepared, *, raise_errors: bool) -> _Encoded:
        """Backbone features, entropies and SSIM of a projected image (the cache builder's code)."""
        if prepared.projected is None:
            return _Encoded(prepared.name, None, None, prepared.error, prepared.timings)
        timings = dict(prepared.timings)
        try:
            start = time.perf_counter()
            row = encode_projected(prepared.projected, self.backbone, prepared.name)
            timings["features_ms"] = _elapsed_ms(start)
        except (RLScanIQAError, ValueError) as error:
            if raise_errors:
                raise
            return _Encoded(prepared.name, None, None, _describe(error, prepared.name), timings)
        return _Encoded(prepared.name, row, prepared.preview, None, timings)

    def _score_batch(self, encoded: list[_Encoded]) -> list[ScoreResult]:
        """Paths and scores of the images that encoded; failed images pass through."""
        rows = [item.row for item in encoded if item.row is not None]
        if rows:
            cache = self._cache_of([item.name for item in encoded if item.row is not None], rows)
            on_cpu = self.policy.device.type == "cpu"
            with _torch_threads(1) if on_cpu else contextlib.nullcontext():
                start = time.perf_counter()
                scanpaths = run_agent(SeededPolicyAgent(self.policy, self.seed), cache,
                                      range(len(rows)), n_paths=self.n_paths,
                                      path_length=self.path_length,
                                      env_kwargs=self.model.env_kwargs(), batch_size=len(rows),
                                      seed=self.seed)
                policy_ms = _elapsed_ms(start) / len(rows)
                start = time.perf_counter()
                means, stds, _ = score_scanpaths(self.model.assessor, scanpaths)
                assessor_ms = _elapsed_ms(start) / len(rows)
        scale = self.model.mos_scale
        results, row = [], 0
        for item in encoded:
            if item.row is None:
                results.append(ScoreResult(path=item.name, score=None, std=None, paths=[],
                                           error=item.error, timings=item.timings))
                continue
            distance = self.model.feature_stats.global_distance(item.row["global_features"])
            results.append(ScoreResult(
                path=item.name, score=float(scale.denormalize(float(means[row]))),
                std=float(stds[row]) * scale.span, paths=scanpaths.paths[row].tolist(),
                ood_distance=distance, ood=distance > self.ood_threshold,
                timings={**item.timings, "policy_ms": policy_ms, "assessor_ms": assessor_ms},
                preview=item.preview))
            row += 1
        return results

    # ------------------------------------------------------------------ helpers

    def _check_size(self, erp: np.ndarray, name: str) -> None:
        """Refuse an ERP too small for the grid's viewports (see :data:`MAX_UPSAMPLING`)."""
        height, width = erp.shape[:2]
        if width < self.min_erp_width:
            grid = self.model.grid
            raise ImageError(
                f"{name}: ERP of {width}x{height} pixels is too small for the model's "
                f"{grid.size} px viewports of {grid.fov_deg:g} degrees; they need at least "
                f"{self.min_erp_width}x{math.ceil(self.min_erp_width / 2)} (at most "
                f"{MAX_UPSAMPLING:g} viewport pixels per ERP pixel)")

    def _policy_for(self, path_length: int) -> ScanpathPolicy:
        """The model's policy with an observation space for ``path_length`` steps.

        The weights do not depend on T (the GRU runs over the path so far), but SB3 checks the
        history's length against the observation space, so another T needs a policy object
        built for it, loaded with the same weights.
        """
        model = self.model
        if path_length == model.settings.path_length:
            return model.policy
        settings = dataclasses.replace(model.settings, path_length=path_length,
                                       n_paths=self.n_paths)
        policy = build_policy(settings, model.grid, model.assessor.config.feature_dim,
                              device=str(model.policy.device))
        policy.load_state_dict(model.policy.state_dict())
        return policy

    def _cache_of(self, names: list[str], rows: list[dict[str, np.ndarray]]) -> FeatureCache:
        """An in-memory feature cache of encoded images (unlabelled: MOS is NaN)."""
        n, grid, dim = len(rows), self.model.grid, self.backbone.dim
        return FeatureCache(
            backbone=self.backbone.name, dim=dim, grid=grid, dataset="scored",
            mos_scale=self.model.mos_scale,
            # Positions, not names, as ids: the same file may be scored twice in one batch.
            image_ids=[str(i) for i in range(n)], paths=names, ref_ids=names,
            distortions=["unknown"] * n, levels=np.zeros(n, dtype=np.int64),
            mos=np.full(n, np.nan, dtype=np.float32),
            caps=np.full((n, 3), NO_CAP, dtype=np.float32),
            **{name: np.stack([row[name] for row in rows]) for name in rows[0]},
            start_viewports=np.full(n, -1, dtype=np.int64), augmentations=(),
            **no_augmentations(n, grid.n_viewports, dim),
        )


# ---------------------------------------------------------------------- command-line outputs

def _plot_name(result: ScoreResult, taken: set[str]) -> str:
    """``<stem>.png``, then ``<stem>-2.png``, ... for inputs sharing a stem (in input order)."""
    stem = Path(result.path).stem if result.path != "<array>" else "array"
    name, copy = f"{stem}.png", 1
    while name in taken:
        copy += 1
        name = f"{stem}-{copy}.png"
    taken.add(name)
    return name


def _cell(value: float | None, fmt: str = "") -> str:
    """A table cell: empty for a missing value; ``fmt`` "" gives the shortest exact repr."""
    return "" if value is None else (format(value, fmt) if fmt else repr(value))


def write_score_outputs(results: Iterable[ScoreResult], scorer: Scorer, *,
                        json_stream: TextIO | None = None,
                        csv_path: str | os.PathLike[str] | None = None,
                        plot_dir: str | os.PathLike[str] | None = None,
                        table: bool = True) -> tuple[int, int]:
    """Stream ``results`` to the outputs of ``rl-scaniqa score``; return ``(scored, failed)``.

    Args:
        results: usually ``scorer.score_many(..., previews=plot_dir is not None)``.
        scorer: the scorer that produced them (its grid draws the plots).
        json_stream: one JSON object per line (:meth:`ScoreResult.to_dict`), flushed per image.
        csv_path: a CSV table with :data:`CSV_COLUMNS`, streamed to a temporary file that
            replaces ``csv_path`` once every image is done.
        plot_dir: one PNG per scored image, the ERP with its K paths drawn (:meth:`Scorer.draw`).
        table: print a rich table of path, score, std, ood distance and flag, and error at
            the end.
    """
    rows: list[tuple[str, str, str, str, str, str]] = []
    taken: set[str] = set()
    scored = failed = 0
    plots = Path(plot_dir) if plot_dir is not None else None
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        writer = None
        if csv_path is not None:
            Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(atomic_path(csv_path))
            writer = csv.writer(stack.enter_context(open(tmp, "w", newline="", encoding="utf-8")))
            writer.writerow(CSV_COLUMNS)
        for result in results:
            scored, failed = (scored + 1, failed) if result.ok else (scored, failed + 1)
            if json_stream is not None:
                json_stream.write(json_line(result.to_dict()) + "\n")
                json_stream.flush()
            if writer is not None:
                writer.writerow([result.path, _cell(result.score), _cell(result.std),
                                 _cell(result.ood_distance),
                                 "" if result.ood is None else str(result.ood).lower(),
                                 json.dumps(result.paths, separators=(",", ":")),
                                 result.error or ""])
            if plots is not None and result.ok:
                write_image(plots / _plot_name(result, taken), scorer.draw(result))
            if table:
                # The path is in the row already: the error cell keeps only the problem.
                problem = (result.error or "").removeprefix(f"{result.path}: ")
                rows.append((result.path, _cell(result.score, ".3f"), _cell(result.std, ".3f"),
                             _cell(result.ood_distance, ".2f"), "yes" if result.ood else "",
                             problem))
    if table:
        from rich.console import Console
        from rich.table import Table

        scale = scorer.model.mos_scale
        view = Table(title=f"RL-ScanIQA scores (MOS scale {scale.low:g}..{scale.high:g}, higher "
                           f"is better; K={scorer.n_paths}, T={scorer.path_length}; ood above "
                           f"{scorer.ood_threshold:.2f})")
        # Paths and errors fold onto more lines rather than being cut: they identify a row.
        view.add_column("path", overflow="fold")
        view.add_column("score", justify="right", no_wrap=True)
        view.add_column("std", justify="right", no_wrap=True)
        # A distance above the threshold says the score means little: the title gives the bound.
        view.add_column("ood dist", justify="right", no_wrap=True)
        view.add_column("ood", no_wrap=True)
        view.add_column("error", overflow="fold")
        for row in rows:
            view.add_row(*row)
        Console().print(view)
    return scored, failed
