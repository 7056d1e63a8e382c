"""The guard's vectorised fold (one bincount per window, Python PSI, vectorised ranges and stuck
runs, samples quantized once into a preallocated ring buffer) against a straightforward
reference: the same statistics computed value by value, in plain Python loops, from a recorded
stream of samples and the guard's own outputs. The drift scores must be the same at every fold,
on float features and on int8 features, with the default window and with a window of several
blocks, through in-distribution data, saturation, NaN, a frozen sensor and a stuck pixel."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tflc.runtime import Guard, Policy, read_profile


def _stream(in_distribution) -> np.ndarray:
    rng = np.random.default_rng(7)
    x = in_distribution.astype(np.float32)
    nan = x[160:224].copy()
    nan[rng.random(nan.shape) < 0.03] = np.nan
    nan[5, 2, 2, 0] = np.inf
    stuck = x[288:352].copy()
    stuck[:, 4, 3, 0] = 0.5
    return np.concatenate([x[:96], 1.5 * x[96:160] + 0.2, nan, np.repeat(x[224:225], 64, axis=0),
                           stuck, x[352:420]]).astype(np.float32)


def _quantize(x, scale, zero_point, lo, hi):
    """Value by value, as the model's input is quantized (float32: x * (1 / scale) + zero)."""
    q = float(np.rint(np.float32(x) * np.float32(1.0 / scale) + np.float32(zero_point)))
    return int(min(max(q, lo), hi)), q < lo or q > hi


class Reference:
    """The drift statistics of one input, recomputed from scratch in plain Python."""

    def __init__(self, profile: dict, thresholds: dict, window: int, block: int, kind: str):
        entry = profile["inputs"][0]
        self.scale, self.zero = entry["scale"], entry["zero_point"]
        self.lo, self.hi = entry["limits"]
        hist = entry["histogram"]
        self.origin, self.width = hist["origin"], hist["bin_width"]
        ref = [c + 0.5 for c in hist["counts"][0]]
        self.ref = [c / sum(ref) for c in ref]
        self.replacement = entry["replacement"][0]
        features = entry["features"]
        self.low, self.high, self.stuck_run = features["low"], features["high"], features["stuck_run"]
        self.ref_rate = entry["saturation_rate"] if kind == "f" else entry["at_limits_rate"]
        self.conf_mean = profile["confidence"]["mean"]
        self.t, self.window, self.block, self.kind = thresholds, window, block, kind
        self.rows, self.saturated, self.confidences, self.nonfinite = [], [], [], []
        self.blocks: list = []  # per closed block: (rows, saturated, confidences, nonfinite)
        self.run = [0] * len(self.low)
        self.last = None
        self.out_of_range = 0

    def add(self, sample, output) -> None:
        values, saturated, bad = [], 0, 0
        for v in np.asarray(sample).ravel().tolist():
            if self.kind == "i":
                values.append(int(v))
                saturated += v <= self.lo or v >= self.hi  # at the limits, clipped or not
                continue
            if not math.isfinite(v):
                bad += 1
                v = self.replacement
            q, clipped = _quantize(v, self.scale, self.zero, self.lo, self.hi)
            values.append(q)
            saturated += clipped
        self.rows.append(values)
        self.saturated.append(saturated)
        self.nonfinite.append(bad)
        self.confidences.append(float(max(np.asarray(output).ravel().tolist())))
        if len(self.rows) == self.block:
            self._close()

    def _close(self) -> None:
        rows = self.rows
        for j in range(len(self.low)):
            column = [row[j] for row in rows]
            self.out_of_range += sum(v < self.low[j] or v > self.high[j] for v in column)
            constant = all(v == column[0] for v in column)
            if constant and self.last is not None and column[0] == self.last[j]:
                self.run[j] += len(column)
            else:
                self.run[j] = len(column) if constant else 0
        self.last = rows[-1]
        self.blocks.append((rows, self.saturated, self.confidences, self.nonfinite))
        self.blocks = self.blocks[-(self.window // self.block):]
        self.rows, self.saturated, self.confidences, self.nonfinite = [], [], [], []

    def parts(self) -> dict:
        rows = [row for block in self.blocks for row in block[0]]
        values = sum(len(row) for row in rows)
        nonfinite = sum(sum(block[3]) for block in self.blocks)
        parts = {"nonfinite": nonfinite / values / self.t["nonfinite"],
                 "stuck": max(r / s for r, s in zip(self.run, self.stuck_run) if s)}
        if len(rows) >= self.window:
            counts = [0] * 32
            for row in rows:
                for v in row:
                    counts[min(max(math.floor((v - self.origin) / self.width), 0), 31)] += 1
            total = sum(counts) + 0.5 * 32
            psi = 0.0
            for c, r in zip(counts, self.ref):
                p = (c + 0.5) / total
                psi += (p - r) * (math.log(p) - math.log(r))
            parts["psi"] = psi / self.t["psi"]
            saturated = sum(sum(block[1]) for block in self.blocks)
            key = "saturation" if self.kind == "f" else "at_limits"
            parts["saturation"] = max(0.0, saturated / values - self.ref_rate) / self.t[key]
            confidences = [c for block in self.blocks for c in block[2]]
            parts["confidence"] = max(0.0, self.conf_mean - sum(confidences) / len(confidences)) \
                / self.t["confidence"]
        return parts


@pytest.mark.parametrize("kind", ["f", "i", "i-batched"])
@pytest.mark.parametrize("policy", [None, {"block": 8}, {"window": 32}],
                         ids=["window", "blocks-of-8", "window-32"])
def test_the_fold_matches_a_reference_computed_value_by_value(kind, policy, digits_compiled,
                                                              in_distribution):
    """int8 features come as (8, 8, 1) samples (the general path) or, "i-batched", in the model's
    own (1, 8, 8, 1) shape, which the guard keeps as bytes until the fold."""
    _, out = digits_compiled
    guard = Guard(out, policy=Policy(**(policy or {})), fallback=False, telemetry=None)
    profile = read_profile(out)
    reference = Reference(profile, guard.thresholds, guard.window, guard.block, kind[0])
    stream = _stream(in_distribution)
    if kind != "f":  # the same samples as int8 features, quantized by the application
        entry = profile["inputs"][0]
        stream = np.array([[_quantize(v if math.isfinite(v) else 0.0, entry["scale"],
                                      entry["zero_point"], -128, 127)[0]
                            for v in sample.ravel().tolist()] for sample in stream],
                          dtype=np.int8).reshape(stream.shape)
        if kind == "i-batched":
            stream = stream[:, None]
    folds = 0
    for n, sample in enumerate(stream, 1):
        output = guard.predict(sample)
        reference.add(sample, output)
        if n % guard.block == 0:
            folds += 1
            got, want = guard._compute_parts(), reference.parts()
            assert sorted(got) == sorted(want), (n, got, want)
            for key in want:
                assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), (n, key, got, want)
            assert guard.drift_score == pytest.approx(max(want.values()), rel=1e-6, abs=1e-9)
            assert guard.counts["out_of_range"] == reference.out_of_range
    assert folds == len(stream) // guard.block
    # the stream does drift: the reference agrees that it should (and the guard said so)
    assert guard.events and max(guard.events, key=lambda e: e["drift_score"])["drift_score"] >= 1
