"""Correlation metrics of the 360° IQA evaluation protocol.

The protocol (see ``DESIGN.md``): SRCC and KRCC are computed on the raw predictions; PLCC and
RMSE are computed *after* mapping the predictions onto the MOS scale with the four-parameter
logistic

    ŷ = β2 + (β1 − β2) / (1 + exp(−(x − β3) / |β4|)),

fitted by least squares on the same predictions (VQEG practice: the mapping removes the
monotone nonlinearity between an objective score and MOS, so PLCC/RMSE measure accuracy
rather than linearity).

Degenerate inputs. Constant predictions (or constant MOS) leave every correlation undefined:
``srcc``/``krcc``/``plcc`` then return ``nan`` and emit a :class:`DegenerateInputWarning`
rather than raising, because an assessor that collapses to one value early in training is a
legitimate state that an evaluation loop must be able to log. RMSE stays defined: the best
mapping of a constant is the mean MOS, so RMSE is the standard deviation of the MOS.
Length mismatches, fewer than three items and non-finite values are caller bugs and raise
``ValueError``.

RMSE is reported on the scale of the ``mos`` argument: pass raw MOS to compare with published
tables, normalised MOS for the 0–1 training scale. SRCC, KRCC and PLCC do not depend on it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special, stats

MIN_ITEMS = 3
"""Fewest items any metric accepts: with two items every rank correlation is ±1."""

MIN_ITEMS_LOGISTIC = 5
"""Fewest items for the logistic fit: with four or fewer the 4 parameters interpolate the data
exactly and PLCC would be 1 by construction, so a straight line is fitted instead."""


class DegenerateInputWarning(RuntimeWarning):
    """A metric is undefined for the given data (constant predictions or constant MOS)."""


class LogisticFitWarning(RuntimeWarning):
    """The 4-parameter logistic could not be fitted; a linear mapping was used instead."""


@dataclass(frozen=True)
class LogisticFit:
    """A fitted monotone mapping from predictions to the MOS scale.

    ``kind == "logistic"``: ``params`` are (β1, β2, β3, β4) of the 4-parameter logistic.
    ``kind == "linear"``: the logistic fit failed (``reason`` says why) and ``params`` are
    (slope, intercept) of the least-squares line ŷ = slope·x + intercept, which is what the
    logistic degenerates to for a wide |β4| and keeps PLCC equal to the raw Pearson correlation.
    """

    kind: Literal["logistic", "linear"]
    params: tuple[float, ...]
    reason: str = ""

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """Map predictions ``x`` onto the MOS scale."""
        return logistic_4p(x, self)


def _as_vector(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        array = np.squeeze(array)
        if array.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {np.shape(values)}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} non-finite value(s) "
                         f"(first at index {int(np.flatnonzero(bad)[0])})")
    return array


def _check_pair(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a (prediction, MOS) pair to float64 vectors."""
    p = _as_vector(pred, "pred")
    m = _as_vector(mos, "mos")
    if p.shape != m.shape:
        raise ValueError(f"pred and mos differ in length: {p.size} vs {m.size}")
    if p.size < MIN_ITEMS:
        raise ValueError(f"need at least {MIN_ITEMS} items to compute correlations, got {p.size}")
    return p, m


def _degenerate(p: np.ndarray, m: np.ndarray, metric: str) -> bool:
    """True (and warn) when ``metric`` is undefined because one side is constant."""
    constant = [name for name, v in (("predictions", p), ("MOS", m)) if np.ptp(v) == 0.0]
    if constant:
        warnings.warn(f"{metric} is undefined for constant {' and '.join(constant)}; "
                      "returning nan", DegenerateInputWarning, stacklevel=3)
        return True
    return False


def srcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Spearman rank correlation of the raw predictions with MOS (nan if either is constant)."""
    p, m = _check_pair(pred, mos)
    if _degenerate(p, m, "SRCC"):
        return math.nan
    return float(stats.spearmanr(p, m).statistic)


def krcc(pred: ArrayLike, mos: ArrayLike) -> float:
    """Kendall rank correlation (tau-b, tie-corrected) of the raw predictions with MOS."""
    p, m = _check_pair(pred, mos)
    if _degenerate(p, m, "KRCC"):
        return math.nan
    return float(stats.kendalltau(p, m).statistic)


def _linear_fit(p: np.ndarray, m: np.ndarray, reason: str) -> LogisticFit:
    if np.ptp(p) == 0.0:
        # A constant prediction carries no information: the best mapping is the mean MOS.
        return LogisticFit("linear", (0.0, float(m.mean())), reason)
    slope, intercept = np.polyfit(p, m, 1)
    return LogisticFit("linear", (float(slope), float(intercept)), reason)


def logistic_4p_fit(pred: ArrayLike, mos: ArrayLike, *, maxfev: int = 20000,
                    warn: bool = True) -> LogisticFit:
    """Fit the 4-parameter logistic mapping ``pred`` onto ``mos`` (scipy ``curve_fit``).

    Initial guess: β1/β2 at the MOS extremes (swapped when predictions and MOS are negatively
    correlated, so the start already has the right direction), β3 = mean(pred) (midpoint),
    β4 = std(pred) (a slope that spans the prediction range).

    Falls back to the least-squares line, returned with ``kind == "linear"`` and a ``reason``
    (and a :class:`LogisticFitWarning` unless ``warn=False``) when: there are fewer than
    :data:`MIN_ITEMS_LOGISTIC` items, the predictions are constant, ``curve_fit`` does not
    converge or returns non-finite parameters, or the fitted curve has a larger squared error
    than the line (a local optimum: the logistic contains the line as a limit, so its global
    optimum is never worse).
    """
    p, m = _check_pair(pred, mos)
    line = _linear_fit(p, m, "")
    line_sse = float(np.sum((logistic_4p(p, line) - m) ** 2))

    def fallback(reason: str) -> LogisticFit:
        if warn:
            warnings.warn(f"4-parameter logistic fit fell back to a linear mapping: {reason}",
                          LogisticFitWarning, stacklevel=3)
        return LogisticFit("linear", line.params, reason)

    if p.size < MIN_ITEMS_LOGISTIC:
        return fallback(f"{p.size} items are too few for 4 parameters")
    if np.ptp(p) == 0.0:
        return fallback("predictions are constant")
    increasing = np.corrcoef(p, m)[0, 1] >= 0 if np.ptp(m) > 0 else True
    high, low = float(m.max()), float(m.min())
    guess = [high, low, float(p.mean()), float(p.std())] if increasing else \
        [low, high, float(p.mean()), float(p.std())]
    try:
        with warnings.catch_warnings():
            # An inestimable covariance is irrelevant: only the point estimate is used.
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            beta, _ = optimize.curve_fit(_logistic, p, m, p0=guess, jac=_logistic_jacobian,
                                         maxfev=maxfev)
    except (RuntimeError, ValueError) as error:
        return fallback(f"curve_fit failed ({error})")
    if not np.all(np.isfinite(beta)) or beta[3] == 0.0:
        return fallback(f"curve_fit returned unusable parameters {beta.tolist()}")
    fit = LogisticFit("logistic", tuple(float(b) for b in beta))
    fit_sse = float(np.sum((logistic_4p(p, fit) - m) ** 2))
    # Small relative slack so a logistic that merely ties the line (nearly linear data) is kept.
    if fit_sse > line_sse * (1.0 + 1e-9) + 1e-12:
        return fallback(f"logistic optimum (SSE {fit_sse:.4g}) worse than the line "
                        f"(SSE {line_sse:.4g})")
    return fit


def _logistic(x: np.ndarray, beta1: float, beta2: float, beta3: float,
              beta4: float) -> np.ndarray:
    # expit(u) = 1 / (1 + exp(−u)) without overflow for far-out x.
    return beta2 + (beta1 - beta2) * special.expit((x - beta3) / abs(beta4))


def _logistic_jacobian(x: np.ndarray, beta1: float, beta2: float, beta3: float,
                       beta4: float) -> np.ndarray:
    """Analytic ∂ŷ/∂β (N, 4).

    curve_fit's finite differences step relative to each parameter's magnitude, so a start
    at β3 = mean(pred) ≈ 1e-17 (centred predictions) gets a zero derivative and β3 never
    moves; the exact Jacobian has no such blind spot.
    """
    scale = abs(beta4)
    s = special.expit((x - beta3) / scale)
    slope = (beta1 - beta2) * s * (1.0 - s)                    # ∂ŷ/∂u, u = (x − β3)/|β4|
    return np.stack([s, 1.0 - s, -slope / scale,
                     -slope * (x - beta3) / scale**2 * np.sign(beta4)], axis=1)


def logistic_4p(x: ArrayLike, params: LogisticFit | Sequence[float]) -> np.ndarray:
    """Apply a fitted mapping, or the logistic with explicit (β1, β2, β3, β4), to ``x``."""
    values = np.asarray(x, dtype=np.float64)
    if isinstance(params, LogisticFit):
        if params.kind == "linear":
            slope, intercept = params.params
            return slope * values + intercept
        params = params.params
    if len(params) != 4:
        raise ValueError(f"the 4-parameter logistic needs 4 parameters, got {len(params)}")
    beta1, beta2, beta3, beta4 = (float(b) for b in params)
    if beta4 == 0.0:
        raise ValueError("beta4 (the logistic's scale) must be non-zero")
    return _logistic(values, beta1, beta2, beta3, beta4)


def _plcc_mapped(mapped: np.ndarray, m: np.ndarray) -> float:
    if _degenerate(mapped, m, "PLCC"):
        return math.nan
    return float(stats.pearsonr(mapped, m).statistic)


def plcc(pred: ArrayLike, mos: ArrayLike, *, fit_logistic: bool = True) -> float:
    """Pearson correlation with MOS, after the 4-parameter logistic mapping by default.

    ``fit_logistic=False`` gives the raw Pearson correlation of the predictions.
    """
    p, m = _check_pair(pred, mos)
    mapped = logistic_4p(p, logistic_4p_fit(p, m)) if fit_logistic else p
    return _plcc_mapped(mapped, m)


def rmse(pred: ArrayLike, mos: ArrayLike, *, fit_logistic: bool = True) -> float:
    """Root-mean-square error to MOS, after the 4-parameter logistic mapping by default.

    ``fit_logistic=False`` measures the raw predictions, meaningful only when they are already
    on the MOS scale (e.g. normalised predictions against normalised MOS).
    """
    p, m = _check_pair(pred, mos)
    mapped = logistic_4p(p, logistic_4p_fit(p, m)) if fit_logistic else p
    return float(np.sqrt(np.mean((mapped - m) ** 2)))


def evaluate(pred: ArrayLike, mos: ArrayLike) -> dict[str, float | int | str]:
    """All protocol metrics with one shared logistic fit.

    Returns ``{"srcc", "krcc", "plcc", "rmse", "n", "mapping"}``; ``mapping`` is ``"logistic"``
    or ``"linear"`` (the fallback, see :func:`logistic_4p_fit`), so a table can flag it.
    """
    p, m = _check_pair(pred, mos)
    fit = logistic_4p_fit(p, m)
    mapped = logistic_4p(p, fit)
    return {
        "srcc": srcc(p, m),
        "krcc": krcc(p, m),
        "plcc": _plcc_mapped(mapped, m),
        "rmse": float(np.sqrt(np.mean((mapped - m) ** 2))),
        "n": int(p.size),
        "mapping": fit.kind,
    }


def summarize(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | int]]:
    """Mean and spread of each numeric metric over repeated splits.

    Returns ``{metric: {"mean", "std", "count"}}`` for every numeric (non-bool) key present in
    all results. Non-finite values (an undefined SRCC on a degenerate split) are left out and
    ``count`` says how many splits contributed; ``std`` is the sample standard deviation
    (ddof = 1, the spread of an estimate over repeated random splits), nan below two values.
    """
    if not results:
        raise ValueError("summarize needs at least one result")
    keys = [key for key, value in results[0].items()
            if isinstance(value, (int, float, np.number)) and not isinstance(value, bool)]
    summary: dict[str, dict[str, float | int]] = {}
    for key in keys:
        missing = [i for i, result in enumerate(results) if key not in result]
        if missing:
            raise ValueError(f"metric {key!r} is missing from result(s) {missing}")
        values = np.asarray([float(result[key]) for result in results], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[key] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=1)) if finite.size >= 2 else math.nan,
            "count": int(finite.size),
        }
    return summary


def within_group_srcc(scores: ArrayLike, levels: ArrayLike,
                      groups: Sequence[str]) -> dict[str, float]:
    """Per group, the SRCC of the scores against ``-level``: does the score fall as damage grows?

    The check of a scorer on distortion groups (one source image, one distortion kind and scope,
    several levels, usually with the undistorted image as level 0), where the level order is the
    truth and no MOS is needed. A group whose scores are all equal ranks nothing and gets 0.0
    rather than nan, so a scorer cannot raise its mean by collapsing on hard groups.

    Raises:
        ValueError: lengths differ, a value is not finite, or a group has fewer than
            :data:`MIN_ITEMS` images or a single level.
    """
    s = _as_vector(scores, "scores")
    lv = _as_vector(levels, "levels")
    names = list(groups)
    if not s.size == lv.size == len(names):
        raise ValueError(f"scores ({s.size}), levels ({lv.size}) and groups ({len(names)}) must "
                         "have the same length")
    members: dict[str, list[int]] = {}
    for row, name in enumerate(names):
        members.setdefault(name, []).append(row)
    result: dict[str, float] = {}
    for name, rows in members.items():
        group_levels = lv[rows]
        if len(rows) < MIN_ITEMS or np.ptp(group_levels) == 0.0:
            raise ValueError(f"group {name!r} needs at least {MIN_ITEMS} images of at least two "
                             f"levels, got levels {group_levels.tolist()}")
        group_scores = s[rows]
        result[name] = (0.0 if np.ptp(group_scores) == 0.0
                        else float(stats.spearmanr(group_scores, -group_levels).statistic))
    return result
