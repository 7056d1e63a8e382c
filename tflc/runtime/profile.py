"""The calibration profile: what the model's inputs and confidence looked like when it was made.

`build_profile` runs at compile time (`profile.json` beside `model.tflite`) from the calibration
samples and the compiled model run in a TFLite interpreter; the guard (`tflc.runtime.guard`)
reads it on the device. Per input and per channel (the last axis: image channels, or the
features of a flat input) it holds quantiles and a histogram in the model's integer input
domain, and the share of values that saturate at the input's scale; per feature (every element
of one sample) the calibrated range and the share of its most common value; the distribution of
the top output's confidence on the evaluation data; and the drift thresholds, chosen from the
profile's own sampling noise (windows bootstrapped from the calibration samples), so that they
are never tuned on the shifts they must detect.

Standard library and numpy only (and the interpreter, through `.interpreter`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np

from .interpreter import Model, dequantize, integer_limits

PROFILE_FORMAT = "tflc-profile"
PROFILE_VERSION = 1
QUANTILES = (0.0, 0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999, 1.0)
BINS = 32
SMOOTHING = 0.5  # additive smoothing of histogram counts in the PSI
WINDOWS = (32, 64, 128, 256)  # the window sizes considered (thresholds for each), smallest first
MIN_WINDOW = 128  # the smallest window chosen by default (why: _drift_thresholds)
PSI_TARGET = 0.1  # the usual "no significant change" level: the window must resolve it
MARGIN = 2.0  # thresholds are this times the largest statistic seen on in-distribution windows
BOOTSTRAP = 400
STUCK_ALPHA = 1e-6  # chance, per sample, that some in-distribution feature looks stuck
MAX_FEATURES = 65536  # per-feature statistics for inputs up to this many elements
CONFIDENCE_FLOOR = 0.05  # a mean top-1 confidence drop smaller than this is never drift
SATURATION_FLOOR = 0.01  # nor a saturation rate less than 1 point above the calibrated one


def model_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_profile(path) -> dict:
    """The profile at `path` (a profile.json or the folder holding it), checked for its format."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "profile.json")
    try:
        with open(path, encoding="utf-8") as handle:
            profile = json.load(handle)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the calibration profile ({exc.strerror or exc}); "
                         "compile the model with tflc to get one") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a calibration profile (invalid JSON: {exc.msg})") from None
    if not isinstance(profile, dict) or profile.get("format") != PROFILE_FORMAT:
        raise ValueError(f"{path}: not a tflc calibration profile")
    if profile.get("version") != PROFILE_VERSION:
        raise ValueError(f"{path}: calibration profile version {profile.get('version')}, this "
                         f"runtime reads version {PROFILE_VERSION}; recompile or update tflc")
    return profile


# ----------------------------------------------------------------------------- binning
class Binning:
    """How one input's values fall into histogram bins: the integer domain of an integer input
    (values quantized at the model's scale and clipped), or the calibrated range of a float one."""

    def __init__(self, info: dict, calibrated: np.ndarray | None = None, spec: dict | None = None):
        self.info = info
        self.limits = integer_limits(info)
        if spec is not None:
            self.origin, self.width = float(spec["origin"]), float(spec["bin_width"])
        elif self.limits is not None:
            lo, hi = self.limits
            self.origin, self.width = float(lo), (hi - lo + 1) / BINS
        else:
            lo, hi = float(np.min(calibrated)), float(np.max(calibrated))
            self.origin, self.width = lo, max(hi - lo, 1e-12) / BINS
        self.inverse = 1.0 / self.width
        self.domain = np.dtype(info["dtype"]).name

    def spec(self) -> dict:
        return {"domain": self.domain, "origin": _num(self.origin), "bin_width": _num(self.width),
                "bins": BINS}

    def values(self, samples: np.ndarray):
        """(values in the binning domain, saturated count per sample) for float or integer data."""
        samples = np.asarray(samples)
        if self.limits is None:
            return samples.astype(np.float64), np.zeros(len(samples), dtype=np.int64)
        lo, hi = self.limits
        axes = tuple(range(1, samples.ndim))
        if samples.dtype.kind == "f":  # saturated: quantized outside the range, so clipped
            q = np.round(samples.astype(np.float64) / (self.info["scale"] or 1.0)) \
                + self.info["zero_point"]
            saturated = ((q < lo) | (q > hi)).sum(axis=axes)
            samples = np.clip(q, lo, hi)
        else:  # integer data: nothing tells a clipped value from one at the limit
            saturated = ((samples <= lo) | (samples >= hi)).sum(axis=axes)
        return samples.astype(np.float64), saturated

    def at_limits(self, values: np.ndarray):
        """Per sample, the values (in the integer domain) at the limits of the range."""
        lo, hi = self.limits
        return ((values <= lo) | (values >= hi)).sum(axis=tuple(range(1, values.ndim)))

    def bins(self, values: np.ndarray) -> np.ndarray:
        index = np.floor((values - self.origin) * self.inverse)
        return np.clip(index, 0, BINS - 1).astype(np.int64)


