"""Putting figures side by side: models against the first one, and the device against the host.

`summarize_models` pools each model's trials into one summary with ratios to the first model
(the baseline the user named first, usually the float model); `render_table` prints them.
`fidelity` compares what the model computed on the device with what LiteRT computes for the
same samples on this machine: top-1 accuracy against the labels, and agreement with the host,
which shows that the deployed model behaves like the compiled one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from tflc.bench.stats import LatencyStats, spread, summarize


@dataclass
class ModelSummary:
    """One model over all its trials (every timed inference pooled)."""

    model: str
    model_name: str
    latency_ms: LatencyStats
    p50_spread: dict | None  # how the trials' medians moved: the run-to-run spread
    load_ms: float
    first_inference_ms: float
    peak_rss_bytes: int | None
    energy_mj_per_inference: float | None
    fidelity: dict | None
    input_saturation: list | None
    ratios: dict = field(default_factory=dict)  # figure -> this model / the first model

    def to_dict(self) -> dict:
        data = asdict(self)
        data["latency_ms"] = self.latency_ms.to_dict()
        return data


# The figures the table shows and the ratios cover: (label, unit, getter).
FIGURES = (
    ("p50", "ms", lambda s: s.latency_ms.p50),
    ("mean", "ms", lambda s: s.latency_ms.mean),
    ("std", "ms", lambda s: s.latency_ms.std),
    ("p90", "ms", lambda s: s.latency_ms.p90),
    ("p99", "ms", lambda s: s.latency_ms.p99),
    ("min", "ms", lambda s: s.latency_ms.min),
    ("max", "ms", lambda s: s.latency_ms.max),
    ("load", "ms", lambda s: s.load_ms),
    ("first inference", "ms", lambda s: s.first_inference_ms),
    ("peak RSS", "MiB", lambda s: s.peak_rss_bytes / 2**20 if s.peak_rss_bytes else None),
    ("energy (estimate)", "mJ", lambda s: s.energy_mj_per_inference),
)
RATIO_FIGURES = ("p50", "mean", "p99", "load", "first inference", "peak RSS", "energy (estimate)")


def summarize_models(records: list) -> list[ModelSummary]:
    """Pool each model's trial records (in the order the models were given)."""
    order: list[str] = []
    by_model: dict[str, list] = {}
    for record in records:
        if record.model_key not in by_model:
            order.append(record.model_key)
            by_model[record.model_key] = []
        by_model[record.model_key].append(record)
    summaries = []
    for key in order:
        trials = by_model[key]
        first = trials[0]
        pooled = summarize([v for record in trials for v in record.samples_ms])
        energies = [r.energy["mj_per_inference"] for r in trials if r.energy]
        peaks = [r.peak_rss_bytes for r in trials if r.peak_rss_bytes]
        summaries.append(ModelSummary(
            model=first.model, model_name=first.model_name, latency_ms=pooled,
            p50_spread=spread([r.latency_ms.p50 for r in trials]),
            load_ms=float(np.median([r.load_ms for r in trials])),
            first_inference_ms=float(np.median([r.first_inference_ms for r in trials])),
            peak_rss_bytes=max(peaks) if peaks else None,
            energy_mj_per_inference=float(np.mean(energies)) if energies else None,
            fidelity=first.fidelity, input_saturation=first.input_saturation,
        ))
    baseline = summaries[0] if summaries else None
    for summary in summaries:
        for label, _unit, get in FIGURES:
            if label not in RATIO_FIGURES:
                continue
            mine, base = get(summary), get(baseline)
            summary.ratios[label] = (mine / base) if mine is not None and base else None
    return summaries


def _cell(value, ratio=None, digits=3) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return f"{text} ({ratio:.2f}x)" if ratio is not None else text


