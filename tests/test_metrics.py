import math
import warnings

import numpy as np
import pytest
from scipy import stats

from rl_scaniqa.assessor.metrics import (
    DegenerateInputWarning,
    LogisticFit,
    LogisticFitWarning,
    evaluate,
    krcc,
    logistic_4p,
    logistic_4p_fit,
    plcc,
    rmse,
    srcc,
    summarize,
    within_group_srcc,
)

# Known data with ties on both sides (exercises tie handling of Spearman and tau-b).
PRED = np.array([0.1, 0.4, 0.35, 0.8, 0.8, 0.2, 0.55, 0.9, 0.3, 0.65])
MOS = np.array([1.2, 2.9, 3.1, 4.0, 3.6, 1.9, 3.1, 4.7, 2.0, 3.3])


def test_rank_correlations_match_scipy():
    assert srcc(PRED, MOS) == pytest.approx(stats.spearmanr(PRED, MOS).statistic, abs=1e-12)
    assert krcc(PRED, MOS) == pytest.approx(stats.kendalltau(PRED, MOS).statistic, abs=1e-12)


def test_hand_computed_srcc_without_ties():
    # Ranks of pred: 1 2 3 4 5; ranks of mos: 2 1 3 5 4 -> d² = 1+1+0+1+1 = 4
    # Spearman = 1 - 6·4 / (5·24) = 0.8; Kendall: 8 concordant, 2 discordant -> 0.6.
    pred = [1.0, 2.0, 3.0, 4.0, 5.0]
    mos = [20.0, 10.0, 30.0, 50.0, 40.0]
    assert srcc(pred, mos) == pytest.approx(0.8)
    assert krcc(pred, mos) == pytest.approx(0.6)


def test_raw_plcc_and_rmse_match_scipy_and_numpy():
    assert plcc(PRED, MOS, fit_logistic=False) == pytest.approx(
        stats.pearsonr(PRED, MOS).statistic, abs=1e-12)
    assert rmse(PRED, MOS, fit_logistic=False) == pytest.approx(
        np.sqrt(np.mean((PRED - MOS) ** 2)))


def test_logistic_fit_recovers_known_parameters():
    beta = (4.5, 1.2, 0.4, 0.08)
    x = np.linspace(0.0, 1.0, 60)
    y = logistic_4p(x, beta)
    fit = logistic_4p_fit(x, y)
    assert fit.kind == "logistic"
    b1, b2, b3, b4 = fit.params
    assert (b1, b2, b3, abs(b4)) == pytest.approx(beta, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(fit(x), y, atol=1e-7)


def test_logistic_fit_handles_decreasing_and_centred_predictions():
    # mean(x) is ~1e-17 here: with finite-difference Jacobians β3 would never move.
    x = np.linspace(-2.0, 2.0, 40)
    y = logistic_4p(x, (1.0, 9.0, 0.3, 0.5))   # β1 < β2: falling curve
    fit = logistic_4p_fit(x, y)
    assert fit.kind == "logistic"
    np.testing.assert_allclose(fit(x), y, atol=1e-6)


def test_logistic_formula_by_hand():
    # At x = β3 the curve is halfway between β1 and β2; the sign of β4 does not matter.
    assert logistic_4p([0.5], (10.0, 2.0, 0.5, 0.1))[0] == pytest.approx(6.0)
    value = 2.0 + 8.0 / (1.0 + math.exp(-(0.7 - 0.5) / 0.1))
    assert logistic_4p([0.7], (10.0, 2.0, 0.5, -0.1))[0] == pytest.approx(value)


def test_plcc_after_logistic_beats_raw_on_monotone_nonlinear_relation():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 80)
    mos = 1.0 + 4.0 / (1.0 + np.exp(-(x - 0.5) / 0.07)) + rng.normal(0, 0.05, x.size)
    raw = plcc(x, mos, fit_logistic=False)
    fitted = plcc(x, mos)
    assert fitted > raw + 0.02
    assert rmse(x, mos) < rmse(x, mos, fit_logistic=False)
    assert rmse(x, mos) == pytest.approx(0.05, rel=0.3)   # about the noise level


def test_too_few_points_fall_back_to_linear_with_warning():
    with pytest.warns(LogisticFitWarning, match="too few"):
        fit = logistic_4p_fit([0.1, 0.5, 0.9, 0.3], [1.0, 2.0, 3.5, 1.4])
    assert fit.kind == "linear" and "too few" in fit.reason
    slope, intercept = np.polyfit([0.1, 0.5, 0.9, 0.3], [1.0, 2.0, 3.5, 1.4], 1)
    assert fit.params == pytest.approx((slope, intercept))


