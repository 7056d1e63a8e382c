"""Latency statistics: the figures match numpy, and the median's interval is the exact
distribution-free one (checked against the binomial law from scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tflc.bench.stats import median_interval, spread, summarize


def test_summary_matches_numpy():
    samples = np.random.default_rng(1).lognormal(0.0, 0.4, size=257)
    summary = summarize(samples)
    assert summary.count == 257
    assert summary.mean == pytest.approx(samples.mean())
    assert summary.std == pytest.approx(samples.std(ddof=1))
    assert (summary.min, summary.max) == (samples.min(), samples.max())
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert getattr(summary, name) == pytest.approx(np.percentile(samples, q))
    assert set(summary.to_dict()) >= {"count", "mean", "std", "min", "p50", "p90", "p95", "p99",
                                      "max", "p50_ci95"}


@pytest.mark.parametrize("n", [6, 7, 10, 31, 50, 200, 999, 1001, 5000])
def test_median_interval_is_the_binomial_one(n):
    values = np.arange(n, dtype=float)
    low, high = median_interval(values)
    j = int(low) + 1  # 1-based order statistic
    assert high == n - j  # symmetric
    coverage = 1 - 2 * scipy_stats.binom.cdf(j - 1, n, 0.5)
    assert coverage >= 0.95 - (0.002 if n > 1000 else 0)  # normal approximation above 1000
    if j > 1 and n <= 1000:  # and it is the narrowest such pair
        assert 1 - 2 * scipy_stats.binom.cdf(j, n, 0.5) < 0.95


def test_median_interval_covers_in_practice():
    rng = np.random.default_rng(7)
    hits = 0
    true_median = np.exp(0.0)  # lognormal(0, s) has median e^0
    for _ in range(400):
        sample = np.sort(rng.lognormal(0.0, 0.5, size=40))
        low, high = median_interval(sample)
        hits += low <= true_median <= high
    assert hits / 400 >= 0.93


def test_too_few_samples_have_no_interval_and_none_is_an_error():
    assert summarize([1.0, 2.0, 3.0]).p50_ci95 is None
    assert summarize([4.0]).std == 0.0
    with pytest.raises(ValueError):
        summarize([])


def test_spread_over_trials():
    assert spread([2.0]) is None
    result = spread([1.0, 1.1, 0.9])
    assert result["trials"] == 3 and result["min"] == 0.9 and result["max"] == 1.1
    assert result["cv_percent"] == pytest.approx(10.0)


def test_a_single_unit_output_is_classified_by_its_dequantized_score():
    """A binary classifier's one int8 score: class 1 above probability 0.5 (or logit 0) on the
    dequantized value, never an arg-max over one column (always class 0)."""
    import numpy as np

    from tflc.bench.runner import predicted_classes
    from tflc.convert.evaluate import top1_accuracy

    probs = {"scale": 1 / 256, "zero_point": -128}  # LOGISTIC's int8 output: 0..1
    q = np.array([[-128], [-1], [1], [127]], dtype=np.int8)  # 0.0, 0.496, 0.504, 0.996
    assert predicted_classes(q, probs) == [0, 0, 1, 1]
    logits = {"scale": 0.1, "zero_point": 10}  # -13.8..11.7: logits, cut at 0 (q = 10)
    q = np.array([[9], [11], [-128], [127]], dtype=np.int8)
    assert predicted_classes(q, logits) == [0, 1, 0, 1]
    floats = np.array([[0.2], [0.7]], dtype=np.float32)
    assert predicted_classes(floats, {"scale": 0.0, "zero_point": 0}) == [0, 1]
    # the host's top-1 and the device's agree on the same scores
    scores = (np.array([-128, -1, 1, 127]) + 128) / 256
    assert top1_accuracy(scores.reshape(-1, 1), np.array([0, 0, 1, 1])) == 100.0
    assert predicted_classes(np.array([[0.1, 0.9], [0.8, 0.2]]), {}) == [1, 0]
