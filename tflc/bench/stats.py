"""Latency statistics that say how far they can be trusted.

The runner sends back every timed inference; the summary is computed here, on the host, so one
definition serves every device and runtime. Percentiles interpolate linearly between order
statistics (numpy's default, and what LiteRT's own benchmark script does). The median carries a
distribution-free 95% confidence interval from order statistics: latency distributions are
skewed and have long tails, so an interval that assumes a normal distribution would mislead.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass
class LatencyStats:
    """Summary of timed inferences in milliseconds (`std` is the sample standard deviation)."""

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    p50_ci95: tuple[float, float] | None  # None below 6 samples: no 95% interval exists

    def to_dict(self) -> dict:
        data = asdict(self)
        data["p50_ci95"] = list(self.p50_ci95) if self.p50_ci95 else None
        return data


def summarize(samples_ms) -> LatencyStats:
    """Count, mean, standard deviation, min, p50/p90/p95/p99, max and the median's 95% interval."""
    values = np.sort(np.asarray(samples_ms, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no latency samples to summarise")
    p50, p90, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
    return LatencyStats(
        count=int(values.size),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        min=float(values[0]),
        p50=p50, p90=p90, p95=p95, p99=p99,
        max=float(values[-1]),
        p50_ci95=median_interval(values),
    )


def median_interval(sorted_values, confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median: order statistics (j, k) chosen so that the
    median lies between them with at least `confidence`, from the Binomial(n, 1/2) law."""
    n = len(sorted_values)
    if n < 6:  # even (min, max) covers the median with less than 95% below six samples
        return None
    alpha = 1.0 - confidence
    # the largest j with P(B <= j - 1) <= alpha / 2, B ~ Binomial(n, 1/2)
    if n <= 1000:
        cumulative, j = 0.0, 0
        while True:
            cumulative += math.comb(n, j) / 2.0 ** n
            if cumulative > alpha / 2:
                break
            j += 1
    else:  # the normal approximation is exact enough here
        j = int(math.floor(n / 2 - 1.959964 * math.sqrt(n) / 2))
    j = max(j, 1)
    return float(sorted_values[j - 1]), float(sorted_values[n - j])


def spread(values) -> dict | None:
    """How much a figure moved between trials: min, max and coefficient of variation (%)."""
    values = [float(v) for v in values if v is not None]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    std = float(np.std(values, ddof=1))
    return {"trials": len(values), "min": min(values), "max": max(values),
            "cv_percent": 100.0 * std / mean if mean else None}
