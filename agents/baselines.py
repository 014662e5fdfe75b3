"""Baselines for RL-ScanIQA: scanpath agents that share the assessor, and a no-path regressor.

Scanpath baselines have Stable-Baselines3's ``predict(observation, state, episode_start,
deterministic)``, so :func:`rl_scaniqa.agents.evaluation.run_agent` runs them exactly like a
trained policy and :func:`~rl_scaniqa.agents.evaluation.score_scanpaths` scores their paths with
the same co-trained assessor. The comparison therefore isolates *where the agent looks*.

======================  =====================================================================
agent                   what it does at each step of a path
======================  =====================================================================
RandomPathAgent         an unvisited viewport uniformly at random (seeded per image)
EquatorSweepAgent       the next equator viewport in yaw order; path k continues the sweep
                        where path k-1 stopped, so the K paths walk around the equator band
EntropyGreedyAgent      Assessor360-like sampling: high grey-level entropy, equator prior and
                        a penalty on viewports earlier paths of the image already visited
CubeFaceAgent           the six cube faces (front, right, back, left, up, down), MC360IQA-style;
                        every path is the same
AllViewportsAgent       every viewport of the grid in one path: the information ceiling
HumanScanpathAgent      the recorded head-movement scanpath of one subject per path (JUFE)
DamageOracleAgent       reference row, not a method: the viewports that see most of the
                        labelled damaged cap (``least=True``: the anti-oracle, those that see
                        least of it); random paths on images without a cap
======================  =====================================================================

All of them respect the env's action mask (no revisits within a path while unvisited viewports
remain). Agents that need to know *which image* a row of the batch shows (entropy, human paths, oracle)
implement the optional ``begin_episodes(image_indices, feature_cache)`` hook that ``run_agent``
calls before each batch of episodes (see :class:`~rl_scaniqa.agents.evaluation.EpisodeAwareAgent`).

:class:`SVRBaseline` is the handcrafted no-path baseline (the paper's NIQE row stands for the
classical methods): the cache's global NSS-style descriptor concatenated with the mean of the
viewport descriptors, standardised, into an RBF support-vector regressor whose ``C`` and
``gamma`` are chosen by cross-validation on the training split, grouped by reference content so
no scene is in both a CV training fold and its validation fold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rl_scaniqa.agents.damage import damage_ranking, has_cap
from rl_scaniqa.envs.data.geometry import ViewportGrid, lonlat_to_xyz
from rl_scaniqa.envs.features.cache import FeatureCache
from rl_scaniqa.envs.panorama_env import allowed_viewports
from rl_scaniqa.envs.rewards import equator_term

#: Directions (yaw, pitch) in degrees of the cube faces, in the order the agent visits them.
CUBE_FACE_DIRECTIONS: tuple[tuple[str, float, float], ...] = (
    ("front", 0.0, 0.0), ("right", 90.0, 0.0), ("back", 180.0, 0.0),
    ("left", -90.0, 0.0), ("up", 0.0, 90.0), ("down", 0.0, -90.0))
#: Actions per path that make a path of exactly the six faces from the "front" start viewport.
CUBE_FACE_PATH_LENGTH = 5


# ----------------------------------------------------------------------------- shared plumbing


def _as_batch(observation: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], bool]:
    """The observation with a leading batch axis, and whether it was a single observation."""
    single = np.ndim(observation["visited"]) == 1
    batch = {key: np.asarray(value)[None] if single else np.asarray(value)
             for key, value in observation.items()}
    return batch, single


def _allowed(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """Bool (n, V): the env's mask (:func:`~rl_scaniqa.envs.panorama_env.allowed_viewports`)."""
    return allowed_viewports(np.asarray(batch["visited"]))


