"""Per-op latency measured by the bench runner, from single-op models.

Method (chosen by measurement, `benchmarks/profile_fidelity.py`): every main-graph op is cut
out as a model of its own (`cut.single_op_model`: its real tensors, quantization and
constants), and the runner that `tflc bench` uses times all of them, the whole model and an
empty model (no operators: the cost of one `invoke()` call itself) in ONE worker process on the
device, interleaved in slices so that drift and heat hit all alike (`one_process` in the
runner's protocol). An op's latency is its model's typical time minus the empty model's.
"Typical" is the lower quartile of the timed runs, not the median: on a shared machine other
processes preempt some runs, and the quartile keeps the sum of ops nearer the whole model (the
benchmark compares both).
Prefix models (ops 0..k, differences of consecutive medians) were measured too: their sum is
the whole model by construction, but each difference carries the noise of two medians of
growing models, and a 300-op model needs 300 ever larger models.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tflc.bench import runner as runner_module
from tflc.bench.transports import DeviceError, Upload, make_transport, parse_device, run_on_device
from tflc.profile import cut

PERCENTILE = 25.0
# Timed runs per op model at most: enough for a steady quartile, and it keeps the runner's
# answer for a 300-op model to a few MB of JSON (uncapped, tiny ops return 10^4 samples each).
MAX_RUNS = 1000


def typical_ms(latencies: list[float], percentile: float = PERCENTILE) -> float:
    """The `percentile` of the timed runs (linear interpolation, as numpy's default)."""
    ordered = sorted(latencies)
    position = (len(ordered) - 1) * percentile / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Timing:
    """What the runner measured: per main-graph op (None where not measurable), the whole."""

    device: str
    whole_ms: float
    empty_ms: float
    op_ms: dict[tuple[int, int], float | None]  # (subgraph, op index) -> ms
    notes: list[str] = field(default_factory=list)
    device_facts: dict = field(default_factory=dict)
    runtime: dict = field(default_factory=dict)


def op_models(data: bytes) -> tuple[dict[str, bytes], dict[str, tuple | None], list[str]]:
    """The whole model, the empty model and one model per op of every subgraph, by upload name
    ("op7" in the main graph, "sg1_op2" elsewhere) -> (subgraph, op index)."""
    model = cut.unpack(data)
    files = {"whole": data}
    empty = cut.empty_model(model)
    if empty is not None:
        files["empty"] = empty
    ids: dict[str, tuple | None] = {"whole": None, "empty": None}
    notes = []
    for s, sg in enumerate(model.subgraphs):
        for index in range(len(sg.operators or [])):
            single = cut.single_op_model(model, s, index)
            name = f"op{index}" if s == 0 else f"sg{s}_op{index}"
            if single is None:
                notes.append(f"op #{index} of subgraph {s} calls other subgraphs: its own time "
                             "is not measured (the called ops are)")
                continue
            files[name] = single
            ids[name] = (s, index)
    return files, ids, notes


def time_models(files: dict[str, bytes], device: str = "local", *, python: str | None = None,
                threads: int | None = 1, runs: int = 100, min_duration_s: float = 0.03,
                timeout_s: float = 600.0, rounds: int = 10, ssh: dict | None = None,
                max_runs: int = MAX_RUNS) -> tuple[dict, dict, list[str]]:
    """Typical latency of each model (None: it did not load), the runner's response, notes.

    All models run in one worker of the bench runner (`one_process`), interleaved. `ssh`:
    make_transport's SSH settings (ssh_config, ssh_options, remote_tmp).
    """
    with tempfile.TemporaryDirectory(prefix="tflc-profile-") as scratch:
        uploads = []
        for name, blob in files.items():
            path = Path(scratch) / f"{name}.tflite"
            path.write_bytes(blob)
            uploads.append(Upload(path, f"{name}.tflite"))
        request = {
            "protocol": runner_module.PROTOCOL, "one_process": True,
            "models": [{"id": name, "path": f"{name}.tflite"} for name in files],
            "runtime": "auto", "threads": threads, "delegate": {"kind": "default"},
            "warmup": 5, "runs": runs, "min_duration_s": min_duration_s, "max_runs": max_runs,
            "repeat": 1, "rounds": rounds, "inputs": {"kind": "random", "seed": 0},
            "eval": None, "return_outputs": False, "busy_load_per_core": 0.5,
        }
        transport = make_transport(device, python, **(ssh or {}))
        response = run_on_device(transport, uploads, request, timeout_s=timeout_s,
                                 deadline=time.monotonic() + timeout_s)
    medians, notes = {}, []
    for entry in response["trials"][0]["models"]:
        if "error" in entry:
            medians[entry["id"]] = None
            notes.append(f"{entry['id']}: {entry['error']['message']}")
        else:
            medians[entry["id"]] = typical_ms(entry["latencies_ms"])
    return medians, response, notes


def measure(model_path: Path, device: str = "local", *, python: str | None = None,
            threads: int | None = 1, runs: int = 100, min_duration_s: float = 0.03,
            timeout_s: float = 600.0, rounds: int = 10, ssh: dict | None = None) -> Timing:
    """Time every op (of every subgraph) and the whole model on `device` (see the docstring)."""
    files, ids, notes = op_models(Path(model_path).read_bytes())
    medians, response, problems = time_models(
        files, device, python=python, threads=threads, runs=runs,
        min_duration_s=min_duration_s, timeout_s=timeout_s, rounds=rounds, ssh=ssh)
    notes.extend(problems)
    if medians.get("whole") is None:
        raise DeviceError("model_load", f"on {parse_device(device).label}: the model itself "
                          "did not load in the runner")
    empty = medians.get("empty") or 0.0
    op_ms = {}
    for key, index in ids.items():
        if index is not None:
            value = medians.get(key)
            op_ms[index] = None if value is None else max(value - empty, 0.0)
    notes.extend(response.get("warnings") or [])
    return Timing(parse_device(device).label, medians["whole"], empty, op_ms, notes,
                  response.get("device") or {}, response.get("runtime") or {})
