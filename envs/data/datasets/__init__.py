"""Dataset loaders, the record type, MOS scales and reference-content splits.

``load_dataset(name, root, **options)`` returns a list of :class:`PanoramaRecord` in a
deterministic order (each loader documents its order, layout and options):

======== ========================= ==================================================
name     loader                    options
======== ========================= ==================================================
cviqd    :func:`load_cviqd`        ``labels``
oiqa     :func:`load_oiqa`         ``labels``, ``group_layout``
jufe     :func:`load_jufe`         ``labels``, ``condition``, ``hm_root``, ``grid``,
                                   ``hm_lon_convention``
csv      :func:`load_csv_folder`   ``labels``, ``allow_outside_root``
synth360 :func:`load_synth360`     ``labels``, ``allow_outside_root`` (a folder the Synth360
                                   generator wrote: its manifest is checked)
real360  :func:`load_real360`      ``labels``, ``allow_outside_root`` (a folder
                                   ``rl-scaniqa real360`` wrote; ``ref_id`` = place)
======== ========================= ==================================================

:func:`load_combined` reads several into one list with distinct reference groups.

Loaders never decode images, they only check that the files exist. Bad input raises:

- :class:`~rl_scaniqa.envs.errors.LabelError` for the label side: a missing, empty or unreadable
  label file, a malformed row (column count, non-numeric or non-finite score), a duplicate
  row, or an image on disk that has no row (where the layout fixes the image set);
- :class:`~rl_scaniqa.envs.errors.DatasetError` for the file side: a missing root, a labelled
  image that does not exist, an unexpected file name, two files claiming one image.

Both derive from ``ValueError`` and name the file (and line or row) in the message.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from rl_scaniqa.envs.data.datasets.combined import DatasetPart, combined_name, load_combined
from rl_scaniqa.envs.data.datasets.csv_folder import load_csv_folder
from rl_scaniqa.envs.data.datasets.cviqd import cviqd_image_info, load_cviqd
from rl_scaniqa.envs.data.datasets.jufe import load_jufe
from rl_scaniqa.envs.data.datasets.oiqa import (
    OIQA_GROUP_LAYOUT,
    load_oiqa,
    oiqa_group_layout,
)
from rl_scaniqa.envs.data.datasets.records import (
    MOS_SCALES,
    MosScale,
    PanoramaRecord,
    PathLike,
    mos_scale_for,
)
from rl_scaniqa.envs.data.datasets.splits import (
    FitValTestSplit,
    ReferenceSplit,
    fit_val_test_split,
    repeated_splits,
    split_by_reference,
)
from rl_scaniqa.envs.data.datasets.real360 import load_real360
from rl_scaniqa.envs.data.datasets.synth360 import load_synth360
from rl_scaniqa.envs.errors import DatasetError

LOADERS: dict[str, Callable[..., list[PanoramaRecord]]] = {
    "cviqd": load_cviqd,
    "oiqa": load_oiqa,
    "jufe": load_jufe,
    "csv": load_csv_folder,
    "synth360": load_synth360,
    "real360": load_real360,
}
DATASET_NAMES: tuple[str, ...] = tuple(LOADERS)


def load_dataset(name: str, root: PathLike, **options: Any) -> list[PanoramaRecord]:
    """Load dataset ``name`` (case-insensitive, one of :data:`DATASET_NAMES`) from ``root``.

    Raises:
        DatasetError: unknown name or option (the message lists the accepted ones), and
            whatever the loader raises for a bad layout.
        LabelError: raised by the loader for bad labels.
    """
    key = str(name).strip().lower()
    loader = LOADERS.get(key)
    if loader is None:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASET_NAMES)}")
    accepted = [
        parameter.name
        for parameter in inspect.signature(loader).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(
            f"dataset {key!r} does not take option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )
    return loader(root, **options)


__all__ = [
    "DatasetPart",
    "combined_name",
    "load_combined",
    "load_real360",
    "FitValTestSplit",
    "fit_val_test_split",
    "DATASET_NAMES",
    "LOADERS",
    "MOS_SCALES",
    "OIQA_GROUP_LAYOUT",
    "MosScale",
    "PanoramaRecord",
    "ReferenceSplit",
    "cviqd_image_info",
    "load_csv_folder",
    "load_cviqd",
    "load_dataset",
    "load_jufe",
    "load_oiqa",
    "load_synth360",
    "mos_scale_for",
    "oiqa_group_layout",
    "repeated_splits",
    "split_by_reference",
]
