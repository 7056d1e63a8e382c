"""Activation ranges beyond min-max: percentile, MSE-optimal and entropy (KL) per tensor.

The converter's calibrator records each activation tensor's min and max over the calibration
set; the quantizer turns them into a scale and zero point (256 levels for int8). One outlier
sample stretches that range and every other value loses resolution. The functions here choose a
narrower range from the values themselves (no training): the tails are clipped, the body gets
finer steps. Pure numpy, no TensorFlow: `tflc.convert.ptq` captures the values and writes the
chosen ranges back into the calibrated model.

Every method only narrows: the chosen range lies inside [min, max] and always holds 0 (the
quantizer needs zero exactly representable), so a ReLU output keeps its lower bound at 0.
"""

from __future__ import annotations

import numpy as np

RANGE_METHODS = ("minmax", "percentile", "mse", "kl")
DEFAULT_PERCENTILE = 99.99
# how far a range may shrink: candidates scale both ends by these factors (1.0 = min-max)
_SHRINK_GRID = np.linspace(0.2, 1.0, 81)
_KL_BINS = 2048
_MSE_BINS = 8192


def choose_range(values: np.ndarray, method: str, levels: int = 256,
                 percentile: float = DEFAULT_PERCENTILE) -> tuple[float, float]:
    """The (low, high) range `method` picks for these values, quantized to `levels` steps."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 0.0
    low, high = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    if method == "minmax" or high - low <= 0.0:
        return low, high
    if method == "percentile":
        lo = float(np.percentile(v, 100.0 - percentile)) if low < 0 else 0.0
        hi = float(np.percentile(v, percentile)) if high > 0 else 0.0
        return _inside(min(lo, 0.0), max(hi, 0.0), low, high)
    if method == "mse":
        factor = _mse_factor(v, low, high, levels)
        return _inside(factor * low, factor * high, low, high)
    if method == "kl":
        factor = _kl_factor(v, low, high, levels)
        return _inside(factor * low, factor * high, low, high)
    raise ValueError(f"unknown range method {method!r}; expected one of {', '.join(RANGE_METHODS)}")


def _inside(lo: float, hi: float, low: float, high: float) -> tuple[float, float]:
    lo, hi = max(lo, low), min(hi, high)
    if hi - lo <= 0.0:  # a degenerate choice (all values equal): keep the measured range
        return low, high
    return float(lo), float(hi)


def fake_quant(v: np.ndarray, lo: float, hi: float, levels: int = 256) -> np.ndarray:
    """Quantize and dequantize `v` with the affine scheme a [lo, hi] range gives (zero exact)."""
    scale = (hi - lo) / (levels - 1)
    if scale <= 0:
        return np.zeros_like(v)
    zero_point = np.round(-lo / scale)
    q = np.clip(np.round(v / scale) + zero_point, 0, levels - 1)
    return (q - zero_point) * scale


def _mse_factor(v: np.ndarray, low: float, high: float, levels: int) -> float:
    """The shrink factor with the least quantize-dequantize error, measured on a fine histogram
    (bin centres weighted by their counts: 8192 bins, 32 per int8 step at full range)."""
    hist, edges = np.histogram(v, bins=_MSE_BINS, range=(low, high))
    keep = hist > 0
    centres = ((edges[:-1] + edges[1:]) / 2)[keep]
    weights = hist[keep].astype(np.float64)
    errors = [float(np.dot(weights, np.square(fake_quant(centres, a * low, a * high, levels)
                                              - centres))) for a in _SHRINK_GRID]
    return float(_SHRINK_GRID[int(np.argmin(errors))])


def _kl_factor(v: np.ndarray, low: float, high: float, levels: int) -> float:
    """The shrink factor whose clipped, `levels`-step histogram is closest in KL to the full one.

    As TensorRT's entropy calibration, generalised to ranges with a negative part: the reference
    distribution P is the histogram inside the candidate range with the clipped tails folded
    into its edge bins; Q is the unclipped histogram inside the range merged into `levels`
    equal groups and spread back over the bins that were non-empty. The factor minimising
    KL(P || Q) wins.
    """
    # exact zeros (a ReLU's many) quantize without error: in the histogram they would make
    # every merge of the first bins look costly and push the range towards the smallest factor
    hist, edges = np.histogram(v[v != 0.0], bins=_KL_BINS, range=(low, high))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    best, best_kl = 1.0, np.inf
    for factor in _SHRINK_GRID:
        lo, hi = factor * low, factor * high
        inside = (centres >= lo) & (centres <= hi)
        idx = np.flatnonzero(inside)
        if idx.size < levels:  # fewer bins than levels: no quantization loss to compare
            continue
        p = hist[idx].copy()
        p[0] += hist[: idx[0]].sum()
        p[-1] += hist[idx[-1] + 1:].sum()
        # Q: the unclipped histogram inside the range, merged into `levels` groups and spread
        # back over each group's non-empty bins; the tails P folds in are what clipping costs
        inner = hist[idx]
        sizes = np.full(levels, p.size // levels)
        sizes[: p.size % levels] += 1  # as np.array_split groups them
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        nonzero = inner > 0
        sums = np.add.reduceat(inner, starts)
        counts = np.add.reduceat(nonzero.astype(np.float64), starts)
        spread = np.repeat(sums / np.maximum(counts, 1.0), sizes)
        q = np.where(nonzero, spread, 0.0)
        kl = _kl(p, q)
        if kl < best_kl:
            best, best_kl = float(factor), kl
    return best


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / q.sum() if q.sum() > 0 else q
    mask = p > 0
    q = np.where(mask & (q == 0), 1e-4 / p.size, q)  # smoothing: P's mass where Q has none
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))
