"""OIQA: 16 references and 320 distorted panoramas, MOS 1..10.

Layout expected in ``root``::

    img1.jpg ... img320.jpg     distorted images (.jpg, .jpeg or .png; only existence is checked)
      or  distorted_images/img1.jpg ...   (the release's folder name; used when present)
    <any>.txt                   labels as lines ``img1 8.55``

Each reference owns 20 consecutive indices: images ``20 r + 1 .. 20 r + 20`` derive from
reference ``r + 1`` (``ref_id`` ``oiqa-01`` .. ``oiqa-16``). The release's readme says the 20 are
"JPEG, JPEG2000, noise, and blur distortions in sequence", 5 levels each from mildest to
heaviest, which is :data:`OIQA_GROUP_LAYOUT`. Check your copy and pass ``group_layout=`` if it
differs (build one with :func:`oiqa_group_layout`).

Only the distorted images are loaded: the references are not scored in the text labels, and
their files (``reference_images/``) are not read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rl_scaniqa.envs.data.datasets.records import (
    PanoramaRecord,
    PathLike,
    ScoreLine,
    check_all_labelled,
    find_label_file,
    numbered_images,
    read_name_score_file,
    require_directory,
)
from rl_scaniqa.envs.errors import DatasetError, LabelError

OIQA_DISTORTION_ORDER: tuple[str, ...] = ("jpeg", "jpeg2000", "noise", "blur")
OIQA_LEVELS = 5
OIQA_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
OIQA_IMAGE_FOLDER = "distorted_images"

_IMAGE_NAME = re.compile(r"^img(\d+)$", re.IGNORECASE)
# The extension in a label name is ignored: OIQA copies circulate both as .jpg and as .png.
_LABEL_NAME = re.compile(r"^img(\d+)(?:\.(?:jpe?g|png))?$", re.IGNORECASE)


def oiqa_group_layout(
    order: Sequence[str] = OIQA_DISTORTION_ORDER, levels: int = OIQA_LEVELS
) -> tuple[tuple[str, int], ...]:
    """The ``(distortion, level)`` of each position in a reference's group, type-major.

    ``oiqa_group_layout(("jpeg", "jpeg2000", "blur", "noise"))`` gives a layout with blur before
    noise; the group size is ``len(order) * levels``.
    """
    if not order or levels < 1:
        raise ValueError(
            f"need at least one distortion and one level, got order={order!r}, levels={levels!r}"
        )
    return tuple((kind, level) for kind in order for level in range(1, levels + 1))


OIQA_GROUP_LAYOUT: tuple[tuple[str, int], ...] = oiqa_group_layout()


def load_oiqa(
    root: PathLike,
    *,
    labels: PathLike | None = None,
    group_layout: Sequence[tuple[str, int]] = OIQA_GROUP_LAYOUT,
) -> list[PanoramaRecord]:
    """Load OIQA's distorted images from ``root`` (layout in the module docstring).

    Args:
        root: folder holding the images (directly or in ``distorted_images/``) and the labels.
        labels: text label file; relative paths are looked up in ``root`` first. Default: the
            single ``*.txt`` in ``root``.
        group_layout: ``(distortion, level)`` for positions 1..G of each reference's group; its
            length G is the number of images per reference (20 for the release).

    Records come in image-number order; ``image_id`` is the file stem (``"img7"``), ``extra``
    holds ``{"index": n}``.

    Raises:
        LabelError: missing/empty/malformed label file, bad or duplicate label, unlabelled image.
        DatasetError: missing root, a labelled image that does not exist, an image name that is
            not ``img<N>``, or two files with the same number (``img1.jpg`` and ``img1.png``).
    """
    folder = require_directory(root, "OIQA")
    layout = _check_layout(group_layout)
    label_path = find_label_file(folder, labels, dataset="OIQA", suffixes=(".txt",))
    image_folder = folder / OIQA_IMAGE_FOLDER if (folder / OIQA_IMAGE_FOLDER).is_dir() else folder
    images = numbered_images(image_folder, OIQA_IMAGE_SUFFIXES, _IMAGE_NAME, "OIQA",
                             "img<N>.jpg or img<N>.png")

    labelled: dict[int, ScoreLine] = {}
    for entry in read_name_score_file(label_path):
        match = _LABEL_NAME.match(entry.name)
        if match is None or int(match.group(1)) < 1:
            raise LabelError(
                f"{entry.where}: image name {entry.name!r} is not of the form img<N> "
                "(e.g. img12 or img12.jpg)"
            )
        index = int(match.group(1))
        if index in labelled:
            raise LabelError(
                f"{entry.where}: image img{index} is labelled twice "
                f"(first at {labelled[index].where})"
            )
        if index not in images:
            raise DatasetError(
                f"{entry.where}: labelled image img{index} does not exist in {image_folder}"
            )
        labelled[index] = entry

    check_all_labelled(
        label_path, image_folder, [images[i] for i in sorted(set(images) - set(labelled))]
    )

    group_size = len(layout)
    records = []
    for index in sorted(labelled):
        group, position = divmod(index - 1, group_size)
        distortion, level = layout[position]
        records.append(
            PanoramaRecord(
                path=images[index],
                mos=labelled[index].score,
                ref_id=f"oiqa-{group + 1:02d}",
                distortion=distortion,
                level=level,
                extra={"index": index},
            )
        )
    return records


def _check_layout(group_layout: Sequence[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    layout = tuple((str(kind), int(level)) for kind, level in group_layout)
    if not layout:
        raise ValueError("group_layout must not be empty")
    for kind, level in layout:
        if not kind or kind == "reference" or level < 1:
            raise ValueError(
                f"group_layout entry {(kind, level)!r}: need a distortion name other than "
                "'reference' and a level >= 1"
            )
    if len(set(layout)) != len(layout):
        raise ValueError(f"group_layout lists a (distortion, level) pair twice: {layout!r}")
    return layout
