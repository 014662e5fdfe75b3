"""Dataset, backbone and viewport-grid arguments shared by the experiment scripts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rl_scaniqa.agents.script_args import key_values
from rl_scaniqa.envs.data.geometry import ViewportGrid
from rl_scaniqa.envs.features.cache import FeatureCache
from rl_scaniqa.envs.features.provision import (
    DEFAULT_DATASET,
    prepare_combined_cache,
    prepare_feature_cache,
)


@dataclass
class DataArgs:
    """Dataset, backbone and viewport-grid arguments shared by the experiment scripts.

    The scripts' argument dataclasses inherit these fields (so every script spells them the same:
    ``--dataset``, ``--root``, ``--dataset-options``, ``--backbone``, ``--n-lon`` …) and load
    their feature cache through :meth:`feature_cache`.
    """

    dataset: str = DEFAULT_DATASET
    """synth360 | real360 | cviqd | oiqa | jufe | csv"""
    root: str = ""
    """Dataset folder; empty = the generated Synth360 under $RL_SCANIQA_HOME."""
    dataset_options: str = ""
    """Loader options as KEY=VALUE,KEY=VALUE (jufe: condition=good-15s,hm_root=HMData)."""
    extra_dataset: str = ""
    """A second dataset trained on together with --dataset, e.g. real360 (one cache, reference
    groups kept apart: a place never lands on both sides of a split)."""
    extra_root: str = ""
    """Its folder; empty = its default (real360: $RL_SCANIQA_HOME/real360)."""
    backbone: str = "nss"
    """nss (offline default), nss-pano (with whole-panorama statistics), dinov2[:MODEL_OR_DIR],
    nss+dinov2[:MODEL_OR_DIR]."""
    n_lon: int = ViewportGrid.n_lon
    """Viewport columns."""
    n_lat: int = ViewportGrid.n_lat
    """Viewport rows."""
    fov: float = ViewportGrid.fov_deg
    """Viewport field of view, degrees."""
    size: int = ViewportGrid.size
    """Viewport side in pixels."""
    augmentations: str = "weak,mild,heavy"
    """Augmented views cached for the assessor's losses ('' = none)."""
    cache_dir: str = ""
    """Feature cache folder; empty = $RL_SCANIQA_HOME/cache."""

    def grid(self) -> ViewportGrid:
        """The viewport grid these arguments describe."""
        return ViewportGrid(n_lon=self.n_lon, n_lat=self.n_lat, fov_deg=self.fov, size=self.size)

    def loader_options(self, dataset: str | None = None, text: str | None = None) -> dict[str, Any]:
        """``KEY=VALUE,...`` loader options (default: ``dataset_options``) as keyword arguments.

        JUFE's head-movement scanpaths are mapped to viewports of this grid, so it gets the grid.
        """
        options: dict[str, Any] = key_values(self.dataset_options if text is None else text)
        if (dataset or self.dataset).lower() == "jufe" and "hm_root" in options:
            options["grid"] = self.grid()
        return options

    @property
    def dataset_label(self) -> str:
        """What the data is called in results: ``synth360`` or ``synth360+real360``."""
        return f"{self.dataset}+{self.extra_dataset}" if self.extra_dataset else self.dataset

    def feature_cache(self, *, dataset: str | None = None, root: str | None = None,
                      options_text: str | None = None, quick_default: bool = False,
                      progress: bool = True) -> FeatureCache:
        """The feature cache of this dataset (or of ``dataset``/``root``), built on first use.

        With ``--extra-dataset``, the main dataset's cache is the combination of both.
        """
        name = dataset or self.dataset
        folder = self.root if root is None else root
        if self.extra_dataset and name == self.dataset and folder == self.root:
            return prepare_combined_cache(
                [(name, folder or None, self.loader_options(name, options_text)),
                 (self.extra_dataset, self.extra_root or None, {})],
                backbone=self.backbone, grid=self.grid(),
                augmentations=tuple(a for a in self.augmentations.split(",") if a),
                cache_dir=self.cache_dir or None, quick_default=quick_default, progress=progress,
                workers=os.cpu_count() or 1)
        return prepare_feature_cache(
            name, folder or None, backbone=self.backbone, grid=self.grid(),
            augmentations=tuple(a for a in self.augmentations.split(",") if a),
            cache_dir=self.cache_dir or None, dataset_options=self.loader_options(name, options_text),
            # Scripts are guarded by ``if __name__ == "__main__"``: a pool is safe here.
            quick_default=quick_default, progress=progress, workers=os.cpu_count() or 1)
