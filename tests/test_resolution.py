"""Scores do not depend on a panorama's resolution (issue 11 §2).

Every feature is computed from the canonical-density ERP (``canonical_erp``), so the same
panorama resampled to 1024, 2048, 4096 or 8192 pixels wide must score the same, up to what the
resampling itself changes, and keep its order within a distortion group.
"""

import cv2
import numpy as np
import pytest

from rl_scaniqa.agents.scorer import Scorer
from rl_scaniqa.envs.data.datasets.synth360 import render_reference
from rl_scaniqa.envs.data.distortions import apply_distortion
from rl_scaniqa.envs.data.geometry import ViewportGrid, canonical_erp, extract_viewports
from rl_scaniqa.envs.features.backbones import NSSBackbone

WIDTHS = (1024, 2048, 4096, 8192)
#: Largest spread of one image's normalised score (0..1 over the MOS scale) across the widths.
MAX_SPREAD = 0.05


def _at_width(erp: np.ndarray, width: int) -> np.ndarray:
    """``erp`` resampled to ``width`` x ``width / 2``, as a camera or an editor would hand it over."""
    shrinking = width < erp.shape[1]
    return cv2.resize(erp, (width, width // 2), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def test_the_canonical_width_matches_the_viewport_pixel_angle():
    grid = ViewportGrid()
    assert grid.erp_width == 896  # 360 degrees / (90 degrees / 224 px)
    assert ViewportGrid(fov_deg=60.0, size=120).erp_width == 720
    erp = render_reference(0, width=1024)
    assert canonical_erp(erp, grid).shape == (448, 896, 3)
    same = canonical_erp(erp, grid)
    assert canonical_erp(same, grid) is same


def test_viewport_features_agree_across_widths():
    """The features themselves, without a model: the 8192-wide copy matches the 1024-wide one.

    Differences are in units of each feature's spread over the 32 viewports.
    """
    grid = ViewportGrid()
    nss = NSSBackbone()
    source = render_reference(5, width=2048, seed=3)

    def features(width: int, canonical: bool) -> np.ndarray:
        erp = _at_width(source, width)
        return nss(extract_viewports(canonical_erp(erp, grid) if canonical else erp, grid))

    narrow = features(1024, canonical=True)
    spread = narrow.std(axis=0) + 1e-6
    canonical_change = np.median(np.abs(features(8192, canonical=True) - narrow) / spread)
    # Rendering the viewports straight from each copy, as before the canonical projection.
    direct_change = np.median(np.abs(features(8192, canonical=False) - features(1024, canonical=False)) / spread)
    assert canonical_change < 0.1
    assert direct_change > 2 * canonical_change


def _group_scores(kind: str, widths: tuple[int, ...]) -> np.ndarray:
    """Normalised scores (0..1 over the MOS scale), one row per width: reference, levels 1, 3, 5."""
    scorer = Scorer.from_pretrained(device="cpu")
    low, high = scorer.model.mos_scale.low, scorer.model.mos_scale.high
    reference = render_reference(101, width=2048, seed=7)
    group = [reference] + [apply_distortion(reference, kind, level, np.random.default_rng(level))
                           for level in (1, 3, 5)]
    return np.array([[(scorer.score(_at_width(image, width)).score - low) / (high - low) for image in group]
                     for width in widths])


def _assert_alike(scores: np.ndarray, widths: tuple[int, ...]) -> None:
    spread = scores.max(axis=0) - scores.min(axis=0)
    assert spread.max() <= MAX_SPREAD, f"normalised score spread per image {spread.round(3)} at widths {widths}"
    orders = {tuple(np.argsort(-row, kind="stable")) for row in scores}
    assert len(orders) == 1, f"the group's order changes with the width: {scores.round(3)}"


@pytest.mark.parametrize("kind", ["jpeg", "blur"])
def test_a_distortion_group_scores_alike_at_every_width(kind):
    _assert_alike(_group_scores(kind, WIDTHS), WIDTHS)
