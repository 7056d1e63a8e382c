"""The deployment guard: sanitize the input, run the model, watch for drift, fall back safely.

    from tflc.runtime import Guard            # on a device: from tflc_runtime import Guard
    guard = Guard("releases/current")          # model.tflite + profile.json (+ a fallback)
    probabilities = guard.predict(x)           # float features in, dequantized outputs out
    guard.state, guard.drift_score, guard.events

Per sample, `predict` counts NaN and infinity (replaced by the channel's calibrated median, or
the sample rejected: `predict` returns None, as the policy says), quantizes at the model's input
scale counting what saturates and what falls outside each feature's calibrated range, runs the
model, and updates statistics over a sliding window of the last `window` samples: the
population stability index (PSI) of each channel's integer-domain histogram against the
calibration profile's, the saturation rate, the mean top-1 confidence, the rate of non-finite
values, features stuck at one value for longer than in-distribution data ever is, and latency
SLO breaches. Each is divided by its threshold (the profile's, chosen from its own sampling
noise, unless the policy sets one); `drift_score` is the largest ratio, and at 1 or more the
guard switches to the fallback model and records an event. It switches back when the input
statistics stay below `recover_below` for `recover_after` samples. Standard library and numpy
only, plus a TFLite interpreter.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from time import perf_counter

import numpy as np

from .interpreter import Model, dequantize, quantize
from .profile import BINS, SMOOTHING, model_sha256, read_profile, top_confidence
from .telemetry import Telemetry


def _dequantize(values, info: dict):
    """Outputs as float32 (affine dequantization of integer outputs), in three numpy calls."""
    result = values.astype(np.float32)
    if info["scale"] and values.dtype.kind in "iu":
        result -= info["zero_point"]
        result *= info["scale"]
    return result

PRIMARY, FALLBACK = "primary", "fallback"
_BIN_STARTS = np.arange(0, 256, 256 // BINS)  # 8-bit levels grouped into the profile's bins


@dataclass
class Policy:
    """What the guard does; None means "the calibration profile's value"."""

    nonfinite: str = "replace"  # "replace" (by the channel's calibrated median) or "reject"
    window: int | None = None  # samples in the sliding window
    psi: float | None = None  # thresholds, each the level at which its ratio reaches 1
    saturation_increase: float | None = None  # saturated share of values above the calibrated
    confidence_drop: float | None = None  # mean top-1 confidence below the calibrated mean
    max_nonfinite_rate: float = 0.01  # share of the window's values that were NaN or inf
    stuck: bool = True  # a feature frozen longer than in-distribution data ever is
    latency_slo_ms: float | None = None  # an invoke slower than this is an SLO breach
    max_slo_breach_rate: float = 0.1  # breaches in the window that count as drift
    block: int | None = None  # statistics are folded in every N samples; None: one window
    patience: int = 1  # consecutive checks at or over 1 before switching
    recover: bool = True  # switch back to the primary when the inputs settle
    recover_below: float = 0.5
    recover_after: int | None = None  # samples below recover_below; None: two windows
    telemetry_every: int | None = None  # a stats line every N samples; None: one window
    telemetry_max_bytes: int = 1 << 20
    telemetry_backups: int = 3

    def __post_init__(self):
        if self.nonfinite not in ("replace", "reject"):
            raise ValueError(f"Policy.nonfinite must be 'replace' or 'reject', got {self.nonfinite!r}")
        for name in ("window", "block", "patience", "recover_after", "telemetry_every",
                     "telemetry_max_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError(f"Policy.{name} must be a positive integer, got {value!r}")
        for name in ("psi", "saturation_increase", "confidence_drop", "max_nonfinite_rate",
                     "latency_slo_ms", "max_slo_breach_rate", "recover_below"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not math.isfinite(value) or value <= 0):
                raise ValueError(f"Policy.{name} must be a positive finite number, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict) -> Policy:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown policy field(s) {', '.join(unknown)}; known: "
                             + ", ".join(sorted(known)))
        return cls(**data)


def _model_files(path) -> tuple:
    """(model.tflite, profile.json or None, release.json contents or {}) of a folder or file."""
    path = os.path.expanduser(os.fspath(path))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    model = os.path.join(path, "model.tflite") if os.path.isdir(path) else path
    if not os.path.isfile(model):
        raise ValueError(f"{path}: no model.tflite there; give a tflc compile output folder or "
                         "a deployed release")
    profile = os.path.join(folder, "profile.json")
    release = {}
    release_file = os.path.join(folder, "release.json")
    if os.path.isfile(release_file):
        with open(release_file, encoding="utf-8") as handle:
            release = json.load(handle)
    return model, (profile if os.path.isfile(profile) else None), release, folder


class _InputMonitor:
    """Sanitizing and quantizing one input of the primary model, and its statistics.

    Per sample only what cannot wait: NaN/inf, quantization and saturation, and a copy of the
    integer values into the current block. Every `block` samples the block's histogram,
    out-of-range count and stuck-feature runs are computed at once (vectorized), and the window
    is the last `window // block` blocks: the per-sample cost stays a few numpy calls.
    """

    def __init__(self, info: dict, entry: dict, window: int, block: int):
        self.info = info
        self.name = info["name"]
        self.shape = tuple(info["shape"])
        self.size = int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1
        self.dtype = np.dtype(info["dtype"])
        self.integer = self.dtype.kind in "iu"
        self.limits = tuple(entry["limits"]) if entry.get("limits") else None
        self.inv_scale = 1.0 / (info["scale"] or 1.0)
        self.zero_point = float(info["zero_point"])
        hist = entry["histogram"]
        self.origin, self.inverse = float(hist["origin"]), 1.0 / float(hist["bin_width"])
        groups = int(entry["channels"]["count"])
        self.groups = groups
        self.offsets = (np.arange(self.size) % groups) * BINS if groups > 1 else None
        reference = np.asarray(hist["counts"], dtype=np.float64) + SMOOTHING
        self.ref_prob = reference / reference.sum(axis=1, keepdims=True)
        self.ref_log = np.log(self.ref_prob)
        replacement = np.asarray(entry["replacement"], dtype=np.float64)
        self.replacement = replacement[np.arange(self.size) % groups]
        features = entry.get("features")
        self.low = self.high = self.inv_run = None
        if features:
            bounds = self.dtype if self.integer else np.float64  # compared with the raw rows
            self.low = np.asarray(features["low"], dtype=np.float64).astype(bounds)
            self.high = np.asarray(features["high"], dtype=np.float64).astype(bounds)
            runs = np.asarray([r if r else np.inf for r in features["stuck_run"]], dtype=np.float64)
            self.inv_run = 1.0 / runs
            self.run = np.zeros(self.size)
            self.last = None
        # the block's rows, in the model's input dtype (float samples quantized once, as the model
        # takes them): a preallocated buffer, written in place every sample
        self.rows = np.zeros((block, self.size), dtype=self.dtype)
        self.rows_view = self.rows.reshape((block, *self.shape[1:]))  # the same memory
        self.rows_in = self.rows.reshape((block, *self.shape))  # a row as the model's input
        # integer samples as the model takes them are kept as bytes (x.tobytes(): one memcpy,
        # cheaper than a numpy assignment), a row each; rows written into `rows` are None here
        self.row_bytes: list = [None] * block
        self.inv32, self.zero32 = np.float32(self.inv_scale), np.float32(self.zero_point)
        self.q = np.zeros(self.size, dtype=np.float32)  # float samples quantized, in place
        self.saturated_rows: dict = {}  # float samples: row -> values quantized outside the range
        self.kind = None  # "f" or "i": what this input's samples are, fixed by the first one
        self.as_taken = None  # the model's dtype once samples are integers as the model takes them
        self.ref = {"f": float(entry.get("saturation_rate") or 0.0),
                    "i": float(entry.get("at_limits_rate") or 0.0)}
        self.sat_blocks: list = []  # per block in the window: (saturated values, values)
        eight_bit = self.dtype in (np.int8, np.uint8) and self.limits is not None \
            and self.origin == self.limits[0] and float(hist["bin_width"]) * BINS == 256
        self.levels = 256 if eight_bit else None
        self.raw_flat = self.rows.view(np.uint8).reshape(-1) if eight_bit else None
        if eight_bit and self.dtype == np.int8:
            # int8 values counted through their uint8 view (-128..-1 land on 128..255): keep the
            # reference in that bin order instead of reordering every block's histogram
            order = np.r_[BINS // 2:BINS, 0:BINS // 2]
            self.ref_prob = np.ascontiguousarray(self.ref_prob[:, order])
            self.ref_log = np.log(self.ref_prob)
        self.ref_list, self.ref_log_list = self.ref_prob[0].tolist(), self.ref_log[0].tolist()
        if self.offsets is not None:
            self.level_offsets = (np.arange(self.size) % groups).astype(np.int32) * 256
        self.blocks: list = []  # the window's blocks: (histogram, out-of-range count)
        self.per_window = window // block
        self.hist_sum = np.zeros(groups * BINS, dtype=np.int64)
        self.stuck_ratio = 0.0

    def prepare(self, x, row: int, reject: bool):
        """(the model input, the sanitized values, nonfinite count); the model input is None
        when the sample is rejected. The quantized values go into the block's row `row` (the
        model input is that row); everything else waits for the block to close."""
        a = np.asarray(x)
        if a.size != self.size:
            raise ValueError(f"input {self.name}: {a.size} values, the model takes "
                             f"{list(self.shape)} ({self.size} per sample)")
        self.row_bytes[row] = None  # this row is written into `rows`
        if a.dtype == self.dtype and self.kind == "i":  # integer samples as the model takes them
            self.rows_view[row] = a if a.ndim == len(self.shape) - 1 or a.shape == self.shape \
                else a.reshape(self.shape)
            return (a if a.shape == self.shape else a.reshape(self.shape)), a, 0
        a = a.reshape(-1)
        nonfinite = 0
        kind = a.dtype.kind
        if kind == "f":
            if self.kind is None:
                self.kind = "f"
            if self.integer:
                lo, hi = self.limits
                q = self._scaled(a)
                low, high = q.min(), q.max()  # NaN and inf land here too: one test for all
                if not (lo <= low and high <= hi):
                    if not (math.isfinite(low) and math.isfinite(high)):
                        finite = np.isfinite(a)
                        nonfinite = self.size - int(np.count_nonzero(finite))
                        if nonfinite:
                            if reject:
                                return None, None, nonfinite
                            a = np.where(finite, a, self.replacement).astype(a.dtype)
                            q = self._scaled(a)
                    np.rint(q, out=q)
                    saturated = int(np.count_nonzero(q < lo)) + int(np.count_nonzero(q > hi))
                    if saturated:
                        np.clip(q, lo, hi, out=q)
                    self.saturated_rows[row] = saturated
                else:
                    np.rint(q, out=q)
                    if self.saturated_rows:
                        self.saturated_rows.pop(row, None)
                np.copyto(self.rows[row], q, casting="unsafe")
                return self.rows_in[row], a, nonfinite
            if not math.isfinite(float(a.sum())):  # a float model: one pass, then look closer
                finite = np.isfinite(a)
                nonfinite = self.size - int(np.count_nonzero(finite))
                if nonfinite:
                    if reject:
                        return None, None, nonfinite
                    a = np.where(finite, a, self.replacement)
            np.copyto(self.rows[row], a, casting="unsafe")
            return self.rows_in[row], a, nonfinite
        if kind in "iub":
            if self.integer and a.dtype != self.dtype:
                a = np.clip(a, self.limits[0], self.limits[1])
            if self.kind is None:
                self.kind = "i"
                self.as_taken = self.dtype  # the fast path's test: `x.dtype is as_taken`
            np.copyto(self.rows[row], a, casting="unsafe")
            return self.rows_in[row], a, nonfinite
        raise ValueError(f"input {self.name}: values of dtype {a.dtype}, expected numbers")

    def _block_rows(self, count: int, full: bool) -> tuple:
        """(the block's rows, shape (count, size), and for 8-bit inputs their flat bytes)."""
        kept = self.row_bytes if full else self.row_bytes[:count]
        if count and None not in kept:  # every row kept as bytes: one join, no copy per row
            data = b"".join(kept)
            rows = np.frombuffer(data, dtype=self.dtype).reshape(count, self.size)
            return rows, (np.frombuffer(data, dtype=np.uint8) if self.levels else None)
        for r, raw in enumerate(kept):  # some rows as bytes, some in `rows`: all into `rows`
            if raw is not None:
                self.rows[r] = np.frombuffer(raw, dtype=self.dtype)
        rows = self.rows if full else self.rows[:count]
        if not self.levels:
            return rows, None
        return rows, (self.raw_flat if full else self.raw_flat[:count * self.size])

    def _scaled(self, a):
        """a / scale + zero point in float32 (the quantizer's arithmetic), before rounding."""
        if a.dtype == np.float32:
            q = np.multiply(a, self.inv32, out=self.q)
        else:
            q = self.q
            np.copyto(q, a, casting="same_kind")
            q *= self.inv32
        q += self.zero32
        return q

    def close_block(self, count: int) -> tuple:
        """Fold the block's `count` rows into the window; returns (saturated, out of range):
        saturated are values at the limits of the integer range (clipped there or at them)."""
        saturated = None
        if self.kind == "f" and self.limits is not None:  # counted as they were quantized
            saturated = sum(n for r, n in self.saturated_rows.items() if r < count) \
                if self.saturated_rows else 0
        self.saturated_rows = {}
        full = count == len(self.rows)
        rows, raw_flat = self._block_rows(count, full)
        at_limits = 0
        if self.levels is not None:  # 8-bit: one histogram of every level gives it all
            low, high = (128, 127) if self.dtype == np.int8 else (0, 255)
            if self.offsets is not None:
                raw = rows.view(np.uint8)  # int8 -128..-1 land on 128..255 (the reference too)
                levels = np.bincount((raw + self.level_offsets).ravel(),
                                     minlength=self.groups * 256).reshape(self.groups, 256)
                at_limits = int(levels[:, low].sum() + levels[:, high].sum())
                hist = levels.reshape(self.groups, BINS, 256 // BINS).sum(axis=2).ravel()
            else:  # one channel: scalar lookups, a flat histogram
                levels = np.bincount(raw_flat, minlength=256)
                at_limits = int(levels[low]) + int(levels[high])
                hist = np.add.reduceat(levels, _BIN_STARTS)
        else:
            values = rows.astype(np.float64)
            bins = ((values - self.origin) * self.inverse).astype(np.int64)
            np.clip(bins, 0, BINS - 1, out=bins)
            if self.offsets is not None:
                bins += self.offsets
            hist = np.bincount(bins.ravel(), minlength=self.groups * BINS)
            if self.limits is not None:
                at_limits = int(np.count_nonzero((rows <= self.limits[0]) | (rows >= self.limits[1])))
        if saturated is None:  # integer samples: at the limits, clipped or not
            saturated = at_limits
        out_of_range = 0
        if self.low is not None and count:
            lows, highs = rows.min(axis=0), rows.max(axis=0)
            if np.count_nonzero(lows < self.low) or np.count_nonzero(highs > self.high):
                out_of_range = int(np.count_nonzero((rows < self.low) | (rows > self.high)))
            constant = lows == highs
            if not np.count_nonzero(constant):  # the usual case: nothing held still a block
                if self.stuck_ratio:
                    self.run[:] = 0.0
                    self.stuck_ratio = 0.0
                self.last = None  # no run goes on past this block: the next starts afresh
                return self._add_block(hist, saturated, count, out_of_range)
            if self.last is not None:
                continued = constant & (rows[0] == self.last)
                self.run = np.where(continued, self.run + count, np.where(constant, count, 0))
                self.stuck_ratio = float((self.run * self.inv_run).max())
            else:
                self.run = np.where(constant, float(count), 0.0)
                self.stuck_ratio = float((self.run * self.inv_run).max())
            self.last = rows[count - 1].copy()
        return self._add_block(hist, saturated, count, out_of_range)

    def _add_block(self, hist, saturated: int, count: int, out_of_range: int) -> tuple:
        """The block's histogram and saturation into the window (the oldest block out)."""
        if self.per_window == 1:  # the window is this block: nothing to add or take away
            self.hist_sum = hist
            self.sat_blocks = [(saturated, count * self.size)]
            return saturated, out_of_range
        self.blocks.append(hist)
        self.hist_sum += hist
        self.sat_blocks.append((saturated, count * self.size))
        if len(self.blocks) > self.per_window:
            self.hist_sum -= self.blocks.pop(0)
            self.sat_blocks.pop(0)
        return saturated, out_of_range

    def saturation_increase(self) -> tuple:
        """(the window's saturated share above the calibrated one, the threshold key)."""
        saturated = sum(b[0] for b in self.sat_blocks)
        values = sum(b[1] for b in self.sat_blocks)
        if not values or self.limits is None:
            return 0.0, None
        kind = self.kind or "f"
        return max(0.0, saturated / values - self.ref[kind]), ("saturation" if kind == "f"
                                                                else "at_limits")

    def psi(self) -> float:
        if self.groups == 1:  # one channel: 32 terms, fewer steps in plain Python than numpy's
            counts = self.hist_sum.tolist()
            total = sum(counts) + SMOOTHING * len(counts)
            log = math.log
            value = 0.0
            for c, r, lr in zip(counts, self.ref_list, self.ref_log_list):
                p = (c + SMOOTHING) / total
                value += (p - r) * (log(p) - lr)
            return value
        counts = self.hist_sum.reshape(self.groups, BINS) + SMOOTHING
        p = counts / counts.sum(axis=1, keepdims=True)
        return float(((p - self.ref_prob) * (np.log(p) - self.ref_log)).sum(axis=1).max())

    def reset(self) -> None:
        self.blocks = []
        self.sat_blocks = []
        self.saturated_rows = {}
        self.hist_sum = np.zeros(self.groups * BINS, dtype=np.int64)
        if self.low is not None:
            self.run[:] = 0.0
            self.last = None
            self.stuck_ratio = 0.0


class Guard:
    """A compiled model with its calibration profile, guarded (see the module's docstring).

    `model_dir`: a tflc compile output folder or deployed release (model.tflite and
    profile.json), or a .tflite with profile.json beside it. `fallback`: another compiled model
    (folder or .tflite) taking the same inputs, run while the primary's inputs drift; None uses
    the fallback a deployed release names (`tflc deploy`), False none. `policy`: a `Policy`
    or a dict of its fields. `telemetry`: a JSONL file, None for none, or "auto": the file the
    deployed release names (else none).
    """

    def __init__(self, model_dir, fallback=None, policy=None, *, telemetry="auto",
                 threads: int | None = 1, runtime: str = "auto"):
        model_path, profile_path, release, folder = _model_files(model_dir)
        if profile_path is None:
            raise ValueError(f"{model_dir}: no profile.json beside {os.path.basename(model_path)};"
                             " compile it with tflc (every compile writes one)")
        self.profile = read_profile(profile_path)
        if self.profile["model_sha256"] != model_sha256(model_path):
            raise ValueError(f"{profile_path}: this calibration profile belongs to another model "
                             f"(sha256 {self.profile['model_sha256'][:12]}), not "
                             f"{os.path.basename(model_path)}")
        if isinstance(policy, dict):
            policy = Policy.from_dict(policy)
        elif policy is None and isinstance(release.get("policy"), dict):
            policy = Policy.from_dict(release["policy"])
        self.policy = policy = policy or Policy()
        self.primary = Model(model_path, threads, runtime)
        if fallback is None and release.get("fallback"):
            fallback = os.path.join(folder, release["fallback"])
        self.fallback = None
        if fallback not in (None, False):
            self.fallback = Model(_model_files(fallback)[0], threads, runtime)
            mine = [i["shape"][1:] for i in self.primary.inputs]
            theirs = [i["shape"][1:] for i in self.fallback.inputs]
            if mine != theirs:
                raise ValueError(f"{fallback}: the fallback takes inputs {theirs}, the primary "
                                 f"{mine}; a fallback must take the same inputs")
        drift = self.profile["drift"]
        thresholds = drift["thresholds"]
        window = policy.window or int(drift["window"])
        if policy.window and str(policy.window) in drift.get("windows_considered", {}):
            thresholds = drift["windows_considered"][str(policy.window)]
        self.block = block = min(policy.block or window, window)
        self.window = window = -(-window // block) * block  # a whole number of blocks
        self.thresholds = {
            "psi": policy.psi or thresholds["psi"],
            "saturation": policy.saturation_increase or thresholds["saturation_increase"],
            "at_limits": (policy.saturation_increase or thresholds.get("at_limits_increase")
                          or thresholds["saturation_increase"]),
            "confidence": policy.confidence_drop or thresholds.get("confidence_drop"),
            "nonfinite": policy.max_nonfinite_rate,
            "latency": policy.max_slo_breach_rate if policy.latency_slo_ms else None,
        }
        self._monitors = [_InputMonitor(info, entry, window, block)
                          for info, entry in zip(self.primary.inputs, self.profile["inputs"])]
        self._single = len(self._monitors) == 1
        self._features = sum(m.size for m in self._monitors)
        confidence = self.profile.get("confidence")
        self._conf_transform = confidence["transform"] if confidence else None
        self._conf_mean = float(confidence["mean"]) if confidence else None
        self._reject = policy.nonfinite == "reject"
        self._fast = None
        primary = self.primary
        if (len(primary.inputs) == 1 and len(primary.outputs) == 1
                and self._conf_transform == "probabilities"):
            interp, out = primary.interpreter, primary.outputs[0]
            integer = np.dtype(out["dtype"]).kind in "iu"
            self._fast = (interp.set_tensor, interp.invoke, interp.get_tensor,
                          primary.inputs[0]["index"], out["index"], out["zero_point"],
                          out["scale"] if integer else 0.0)
        # the raw outputs of the block's rows while the primary answers them (get_tensor's
        # copies): their top-1 confidences are taken at the block's end, all at once
        self._outputs: list = [None] * block
        self._hot = self._fast
        self._slo = policy.latency_slo_ms
        self._latencies = [0.0] * block  # per row of the block: its invoke's latency in ms
        self._latency_mark = 0  # the block's rows before it are in the running figures
        self._blocks: list = []  # per block: dict of sums, the window is the last few
        self._block = self._new_block()
        # the block's rows (samples the model ran on) and where it began; a check (the block's
        # end or a telemetry line) is due at sample `_due`: one comparison per sample
        self._row = self._block_start = 0
        self._every = policy.telemetry_every or window
        self._due = min(block, self._every)
        self._over = self._calm = 0
        self._drift_reported = False
        self.samples = 0
        self.counts = {"samples": 0, "rejected": 0, "nonfinite": 0, "saturated": 0,
                       "out_of_range": 0, "slo_breaches": 0, "fallback_samples": 0}
        self.state = PRIMARY
        self.drift_score = 0.0
        self._parts: dict = {}
        self.events: list = []
        self.last_model, self.last_latency_ms, self.last_confidence = None, None, None
        self.last_nonfinite = 0
        self._latency_sum, self._latency_max, self._latency_n = 0.0, 0.0, 0
        self.release = release
        if telemetry == "auto":
            telemetry = release.get("telemetry")
            if telemetry and not os.path.isabs(telemetry):
                telemetry = os.path.join(folder, telemetry)
        self.telemetry = (Telemetry(os.path.expanduser(telemetry), policy.telemetry_max_bytes,
                                    policy.telemetry_backups) if telemetry else None)
        self._write({"kind": "start", "model_sha256": self.profile["model_sha256"],
                     "artifact": release.get("artifact"), "fallback": bool(self.fallback),
                     "window": window, "block": block, "thresholds": self.thresholds,
                     "runtime": self.primary.runtime})

    @staticmethod
    def _new_block() -> dict:
        """A block's sums; its samples, rows and SLO breaches are filled in when it closes."""
        return {"samples": 0, "rows": 0, "values": 0, "nonfinite": 0, "saturated": 0,
                "out_of_range": 0, "confidence": 0.0, "confident": 0, "slo": 0}

    # ------------------------------------------------------------------ the one call
    def predict(self, x):
        """Outputs of the active model for one sample (dequantized floats; a list when the model
        has several outputs), or None when the policy rejects the sample."""
        hot = self._hot  # the fast path's calls while the primary answers, else None
        if hot is not None:
            # one input, one output, the primary answering: the same steps as below, fewer calls
            row = self._row
            monitor = self._monitors[0]
            if (type(x) is np.ndarray and x.dtype is monitor.as_taken
                    and x.shape == monitor.shape):  # integer samples as the model takes them
                monitor.row_bytes[row] = x.tobytes()
                values, bad = x, 0
            else:
                values, _, bad = monitor.prepare(x, row, self._reject)
            if not bad:
                set_tensor, invoke, get_tensor, in_index, out_index, zero, scale = hot
                self.samples += 1
                self._row = row + 1
                set_tensor(in_index, values)
                start = perf_counter()
                invoke()
                latency = (perf_counter() - start) * 1e3
                raw = get_tensor(out_index)  # a copy, ours: kept for the fold's confidences
                self._outputs[row] = raw
                result = raw.astype(np.float32)
                if scale:
                    result -= zero
                    result *= scale
                self._latencies[row] = latency
                self.last_model, self.last_latency_ms = PRIMARY, latency
                if self.last_nonfinite:
                    self.last_nonfinite = 0
                if self.samples >= self._due:
                    self._after_sample()
                return result
        return self._predict(x)

    def _predict(self, x):
        if self._single:
            arrays = (x,)
        else:
            arrays = list(x)
            if len(arrays) != len(self._monitors):
                raise ValueError(f"{len(arrays)} inputs given, the model takes "
                                 f"{len(self._monitors)}")
        reject = self._reject
        block, row = self._block, self._row
        self.samples += 1
        inputs, cleans, nonfinite, rejected = [], [], 0, False
        for monitor, a in zip(self._monitors, arrays):
            model_input, clean, bad = monitor.prepare(a, row, reject)
            nonfinite += bad
            rejected = rejected or model_input is None
            inputs.append(model_input)
            cleans.append(clean)
        self.last_nonfinite = nonfinite
        if nonfinite:
            block["nonfinite"] += nonfinite
            if rejected:
                self.counts["rejected"] += 1
                self.last_model = None
                if self.samples >= self._due:
                    self._after_sample()
                return None
        self._row = row + 1
        if self.state == FALLBACK:
            model = self.fallback
            inputs = [self._for_fallback(k, clean) for k, clean in enumerate(cleans)]
        else:
            model = self.primary
        interpreter = model.interpreter
        for (index, _), values in zip(model._in, inputs):
            interpreter.set_tensor(index, values)
        start = perf_counter()
        interpreter.invoke()
        latency = (perf_counter() - start) * 1e3
        raws = [interpreter.get_tensor(index) for index in model._out]
        result = [_dequantize(raw, info) for raw, info in zip(raws, model.outputs)]
        self._latencies[row] = latency
        confidence = None
        if self._fast is not None and model is self.primary:  # counted at the fold, as the
            self._outputs[row] = raws[0]  # fast path's rows are
            confidence = float(result[0].max())
        elif self._conf_transform and model is self.primary:
            if self._conf_transform == "probabilities":
                confidence = float(result[0].max())
            else:
                confidence = float(top_confidence(result[0].reshape(1, -1), "softmax")[0])
            block["confidence"] += confidence
            block["confident"] += 1
        self.last_model, self.last_latency_ms, self.last_confidence = self.state, latency, confidence
        if self.samples >= self._due:
            self._after_sample()
        return result[0] if len(result) == 1 else result

    def _for_fallback(self, k: int, clean):
        info = self.fallback.inputs[k]
        if clean.dtype.kind in "iub":  # integer data in the primary's domain: to floats first
            clean = dequantize(clean, self.primary.inputs[k])
        return quantize(clean, info).reshape(info["shape"])

    # ------------------------------------------------------------------ statistics
    def _after_sample(self) -> None:
        """The check due at this sample: the block's end, a telemetry line, or both."""
        if self.samples - self._block_start >= self.block:
            self._close_block()
        if self.telemetry is None:  # no stats lines to write: only the blocks' ends are due
            self._due = self._block_start + self.block
            return
        if self.samples % self._every == 0:
            self._write_stats()
        next_stats = (self.samples // self._every + 1) * self._every
        self._due = min(self._block_start + self.block, next_stats)

    def _close_block(self) -> None:
        block = self._block
        rows = self._row
        block["samples"] = samples = self.samples - self._block_start
        block["rows"] = rows
        block["values"] = samples * self._features
        if rows:
            self._take_latencies()
            if self._slo:
                block["slo"] = sum(1 for v in self._latencies[:rows] if v > self._slo)
            if self._fast is not None and self.state == PRIMARY:
                # the primary answered every row: their top-1 confidences, all at once
                raw = np.concatenate(self._outputs if rows == self.block
                                     else self._outputs[:rows]).reshape(rows, -1)
                top = raw.max(axis=1).tolist()
                top = sum(top) if raw.dtype.kind in "iu" else math.fsum(top)
                zero, scale = self._fast[5], self._fast[6]
                if scale:  # sum((t - zero) * scale) in one step, in exact integers first
                    top = (top - zero * rows) * scale
                block["confidence"] += float(top)
                block["confident"] += rows
        for monitor in self._monitors:
            saturated, out_of_range = monitor.close_block(rows)
            block["saturated"] += saturated
            block["out_of_range"] += out_of_range
        counts = self.counts
        counts["nonfinite"] += block["nonfinite"]
        counts["saturated"] += block["saturated"]
        counts["out_of_range"] += block["out_of_range"]
        counts["samples"] += samples
        counts["slo_breaches"] += block["slo"]
        if self.state == FALLBACK:
            counts["fallback_samples"] += rows
        self._blocks.append(block)
        if len(self._blocks) > self.window // self.block:
            self._blocks.pop(0)
        self._block = self._new_block()
        self._row, self._block_start, self._latency_mark = 0, self.samples, 0
        self._update()

    def _take_latencies(self) -> None:
        """The block's latencies not yet in the running figures (telemetry's mean and max)."""
        mark, row = self._latency_mark, self._row
        if row > mark:
            latencies = self._latencies[mark:row]
            self._latency_sum += sum(latencies)
            self._latency_n += row - mark
            self._latency_max = max(self._latency_max, max(latencies))
            self._latency_mark = row

    def _compute_parts(self) -> dict:
        t = self.thresholds
        blocks = self._blocks
        total = blocks[0] if len(blocks) == 1 else \
            {key: sum(b[key] for b in blocks) for key in blocks[0]}
        parts = {}
        if total["values"]:
            parts["nonfinite"] = (total["nonfinite"] / total["values"]) / t["nonfinite"]
        monitors = self._monitors
        if self.policy.stuck:
            parts["stuck"] = monitors[0].stuck_ratio if self._single \
                else max(m.stuck_ratio for m in monitors)
        if total["samples"] >= self.window and total["rows"]:
            if self._single:  # one input: no generators
                parts["psi"] = monitors[0].psi() / t["psi"]
                inc, key = monitors[0].saturation_increase()
                parts["saturation"] = inc / t[key] if key else 0.0
            else:
                parts["psi"] = max(m.psi() for m in monitors) / t["psi"]
                parts["saturation"] = max(
                    (inc / t[key] for inc, key in (m.saturation_increase() for m in monitors)
                     if key), default=0.0)
            if t["latency"]:
                parts["latency"] = (total["slo"] / total["rows"]) / t["latency"]
        if t["confidence"] and self.state == PRIMARY and total["confident"] >= self.window:
            drop = self._conf_mean - total["confidence"] / total["confident"]
            parts["confidence"] = max(0.0, drop) / t["confidence"]
        return parts

    def _update(self) -> None:
        self._parts = parts = self._compute_parts()  # rounded when read (`parts`), not here
        self.drift_score = score = max(parts.values()) if parts else 0.0
        over = sorted(k for k, v in parts.items() if v >= 1.0) if score >= 1.0 else ()
        if self.state == PRIMARY:
            self._over = self._over + 1 if over else 0
            if self._over >= self.policy.patience:
                self._trip(over)
            elif not over:
                self._drift_reported = False
        else:
            inputs_only = max((v for k, v in parts.items() if k != "confidence"), default=0.0)
            self._calm = self._calm + self.block if inputs_only < self.policy.recover_below else 0
            after = self.policy.recover_after or 2 * self.window
            if self.policy.recover and self._calm >= after:
                self._switch(PRIMARY, "recovered", [])

    def _trip(self, reasons: list) -> None:
        if self.fallback is not None:
            self._switch(FALLBACK, "fallback", reasons)
        elif not self._drift_reported:
            self._drift_reported = True
            self._event("drift", reasons, action="no fallback model: the primary keeps running")

    def _switch(self, state: str, event: str, reasons: list) -> None:
        self.state = state
        self._hot = self._fast if state == PRIMARY else None
        self._over = self._calm = 0
        if state == PRIMARY:  # confidences are the primary's alone: that window starts anew
            for block in self._blocks:
                block["confidence"], block["confident"] = 0.0, 0
        self._event(event, reasons)

    def _event(self, event: str, reasons: list, **extra) -> None:
        record = {"event": event, "sample": self.samples, "time": round(time.time(), 3),
                  "state": self.state, "drift_score": round(self.drift_score, 4),
                  "reasons": reasons, "parts": dict(self.parts), **extra}
        self.events.append(record)
        self._write({"kind": "event", **record})

    def _write_stats(self) -> None:
        self._take_latencies()
        n = self._latency_n
        latency = ({"mean": round(self._latency_sum / n, 4), "max": round(self._latency_max, 4)}
                   if n else None)
        self._latency_sum, self._latency_max, self._latency_n = 0.0, 0.0, 0
        self._write({"kind": "stats", "sample": self.samples, "state": self.state,
                     "drift_score": round(self.drift_score, 4), "parts": dict(self.parts),
                     "counts": dict(self.counts), "latency_ms": latency})

    def _write(self, record: dict) -> None:
        if self.telemetry is not None:
            try:
                self.telemetry.write(record)
            except (OSError, ValueError):  # a full disk must not stop the model: count it
                self.counts["telemetry_errors"] = self.counts.get("telemetry_errors", 0) + 1

    # ------------------------------------------------------------------ housekeeping
    @property
    def parts(self) -> dict:
        """The drift score's parts at the last fold, each a ratio to its threshold."""
        return {k: round(v, 4) for k, v in self._parts.items()}

    @property
    def stats(self) -> dict:
        return {"state": self.state, "drift_score": self.drift_score, "parts": dict(self.parts),
                "counts": dict(self.counts), "window": self.window, "block": self.block,
                "thresholds": dict(self.thresholds), "policy": asdict(self.policy)}

    def reset_window(self) -> None:
        """Forget the window (e.g. after the sensor was replaced); counts are kept."""
        for monitor in self._monitors:
            monitor.reset()
        self._blocks = []
        self._block = self._new_block()
        self._row, self._block_start, self._latency_mark = 0, self.samples, 0
        self._due = min(self.samples + self.block, (self.samples // self._every + 1) * self._every)

    def close(self) -> None:
        if self.telemetry is not None:
            self._write_stats()
            self.telemetry.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
