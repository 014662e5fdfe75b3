"""Several datasets trained on as one (e.g. Synth360 and Real360): records with distinct groups.

Every record's ``ref_id`` and ``image_id`` are prefixed with its dataset's name
(``real360/times-square``), so that reference groups of different datasets never merge (both
generators could name a group ``c000``) and a split by reference keeps each place on one side.
The combination's name joins the parts with ``+`` (``synth360+real360``); its MOS scale is the
parts' shared one (see :func:`~rl_scaniqa.envs.data.datasets.records.mos_scale_for`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rl_scaniqa.envs.data.datasets.records import PanoramaRecord, PathLike, mos_scale_for


@dataclass(frozen=True)
class DatasetPart:
    """One dataset of a combination: loader name, folder and loader options."""

    name: str
    root: PathLike
    options: Mapping[str, Any] = field(default_factory=dict)


def combined_name(parts: Sequence[DatasetPart]) -> str:
    """``synth360+real360``: the parts' names, lower case, in order."""
    return "+".join(part.name.strip().lower() for part in parts)


def load_combined(parts: Sequence[DatasetPart]) -> list[PanoramaRecord]:
    """The records of every part in order, ``ref_id`` and ``image_id`` prefixed by the part's name.

    Raises:
        DatasetError: the parts do not share one MOS scale, or a name appears twice; plus what
            each loader raises.
    """
    from rl_scaniqa.envs.data.datasets import load_dataset
    from rl_scaniqa.envs.errors import DatasetError

    name = combined_name(parts)
    if len(set(name.split("+"))) != len(parts):
        raise DatasetError(f"combination {name!r} names a dataset twice")
    mos_scale_for(name, [])
    records: list[PanoramaRecord] = []
    for part in parts:
        prefix = part.name.strip().lower()
        records += [dataclasses.replace(record, ref_id=f"{prefix}/{record.ref_id}",
                                        image_id=f"{prefix}/{record.image_id}")
                    for record in load_dataset(part.name, part.root, **dict(part.options))]
    return records