def test_failed_curve_fit_falls_back_to_linear(monkeypatch):
    from scipy import optimize

    def fail(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: maxfev reached")

    monkeypatch.setattr(optimize, "curve_fit", fail)
    with pytest.warns(LogisticFitWarning, match="curve_fit failed"):
        fit = logistic_4p_fit(PRED, MOS)
    assert fit.kind == "linear"
    # The linear mapping keeps PLCC equal to the raw correlation.
    assert pearson_of(fit(PRED), MOS) == pytest.approx(stats.pearsonr(PRED, MOS).statistic)
    with pytest.warns(LogisticFitWarning):
        assert evaluate(PRED, MOS)["mapping"] == "linear"


def pearson_of(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def test_evaluate_shares_one_fit_and_reports_everything():
    result = evaluate(PRED, MOS)
    assert set(result) == {"srcc", "krcc", "plcc", "rmse", "n", "mapping"}
    assert result["n"] == PRED.size and result["mapping"] == "logistic"
    assert result["srcc"] == pytest.approx(srcc(PRED, MOS))
    assert result["krcc"] == pytest.approx(krcc(PRED, MOS))
    assert result["plcc"] == pytest.approx(plcc(PRED, MOS))
    assert result["rmse"] == pytest.approx(rmse(PRED, MOS))
    assert result["plcc"] >= stats.pearsonr(PRED, MOS).statistic - 1e-9


@pytest.mark.parametrize("func", [srcc, krcc, plcc, rmse, evaluate, logistic_4p_fit])
def test_bad_inputs_raise_clear_errors(func):
    with pytest.raises(ValueError, match="differ in length"):
        func([0.1, 0.2, 0.3], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 3"):
        func([0.1, 0.2], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite.*index 1"):
        func([0.1, np.nan, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="mos holds"):
        func([0.1, 0.2, 0.3], [1.0, np.inf, 2.0])


def test_constant_predictions_give_nan_correlations_with_warning():
    pred = np.full(8, 0.5)
    mos = np.arange(8, dtype=float)
    for func in (srcc, krcc, plcc):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LogisticFitWarning)   # plcc's fit falls back too
            with pytest.warns(DegenerateInputWarning, match="constant predictions"):
                assert math.isnan(func(pred, mos))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate(pred, mos)
        # The best mapping of a constant is the mean MOS, so RMSE is the MOS spread.
        assert result["rmse"] == pytest.approx(np.std(mos))
        assert result["mapping"] == "linear"
        assert math.isnan(result["srcc"]) and math.isnan(result["plcc"])


def test_logistic_fit_object_and_plain_betas_agree():
    fit = LogisticFit("logistic", (3.0, 1.0, 0.2, 0.1))
    x = np.array([0.0, 0.2, 0.5])
    np.testing.assert_allclose(fit(x), logistic_4p(x, (3.0, 1.0, 0.2, 0.1)))
    with pytest.raises(ValueError, match="4 parameters"):
        logistic_4p(x, (1.0, 2.0))
    with pytest.raises(ValueError, match="beta4"):
        logistic_4p(x, (1.0, 2.0, 0.0, 0.0))


def test_summarize_mean_std_and_nan_handling():
    results = [
        {"srcc": 0.8, "plcc": 0.9, "n": 10, "mapping": "logistic"},
        {"srcc": 0.6, "plcc": 0.7, "n": 10, "mapping": "linear"},
        {"srcc": math.nan, "plcc": 0.8, "n": 12, "mapping": "logistic"},
    ]
    summary = summarize(results)
    assert set(summary) == {"srcc", "plcc", "n"}
    assert summary["srcc"] == {"mean": pytest.approx(0.7),
                               "std": pytest.approx(np.std([0.8, 0.6], ddof=1)), "count": 2}
    assert summary["plcc"]["mean"] == pytest.approx(0.8)
    assert summary["plcc"]["std"] == pytest.approx(0.1)
    assert summary["plcc"]["count"] == 3
    single = summarize([{"srcc": 0.5}])
    assert single["srcc"]["mean"] == 0.5 and math.isnan(single["srcc"]["std"])
    with pytest.raises(ValueError, match="missing"):
        summarize([{"srcc": 0.5}, {"plcc": 0.4}])
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_within_group_srcc_orders_by_level_inside_each_group() -> None:
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 3
    levels = [0, 1, 3, 5, 0, 1, 3, 5, 0, 1, 5]
    scores = [4.0, 3.0, 2.0, 1.0,   # falls with damage
              1.0, 2.0, 3.0, 4.0,   # rises with damage
              2.0, 2.0, 2.0]        # ranks nothing
    result = within_group_srcc(scores, levels, groups)
    assert result == pytest.approx({"a": 1.0, "b": -1.0, "c": 0.0})
    # Scores of another group never change a group's SRCC.
    shifted = [s + (100.0 if g == "b" else 0.0) for s, g in zip(scores, groups)]
    assert within_group_srcc(shifted, levels, groups) == pytest.approx(result)


def test_within_group_srcc_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="group 'x' needs at least 3"):
        within_group_srcc([1.0, 2.0], [0, 1], ["x", "x"])
    with pytest.raises(ValueError, match="group 'y' needs .* two levels"):
        within_group_srcc([1.0, 2.0, 3.0], [1, 1, 1], ["y"] * 3)
    with pytest.raises(ValueError, match="same length"):
        within_group_srcc([1.0, 2.0, 3.0], [0, 1, 2], ["z"] * 2)
    with pytest.raises(ValueError, match="non-finite"):
        within_group_srcc([1.0, float("nan"), 3.0], [0, 1, 2], ["z"] * 3)
