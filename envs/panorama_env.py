"""``Panorama360Env``: choosing scanpaths of viewports on a 360° panorama (Gymnasium env)."""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rl_scaniqa.envs import QUALIFIED_ENV_ID, rewards
from rl_scaniqa.envs.data.datasets import split_by_reference
from rl_scaniqa.envs.data.geometry import ViewportGrid, coverage_matrix
from rl_scaniqa.envs.errors import CacheError
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.render import draw_scanpaths, path_colors, scanpath_text

if TYPE_CHECKING:
    import torch

START_MODES = ("front", "random_equator", "dataset")
SPLITS = ("train", "test", "all")
#: Sphere samples for coverage and Jaccard: ~0.003 sr each, far finer than a 90° viewport.
N_SPHERE_POINTS = 4096
#: (height, width) of the ``rgb_array`` frame.
RENDER_SIZE = (256, 512)

Observation = dict[str, np.ndarray]


class Panorama360Env(gym.Env[Observation, int]):
    """Active viewing of a 360° panorama: choose K scanpaths of T viewports each.

    ## Description

    One episode shows one equirectangular panorama through a grid of V candidate viewports
    (default 8 yaws x 4 pitches = 32 viewports of 90° x 90°, see
    :class:`~rl_scaniqa.envs.data.geometry.ViewportGrid`). The agent draws K scanpaths one after the
    other. Each path starts at a start viewport (not chosen by the agent) and then the agent picks
    T more viewports, so a path visits ``L = T + 1`` viewports. What the path saw (its L viewport
    features and the global descriptor) is what a quality assessor scores; this env provides the
    exploration rewards, and the assessor's terminal reward is added outside it (see
    ``rl_scaniqa.agents.reward_wrapper``), from the ``info`` this env emits at each path end.

    All features come from a :class:`~rl_scaniqa.envs.features.cache.FeatureCache` built once
    from the pixels (backbone features, entropy and SSIM of every viewport), so ``step`` is a few
    table look-ups. Features are standardised with ``feature_stats`` (fitted on the training
    split) and clipped to ``±feature_clip``, like SB3's ``VecNormalize``.

    ## Action Space

    ``Discrete(V)``: the index of the next viewport, row-major from the top row
    (``index = row * n_lon + col``). Any integer type is accepted (``int``, numpy integer, 0-d
    integer array); anything else raises ``TypeError`` and an index outside ``0..V-1`` raises
    ``ValueError``. Revisiting a viewport of the current path is allowed and earns no novelty;
    :meth:`action_masks` and ``info["action_mask"]`` give the unvisited set, and with
    ``reject_masked_actions=True`` a revisit raises ``ValueError`` (unless every viewport of the
    grid is already in the path, then everything is allowed).

    ## Observation Space

    A ``Dict`` of float32 ``Box`` entries (index entries are float with ``-1`` padding: SB3 would
    one-hot encode ``Discrete`` entries). Every observation holds fresh arrays, never shared with
    an earlier one.

    | Key          | Shape    | Range         | Meaning                                                    |
    |--------------|----------|---------------|------------------------------------------------------------|
    | `global`     | (D,)     | ±feature_clip | standardised global descriptor of the panorama             |
    | `candidates` | (V, D)   | ±feature_clip | standardised features of the V candidate viewports         |
    | `history`    | (T + 1,) | -1 .. V-1     | viewports of the current path, `[0]` = start, -1 = not yet |
    | `visited`    | (V,)     | 0 / 1         | 1 where the viewport is in the current path                |
    | `seen`       | (V,)     | 0 .. 1        | earlier paths of this episode that visited it, / (K - 1)   |
    | `step`       | (1,)     | 0 .. T        | actions taken in the current path                          |
    | `path`       | (1,)     | 0 .. K-1      | index of the current path                                  |

    `seen` is what the set reward (coverage and overlap of the K paths) depends on besides the
    current path: without it an agent cannot tell a path that repeats the earlier ones from one
    that goes elsewhere, and its K paths are independent draws.

    ## Rewards

    Each action moving the gaze from ``x_{t-1}`` (the start viewport for the first action of a
    path) to ``x_t`` earns::

        r_t = λ_ent · H(x_t) / 8 + λ_ssim · (1 − SSIM(x_t, x_{t−1})) + λ_nov · δ_new + λ_eqb · B(x_t)

    - ``H(x)``: Shannon entropy of the viewport's 256-bin grey-level histogram in bits; divided
      by ``log2(256) = 8`` so the term lies in [0, 1].
    - ``SSIM(x_t, x_{t−1})``: grey-level SSIM between the two viewports (1 for a repeat).
    - ``δ_new``: 1 if ``x_t`` is not yet in the current path (the start viewport counts), else 0.
    - ``B(x) = exp(−0.5 · |pitch(x) in radians|)``: equator prior.

    The last action of the episode also earns the set reward of the K paths::

        R_set = β_cov · coverage − β_jac · mean_{i<j} |S_i ∩ S_j| / |S_i ∪ S_j|

    where ``S_k`` is the set of points of a 4096-point Fibonacci sphere sampling seen by any
    viewport of path k (start included) and ``coverage = |∪_k S_k| / 4096``. With K = 1 the
    Jaccard term is 0. Default weights (the paper's): λ = 0.5 / 1.0 / 1.0 / 0.2, β = 0.2 / 0.2.

    With ``set_reward_per_path=True`` the last action of every path k earns instead
    ``R_set(P_1..P_k) − R_set(P_1..P_{k−1})`` (``R_set`` of no path is 0): what that path changed
    of the set reward. The increments add up to the same ``R_set`` of the K paths, but each
    path is credited when it ends, not once after K · T actions.

    ## Starting State

    ``reset`` picks an image: ``options={"image_index": i}`` selects cache index ``i``, which
    must belong to the env's split (:attr:`image_indices`; use ``split="all"`` to reach every
    image) so that a training env cannot silently see test images; otherwise it is drawn
    uniformly from the split with ``self.np_random``. Every path starts at the start viewport:

    - ``"front"``: ``grid.nearest(0, 0)``, the equator viewport facing yaw 0. On the default
      grid four viewports (11, 12, 19, 20) are equally close to (0°, 0°); the lowest index wins,
      so it is viewport 11 (yaw −22.5°, pitch +22.5°).
    - ``"random_equator"``: a viewport of the row(s) nearest the equator, drawn for every path
      with ``self.np_random``.
    - ``"dataset"``: the dataset's starting point (``FeatureCache.start_viewports``, e.g. JUFE's
      good/bad starting points), ``"front"`` where the dataset has none.

    ## Episode End

    After exactly ``K · T`` actions the episode ends with ``terminated=True`` (a fixed budget is
    part of the task, not a time limit: truncation would make SB3 bootstrap over the terminal
    reward). ``truncated`` is always False and no ``TimeLimit`` is registered. The final
    observation is the last path's final state; ``step`` after the end raises ``RuntimeError``.

    ``info`` at every step: ``action_mask`` (bool (V,), True = allowed next), ``path_index``
    (path of the action just taken; 0 at reset), ``step_in_path`` (actions taken in it, 1..T;
    0 at reset), ``path_done``; at reset also ``image_index``. After every action it holds what
    the path of that action has seen so far: ``path`` (list of its viewport indices, start
    included; all L of them once ``path_done``), ``path_features`` ((len(path), D) float32,
    standardised), ``global_feature`` ((D,) float32), ``image_index`` and ``mos_normalized`` (MOS
    on 0..1), so a reward outside the env can credit each step (``path_done`` marks the path's
    end, where the assessor's terminal reward applies). The last step adds ``paths`` (int64
    (K, L)), ``image_id``, ``mos`` (raw scale),
    ``coverage``, ``jaccard`` and ``reward_components``: the weighted step terms ``entropy``,
    ``ssim``, ``novelty``, ``equator`` as float64 (K, T) arrays and the set terms
    ``set_coverage`` (= β_cov · coverage) and ``set_jaccard`` (= −β_jac · jaccard) as 0-d arrays;
    all components sum to the episode's return.

    ## Arguments

    - ``dataset``, ``root``, ``dataset_options``: dataset loader name, its folder, and loader
      options (``rl_scaniqa.envs.data.datasets.load_dataset``). With ``root=None`` and
      ``dataset="synth360"`` the default data is used: the NSS cache of a small Synth360, shipped
      with the package (default backbone and grid), otherwise generated on first use in
      ``<data_home>/synth360-quick`` (see :mod:`rl_scaniqa.envs.features.provision`).
    - ``backbone``: feature extractor spec for :func:`~rl_scaniqa.envs.features.backbones.make_backbone`
      (``"nss"``, ``"dinov2"``, ...). ``grid``: the viewport grid (default 8 x 4, 90°).
    - ``cache_dir``: where feature caches live (default ``<data_home>/cache``);
      ``data_home``: folder for default data and caches (default ``$RL_SCANIQA_HOME`` or
      ``~/.cache/rl_scaniqa``); ``progress``: show progress bars while building.
    - ``feature_cache``: a ready :class:`FeatureCache`, used as is (then ``root``,
      ``dataset_options`` and ``cache_dir`` must be left unset, and ``grid``, if given, must
      equal the cache's).
    - ``n_paths`` (K, default 15), ``path_length`` (T, default 7, at most V - 1).
    - ``split`` (``"train"``, ``"test"`` or ``"all"``), ``split_seed``, ``test_fraction``: the
      split by reference content (:func:`~rl_scaniqa.envs.data.datasets.split_by_reference` on the
      cache's ``ref_ids``) whose images the env shows.
    - ``feature_stats``: :class:`FeatureStats` (or its ``to_dict()``; pass the training env's to
      an evaluation env on another dataset). Default: fitted on the training images: the
      ``"train"`` side of the split for ``split="train"`` and also for ``split="test"`` (so the
      two envs of one split standardise identically and nothing is fitted on test images), every
      image for ``split="all"`` (e.g. training on all of a dataset for cross-dataset tests).
    - ``feature_clip``: bound of the standardised features (default 10).
    - ``start``: ``"front"``, ``"random_equator"`` or ``"dataset"``.
    - ``lambda_entropy``, ``lambda_ssim``, ``lambda_novelty``, ``lambda_equator``,
      ``beta_coverage``, ``beta_jaccard``: reward weights. ``set_reward_per_path``: pay the set
      reward as per-path increments (see *Rewards*; default False, the paper's timing).
    - ``reject_masked_actions``: raise on revisits instead of giving δ_new = 0.
    - ``render_mode``: ``None``, ``"rgb_array"`` (256 x 512 ERP thumbnail with every path drawn in
      its colour, numbered, the current viewport in white) or ``"ansi"`` (text grid).

    ## Version History

    - v0: initial version.
    """

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 4}

    # The current path's state, set by _start_path and advanced by step.
    _current: int
    _path: list[int]
    _step_in_path: int
    _history: np.ndarray
    _visited: np.ndarray
    _visited_list: list[bool]
    _n_unique: int

    def __init__(
        self,
        dataset: str = "synth360",
        root: str | os.PathLike[str] | None = None,
        backbone: str = "nss",
        grid: ViewportGrid | None = None,
        n_paths: int = 15,
        path_length: int = 7,
        split: str = "train",
        split_seed: int = 0,
        test_fraction: float = 0.2,
        start: str = "front",
        lambda_entropy: float = rewards.RewardWeights.entropy,
        lambda_ssim: float = rewards.RewardWeights.ssim,
        lambda_novelty: float = rewards.RewardWeights.novelty,
        lambda_equator: float = rewards.RewardWeights.equator,
        beta_coverage: float = rewards.RewardWeights.coverage,
        beta_jaccard: float = rewards.RewardWeights.jaccard,
        set_reward_per_path: bool = False,
        reject_masked_actions: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        feature_cache: FeatureCache | None = None,
        render_mode: str | None = None,
        dataset_options: Mapping[str, Any] | None = None,
        feature_stats: FeatureStats | Mapping[str, Any] | None = None,
        feature_clip: float = 10.0,
        data_home: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        self.n_paths = _positive_int("n_paths", n_paths)
        self.path_length = _positive_int("path_length", path_length)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if start not in START_MODES:
            raise ValueError(f"start must be one of {START_MODES}, got {start!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        if (isinstance(feature_clip, bool) or not isinstance(feature_clip, (int, float, np.number))
                or not 0.0 < feature_clip < math.inf):
            raise ValueError(f"feature_clip must be a positive finite number, got {feature_clip!r}")
        self.split = split
        self.start = start
        self.render_mode = render_mode
        self.reject_masked_actions = bool(reject_masked_actions)
        if not isinstance(set_reward_per_path, (bool, np.bool_)):
            raise TypeError(f"set_reward_per_path must be True or False, got {set_reward_per_path!r}")
        self.set_reward_per_path = bool(set_reward_per_path)
        self.feature_clip = float(feature_clip)
        self.reward_weights = rewards.RewardWeights(
            entropy=lambda_entropy, ssim=lambda_ssim, novelty=lambda_novelty, equator=lambda_equator,
            coverage=beta_coverage, jaccard=beta_jaccard)

        if feature_cache is None:
            from rl_scaniqa.envs.features.provision import (
                prepare_feature_cache,  # heavy imports
            )

            feature_cache = prepare_feature_cache(
                dataset, root, backbone=backbone, grid=grid, cache_dir=cache_dir,
                dataset_options=dataset_options, home=data_home, progress=progress)
        else:
            if root is not None or dataset_options or cache_dir is not None:
                raise ValueError("pass either feature_cache or root/dataset_options/cache_dir, not both")
            if grid is not None and grid != feature_cache.grid:
                raise ValueError(f"grid {grid} differs from the feature cache's grid {feature_cache.grid}")
        _check_cache(feature_cache)
        self.feature_cache = feature_cache
        self.grid: ViewportGrid = feature_cache.grid
        n_viewports, dim = self.grid.n_viewports, feature_cache.dim
        if self.path_length > n_viewports - 1:
            # The same bound as the scorer's: the T + 1 viewports of a path stay distinct.
            raise ValueError(f"path_length must be at most {n_viewports - 1} (V - 1) on the "
                             f"{self.grid.key()} grid, got {self.path_length}")

        if split == "all":
            # No split needed (a dataset with a single reference content works too).
            chosen = fit_on = tuple(range(len(feature_cache)))
        else:
            reference_split = split_by_reference(list(feature_cache.ref_ids),
                                                 test_fraction=test_fraction, seed=split_seed)
            chosen = reference_split.train if split == "train" else reference_split.test
            fit_on = reference_split.train
        #: Cache indices of the images this env shows (its split), ascending.
        self.image_indices: tuple[int, ...] = tuple(int(i) for i in chosen)
        self._image_index_set = frozenset(self.image_indices)
        self.feature_stats = _resolve_stats(feature_stats, feature_cache, fit_on)

        # Gymnasium types Discrete by its NumPy sample and Dict as Any-valued; this env takes
        # plain int actions and gives ndarray-valued observations.
        self.action_space = cast(spaces.Space[int], spaces.Discrete(n_viewports))
        self.observation_space = cast(spaces.Space[Observation], observation_space_for(
            n_viewports, dim, self.path_length, self.n_paths, self.feature_clip))

        self._n_viewports = n_viewports
        # Templates copied into every observation: a copy is cheaper than building from scratch.
        self._history_template = np.full(self.path_length + 1, -1.0, dtype=np.float32)
        self._counters = [np.array([value], dtype=np.float32)
                          for value in range(max(self.n_paths, self.path_length + 1))]
        self._seen_scale = np.float32(max(self.n_paths - 1, 1))
        self._front_viewport = self.grid.front
        self._equator_viewports = self.grid.equator_indices()
        self._dataset_starts = np.asarray(feature_cache.start_viewports, dtype=np.int64)
        self._mos_normalized = np.asarray(feature_cache.mos_normalized, dtype=np.float64)
        # The image-independent reward term and the sphere sampling are fixed for the env's life;
        # Python lists make the per-step look-ups cheaper than numpy scalar indexing.
        self._equator_terms: list[float] = (
            self.reward_weights.equator * rewards.equator_term(self.grid.centers_deg[:, 1])).tolist()
        self._novelty_weight = float(self.reward_weights.novelty * rewards.novelty_term(True))
        self._coverage_atoms, self._coverage_counts = rewards.compress_coverage(
            coverage_matrix(self.grid, N_SPHERE_POINTS))
        self._image_index: int | None = None

    # ------------------------------------------------------------------ Gymnasium API

    def reset(self, *, seed: int | None = None,
              options: Mapping[str, Any] | None = None) -> tuple[Observation, dict[str, Any]]:
        """Start an episode on a new image (see *Starting State*); ``options`` may hold ``image_index``."""
        super().reset(seed=seed)
        self._load_image(self._choose_image(options))
        self._paths: list[list[int]] = []
        self._seen_counts = np.zeros(self._n_viewports, dtype=np.float32)
        self._set_reward_paid = 0.0
        self._components: list[tuple[float, float, float, float]] = []
        self._path_index = 0
        self._done = False
        self._start_path()
        info = {"action_mask": self._mask(), "path_index": 0, "step_in_path": 0, "path_done": False,
                "image_index": self._image_index}
        return self._observation(), info

    def step(self, action: int) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Move the gaze to viewport ``action``; see the class docstring for reward and info."""
        if self._image_index is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended (terminated=True); call reset() before step()")
        viewport = self._action_index(action)
        visited = self._visited_list
        is_new = not visited[viewport]
        if not is_new and self.reject_masked_actions and self._n_unique < len(visited):
            raise ValueError(f"viewport {viewport} is already in the current path {self._path} "
                             "and reject_masked_actions=True; choose one where action_masks() is True")
        entropy = self._entropy_terms[viewport]
        dissimilarity = self._ssim_terms[self._current][viewport]
        novelty = self._novelty_weight if is_new else 0.0
        equator = self._equator_terms[viewport]
        self._components.append((entropy, dissimilarity, novelty, equator))
        reward = entropy + dissimilarity + novelty + equator

        step_in_path = self._step_in_path + 1
        self._step_in_path = step_in_path
        self._current = viewport
        self._path.append(viewport)
        self._history[step_in_path] = viewport
        if is_new:
            visited[viewport] = True
            self._visited[viewport] = 1.0
            self._n_unique += 1
        info: dict[str, Any] = {"path_index": self._path_index, "step_in_path": step_in_path,
                                "path_done": step_in_path == self.path_length}
        self._add_path_seen(info)
        if step_in_path < self.path_length:
            info["action_mask"] = self._mask()
            return self._observation(), reward, False, False, info
        return self._end_path(reward, info)

    def action_masks(self) -> np.ndarray:
        """Bool (V,): True for viewports not yet in the current path (all True once all are)."""
        if self._image_index is None:
            raise RuntimeError("call reset() before action_masks()")
        return self._mask()

    def render(self) -> np.ndarray | str | None:
        """The current state as an RGB frame (``"rgb_array"``) or text (``"ansi"``)."""
        if self.render_mode is None:
            gym.logger.warn("render() was called without a render_mode; pass render_mode="
                            "'rgb_array' or 'ansi' when making the env")
            return None
        if self._image_index is None:
            raise RuntimeError("call reset() before render()")
        # At the end of the episode the current path is already the last of self._paths.
        past = self._paths[:-1] if self._done else self._paths
        if self.render_mode == "rgb_array":
            drawn = past + [self._path]
            return draw_scanpaths(self.feature_cache.thumbnails[self._image_index], drawn, self.grid,
                                  current=self._current, size=RENDER_SIZE,
                                  colors=path_colors(self.n_paths)[:len(drawn)])
        header = (f"image {self.feature_cache.image_ids[self._image_index]} "
                  f"(index {self._image_index})  path {self._path_index + 1}/{self.n_paths}  "
                  f"step {self._step_in_path}/{self.path_length}")
        seen_before = [index for path in past for index in path]
        return header + "\n" + scanpath_text(self.grid, self._path, seen_before, self._current)

    # ------------------------------------------------------------------ internals

    def _choose_image(self, options: Mapping[str, Any] | None) -> int:
        options = dict(options or {})
        unknown = set(options) - {"image_index"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; the only option is 'image_index'")
        if "image_index" not in options:
            return self.image_indices[int(self.np_random.integers(len(self.image_indices)))]
        index = options["image_index"]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"options['image_index'] must be an integer cache index, got {index!r}")
        if int(index) not in self._image_index_set:
            raise ValueError(
                f"image_index {int(index)} is not in this env's {self.split!r} split "
                f"({len(self.image_indices)} images, see env.unwrapped.image_indices); "
                "make the env with split='all' to reach every image of the cache")
        return int(index)

    def _load_image(self, index: int) -> None:
        """Precompute everything ``step`` needs for image ``index``."""
        cache, clip = self.feature_cache, self.feature_clip
        self._image_index = index
        self._candidates = observed_viewports(cache, self.feature_stats, index, clip)
        global_feature = self.feature_stats.standardize_global(cache.global_features[index])
        self._global = np.clip(global_feature, -clip, clip).astype(np.float32, copy=False)
        self._image_mos = float(self._mos_normalized[index])
        weights = self.reward_weights
        self._entropy_terms: list[float] = (
            weights.entropy * rewards.entropy_term(cache.entropy[index])).tolist()
        self._ssim_terms: list[list[float]] = (
            weights.ssim * rewards.ssim_term(cache.ssim[index])).tolist()

    def _start_viewport(self) -> int:
        if self.start == "random_equator":
            return int(self.np_random.choice(self._equator_viewports))
        if self.start == "dataset":
            provided = int(self._dataset_starts[self._image_index])
            if provided >= 0:
                return provided
        return self._front_viewport

    def _start_path(self) -> None:
        start = self._start_viewport()
        n_viewports = self._n_viewports
        self._current = start
        self._path = [start]
        self._step_in_path = 0
        self._history = self._history_template.copy()
        self._history[0] = start
        self._visited = np.zeros(n_viewports, dtype=np.float32)
        self._visited[start] = 1.0
        self._visited_list = [False] * n_viewports
        self._visited_list[start] = True
        self._n_unique = 1

    def _add_path_seen(self, info: dict[str, Any]) -> None:
        """What the current path has seen so far, for rewards built outside the env."""
        index = self._image_index
        assert index is not None, "steps happen only inside an episode (step checks reset)"
        path = self._path
        info["path"] = list(path)
        # take, not fancy indexing: this runs at every step and take is ~4x faster on small rows.
        info["path_features"] = self._candidates.take(path, axis=0)
        info["global_feature"] = self._global.copy()
        info["image_index"] = index
        info["mos_normalized"] = self._image_mos

    def _end_path(self, reward: float,
                  info: dict[str, Any]) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Finish the current path: start the next one, or end the episode with its set reward.

        With ``set_reward_per_path`` every path end earns what the path changed of the set reward
        of the paths so far; the increments add up to the set reward of all K paths.
        """
        index = self._image_index
        assert index is not None, "a path ends only inside an episode (step checks reset)"
        self._paths.append(self._path)
        last = self._path_index + 1 == self.n_paths
        if last or self.set_reward_per_path:
            paths = np.array(self._paths, dtype=np.int64)
            diversity = rewards.set_reward(paths, self._coverage_atoms, self.reward_weights,
                                           self._coverage_counts)
            reward += diversity.reward - self._set_reward_paid
            self._set_reward_paid = diversity.reward
        if not last:
            # Each earlier path counts once per viewport (a revisit adds nothing): at most K - 1.
            self._seen_counts[self._path] += 1.0
            self._path_index += 1
            self._start_path()
            info["action_mask"] = self._mask()
            return self._observation(), reward, False, False, info

        self._done = True
        steps = np.array(self._components, dtype=np.float64).reshape(self.n_paths, self.path_length, 4)
        cache = self.feature_cache
        info.update(
            action_mask=self._mask(),
            paths=paths,
            image_id=cache.image_ids[index],
            mos=float(cache.mos[index]),
            coverage=diversity.coverage,
            jaccard=diversity.jaccard,
            reward_components={
                "entropy": steps[..., 0], "ssim": steps[..., 1],
                "novelty": steps[..., 2], "equator": steps[..., 3],
                "set_coverage": np.array(self.reward_weights.coverage * diversity.coverage),
                "set_jaccard": np.array(-self.reward_weights.jaccard * diversity.jaccard),
            },
        )
        return self._observation(), reward, True, False, info

    def _observation(self) -> Observation:
        # Fresh arrays every call: users keep observations (rollout buffers), and Gymnasium's
        # checker rejects envs whose successive observations share memory.
        return {
            "global": self._global.copy(),
            "candidates": self._candidates.copy(),
            "history": self._history.copy(),
            "visited": self._visited.copy(),
            "seen": self._seen_counts / self._seen_scale,  # a new array; k / k is exactly 1
            "step": self._counters[self._step_in_path].copy(),
            "path": self._counters[self._path_index].copy(),
        }

    def _mask(self) -> np.ndarray:
        return allowed_viewports(self._visited)

    def _action_index(self, action: Any) -> int:
        if type(action) is int:
            index = action
        elif isinstance(action, np.integer):
            index = int(action)
        elif (isinstance(action, np.ndarray) and action.ndim == 0
              and np.issubdtype(action.dtype, np.integer)):
            index = int(action)
        else:
            raise TypeError(f"action must be an integer viewport index in 0..{self._n_viewports - 1}, "
                            f"got {action!r} of type {type(action).__name__}")
        if not 0 <= index < self._n_viewports:
            raise ValueError(f"action {index} is outside the action space 0..{self._n_viewports - 1}")
        return index


ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")


def observed_viewports(cache: FeatureCache, stats: FeatureStats, index: int, clip: float) -> np.ndarray:
    """Image ``index``'s viewport features as the env observes them: float32 ``(V, D)``,
    standardised with ``stats`` and clipped to ``±clip`` (``obs["candidates"]``; also what a
    path's ``info["path_features"]`` rows are taken from)."""
    candidates = stats.standardize_viewports(cache.viewport_features[index])
    return np.clip(candidates, -clip, clip).astype(np.float32, copy=False)


def allowed_viewports(visited: ArrayT) -> ArrayT:
    """The revisit mask: True where a viewport may be chosen next, over the last axis.

    The one definition of the rule, shared by the env, the baseline agents and the policy's
    attention (which applies it to torch tensors): the viewports not yet visited in the current
    path, or all of them once every one is visited (never so in the env, whose paths have at most
    V - 1 steps; the guard keeps the policy's softmax defined on any input). ``visited`` is
    the observation's 0/1 array, NumPy ``(..., V)`` or a torch tensor of that shape.
    """
    allowed: Any = visited < 0.5  # NumPy types the comparison "bool or array"; here an array
    return cast(ArrayT, allowed | ~allowed.any(-1)[..., None])


def observation_space_for(n_viewports: int, dim: int, path_length: int, n_paths: int,
                          feature_clip: float = 10.0) -> spaces.Dict:
    """The observation space of a ``Panorama360Env`` with these sizes, without making one.

    For building a policy before (or without) an env, e.g. when loading a trained model.
    """
    clip = float(feature_clip)
    return spaces.Dict({
        "global": spaces.Box(-clip, clip, (dim,), np.float32),
        "candidates": spaces.Box(-clip, clip, (n_viewports, dim), np.float32),
        "history": spaces.Box(-1.0, n_viewports - 1, (path_length + 1,), np.float32),
        "visited": spaces.Box(0.0, 1.0, (n_viewports,), np.float32),
        "seen": spaces.Box(0.0, 1.0, (n_viewports,), np.float32),
        "step": spaces.Box(0.0, path_length, (1,), np.float32),
        # max(.., 1): a single-path env would otherwise get a degenerate low == high box.
        "path": spaces.Box(0.0, max(n_paths - 1, 1), (1,), np.float32),
    })


class EnvFactory:
    """Zero-argument callable that makes ``Panorama360Env-v0`` with ``gym.make`` (default wrappers).

    A plain class rather than a closure so that it pickles by reference, as ``SubprocVecEnv``
    with the ``spawn``/``forkserver`` start methods requires; it uses the module-qualified id, so
    a fresh worker process imports and registers the package by itself.
    """

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self.kwargs = dict(kwargs)

    def __call__(self) -> gym.Env:
        return gym.make(QUALIFIED_ENV_ID, **self.kwargs)

    def __repr__(self) -> str:
        return f"EnvFactory({self.kwargs!r})"


def make_env(**kwargs: Any) -> Callable[[], gym.Env]:
    """A picklable thunk for SB3 ``make_vec_env``/``DummyVecEnv``/``SubprocVecEnv``.

    ``kwargs`` are ``Panorama360Env`` arguments, checked against its signature now so that a typo
    fails here rather than inside a worker process. With the default data, build it once in the
    main process first (``rl_scaniqa.envs.ensure_default_data()``) or let the workers wait on the
    build lock (see :mod:`rl_scaniqa.envs.features.provision`).
    """
    inspect.signature(Panorama360Env).bind(**kwargs)
    return EnvFactory(kwargs)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_cache(cache: FeatureCache) -> None:
    """Schema checks, so a hand-made or foreign cache fails here and not mid-episode."""
    name = f"feature cache (dataset {cache.dataset!r}, backbone {cache.backbone!r})"
    if len(cache) < 1:
        raise CacheError(f"{name} holds no images")
    cache.validate(name)


def _resolve_stats(stats: FeatureStats | Mapping[str, Any] | None, cache: FeatureCache,
                   train_indices: tuple[int, ...]) -> FeatureStats:
    if stats is None:
        return FeatureStats.fit(cache, indices=list(train_indices))
    if isinstance(stats, Mapping):
        stats = FeatureStats.from_dict(dict(stats))
    if not isinstance(stats, FeatureStats):
        raise TypeError(f"feature_stats must be a FeatureStats or its to_dict(), got {type(stats).__name__}")
    for field in ("global_mean", "global_std", "viewport_mean", "viewport_std"):
        if np.shape(getattr(stats, field)) != (cache.dim,):
            raise ValueError(f"feature_stats.{field} has shape {np.shape(getattr(stats, field))}, "
                             f"the cache's features have dimension {cache.dim}")
    return stats
