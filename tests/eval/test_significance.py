"""Paired bootstrap intervals, the paired randomization test, the power estimate, the ship gate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from embedforge.errors import EmbedforgeError
from embedforge.eval.ship import check_quality_gate, verdict
from embedforge.eval.significance import delta_significance, paired_delta, queries_needed


def _pair(n: int = 200, shift: float = 0.03, noise: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.random(n)
    return base, base + shift + rng.normal(0, noise, n)


def test_interval_and_test_agree_with_independent_references():
    base, tuned = _pair()
    r = paired_delta(base, tuned, seed=1)
    d = tuned - base
    assert r["delta"] == pytest.approx(d.mean(), abs=1e-6) and r["n"] == 200
    # the percentile interval of the mean is close to the t interval on this many queries
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert r["low"] == pytest.approx(lo, abs=0.004) and r["high"] == pytest.approx(hi, abs=0.004)
    # the randomization test's p is close to the paired t-test's
    assert r["p_value"] == pytest.approx(stats.ttest_rel(tuned, base).pvalue, abs=0.01)
    assert r["significant"] == (r["p_value"] < 0.05)


def test_seeded_and_paired():
    base, tuned = _pair()
    assert paired_delta(base, tuned, seed=3) == paired_delta(base, tuned, seed=3)
    # pairing matters: a shift hidden by large between-query spread is found when paired
    rng = np.random.default_rng(5)
    spread = rng.random(100) * 10
    r = paired_delta(spread, spread + 0.05 + rng.normal(0, 0.01, 100))
    assert r["significant"] and r["low"] > 0
    # no change: interval is the point, p = 1, not significant
    same = paired_delta(base, base)
    assert (same["low"], same["high"], same["p_value"], same["significant"]) == (0, 0, 1, False)
    with pytest.raises(ValueError, match="length"):
        paired_delta([1, 2], [1])


def test_noise_is_within_noise():
    base, tuned = _pair(n=30, shift=0.0, seed=4)
    r = paired_delta(base, tuned, seed=0)
    assert r["low"] < 0 < r["high"] and not r["significant"]


def test_delta_significance_from_per_query_rows():
    rows = [
        {"baseline": {"ndcg@10": 0.2, "mrr@10": 0.1}, "finetuned": {"ndcg@10": 0.5, "mrr@10": 0.1}},
        {"baseline": {"ndcg@10": 0.4, "mrr@10": 0.3}, "finetuned": {"ndcg@10": 0.6, "mrr@10": 0.4}},
        {"baseline": None, "finetuned": {"ndcg@10": 1.0, "mrr@10": 1.0}},  # no baseline: left out
    ]
    out = delta_significance(rows)
    assert list(out) == ["ndcg@10", "mrr@10"] and out["ndcg@10"]["n"] == 2
    assert out["ndcg@10"]["delta"] == pytest.approx(0.25)
    assert delta_significance([{"baseline": None, "finetuned": {"ndcg@10": 1}}]) == {}


def test_queries_needed_is_the_normal_approximation():
    # z(0.975) + z(0.8) = 1.95996 + 0.84162 = 2.80158; (2.80158 * 0.2 / 0.05)^2 = 125.6 -> 126
    assert queries_needed(0.05, 0.2) == 126
    assert queries_needed(-0.05, 0.2) == 126
    assert queries_needed(0.0, 0.2) is None
    # with that many queries a delta of that size is found significant most of the time
    rng = np.random.default_rng(0)
    hits = [paired_delta(np.zeros(126), rng.normal(0.05, 0.2, 126), seed=i, n_resamples=2000)
            ["significant"] for i in range(40)]  # fmt: skip
    assert 0.6 <= np.mean(hits) <= 0.95


def test_gate_says_within_noise_and_refuses_it_when_required():
    noisy = {"delta": 0.02, "low": -0.01, "high": 0.05, "p_value": 0.2, "significant": False}
    v = verdict(0.02, 0.01, noisy)
    assert v["passed"] and v["within_noise"] is True
    assert not verdict(0.02, 0.01, noisy, require_significant=True)["passed"]
    assert verdict(0.02, 0.01, {**noisy, "significant": True}, True)["passed"]
    assert not verdict(0.02, 0.01, None, require_significant=True)["passed"]  # no test: no proof
    assert verdict(0.02, 0.01)["within_noise"] is None
    base, tuned = {"ndcg@10": 0.5}, {"ndcg@10": 0.52}
    with pytest.raises(EmbedforgeError, match="within noise"):
        check_quality_gate(base, tuned, 0.01, significance=noisy, require_significant=True)
    g = check_quality_gate(base, tuned, 0.01, significance=noisy)
    assert g["passed"] and g["within_noise"] and g["on"] == "eval"
    forced = check_quality_gate(
        base, tuned, 0.01, True, significance=noisy, require_significant=True
    )
    assert forced["forced"] and not forced["passed"]
    assert math.isclose(g["gain"], 0.02)


def test_a_runs_gate_reads_require_significant_from_its_config():
    from omegaconf import OmegaConf

    from embedforge.runs import RunMetrics, ship_gate

    noisy = {"delta": 0.02, "low": -0.01, "high": 0.05, "p_value": 0.2, "significant": False}
    m = RunMetrics(
        baseline={"ndcg@10": 0.5}, finetuned={"ndcg@10": 0.52}, significance={"ndcg@10": noisy}
    )
    lenient = OmegaConf.create({"ship": {"min_gain": 0.01}})
    assert ship_gate(lenient, m, 0.0)["within_noise"] is True
    strict = OmegaConf.create({"ship": {"min_gain": 0.01, "require_significant": True}})
    with pytest.raises(EmbedforgeError, match="within noise.*require_significant"):
        ship_gate(strict, m, 0.0, where="run")
    # a judged set, once scored, is what the gate judges
    m.judged = {"baseline": {"ndcg@10": 0.5}, "finetuned": {"ndcg@10": 0.45}, "significance": {}}
    with pytest.raises(EmbedforgeError, match="judged"):
        ship_gate(lenient, m, 0.0)
