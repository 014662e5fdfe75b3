"""A per-image baseline for the task reward: what random paths of the same image would have earned.

The assessor's error on a path depends far more on the image (some are hard to score from any
viewpoint) than on where the path looked, so the raw task reward mostly tells the policy which
image it was given. Subtracting the same reward for random paths of the same image, scored by the
same assessor at the same moment, leaves what the path's viewports revealed beyond a random look:
positive when the path helped the assessor more than chance. The random paths do not depend on
the policy's actions, so the baseline changes the reward's variance, not its expected gradient.
"""

from __future__ import annotations

import numpy as np

from rl_scaniqa.agents.assessor_training import random_paths
from rl_scaniqa.assessor.model import QualityAssessor
from rl_scaniqa.envs.features.cache import FeatureCache, FeatureStats
from rl_scaniqa.envs.panorama_env import observed_viewports


class RandomPathBaseline:
    """Scores ``n_paths`` random paths of an image with the current assessor.

    The paths start where the scored path started, have its length and never revisit a viewport,
    as the env's paths. Viewport features are standardised and clipped as the env presents them.
    """

    def __init__(self, cache: FeatureCache, stats: FeatureStats, n_paths: int, *,
                 feature_clip: float = 10.0, seed: int = 0) -> None:
        if n_paths < 1:
            raise ValueError(f"a random-path baseline needs at least one path, got n_paths={n_paths}")
        self.cache, self.stats, self.n_paths, self.feature_clip = cache, stats, n_paths, feature_clip
        self.rng = np.random.default_rng(seed)

    def predictions(self, assessor: QualityAssessor, image_indices: list[int], paths: list[list[int]],
                    global_features: np.ndarray) -> np.ndarray:
        """``(n_paths, B)`` predictions for random paths shaped like ``paths`` of ``image_indices``.

        ``global_features`` ``(B, D)``: the standardised global descriptors the scored paths were
        given (so only the viewports differ between a path and its baseline).
        """
        features = []
        for image, path in zip(image_indices, paths, strict=True):
            candidates = observed_viewports(self.cache, self.stats, image, self.feature_clip)
            drawn = random_paths(self.rng, np.full(self.n_paths, path[0]), len(candidates), len(path))
            features.append(candidates[drawn])
        stacked = np.stack(features, axis=1)  # (n_paths, B, L, D)
        n, b = stacked.shape[:2]
        repeated = np.broadcast_to(global_features, (n, *global_features.shape)).reshape(n * b, -1)
        return assessor.predict(stacked.reshape(n * b, *stacked.shape[2:]), repeated).reshape(n, b)