def _num(value: float, digits: int = 6):
    if value is None or not math.isfinite(value):
        return None
    if float(value).is_integer() and abs(value) < 2 ** 53:
        return int(value)
    return float(f"{value:.{digits}g}")


def _nums(values) -> list:
    return [_num(float(v)) for v in np.asarray(values).ravel()]


def psi(window: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Population stability index per row (group) of two count matrices (groups x bins)."""
    p = window + SMOOTHING
    p = p / p.sum(axis=-1, keepdims=True)
    r = reference + SMOOTHING
    r = r / r.sum(axis=-1, keepdims=True)
    return ((p - r) * (np.log(p) - np.log(r))).sum(axis=-1)


def top_confidence(outputs: np.ndarray, transform: str) -> np.ndarray:
    """Top-1 confidence per row of dequantized outputs (samples x classes)."""
    values = outputs.reshape(len(outputs), -1)
    if transform == "softmax":
        values = values - values.max(axis=1, keepdims=True)
        values = np.exp(values)
        values = values / values.sum(axis=1, keepdims=True)
    return values.max(axis=1)


def confidence_transform(outputs: np.ndarray) -> str:
    """Probabilities already (a softmax output) or logits to pass through a softmax."""
    rows = outputs.reshape(len(outputs), -1)
    sums = rows.sum(axis=1)
    if rows.min() >= -1e-3 and np.all(np.abs(sums - 1.0) < 0.05):
        return "probabilities"
    return "softmax"


# ----------------------------------------------------------------------------- building
def build_profile(model_path, calibration: list, evaluation: list | None = None, *,
                  seed: int = 0, sources: dict | None = None) -> dict:
    """The calibration profile of the .tflite at `model_path`.

    `calibration`: one array of samples per model input (float data as given to the compiler, or
    integer data in the input's dtype); `evaluation`: the same for the evaluation data, whose
    top-1 confidences are measured on the compiled model (without it, the calibration samples').
    Deterministic for the same model, data and seed.
    """
    model = Model(model_path)
    if len(calibration) != len(model.inputs):
        raise ValueError(f"{len(calibration)} calibration arrays for {len(model.inputs)} inputs")
    rng = np.random.default_rng(seed)
    count = len(calibration[0])
    inputs, per_sample = [], []
    for info, samples in zip(model.inputs, calibration):
        entry, stats = _input_profile(info, np.asarray(samples))
        inputs.append(entry)
        per_sample.append(stats)
    confidence, conf_samples = _confidence_profile(model, evaluation, calibration)
    drift = _drift_thresholds(inputs, per_sample, conf_samples, count, rng)
    return {
        "format": PROFILE_FORMAT, "version": PROFILE_VERSION,
        "model_sha256": model_sha256(model_path),
        "calibration": {"samples": count, **(sources or {})},
        "inputs": inputs, "confidence": confidence, "drift": drift,
    }


def _input_profile(info: dict, samples: np.ndarray):
    samples = samples.reshape((len(samples), *info["shape"][1:]))
    binning = Binning(info, samples if np.dtype(info["dtype"]).kind not in "iu" else None)
    values, saturated = binning.values(samples)
    features = int(np.prod(info["shape"][1:], dtype=np.int64))
    groups = int(info["shape"][-1]) if len(info["shape"]) > 1 else 1
    flat = values.reshape(len(values), features)
    grouped = flat.reshape(len(flat), -1, groups)  # (samples, positions, groups)
    bins = binning.bins(grouped)
    # per-sample histograms: (samples, groups, bins)
    offsets = (np.arange(groups) * BINS)[None, None, :]
    index = (bins + offsets).reshape(len(bins), -1) + (np.arange(len(bins)) * groups * BINS)[:, None]
    hist = np.bincount(index.ravel(), minlength=len(bins) * groups * BINS)
    hist = hist.reshape(len(bins), groups, BINS)
    by_group = grouped.transpose(2, 0, 1).reshape(groups, -1)
    quantiles = np.quantile(by_group, QUANTILES, axis=1).T  # (groups, q)
    rate = saturated / float(features)
    limits_rate = binning.at_limits(values) / float(features) if binning.limits else None
    if binning.limits is not None:
        median_float = (quantiles[:, QUANTILES.index(0.5)] - info["zero_point"]) * (info["scale"] or 1.0)
    else:
        median_float = quantiles[:, QUANTILES.index(0.5)]
    entry = {
        "name": info["name"], "shape": info["shape"], "dtype": info["dtype"],
        "scale": _num(info["scale"], 9), "zero_point": info["zero_point"],
        "limits": list(binning.limits) if binning.limits else None,
        "channels": {"axis": -1, "count": groups},
        "quantiles": {"q": list(QUANTILES), "values": [_nums(row) for row in quantiles]},
        "histogram": {**binning.spec(), "counts": hist.sum(axis=0).tolist()},
        "saturation_rate": _num(float(rate.mean())) if binning.limits else None,
        "saturation_per_sample": {"mean": _num(float(rate.mean())), "std": _num(float(rate.std())),
                                  "max": _num(float(rate.max()))} if binning.limits else None,
        # what a device feeding integer data sees: values at the limits, clipped or not
        "at_limits_rate": _num(float(limits_rate.mean())) if binning.limits else None,
        "replacement": _nums(median_float),  # per channel: what a NaN or inf becomes
        "features": None,
    }
    if features <= MAX_FEATURES:
        low, high = flat.min(axis=0), flat.max(axis=0)
        mode = _mode_share(flat)
        entry["features"] = {"count": features, "low": _nums(low), "high": _nums(high),
                             "mode_share": [round(float(v), 4) for v in mode],
                             "stuck_run": _stuck_runs(mode, len(flat), features)}
    return entry, {"hist": hist, "saturation": rate, "at_limits": limits_rate}


def _mode_share(flat: np.ndarray) -> np.ndarray:
    """Per feature (column), the share of samples at its most common value."""
    ordered = np.sort(flat, axis=0)
    shares = np.empty(flat.shape[1])
    for j in range(flat.shape[1]):
        _, counts = np.unique(ordered[:, j], return_counts=True)
        shares[j] = counts.max() / float(len(flat))
    return shares


def _stuck_runs(mode: np.ndarray, samples: int, features: int) -> list:
    """Per feature, how many consecutive equal values mean "stuck": the shortest run that an
    in-distribution feature shows with a chance below STUCK_ALPHA / features per sample, from an
    upper confidence bound on the share of its most common value; None where no run length up to
    1024 is that unlikely (a feature that is nearly always the same value cannot look stuck)."""
    alpha = STUCK_ALPHA / max(features, 1)
    runs = []
    for p in mode:
        upper = p + 3.0 * math.sqrt(p * (1.0 - p) / samples) + 1.0 / samples
        if upper >= 0.999:
            runs.append(None)
            continue
        length = math.ceil(math.log(alpha) / math.log(upper))
        runs.append(length if length <= 1024 else None)
    return runs


def _confidence_profile(model: Model, evaluation, calibration):
    if not model.outputs:
        return None, None
    source = "eval-data" if evaluation is not None else "calibration"
    arrays = evaluation if evaluation is not None else calibration
    info = model.outputs[0]
    classes = int(np.prod(info["shape"][1:], dtype=np.int64)) if len(info["shape"]) > 1 else 1
    if classes < 2:
        return None, None
    raw = []
    for i in range(len(arrays[0])):
        sample = [model.quantize(np.asarray(a[i:i + 1]), k) for k, a in enumerate(arrays)]
        model.reset()  # samples are independent, as in the compiler's evaluation
        outputs, _ = model.run(sample)
        raw.append(dequantize(outputs[0], info).ravel())
    raw = np.stack(raw)
    transform = confidence_transform(raw)
    conf = top_confidence(raw, transform)
    edges = np.linspace(0.0, 1.0, 21)
    counts, _ = np.histogram(conf, bins=edges)
    return {
        "source": source, "output": info["name"], "transform": transform, "samples": len(conf),
        "mean": _num(float(conf.mean())), "std": _num(float(conf.std())),
        "quantiles": {"q": list(QUANTILES), "values": _nums(np.quantile(conf, QUANTILES))},
        "histogram": {"edges": _nums(edges), "counts": counts.tolist()},
    }, conf


def _drift_thresholds(inputs, per_sample, conf, count, rng) -> dict:
    """The window and the thresholds, from windows bootstrapped out of the profile's own samples.

    For each window size (WINDOWS), BOOTSTRAP windows are drawn with replacement from the
    calibration samples (the confidence from the evaluation samples) and each statistic the
    guard computes is measured on them; a threshold is MARGIN times the largest value seen. The
    window is the smallest of at least MIN_WINDOW samples whose PSI threshold resolves
    PSI_TARGET (else the largest). The guard folds its statistics once per window, and a fold
    costs some 300 microseconds in CPython whatever the window (about twenty numpy calls on
    caches that invoke() has just emptied), on top of a few microseconds per sample: on a 0.2 ms
    model such as MLPerf Tiny's KWS fed int8 features, a 64-sample window costs more than 5% of
    invoke time and a 128-sample one less (benchmarks/results/drift.md). Smaller windows keep
    their thresholds here, for a policy that wants detection sooner (`Policy(window=32)`).
    """
    considered, chosen = {}, None
    for window in WINDOWS:
        thresholds = _null_for_window(inputs, per_sample, conf, count, window, rng)
        considered[str(window)] = thresholds
        if chosen is None and window >= MIN_WINDOW and thresholds["psi"] <= PSI_TARGET:
            chosen = window
    chosen = chosen or WINDOWS[-1]
    return {"window": chosen, "thresholds": considered[str(chosen)],
            "windows_considered": considered, "bootstrap": BOOTSTRAP, "margin": MARGIN,
            "psi_target": PSI_TARGET, "stuck_alpha": STUCK_ALPHA,
            "floors": {"confidence_drop": CONFIDENCE_FLOOR, "saturation_increase": SATURATION_FLOOR}}


def _null_for_window(inputs, per_sample, conf, count, window, rng) -> dict:
    draws = rng.integers(0, count, size=(BOOTSTRAP, window))
    worst_psi, worst_sat, worst_limits = 0.0, 0.0, 0.0
    for entry, stats in zip(inputs, per_sample):
        hist = stats["hist"]  # (samples, groups, bins)
        reference = hist.sum(axis=0)
        cells = hist.shape[1] * hist.shape[2]
        step = max(1, int(2e7 // max(window * cells, 1)))  # bound the work on wide inputs
        for start in range(0, BOOTSTRAP, step):
            windows = hist[draws[start:start + step]].sum(axis=1)  # (draws, groups, bins)
            worst_psi = max(worst_psi, float(psi(windows, reference[None]).max()))
        if entry["saturation_rate"] is not None:
            rates = stats["saturation"][draws].mean(axis=1)
            worst_sat = max(worst_sat, float((rates - stats["saturation"].mean()).max()))
            rates = stats["at_limits"][draws].mean(axis=1)
            worst_limits = max(worst_limits, float((rates - stats["at_limits"].mean()).max()))
    result = {"psi": _num(MARGIN * worst_psi),
              "saturation_increase": _num(max(MARGIN * worst_sat, SATURATION_FLOOR)),
              "at_limits_increase": _num(max(MARGIN * worst_limits, SATURATION_FLOOR)),
              "confidence_drop": None}
    if conf is not None:
        picks = rng.integers(0, len(conf), size=(BOOTSTRAP, window))
        drops = conf.mean() - conf[picks].mean(axis=1)
        result["confidence_drop"] = _num(max(MARGIN * float(drops.max()), CONFIDENCE_FLOOR))
    return result