def _counters(batch: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(path index, actions taken in the path) per row, as int arrays."""
    return (np.rint(batch["path"][:, 0]).astype(np.int64),
            np.rint(batch["step"][:, 0]).astype(np.int64))


def _current_viewport(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n,) the viewport the gaze is on: the last filled history entry."""
    _, steps = _counters(batch)
    return np.rint(batch["history"][np.arange(len(steps)), steps]).astype(np.int64)


def _check_grid(grid: ViewportGrid, batch: Mapping[str, np.ndarray], agent: str) -> None:
    if batch["visited"].shape[1] != grid.n_viewports:
        raise ValueError(f"{agent} was built for a grid of {grid.n_viewports} viewports, the "
                         f"observation has {batch['visited'].shape[1]}")


def _check_cache_grid(grid: ViewportGrid, feature_cache: FeatureCache, agent: str) -> None:
    if feature_cache.grid != grid:
        raise ValueError(f"{agent} was built for grid {grid.key()}, the cache uses "
                         f"{feature_cache.grid.key()}")


def _image_generators(seed: int, image_indices: np.ndarray) -> list[np.random.Generator]:
    # One stream per (seed, image): an image's paths do not depend on which batch it lands in.
    return [np.random.default_rng([seed, int(i)]) for i in image_indices]


class _ImageAware:
    """Remembers which cache image each batch row shows (the ``begin_episodes`` hook)."""

    def __init__(self) -> None:
        self._images: np.ndarray | None = None
        self._cache: FeatureCache | None = None

    def begin_episodes(self, image_indices: np.ndarray, feature_cache: FeatureCache) -> None:
        """Told by ``run_agent`` which cache images the next batch of episodes shows, row by row."""
        self._images = np.asarray(image_indices, dtype=np.int64).reshape(-1)
        self._cache = feature_cache

    def _announced(self) -> tuple[np.ndarray, FeatureCache]:
        if self._images is None or self._cache is None:
            raise RuntimeError(f"{type(self).__name__} needs to know the images: call "
                               "begin_episodes(image_indices, feature_cache) before predict "
                               "(run_agent does this)")
        return self._images, self._cache

    def _rows(self, n: int) -> tuple[np.ndarray, FeatureCache]:
        images, cache = self._announced()
        if len(images) != n:
            raise ValueError(f"{type(self).__name__}: predict got {n} observations, "
                             f"begin_episodes announced {len(images)} images")
        return images, cache


# ----------------------------------------------------------------------------- path baselines


class RandomPathAgent(_ImageAware):
    """Uniformly random unvisited viewports.

    Seeded: after ``begin_episodes`` each image draws from its own generator seeded by
    ``(seed, image index)``, so an image gets the same paths whatever batch it is evaluated in;
    without the hook one generator seeded by ``seed`` serves every row. ``deterministic`` is
    ignored (a random agent has no mode); the paths are reproducible through the seed instead.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = int(seed)
        self._fallback = np.random.default_rng(self.seed)
        self._generators: list[np.random.Generator] | None = None

    def begin_episodes(self, image_indices: np.ndarray, feature_cache: FeatureCache) -> None:
        super().begin_episodes(image_indices, feature_cache)
        self._generators = _image_generators(self.seed, self._announced()[0])

    def predict(self, observation: Mapping[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,) drawn uniformly among each row's allowed viewports."""
        batch, single = _as_batch(observation)
        allowed = _allowed(batch)
        n, n_viewports = allowed.shape
        if self._generators is None:
            keys = self._fallback.random((n, n_viewports))
        else:
            self._rows(n)  # the batch must be the one begin_episodes announced
            keys = np.stack([rng.random(n_viewports) for rng in self._generators])
        actions = np.where(allowed, keys, -1.0).argmax(axis=1)
        return (actions[0] if single else actions), state


class EquatorSweepAgent:
    """Walks the equator band in increasing yaw from the start viewport.

    The equator viewports (:meth:`ViewportGrid.equator_indices`; rows 1 and 2 of the default
    grid) are ordered column by column in increasing yaw, beginning at the start viewport's
    column (also when the start lies off the band, e.g. a dataset start near a pole), and within
    a column the row nearest the start's row first. Path k begins its sweep ``k * T`` entries
    after the start, so the K paths continue one another around the band instead of repeating
    the same arc. Viewports already in
    the current path are skipped; once the whole band is in the path, the lowest allowed index
    is taken. Deterministic by construction.
    """

    def __init__(self, grid: ViewportGrid) -> None:
        self.grid = grid
        centers = grid.centers_deg
        band = grid.equator_indices()
        yaws = centers[:, 0]
        columns = np.arange(grid.n_viewports) % grid.n_lon
        self._orders = np.empty((grid.n_viewports, len(band)), dtype=np.int64)
        for start in range(grid.n_viewports):
            # Yaw distance ahead of the start (0..360) decides the column order; the start's own
            # column comes first, and in it the start's row (distance 0 on the row too).
            ahead = (yaws[band] - yaws[start]) % 360.0
            ahead[np.isclose(ahead, 360.0)] = 0.0
            same_column = columns[band] == columns[start]
            ahead[same_column] = 0.0
            row_gap = np.abs(band // grid.n_lon - start // grid.n_lon)
            self._orders[start] = band[np.lexsort((band, row_gap, ahead))]

    def predict(self, observation: Mapping[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,): the next allowed viewport of each row's sweep."""
        batch, single = _as_batch(observation)
        _check_grid(self.grid, batch, type(self).__name__)
        allowed = _allowed(batch)
        paths, _ = _counters(batch)
        starts = np.rint(batch["history"][:, 0]).astype(np.int64)
        n_actions = batch["history"].shape[1] - 1
        actions = np.empty(len(allowed), dtype=np.int64)
        for row in range(len(allowed)):
            order = self._orders[starts[row]]
            # +1: entry 0 of the order is the start itself (when it lies on the band).
            rolled = np.roll(order, -(1 + paths[row] * n_actions))
            free = rolled[allowed[row, rolled]]
            actions[row] = free[0] if free.size else int(np.flatnonzero(allowed[row])[0])
        return (actions[0] if single else actions), state


class EntropyGreedyAgent(_ImageAware):
    """Assessor360-like sampling: informative, equatorial, not yet looked at.

    Each allowed viewport j of the image gets the score

        s_j = H_j / 8 + equator_weight · exp(−0.5 · |pitch_j|) − revisit_penalty · n_j

    with ``H_j`` the grey-level entropy in bits from the cache (0..8) and ``n_j`` the number of
    earlier paths of this image's episode that visited j (their starts included). With
    ``deterministic=True`` the agent takes the best viewport; otherwise it samples from
    ``softmax(s / temperature)`` with per-image generators seeded by ``(seed, image index)``, so
    the K paths differ and the same seed gives the same paths.

    ``n_j`` is carried in SB3's recurrent ``state`` (``run_agent`` passes it back), reset where
    ``episode_start`` is True, so the agent object itself holds no per-episode memory.
    """

    def __init__(self, grid: ViewportGrid, *, equator_weight: float = 0.25,
                 revisit_penalty: float = 0.5, temperature: float = 0.05, seed: int = 0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.grid = grid
        self.equator_weight = float(equator_weight)
        self.revisit_penalty = float(revisit_penalty)
        self.temperature = float(temperature)
        self.seed = int(seed)
        self._prior = equator_term(grid.centers_deg[:, 1])
        self._generators: list[np.random.Generator] = []

    def begin_episodes(self, image_indices: np.ndarray, feature_cache: FeatureCache) -> None:
        _check_cache_grid(self.grid, feature_cache, type(self).__name__)
        super().begin_episodes(image_indices, feature_cache)
        self._generators = _image_generators(self.seed, self._announced()[0])

    def predict(self, observation: Mapping[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,) and the updated state ``(earlier-path visit counts, current path)``."""
        batch, single = _as_batch(observation)
        _check_grid(self.grid, batch, type(self).__name__)
        allowed = _allowed(batch)
        n, n_viewports = allowed.shape
        images, cache = self._rows(n)
        if state is None:
            counts, previous = np.zeros((n, n_viewports)), np.zeros((n, n_viewports), dtype=bool)
        else:
            counts, previous = (np.array(part, copy=True) for part in state)
        if episode_start is not None:
            restart = np.asarray(episode_start, dtype=bool).reshape(-1)
            counts[restart] = 0.0
            previous[restart] = False
        paths, steps = _counters(batch)
        # A row at step 0 of path k > 0 has just finished path k-1: count what that path saw.
        finished = (steps == 0) & (paths > 0)
        counts[finished] += previous[finished]

        scores = (cache.entropy[images].astype(np.float64) / 8.0
                  + self.equator_weight * self._prior - self.revisit_penalty * counts)
        scores = np.where(allowed, scores, -np.inf)
        if deterministic:
            actions = scores.argmax(axis=1)
        else:
            logits = (scores - scores.max(axis=1, keepdims=True)) / self.temperature
            weights = np.exp(logits)
            probabilities = weights / weights.sum(axis=1, keepdims=True)
            actions = np.array([rng.choice(n_viewports, p=p)
                                for rng, p in zip(self._generators, probabilities)])
        current = np.asarray(batch["visited"]) > 0.5
        current[np.arange(n), actions] = True
        new_state = (counts, current)
        return (actions[0] if single else actions), new_state


class CubeFaceAgent:
    """The six cube faces of MC360IQA: front, right, back, left, up, down.

    Each direction maps to ``grid.nearest`` (ties to the lowest index; on the default 8 x 4
    grid: 11, 13, 8, 9, 0, 24), faces that coincide on a coarse grid are kept once. Each action
    is the first face, in that order, not yet in the path. With the ``"front"`` start (= the
    front face) and ``path_length = CUBE_FACE_PATH_LENGTH`` (5) a path is exactly the six
    faces; all K paths are identical, so the image score equals the single path's score. A path
    longer than the faces left raises ``ValueError`` rather than padding with non-faces.
    """

    def __init__(self, grid: ViewportGrid) -> None:
        self.grid = grid
        faces: list[int] = []
        for _, yaw, pitch in CUBE_FACE_DIRECTIONS:
            index = grid.nearest(yaw, pitch)
            if index not in faces:
                faces.append(index)
        #: The face viewports in visiting order.
        self.faces = np.asarray(faces, dtype=np.int64)

    def predict(self, observation: Mapping[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,): the next face each row's path has not visited."""
        batch, single = _as_batch(observation)
        _check_grid(self.grid, batch, type(self).__name__)
        unvisited = np.asarray(batch["visited"])[:, self.faces] < 0.5
        if not unvisited.any(axis=1).all():
            raise ValueError(f"CubeFaceAgent has no face left for this path (faces "
                             f"{self.faces.tolist()}): run it with path_length="
                             f"{CUBE_FACE_PATH_LENGTH} and the 'front' start")
        actions = self.faces[unvisited.argmax(axis=1)]
        return (actions[0] if single else actions), state


class AllViewportsAgent:
    """Visits every viewport: the lowest-index unvisited one at each step.

    Run with ``n_paths=1`` and ``path_length=V-1`` (see :func:`all_viewports_kwargs`), its one
    path holds all V viewports — the information ceiling of any scanpath over this grid, scored
    by the same assessor through the same harness.
    """

    def predict(self, observation: Mapping[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,): the lowest allowed viewport index of each row."""
        batch, single = _as_batch(observation)
        actions = _allowed(batch).argmax(axis=1)
        return (actions[0] if single else actions), state


def all_viewports_kwargs(grid: ViewportGrid) -> dict[str, int]:
    """``run_agent`` keyword arguments that make :class:`AllViewportsAgent` see the whole grid."""
    return {"n_paths": 1, "path_length": grid.n_viewports - 1}


class HumanScanpathAgent(_ImageAware):
    """Replays recorded human scanpaths: path k of an image follows subject ``k mod S``.

    ``scanpaths`` maps image ids to lists of viewport-index sequences on ``grid`` (as
    :func:`human_scanpaths_from_records` extracts them from JUFE records). Each action is the
    first viewport of the subject's sequence, in viewing order, that the current path has not
    visited (the env's start viewport counts as visited). When the subject's sequence has no
    unvisited viewport left, the path continues to the allowed viewport closest (great-circle)
    to the current one, the smallest head movement. Deterministic. An image without a recorded
    scanpath raises ``KeyError`` at ``begin_episodes``: no path is invented for it.
    """

    def __init__(self, scanpaths: Mapping[str, Sequence[Sequence[int]]],
                 grid: ViewportGrid) -> None:
        super().__init__()
        self.grid = grid
        self.scanpaths = {image: [np.asarray(path, dtype=np.int64) for path in paths if len(path)]
                          for image, paths in scanpaths.items()}
        for image, paths in self.scanpaths.items():
            for path in paths:
                if path.min() < 0 or path.max() >= grid.n_viewports:
                    raise ValueError(f"human scanpath of image {image!r} holds viewport indices "
                                     f"outside 0..{grid.n_viewports - 1}")
        unit = lonlat_to_xyz(grid.centers_deg[:, 0], grid.centers_deg[:, 1])
        self._closeness = unit @ unit.T
        self._rows_paths: list[list[np.ndarray]] = []

    def begin_episodes(self, image_indices: np.ndarray, feature_cache: FeatureCache) -> None:
        super().begin_episodes(image_indices, feature_cache)
        rows = []
        for index in self._announced()[0]:
            image_id = feature_cache.image_ids[int(index)]
            paths = self.scanpaths.get(image_id)
            if not paths:
                raise KeyError(f"no human scanpath for image {image_id!r} (cache index {index})")
            rows.append(paths)
        self._rows_paths = rows

    def predict(self, observation: Mapping[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,): each row's subject's next unvisited viewport."""
        batch, single = _as_batch(observation)
        _check_grid(self.grid, batch, type(self).__name__)
        allowed = _allowed(batch)
        self._rows(len(allowed))
        paths, _ = _counters(batch)
        current = _current_viewport(batch)
        actions = np.empty(len(allowed), dtype=np.int64)
        for row, subjects in enumerate(self._rows_paths):
            sequence = subjects[paths[row] % len(subjects)]
            fresh = sequence[allowed[row, sequence]]
            if fresh.size:
                actions[row] = fresh[0]
            else:
                closeness = np.where(allowed[row], self._closeness[current[row]], -np.inf)
                actions[row] = int(closeness.argmax())
        return (actions[0] if single else actions), state


class DamageOracleAgent(_ImageAware):
    """Reference agent that knows where the damage is: the oracle, or with ``least`` the anti-oracle.

    On an image whose cache row has a damaged cap (:func:`rl_scaniqa.agents.damage.has_cap`),
    the viewports are ranked by :func:`~rl_scaniqa.agents.damage.damage_ranking` (most of the
    cap seen first, nearest first on ties; ``least=True`` reverses both, so it looks away from
    the damage). Each action is the best-ranked viewport
    the env's revisit mask allows, so every path of an image is the same ranking prefix after
    its start. It bounds what *where a path looks* can give: these are reference rows beside
    the methods, not methods (they read the labels).

    Images without a cap (global distortions, references, datasets without cap labels) have
    no damage to aim at: there both variants fall back to :class:`RandomPathAgent` with the same
    ``seed``, i.e. exactly the random-paths baseline's paths for that seed. Its generators are
    the agent's own (seeded by ``(seed, image index)``), so adding this agent shifts no other
    agent's random stream.
    """

    def __init__(self, grid: ViewportGrid, *, least: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.grid = grid
        self.least = bool(least)
        self._fallback = RandomPathAgent(seed=seed)
        self._priorities = np.zeros((0, grid.n_viewports))
        self._located = np.zeros(0, dtype=bool)

    def begin_episodes(self, image_indices: np.ndarray, feature_cache: FeatureCache) -> None:
        _check_cache_grid(self.grid, feature_cache, type(self).__name__)
        super().begin_episodes(image_indices, feature_cache)
        self._fallback.begin_episodes(image_indices, feature_cache)
        images = self._announced()[0]
        self._located = has_cap(feature_cache, images)
        n_viewports = self.grid.n_viewports
        self._priorities = np.zeros((len(images), n_viewports))
        caps = feature_cache.caps[images[self._located]]
        if len(caps):
            for row, order in zip(np.flatnonzero(self._located),
                                  damage_ranking(self.grid, caps, least=self.least)):
                self._priorities[row, order] = np.arange(n_viewports, 0, -1)

    def predict(self, observation: Mapping[str, np.ndarray], state: Any = None,
                episode_start: np.ndarray | None = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """Actions (n,): the best-ranked allowed viewport, or a random one where there is no cap."""
        batch, single = _as_batch(observation)
        _check_grid(self.grid, batch, type(self).__name__)
        allowed = _allowed(batch)
        self._rows(len(allowed))
        # The fallback draws for every row, so each image's random stream advances the same
        # way whether or not other rows have caps.
        actions, _ = self._fallback.predict(batch)
        ranked = np.where(allowed, self._priorities, -1.0).argmax(axis=1)
        actions = np.where(self._located, ranked, actions)
        return (actions[0] if single else actions), state


def human_scanpaths_from_records(records: Sequence[Any],
                                 grid: ViewportGrid) -> dict[str, list[list[int]]]:
    """Image id → non-empty human scanpaths (viewport indices) from dataset records.

    Reads ``record.extra["human_scanpaths"]`` (JUFE loaded with ``hm_root=``); images without
    any non-empty path are left out, so an empty result means the dataset has none. Paths must
    have been mapped on ``grid`` (``extra["human_scanpath_grid"] == grid.key()``), otherwise
    ``ValueError`` names the image: reload the dataset with ``grid=`` set to the cache's grid.
    """
    result: dict[str, list[list[int]]] = {}
    for record in records:
        extra = record.extra or {}
        paths = [list(map(int, path)) for path in extra.get("human_scanpaths", ()) if len(path)]
        if not paths:
            continue
        recorded_grid = extra.get("human_scanpath_grid")
        if recorded_grid != grid.key():
            raise ValueError(f"human scanpaths of image {record.image_id!r} ({record.path}) were "
                             f"mapped on grid {recorded_grid!r}, the features use {grid.key()!r}; "
                             "load the dataset with grid= set to the cache's grid")
        result[record.image_id] = paths
    return result


# ----------------------------------------------------------------------------- no-path baseline


def nss_features(cache: FeatureCache, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """(N, 2D) float64: the global descriptor and the mean viewport descriptor of each image."""
    rows = np.asarray(indices, dtype=np.int64).reshape(-1)
    return np.concatenate([cache.global_features[rows].astype(np.float64),
                           cache.viewport_features[rows].astype(np.float64).mean(axis=1)], axis=1)


@dataclass
class SVRBaseline:
    """Handcrafted features → standardised RBF support-vector regression on the normalised MOS.

    ``C`` and ``gamma`` are picked from ``c_grid`` x ``gamma_factors / n_features`` (the factor
    1 is scikit-learn's ``gamma="scale"`` on standardised inputs) by grouped K-fold CV on the
    training images, groups = reference content; with fewer than two references the first grid
    point is used without search.
    """

    c_grid: tuple[float, ...] = (0.3, 3.0, 30.0)
    gamma_factors: tuple[float, ...] = (0.3, 1.0, 3.0)
    epsilon: float = 0.02
    cv_folds: int = 5
    #: ``{"C", "gamma"}`` chosen by the last :meth:`fit`.
    best_params: dict[str, float] = field(default_factory=dict, init=False)
    _model: Any = field(default=None, init=False, repr=False)

    def fit(self, cache: FeatureCache, indices: Sequence[int] | np.ndarray) -> SVRBaseline:
        """Fit on the images ``indices`` of ``cache`` (their normalised MOS); returns self."""
        from sklearn.model_selection import GridSearchCV, GroupKFold
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVR

        rows = np.asarray(indices, dtype=np.int64).reshape(-1)
        if rows.size < 2:
            raise ValueError(f"SVRBaseline.fit needs at least two images, got {rows.size}")
        x = nss_features(cache, rows)
        y = np.asarray(cache.mos_normalized, dtype=np.float64)[rows]
        groups = np.asarray(cache.ref_ids)[rows]
        grid = {"svr__C": list(self.c_grid),
                "svr__gamma": [factor / x.shape[1] for factor in self.gamma_factors]}
        pipeline = make_pipeline(StandardScaler(), SVR(kernel="rbf", epsilon=self.epsilon))
        n_groups = len(set(groups.tolist()))
        if n_groups >= 2:
            folds = GroupKFold(n_splits=min(self.cv_folds, n_groups))
            search = GridSearchCV(pipeline, grid, cv=folds, scoring="neg_mean_squared_error")
            search.fit(x, y, groups=groups)
            self._model = search.best_estimator_
            chosen = search.best_params_
        else:
            chosen = {name: values[0] for name, values in grid.items()}
            self._model = pipeline.set_params(**chosen).fit(x, y)
        self.best_params = {"C": float(chosen["svr__C"]), "gamma": float(chosen["svr__gamma"])}
        return self

    def predict(self, cache: FeatureCache, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores (N,) on the normalised MOS scale for the images ``indices`` of ``cache``."""
        if self._model is None:
            raise RuntimeError("SVRBaseline.predict called before fit")
        return np.asarray(self._model.predict(nss_features(cache, indices)), dtype=np.float64)
