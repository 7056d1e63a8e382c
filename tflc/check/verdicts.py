"""`check_model`: per-operator verdicts for a .tflite model on one target.

The stages, in order: read the flatbuffer (no TensorFlow), decide for every operator whether
the target can run it (op list, version range, dtypes, named constraints), split the graph the
way the target's runtime does (`partition`), send what is left to the fallback (the CPU, another
target such as the Cortex-M55 behind an Ethos-U55, or nowhere), weigh memory against the target's
budgets, and suggest rewrites (`advice`). The result is a `CheckResult` whose `to_dict()` is the
documented JSON of `tflc check --format json`:

    {"model": str, "target": str, "runtime": str, "fallback": str,
     "ops": [{"index": int, "subgraph": int, "op": str, "version": int,
              "placement": "target" | "cpu" | "none", "reasons": [str], "cut_by": int | null}],
     "summary": {"ops_total": int, "ops_on_target": int, "coverage": float, "segments": int,
                 "runs": bool, "operators": [{"op", "count", "status"}],
                 "memory": {...}, "within_budget": bool, "io_issues": [str]},
     "advice": [{"ops": [int], "text": str}],
     "artifact_id": str | null}

`index` is the operator's position in its subgraph's operator list (subgraph 0 is the model's
main graph). Placement "none" means neither the target nor its fallback can run the op, so the
model does not run at all there (an op missing from TFLite Micro, for example).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field

from tflc.check import constraints as library
from tflc.check.advice import Advice, advise
from tflc.check.budget import BudgetLine, budget_lines
from tflc.check.normalize import NormalizedGraph, normalize, producer_support
from tflc.check.partition import place_model
from tflc.check.spec import DtypePolicy, TargetSpec, load_target
from tflc.errors import BadInput
from tflc.tflite.planner import plan_or_note
from tflc.tflite.reader import ModelView, read_model
from tflc.tflite.validate import JUDGES, waived_note

PLACEMENTS = ("target", "cpu", "none")


@dataclass
class Reason:
    """Why an op is not on the target: the sentence, and what kind of rule produced it."""

    code: str  # "unsupported_op", "version", "dtype", "partition", "fallback", or a constraint name
    text: str


@dataclass
class OpVerdict:
    index: int
    subgraph: int
    op: str
    version: int
    placement: str
    reasons: list[Reason] = field(default_factory=list)
    cut_by: int | None = None

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "subgraph": self.subgraph,
            "op": self.op,
            "version": self.version,
            "placement": self.placement,
            "reasons": [r.text for r in self.reasons],
            "cut_by": self.cut_by,
        }


@dataclass
class MemoryReport:
    model_bytes: int
    parameter_bytes: int
    parameter_bytes_on_target: int
    peak_activation_bytes: int | None
    arena_bytes: int | None
    budgets: list[BudgetLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def within_budget(self) -> bool:
        return all(b.ok for b in self.budgets)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["budgets"] = [b.to_dict() for b in self.budgets]
        data["within_budget"] = self.within_budget
        return data


@dataclass
class CheckResult:
    model: str
    target: str
    target_title: str
    runtime: str
    fallback: str
    ops: list[OpVerdict]
    segments: int
    memory: MemoryReport
    advice: list[Advice] = field(default_factory=list)
    io_issues: list[str] = field(default_factory=list)  # model inputs/outputs of a refused dtype
    notes: list[str] = field(default_factory=list)  # about the file itself (rules waived by the judge)
    # a model compiled ahead of time (tflc compile --aot): its SoC and dispatch ops (tflc.aot)
    compiled: dict | None = None
    artifact_id: str | None = None  # set when `tflc check` recorded it in the run registry

    @property
    def ops_total(self) -> int:
        return len(self.ops)

    @property
    def ops_on_target(self) -> int:
        return sum(1 for v in self.ops if v.placement == "target")

    @property
    def coverage(self) -> float:
        return self.ops_on_target / self.ops_total if self.ops_total else 1.0

    @property
    def runs(self) -> bool:
        """False when some op can run neither on the target nor on its fallback."""
        return all(v.placement != "none" for v in self.ops)

    @property
    def fully_on_target(self) -> bool:
        return self.ops_on_target == self.ops_total

    def passed(self, min_coverage: float | None = None) -> bool:
        """The exit-code-0 condition: fully on target and within budget (or coverage met)."""
        if not self.runs or not self.memory.within_budget or self.io_issues:
            return False
        if min_coverage is not None:
            return self.coverage >= min_coverage
        return self.fully_on_target

    def exit_code(self, min_coverage: float | None = None) -> int:
        return 0 if self.passed(min_coverage) else 3

    def operator_table(self) -> list[dict]:
        """edgetpu_compiler-style rows: operator, count, status (one row per op and status)."""
        counts = Counter((v.op, _status(v, self.target)) for v in self.ops)
        return [{"op": op, "count": n, "status": status} for (op, status), n in counts.items()]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "target": self.target,
            "runtime": self.runtime,
            "fallback": self.fallback,
            "ops": [v.to_dict() for v in self.ops],
            "summary": {
                "ops_total": self.ops_total,
                "ops_on_target": self.ops_on_target,
                "coverage": round(self.coverage, 4),
                "segments": self.segments,
                "runs": self.runs,
                "operators": self.operator_table(),
                "memory": self.memory.to_dict(),
                "within_budget": self.memory.within_budget,
                "io_issues": self.io_issues,
            },
            "advice": [a.to_dict() for a in self.advice],
            "notes": self.notes,
            **({"compiled": self.compiled} if self.compiled else {}),
            "artifact_id": self.artifact_id,
        }

    def to_text(self) -> str:
        from tflc.check.table import render_table

        return render_table(self)


def _status(v: OpVerdict, target: str) -> str:
    if v.placement == "target":
        return f"Mapped to {target}"
    codes = {r.code for r in v.reasons}
    if v.placement == "none" and codes <= {"partition", "fallback"}:
        return "Supported, but cannot run: the model holds an op that cannot"
    if v.placement == "none":
        return "Cannot run: no fallback supports it"
    if codes <= {"partition"}:
        return "Supported, but falls back because of partitioning"
    if "unsupported_op" in codes:
        return "Operation not supported"
    if "version" in codes:
        return "Operation version not supported"
    if "dtype" in codes:
        return "Operation is working on an unsupported data type"
    return "Operation constraint not met"


# ------------------------------------------------------------------------------- the check


def judge_of(spec: TargetSpec) -> str:
    """The runtime whose file-format rules decide whether the model can be read at all.

    A microcontroller target is judged by TFLite Micro, whose reader is laxer than LiteRT's in
    places (a quantized dimension outside a tensor's shape is harmless there): a model TFLite
    Micro runs is checked, not refused for a rule only LiteRT has. Every other target: LiteRT.
    """
    return spec.runtime.name if spec.runtime.name in JUDGES else "litert"


def check_model(model: str | os.PathLike | bytes | ModelView, target: str | os.PathLike | TargetSpec,
                ) -> CheckResult:
    """Check a .tflite model (path, bytes or ModelView) against a target (name, path, spec).

    Raises BadInput for an unreadable model or a bad descriptor; never imports TensorFlow.
    """
    spec = load_target(target)
    view = model if isinstance(model, ModelView) else read_model(model, judge=judge_of(spec))
    fallback = _fallback_spec(spec)
    verdicts: list[OpVerdict] = []
    segments = 0
    on_target_params: set[int] = set()
    graphs = [normalize(spec.normalize, sg) for sg in view.subgraphs]
    reasons_of, held_by = [], []
    for graph in graphs:
        reasons, held = _reasons_after_normalization(spec, view, graph)
        reasons_of.append(reasons)
        held_by.append(held)
    placements = place_model([g.subgraph for g in graphs],
                             [{i: not r for i, r in reasons.items()} for reasons in reasons_of],
                             spec.partitioning, spec.name)
    for sg, reasons, held, placement in zip(view.subgraphs, reasons_of, held_by, placements):
        segments += len(placement.segments)
        for op in sg.operators:
            verdict = OpVerdict(op.index, sg.index, op.op, op.version, "target",
                                list(reasons[op.index]), held.get(op.index))
            if op.index in placement.moved:
                text, cause = placement.moved[op.index]
                verdict.reasons.append(Reason("partition", text))
                verdict.cut_by = cause
            if op.index in placement.on_target:
                for t in op.inputs:
                    if t >= 0 and sg.tensors[t].is_constant:
                        on_target_params.add((sg.index, sg.tensors[t].buffer))
            else:
                _fall_back(verdict, spec, fallback, library.OpContext(view, sg, op))
            verdicts.append(verdict)
    memory = _memory(view, spec, on_target_params)
    result = CheckResult(
        model=view.path or "<bytes>",
        target=spec.name,
        target_title=spec.title,
        runtime=str(spec.runtime),
        fallback=spec.partitioning.fallback,
        ops=verdicts,
        segments=segments,
        memory=memory,
        io_issues=_io_issues(view, spec),
    )
    if view.waived:
        result.notes.append(waived_note(view.waived))
    from tflc.aot import precompiled

    result.compiled = precompiled(view)
    result.advice = advise(result, view, spec)
    return result


def _reasons_after_normalization(spec: TargetSpec, view: ModelView, graph: NormalizedGraph,
                                 ) -> tuple[dict[int, list[Reason]], dict[int, int]]:
    """Every op's reasons on the graph as the runtime normalizes it.

    Ordinary ops are judged with the outputs of static-weight producers counted as constants;
    a producer follows its consumers (see `tflc.check.normalize`). Returns the reasons per op
    and, for producers held on the CPU by a consumer, that consumer's index.
    """
    sg = graph.subgraph
    reasons = {op.index: op_reasons(spec, library.OpContext(view, sg, op, graph.static_tensors))
               for op in sg.operators if op.index not in graph.producers}
    held: dict[int, int] = {}
    supported = {i: not r for i, r in reasons.items()}
    for index, (taken, consumer) in producer_support(graph, supported).items():
        reasons[index] = []
        if taken:
            continue
        if consumer is None:
            text = (f"static weights: {spec.name} takes this unpacking op only when it takes "
                    "every other op of the graph; it runs on the CPU")
        else:
            held[index] = consumer
            text = (f"static weights for op #{consumer} ({sg.operators[consumer].op}), which "
                    f"{spec.name} does not run: they are unpacked on the CPU")
        reasons[index].append(Reason("partition", text))
    return reasons, held


def _io_issues(view: ModelView, spec: TargetSpec) -> list[str]:
    """Model inputs and outputs whose dtype the target's runtime does not accept at its edges."""
    allowed = spec.dtypes.io
    if not allowed:
        return []
    issues = []
    for role, tensors in (("input", view.input_tensors()), ("output", view.output_tensors())):
        for t in tensors:
            if t.dtype not in allowed:
                issues.append(f"model {role} {library.shown_name(t)} is {t.dtype}; {spec.name} "
                              f"takes {', '.join(allowed)} (convert with --io-type {allowed[0]})")
    return issues


def _fallback_spec(spec: TargetSpec) -> TargetSpec | None:
    name = spec.partitioning.fallback
    if name in ("cpu", "none"):
        return None
    base = os.path.dirname(spec.path) if spec.path else None
    candidate = os.path.join(base, f"{name}.yaml") if base else None
    fallback = load_target(candidate if candidate and os.path.isfile(candidate) else name)
    if fallback.name == spec.name:
        raise BadInput(f"{spec.path}: field 'partitioning.fallback' names the target itself")
    return fallback


def _fall_back(verdict: OpVerdict, spec: TargetSpec, fallback: TargetSpec | None,
               ctx: library.OpContext) -> None:
    """Place an op the target does not run: on the CPU, on the fallback target, or nowhere."""
    if spec.partitioning.fallback == "none":
        verdict.placement = "none"
        own = any(r.code != "partition" for r in verdict.reasons)
        verdict.reasons.append(Reason("fallback", (
            f"{spec.name} has no fallback: the model does not run while this op is in it" if own
            else f"{spec.name} has no fallback, so this op does not run either")))
        return
    if fallback is None:
        verdict.placement = "cpu"
        return
    failures = op_reasons(fallback, ctx)
    if failures:
        verdict.placement = "none"
        verdict.reasons.append(Reason(
            "fallback",
            f"the fallback {fallback.name} cannot run it either: " + "; ".join(r.text for r in failures),
        ))
    else:
        verdict.placement = "cpu"


def op_reasons(spec: TargetSpec, ctx: library.OpContext) -> list[Reason]:
    """Every reason `spec` cannot run this operator; an empty list means it can."""
    op = ctx.op
    rule = spec.ops.get(op.op)
    if rule is None:
        what = f"custom op '{op.custom_code}'" if op.is_custom else op.op
        return [Reason("unsupported_op", f"{what} is not supported by {spec.name}")]
    reasons = []
    if rule.versions and not rule.versions[0] <= op.version <= rule.versions[1]:
        lo, hi = rule.versions
        reasons.append(Reason(
            "version",
            f"{op.op} version {op.version} is not supported by {spec.runtime} "
            f"(versions {lo} to {hi})",
        ))
    reasons.extend(_dtype_reasons(spec, rule.dtypes, ctx))
    for ref in (*spec.constraints, *rule.constraints):
        message = library.evaluate(ref.name, ref.params, ctx)
        if message:
            reasons.append(Reason(ref.name, message))
    return reasons


def _dtype_reasons(spec: TargetSpec, override: DtypePolicy | None, ctx: library.OpContext) -> list[Reason]:
    policy = spec.dtypes
    activations = (override.activations if override and override.activations else policy.activations)
    weights = (override.weights if override and override.weights else policy.weights)
    bias = (override.bias if override and override.bias else policy.bias)
    weight_t, bias_t = library.weights_of(ctx), library.bias_of(ctx)
    reasons = []
    for t in ctx.inputs + ctx.outputs:
        if t is None:
            continue
        if t is weight_t or (weight_t is not None and t.index == weight_t.index):
            allowed, role = weights, "weights"
        elif bias_t is not None and t.index == bias_t.index:
            allowed, role = bias, "bias"
        elif t.is_constant:
            continue  # shapes, axes, paddings: checked by constraints where it matters
        else:
            allowed, role = activations, "tensor"
        if allowed and t.dtype not in allowed:
            reasons.append(Reason(
                "dtype",
                f"{role} {library.shown_name(t)} is {t.dtype}; {spec.name} runs {ctx.op.op} on "
                f"{', '.join(allowed)}",
            ))
            break
    return reasons


# ------------------------------------------------------------------------------------ memory


def _memory(view: ModelView, spec: TargetSpec, on_target_params: set) -> MemoryReport:
    """Parameters, activations and file size against the target's budgets."""
    parameter_bytes = view.parameter_bytes()
    on_target = 0
    seen = set()
    for sg in view.subgraphs:
        for t in sg.tensors:
            key = (sg.index, t.buffer)
            if t.is_constant and key in on_target_params and key not in seen:
                seen.add(key)
                on_target += t.nbytes
    report = MemoryReport(
        model_bytes=view.size_bytes,
        parameter_bytes=parameter_bytes,
        parameter_bytes_on_target=on_target,
        peak_activation_bytes=None,
        arena_bytes=None,
    )
    plan, why_not = plan_or_note(view)
    if plan is None:
        report.notes.append(why_not)  # the verdicts stand without the estimate
    else:
        report.peak_activation_bytes = plan.peak_activation_bytes
        report.arena_bytes = plan.arena_bytes
        if plan.approximate_ops:
            report.notes.append(
                "arena estimate uses a default size for " + ", ".join(plan.approximate_ops))
    report.budgets = budget_lines(spec.memory, arena_bytes=report.arena_bytes,
                                  model_bytes=view.size_bytes,
                                  parameter_bytes_on_target=on_target)
    return report
