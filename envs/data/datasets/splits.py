"""Train/test splits by reference content.

Distorted versions of one scene share almost all of their content, so putting the same scene on
both sides of a split leaks the test set into training. Every split here assigns whole reference
contents (``ref_id``) to one side; the paper's protocol is an 80/20 split repeated with 10 seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rl_scaniqa.envs.data.datasets.records import PanoramaRecord
from rl_scaniqa.envs.errors import DatasetError


@dataclass(frozen=True)
class ReferenceSplit:
    """One train/test split.

    Attributes:
        train, test: ascending positions into the sequence that was split.
        train_refs, test_refs: the sorted reference ids on each side (disjoint).
        seed: the seed that produced the split.
    """

    train: tuple[int, ...]
    test: tuple[int, ...]
    train_refs: tuple[str, ...]
    test_refs: tuple[str, ...]
    seed: int


def _ref_ids(items: Sequence[PanoramaRecord] | Sequence[str]) -> list[str]:
    refs: list[str] = []
    for position, item in enumerate(items):
        if isinstance(item, str):
            refs.append(item)
        elif isinstance(item, PanoramaRecord):
            refs.append(item.ref_id)
        else:
            raise TypeError(
                f"item {position} is a {type(item).__name__}; "
                "expected a PanoramaRecord or a ref_id string"
            )
    return refs


def split_by_reference(
    items: Sequence[PanoramaRecord] | Sequence[str], test_fraction: float = 0.2, seed: int = 0
) -> ReferenceSplit:
    """Split ``items`` so that no reference content is on both sides.

    The distinct ref ids are sorted, permuted with ``np.random.default_rng(seed)``, and the first
    ``round(test_fraction * n_refs)`` (halves rounded up) go to test, clamped so each side keeps
    at least one reference. The result depends only on the set of ref ids and the seed, not on
    the order of ``items``.

    Args:
        items: records, or their ref ids as plain strings; indices refer to positions in it.
        test_fraction: share of reference contents (not images) in the test set, in (0, 1).
        seed: permutation seed.

    Raises:
        DatasetError: fewer than two distinct reference contents.
        ValueError: ``test_fraction`` outside (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    refs = _ref_ids(items)
    unique = sorted(set(refs))
    if len(unique) < 2:
        raise DatasetError(
            f"a reference split needs at least 2 distinct reference contents, got {len(unique)} "
            f"among {len(refs)} items"
        )
    # floor(x + 0.5) rounds halves up; Python's round() would round 2.5 down to 2.
    n_test = int(np.floor(test_fraction * len(unique) + 0.5))
    n_test = min(max(n_test, 1), len(unique) - 1)
    order = np.random.default_rng(seed).permutation(len(unique))
    test_refs = {unique[i] for i in order[:n_test]}
    train = tuple(i for i, ref in enumerate(refs) if ref not in test_refs)
    test = tuple(i for i, ref in enumerate(refs) if ref in test_refs)
    return ReferenceSplit(
        train=train,
        test=test,
        train_refs=tuple(ref for ref in unique if ref not in test_refs),
        test_refs=tuple(sorted(test_refs)),
        seed=seed,
    )


@dataclass(frozen=True)
class FitValTestSplit:
    """Training references split again into fit and validation, plus the held-out test side.

    Attributes:
        fit, val, test: ascending positions into the sequence that was split (``val`` may be
            empty); every reference id is on exactly one side.
        test_refs: the sorted reference ids held out for testing.
    """

    fit: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    test_refs: tuple[str, ...]


def fit_val_test_split(items: Sequence[PanoramaRecord] | Sequence[str], *, test_fraction: float = 0.2,
                       val_fraction: float = 0.1, seed: int = 0) -> FitValTestSplit:
    """The training scripts' split: test references with ``seed``, then validation references
    drawn from the training side with ``seed + 1`` (none when ``val_fraction`` is 0).

    ``run_ppo.py`` and the reward sweep both split this way, so a sweep validates on exactly the
    references ``run_ppo.py`` would, and its best configuration carries over.
    """
    outer = split_by_reference(items, test_fraction=test_fraction, seed=seed)
    fit, val = outer.train, tuple[int, ...]()
    if val_fraction > 0:
        refs = _ref_ids(items)
        train_refs = [refs[i] for i in outer.train]
        inner = split_by_reference(train_refs, test_fraction=val_fraction, seed=seed + 1)
        fit = tuple(outer.train[i] for i in inner.train)
        val = tuple(outer.train[i] for i in inner.test)
    return FitValTestSplit(fit=fit, val=val, test=outer.test, test_refs=outer.test_refs)


def repeated_splits(
    items: Sequence[PanoramaRecord] | Sequence[str],
    n: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> list[ReferenceSplit]:
    """``n`` reference splits with seeds ``seed, seed + 1, ..., seed + n - 1`` (paper protocol).

    Consecutive integer seeds give independent permutations with ``default_rng``, and a run can
    be reproduced from its split's ``seed`` alone. Two seeds may still draw the same test set
    when there are few references (e.g. 16 refs, 3 in test: 560 possible test sets).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n!r}")
    return [split_by_reference(items, test_fraction=test_fraction, seed=seed + k) for k in range(n)]
