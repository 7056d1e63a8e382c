"""`profile()`: where a model's time, memory and energy go, op by op, on one target.

One entry function taking plain data (`ProfileOptions`) and returning a `ProfileResult` whose
`to_dict()` is the documented JSON. The pieces: counts (`counts.py`), placement (`tflc.check`),
the arena timeline (`tflc.tflite.planner`), latency measured by the bench runner
(`measure.py`) or estimated (vela for Ethos-U, `cyclemodel.py` for Cortex-M), energy
(`energy.py`), and the bottlenecks (`bottlenecks.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tflc.errors import BadInput
from tflc.profile import counts, cyclemodel, energy
from tflc.tflite.reader import ModelView, read_model


@dataclass
class ProfileOptions:
    """Everything `tflc profile` takes; `device` None means: measure here for CPU targets,
    estimate for MCU and NPU targets (a device given always measures there)."""

    model: str
    target: str
    device: str | None = None
    python: str | None = None
    threads: int | None = 1
    runs: int = 100
    min_duration_s: float = 0.03
    rate: float | None = None
    battery: str | None = None
    timeout_s: float = 600.0
    ssh_config: str | None = None
    ssh_options: tuple = ()
    remote_tmp: str | None = None

    def __post_init__(self):
        if self.rate is not None and not (0 < self.rate <= 1e6):
            raise BadInput(f"--rate {self.rate}: inferences per second must be above 0")
        if self.battery is not None:
            energy.parse_battery(self.battery)
        if not (1 <= int(self.runs) <= 10**6):
            raise BadInput(f"--runs {self.runs}: use 1 to 1000000")


@dataclass
class OpProfile:
    index: int
    subgraph: int
    op: str
    placement: str
    macs: int
    param_bytes: int
    input_bytes: int
    output_bytes: int
    arena_live_bytes: int | None
    latency_ms: float | None
    cycles: int | None
    energy_uj: float | None


@dataclass
class ProfileTotal:
    macs: int
    latency_ms: float | None
    sum_op_latency_ms: float | None
    peak_arena_bytes: int | None
    energy_mj_per_inference: float | None
    battery_life_h: float | None


@dataclass
class ProfileDetails:
    """What the table and HTML show beyond the JSON schema (not part of `to_dict()`)."""

    method: str = ""
    latency_source: str = ""
    notes: list[str] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)  # per main op: used/live arena bytes
    arena_limited_by: str | None = None
    invoke_overhead_ms: float | None = None
    power: dict | None = None
    average_power_w: float | None = None
    duty: str | None = None
    bottlenecks: dict = field(default_factory=dict)
    vela: dict[int, dict] = field(default_factory=dict)


@dataclass
class ProfileResult:
    model: str
    target: str
    device: str
    ops: list[OpProfile]
    total: ProfileTotal
    details: ProfileDetails = field(default_factory=ProfileDetails)
    artifact_id: str | None = None  # set when `tflc profile` recorded it in the run registry

    def to_dict(self) -> dict:
        """Exactly the documented JSON: model, target, device, ops, total."""
        return {"model": self.model, "target": self.target, "device": self.device,
                "ops": [asdict(op) for op in self.ops], "total": asdict(self.total)}

    @property
    def method_error(self) -> float | None:
        """Sum of per-op latencies against the whole model, as a relative error."""
        whole, parts = self.total.latency_ms, self.total.sum_op_latency_ms
        return None if not whole or parts is None else parts / whole - 1.0


def _timeline(view: ModelView) -> tuple[list[dict], int | None, str | None, str | None]:
    """Per main-graph op: arena bytes in use (planned high water + persistent tail) and live."""
    from tflc.tflite.planner import _Lifetimes, plan_or_note

    plan, note = plan_or_note(view)
    if plan is None:
        return [], None, None, note
    marks = _Lifetimes(view)
    marks.mark(0)
    rows = []
    for op in view.main.operators:
        first, last = marks.op_scopes.get((0, op.index), (op.index + 1, op.index + 1))
        live = [b for b in plan.buffers if b.first_used <= last and b.last_used >= first]
        high = max((b.offset + b.size for b in live), default=0)
        rows.append({"index": op.index, "op": op.op,
                     "used_bytes": high + plan.persistent_bytes,
                     "live_bytes": sum(b.size for b in live),
                     "tensors": [(b.name, b.size) for b in live]})
    return rows, plan.arena_bytes, plan.limited_by, None


def _estimate_mcu(rows: list[OpProfile], clock_mhz: float, only=None) -> None:
    for row in rows:
        if row.placement == "none" or (only is not None and row.placement != only):
            continue
        cycles = cyclemodel.op_cycles(row.op, row.macs, row.output_bytes)
        row.cycles = int(round(cycles))
        row.latency_ms = _round(cycles / (clock_mhz * 1e3))


def _apply_vela(rows, path: Path, spec, details: ProfileDetails, view) -> str:
    from tflc.profile import vela

    accelerator = vela.accelerator_of(getattr(spec.runtime, "version", ""), spec.name)
    try:
        vela_rows, system = vela.run_vela(path, accelerator)
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        details.notes.append(f"no vela figures: {exc}")
        return "vela unavailable"
    joined = vela.join(view, vela_rows)
    details.vela = joined
    clock = float(spec.device.clock_mhz or 0)
    for row in rows:
        if row.subgraph != 0 or row.placement != "target":
            continue
        figures = joined.get(row.index)
        row.cycles = figures["cycles"] if figures else 0
        if figures is None:
            details.notes.append(f"op #{row.index} {row.op}: no NPU operation in vela's plan "
                                 "(removed as a view of its input): 0 cycles")
        row.latency_ms = _round(row.cycles / (clock * 1e3)) if clock else None
    return f"vela {accelerator}, {system}, cycles at the descriptor's {clock:g} MHz (estimate)"


def _measure(rows, options: ProfileOptions, details: ProfileDetails) -> tuple[str, float]:
    from tflc.profile.measure import measure

    timing = measure(Path(options.model), options.device or "local", python=options.python,
                     threads=options.threads, runs=options.runs,
                     min_duration_s=options.min_duration_s, timeout_s=options.timeout_s,
                     ssh={"ssh_config": options.ssh_config,
                          "ssh_options": tuple(options.ssh_options),
                          "remote_tmp": options.remote_tmp})
    for row in rows:
        row.latency_ms = _round(timing.op_ms.get((row.subgraph, row.index)))
    if any(row.subgraph for row in rows):
        details.notes.append("ops of called subgraphs are timed per call and left out of the "
                             "sum of ops, which covers the main graph")
    details.invoke_overhead_ms = timing.empty_ms
    details.notes.extend(timing.notes)
    runtime = timing.runtime or {}
    details.method = ("measured: single-op models cut from the flatbuffer, timed by the bench "
                      f"runner in one process ({runtime.get('name')} {runtime.get('version')}, "
                      f"threads {options.threads}), lower quartile of each op's runs minus an "
                      f"empty model's invoke() time ({timing.empty_ms * 1e3:.2f} us)")
    return timing.device, timing.whole_ms


def profile(options: ProfileOptions) -> ProfileResult:
    """Profile one model on one target; see the module docstring."""
    from tflc.check import load_target
    from tflc.profile.bottlenecks import bottlenecks

    path = Path(options.model)
    view = read_model(path)
    spec = load_target(options.target)
    rows = _counted_rows(view, spec)
    details = ProfileDetails()
    arena = _arena(view, rows, details)
    device, whole = _latency(rows, path, view, spec, options, details)
    timed = [r.latency_ms for r in rows if r.latency_ms is not None and r.subgraph == 0]
    total_sum = sum(timed) if timed else None
    whole = total_sum if whole is None else whole
    _energy(rows, spec, options, details, whole)
    total = ProfileTotal(
        macs=sum(r.macs for r in rows), latency_ms=_round(whole),
        sum_op_latency_ms=_round(total_sum), peak_arena_bytes=arena,
        energy_mj_per_inference=None, battery_life_h=None)
    _energy_totals(total, options, details, whole)
    result = ProfileResult(str(options.model), spec.name, device, rows, total, details)
    details.bottlenecks = bottlenecks(result, view)
    return result


def _counted_rows(view: ModelView, spec) -> list[OpProfile]:
    """One row per op with its placement (tflc check's verdict) and its counts."""
    from tflc.check import check_model

    verdicts = {(v.subgraph, v.index): v.placement for v in check_model(view, spec).ops}
    return [OpProfile(placement=verdicts.get((c["subgraph"], c["index"]), "cpu"),
                      arena_live_bytes=None, latency_ms=None, cycles=None, energy_uj=None, **c)
            for c in counts.count_ops(view)]


def _arena(view: ModelView, rows: list[OpProfile], details: ProfileDetails) -> int | None:
    """Fill the timeline and each main-graph op's live bytes; return the planner's arena."""
    timeline, arena, limited_by, note = _timeline(view)
    details.timeline, details.arena_limited_by = timeline, limited_by
    if note:
        details.notes.append(note)
    for point in timeline:
        rows[point["index"]].arena_live_bytes = point["live_bytes"]
    return arena


def _latency(rows, path: Path, view, spec, options: ProfileOptions, details: ProfileDetails):
    """(where the figures come from, the whole model's measured ms or None for estimates).

    A device given always measures there; without one, MCU targets get the cycle model, NPU
    targets vela (their CPU ops the cycle model at the fallback core's clock), others are
    measured on this machine.
    """
    from tflc.check import load_target

    whole = None
    clock = float(getattr(spec.device, "clock_mhz", 0) or 0)
    if options.device is None and spec.kind == "mcu":
        _estimate_mcu(rows, clock or cyclemodel.CLOCK_MHZ)
        device = f"{spec.name} cycle model (estimate)"
        details.method = cyclemodel.describe()
    elif options.device is None and spec.kind == "npu":
        device = _apply_vela(rows, path, spec, details, view)
        fallback_name = getattr(spec.partitioning, "fallback", None)
        fallback = spec if fallback_name in (None, "none", "cpu") else load_target(fallback_name)
        _estimate_mcu(rows, float(fallback.device.clock_mhz or clock or 1), only="cpu")
        details.method = f"NPU ops: {device}; ops left on the CPU: {cyclemodel.describe()}"
    else:
        device, whole = _measure(rows, options, details)
        if spec.kind != "cpu":
            details.notes.append(f"measured with LiteRT on {device}, not on {spec.name}'s own "
                                 "hardware")
    details.latency_source = device
    return device, whole


def _energy_totals(total: ProfileTotal, options, details: ProfileDetails, whole) -> None:
    """Energy per inference and battery life, where the descriptor gives an active power."""
    active = (details.power or {}).get("active_w")
    if active is None or whole is None:
        return
    total.energy_mj_per_inference = _round(whole * active)
    battery = energy.parse_battery(options.battery) if options.battery else None
    total.battery_life_h = _round(energy.battery_life_h(battery, details.average_power_w))


def _energy(rows, spec, options, details: ProfileDetails, whole) -> None:
    """Per-op energy (latency x active power) and the average power at `--rate`."""
    power = energy.power_of(spec)
    details.power = asdict(power)
    if power.active_w is None:
        details.notes.append(f"target {spec.name} gives no power figure: no energy estimate")
        return
    for row in rows:
        if row.latency_ms is not None:
            row.energy_uj = _round(row.latency_ms * power.active_w * 1000.0)
    if whole is not None:
        details.average_power_w, details.duty = energy.average_power_w(power, whole, options.rate)


def _round(value, digits: int = 6):
    return None if value is None else round(float(value), digits)


def profile_models(models, target: str, output=None, **settings) -> list[ProfileResult]:
    """Profile several models on one target (`tflc profile a.tflite b.tflite`).

    Every model and the target are read before anything is measured, and `output`'s folder is
    checked, so a typo fails fast with exit 2.
    """
    from tflc.bench.session import check_output_path
    from tflc.check import load_target

    if not models:
        raise BadInput("no model given; name one or more .tflite files")
    if output is not None:
        check_output_path(output)
    load_target(target)
    for model in models:
        read_model(model)
    return [profile(ProfileOptions(model=str(model), target=target, **settings))
            for model in models]


def render(results: list[ProfileResult], fmt: str) -> str:
    """The chosen format as text: table (side by side for several), json or html."""
    import json

    from tflc.profile import html, report

    if fmt == "json":
        data = results[0].to_dict() if len(results) == 1 else [r.to_dict() for r in results]
        return json.dumps(data, indent=2) + "\n"
    if fmt == "html":
        return html.to_html(results)
    texts = [report.to_text(r) for r in results]
    if len(results) > 1:
        texts.append(report.compare_text(results))
    return "\n\n".join(texts) + "\n"