def render_table(result) -> str:
    """Figures as rows, models as columns, ratios to the first model in brackets."""
    summaries = result.models
    header = ["", *[s.model_name for s in summaries]]
    rows = [header]
    for label, unit, get in FIGURES:
        values = [get(s) for s in summaries]
        if all(v is None for v in values):
            continue
        cells = []
        for index, (summary, value) in enumerate(zip(summaries, values, strict=True)):
            ratio = summary.ratios.get(label) if index and label in RATIO_FIGURES else None
            cells.append(_cell(value, ratio))
        rows.append([f"{label} [{unit}]", *cells])
    rows.append(["runs", *[str(s.latency_ms.count) for s in summaries]])
    if any(s.p50_spread for s in summaries):
        rows.append(["p50 spread over trials", *[
            f"{s.p50_spread['cv_percent']:.1f}% cv" if s.p50_spread and s.p50_spread["cv_percent"]
            is not None else "-" for s in summaries]])
    if any(s.latency_ms.p50_ci95 for s in summaries):
        rows.append(["p50 95% interval [ms]", *[
            "{:.4g}-{:.4g}".format(*s.latency_ms.p50_ci95) if s.latency_ms.p50_ci95 else "-"
            for s in summaries]])
    if any(s.fidelity for s in summaries):
        for key, label in (("top1_accuracy", "top-1 accuracy"),
                           ("agreement", "agreement with host"),
                           ("max_abs_output_diff", "max |output - host|")):
            rows.append([label, *[_cell((s.fidelity or {}).get(key)) for s in summaries]])
    if any(s.input_saturation for s in summaries):
        rows.append(["inputs saturated", *[
            ", ".join(f"{e['input']} {100 * e['saturated_fraction']:.2f}%"
                      for e in s.input_saturation if e.get("saturated_fraction") is not None)
            or "-" if s.input_saturation else "-" for s in summaries]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    facts = result.device_facts
    runtime = result.runtime or {}
    head = (f"device {result.device}: {facts.get('board') or facts.get('cpu_model') or '?'}, "
            f"{facts.get('arch')}, {facts.get('cores')} cores, {runtime.get('name')} "
            f"{runtime.get('version')}, threads {result.settings.get('threads') or 'default'}")
    notes = [f"warning: {text}" for text in result.warnings]
    if any(s.energy_mj_per_inference is not None for s in summaries):
        notes.append(f"energy is an estimate: the active power of target {result.target} times "
                     "the mean latency")
    return "\n".join([head, *lines, *notes])


def _labels(y) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    return y.argmax(axis=-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(len(y))


def fidelity(device_eval: dict, host_eval: dict | None, labels, host_runtime: dict | None) -> dict:
    """Device against host on the same samples: accuracy, top-1 agreement, output difference.

    `host_eval` is None when this machine cannot run the model (say, one compiled for a Coral
    Edge TPU); the device's accuracy is still reported, the comparison figures are None.
    """
    count = int(device_eval["count"])
    result = {
        "samples": count,
        "host_runtime": host_runtime,
        "output": device_eval["output"]["name"],
        "output_dtype": device_eval["output"]["dtype"],
        "identical_outputs": None, "max_abs_output_diff": None,
        "top1_accuracy": None, "host_top1_accuracy": None, "agreement": None,
    }
    truth = _labels(labels)
    if truth is not None and len(truth) != count:
        truth = None
    device_top1 = np.asarray(device_eval["top1"]) if device_eval.get("top1") is not None else None
    if device_top1 is not None and truth is not None:
        result["top1_accuracy"] = float(np.mean(device_top1 == truth))
    if host_eval is None:
        return result
    device_values = np.asarray(device_eval["output"]["values"], dtype=np.float64)
    host_values = np.asarray(host_eval["output"]["values"], dtype=np.float64)
    result["identical_outputs"] = float(np.mean(np.all(device_values == host_values, axis=1)))
    result["max_abs_output_diff"] = float(np.max(np.abs(device_values - host_values)))
    if device_top1 is not None and host_eval.get("top1") is not None:
        host_top1 = np.asarray(host_eval["top1"])
        result["agreement"] = float(np.mean(device_top1 == host_top1))
        if truth is not None:
            result["host_top1_accuracy"] = float(np.mean(host_top1 == truth))
    return result


def _device_line(result) -> str:
    """`board or CPU, arch, cores, runtime version, threads`, as the single-device table says."""
    facts, runtime = result.device_facts, result.runtime or {}
    emulated = " (emulated)" if (facts.get("emulation") or {}).get("emulated") else ""
    return (f"{facts.get('board') or facts.get('cpu_model') or '?'}, {facts.get('arch')}"
            f"{emulated}, {facts.get('cores')} cores, python {facts.get('python')}, "
            f"{runtime.get('name')} {runtime.get('version')}")


def render_fleet_table(fleet) -> str:
    """One table for several devices: figures as rows, a column per device (per device and
    model with several models; ratios to the first model on the same device). A device that
    failed keeps its column, marked failed, and its reason is printed below the table."""
    outcomes = fleet.devices
    names = [f"D{i + 1}" for i in range(len(outcomes))]
    columns = []  # (device short name, outcome, summary or None)
    for name, outcome in zip(names, outcomes, strict=True):
        summaries = outcome.result.models if outcome.ok else [None]
        columns.extend((name, outcome, summary) for summary in summaries)
    several = any(outcome.ok and len(outcome.result.models) > 1 for outcome in outcomes)
    header = ["", *[name + (f" {s.model_name}" if several and s else "") for name, _o, s in columns]]
    rows = [header, ["status", *["ok" if o.ok else f"failed ({o.error.kind})"
                                 for _n, o, _s in columns]]]
    for label, unit, get in FIGURES:
        values = [get(s) if s else None for _n, _o, s in columns]
        if all(v is None for v in values):
            continue
        cells = []
        for (_name, outcome, summary), value in zip(columns, values, strict=True):
            first = summary is None or summary is outcome.result.models[0]
            ratio = None if first or label not in RATIO_FIGURES else summary.ratios.get(label)
            cells.append(_cell(value, ratio))
        rows.append([f"{label} [{unit}]", *cells])
    rows.append(["runs", *[str(s.latency_ms.count) if s else "-" for _n, _o, s in columns]])
    if any(s and s.fidelity for _n, _o, s in columns):
        for key, label in (("top1_accuracy", "top-1 accuracy"),
                           ("agreement", "agreement with host"),
                           ("max_abs_output_diff", "max |output - host|")):
            rows.append([label, *[_cell((s.fidelity or {}).get(key)) if s else "-"
                                  for _n, _o, s in columns]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    head = [f"{name} {outcome.device}: " + (_device_line(outcome.result) if outcome.ok
                                            else "failed")
            for name, outcome in zip(names, outcomes, strict=True)]
    notes = []
    for name, outcome in zip(names, outcomes, strict=True):
        if not outcome.ok:
            notes.append(f"error: {name} {outcome.device}: {outcome.error.message}")
            continue
        notes.extend(f"warning: {name}: {text}" for text in outcome.result.warnings)
    return "\n".join([*head, *lines, *notes])
