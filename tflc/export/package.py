"""`export_c`: a .tflite model as a TFLite Micro deployment package in C++ source.

The stages, in order: read the model (no TensorFlow), make sure TFLite Micro can run it (every op
has a kernel; with a target, every op passes the target's checks), list the op resolver, plan
the arena statically and measure it in TFLite Micro, check the target's RAM and flash budgets,
render the sources, and verify them (the array is the file byte for byte; TFLite Micro and LiteRT
agree bit for bit on sample inputs). Only then is OUT written, as one unit (`staging`).
`ExportReport.to_dict()` is also written as OUT/export_report.json.

Files (plain layout, in OUT):
    NAME_model_data.h / .cc   the model array (16-byte aligned, optional linker section)
    NAME_op_resolver.h        MicroMutableOpResolver<N> with exactly the model's ops
    NAME_arena.h              NAME_TENSOR_ARENA_SIZE
    README.md                 how to wire them into a TFLite Micro application
The Arduino layout makes OUT an Arduino library: library.properties, src/ (the same files, .cpp
instead of .cc) and examples/NAME_inference/NAME_inference.ino.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tflc.errors import BadInput, GateFailed, TflcError
from tflc.export.arena import ArenaFigures, arena_figures, render_arena_header
from tflc.export.budget import BudgetReport, check_budget, kib
from tflc.export.c_source import is_c_identifier, parse_model_array, render_model_data, user_text
from tflc.export.crosscheck import Verification, compare_interpreters
from tflc.export.op_resolver import ResolverOp, render_op_resolver_header, resolver_ops
from tflc.export.staging import REPORT_FILE, check_replaceable, write_package
from tflc.fileio import _json_default, sha256_bytes
from tflc.tflite.planner import CORTEX_M_32, MemoryPlan, plan_memory, plan_or_note
from tflc.tflite.reader import ModelView, read_model
from tflc.tflite.validate import waived_note

LAYOUTS = ("plain", "arduino")


@dataclass
class ExportReport:
    model: str
    model_sha256: str
    model_bytes: int
    name: str
    layout: str
    output_dir: str
    target: str | None
    files: list[str]
    ops: list[dict]
    arena: ArenaFigures
    budget: BudgetReport | None
    verification: Verification
    notes: list[str] = field(default_factory=list)
    input_guard: dict | None = None  # --input-guard: its files and the profile it came from
    artifact_id: str | None = None  # set when the run registry recorded it (tflc/store)

    @property
    def within_budget(self) -> bool:
        return self.budget is None or self.budget.within_budget

    @property
    def passed(self) -> bool:
        """The package meets every gate of the export (today: the target's RAM and flash)."""
        return self.within_budget

    def gate_failure(self) -> GateFailed | None:
        """The GateFailed (exit 3) for a package over the target's budget, else None.

        Export writes the package all the same; the caller decides whether to raise it (the
        CLI) or record it in its own report (compile --export c).
        """
        if self.passed:
            return None
        error = GateFailed(
            f"{user_text(self.model)}: the package does not fit {user_text(self.target)}: "
            f"{self.budget.summary()}; try: " + "; ".join(self.budget.advice)
            + f" (the package is written to {user_text(self.output_dir)})")
        error.report = self
        return error

    def to_dict(self) -> dict:
        data = asdict(self)
        data["arena"] = self.arena.to_dict()
        data["budget"] = self.budget.to_dict() if self.budget else None
        data["verification"] = self.verification.to_dict()
        data["within_budget"] = self.within_budget
        data["passed"] = self.passed
        return data

    def to_text(self) -> str:
        a = self.arena
        lines = [f"exported {user_text(self.model)} as {self.layout} C++ source to "
                 f"{user_text(self.output_dir)}",
                 "files       " + ", ".join(self.files),
                 "ops         " + ", ".join(f"{o['op']} x{o['count']}" for o in self.ops)
                 + f"  (MicroMutableOpResolver<{len(self.ops)}>)"]
        base = (f"{a.measured_bytes} B measured in TFLite Micro" if a.measured_bytes is not None
                else f"{a.estimated_bytes} B estimated (not measured)")
        error = f" ({a.estimate_error:+.2%})" if a.estimate_error is not None else ""
        estimate = (f"static estimate {a.estimated_bytes} B{error}" if a.estimated_bytes is not None
                    else "no static estimate")
        lines.append(f"arena       {a.recommended_bytes} B = {base} + {a.margin_bytes} B margin; "
                     + estimate + " (64-bit host figures)")
        if a.cortex_m_estimated_bytes is not None:
            lines.append(f"            on a 32-bit Cortex-M: {a.cortex_m_estimated_bytes} B static "
                         "estimate (smaller bookkeeping structs); the header keeps the host's size")
        if self.budget:
            for line in self.budget.lines:
                state = "ok" if line.ok else "OVER"
                lines.append(f"{line.name:<11} {kib(line.needed_bytes)} of {kib(line.budget_bytes)}"
                             f" on {user_text(self.budget.target)}: {state}  ({line.what})")
        lines.append("verified    " + ("array identical to the .tflite; " if
                                       self.verification.array_identical else "ARRAY DIFFERS; ")
                     + self.verification.summary())
        lines += [f"note        {user_text(n)}" for n in self.notes + a.notes]
        return "\n".join(lines)


def export_c(model_path: str | os.PathLike, out_dir: str | os.PathLike, target=None,
             name: str = "model", layout: str = "plain", *, measure: bool = True,
             verify: bool = True, samples: int = 4, seed: int = 0, input_guard: bool = False,
             profile=None) -> ExportReport:
    """Write the TFLite Micro package for `model_path` into `out_dir`; return the report.

    `input_guard`: also write NAME_input_guard.h/.c (`tflc.export.input_guard`: saturation
    counters and a range monitor per input) from the calibration profile, `profile` or the
    profile.json beside the model.

    `target`: a target name, descriptor path or TargetSpec (budgets and op checks), or None.
    Everything that can fail runs before anything is written, and the package folder is
    replaced as one unit (`tflc.export.staging`), so a failed export leaves the earlier one.
    Raises BadInput (exit 2) for an unreadable or malformed model, a bad name, layout or output
    folder, or a model TFLite Micro (or the target) cannot run; PipelineError (exit 1) when
    TFLite Micro crashes. Over the target's RAM or flash budget is not an error here: the
    package is written, `report.passed` is False and `report.gate_failure()` is the GateFailed
    (exit 3) a caller raises or records.
    """
    _check_name_and_layout(name, layout)
    model_path, out = Path(model_path), Path(out_dir)
    view = read_model(model_path, judge="tflite-micro")  # TFLite Micro judges MCU packages
    model = model_path.read_bytes()
    spec = _runnable_on_target(view, model_path, target)
    ops = resolver_ops(view, str(model_path))
    check_replaceable(out)

    plan, plan_note = plan_or_note(view)  # no plan: TFLite Micro's measurement alone sizes it
    arena = _arena(model, plan, plan_note, measure, model_path)
    if plan is not None:
        arena.cortex_m_estimated_bytes = plan_memory(view, abi=CORTEX_M_32).arena_bytes
    budget = check_budget(view, arena.recommended_bytes, plan or empty_plan(), spec) if spec else None
    files = _render(model, model_path, name, layout, ops, arena, view)
    guard = _input_guard(files, model_path, sha256_bytes(model), name, layout, profile) \
        if input_guard else None
    verification = _verify(model, files[_source_name(name, layout)], arena, model_path,
                           verify=verify, samples=samples, seed=seed)
    report = ExportReport(
        model=str(model_path), model_sha256=sha256_bytes(model), model_bytes=len(model),
        name=name, layout=layout, output_dir=str(out), target=spec.name if spec else None,
        files=sorted(files), ops=[asdict(o) for o in ops], arena=arena, budget=budget,
        verification=verification, notes=[plan_note] if plan_note else [], input_guard=guard,
    )
    if view.waived:
        report.notes.append(waived_note(view.waived))
    if spec is None:
        report.notes.append("no --target: RAM and flash budgets not checked")
    write_package(out, {**files, REPORT_FILE: _json_text(report)})
    return report


MAX_NAME_LENGTH = 64  # NAME prefixes file names: NAME_model_data.cc must fit a file system's 255


def _input_guard(files: dict, model_path: Path, model_sha256: str, name: str, layout: str,
                 profile) -> dict:
    """Add NAME_input_guard.h/.c to `files`; what the report says of them."""
    from tflc.export.input_guard import load_profile, render_input_guard

    data, path = load_profile(model_path, model_sha256, profile)
    header, source = render_input_guard(data, name)
    prefix = "src/" if layout == "arduino" else ""
    files[f"{prefix}{name}_input_guard.h"] = header
    files[f"{prefix}{name}_input_guard.c"] = source
    return {"files": [f"{prefix}{name}_input_guard.h", f"{prefix}{name}_input_guard.c"],
            "profile": str(path), "window": data["drift"]["window"]}


def _check_name_and_layout(name: str, layout: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise BadInput(f"--name {name[:20]}...: {len(name)} characters; at most {MAX_NAME_LENGTH} "
                       "(it prefixes every symbol and file name)")
    if not is_c_identifier(name):
        raise BadInput(f"--name {name!r}: expected a C identifier (letters, digits, '_', not "
                       "starting with a digit), e.g. kws_model")
    if layout not in LAYOUTS:
        raise BadInput(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")


def _arena(model: bytes, plan: MemoryPlan | None, plan_note: str | None, measure: bool,
           model_path: Path) -> ArenaFigures:
    """`arena_figures`; when TFLite Micro fails on a model the planner could not follow either,
    the planner's reason goes into the one line too: it names the op, TFLite Micro often cannot."""
    try:
        return arena_figures(model, plan, measure=measure, name=str(model_path))
    except TflcError as exc:
        if plan_note:
            exc.message = f"{exc.message}; tflc's planner: {plan_note}"
        raise


def empty_plan() -> MemoryPlan:
    """A plan with no buffers, so budget advice works without a static estimate."""
    return MemoryPlan(arena_bytes=0, peak_activation_bytes=0, head_bytes=0, persistent_bytes=0,
                      limited_by="", buffers=[])


def _verify(model: bytes, source: str, arena: ArenaFigures, model_path: Path, *, verify: bool,
            samples: int, seed: int) -> Verification:
    """The array parsed back from the source equals the file; TFLite Micro agrees with LiteRT."""
    identical = parse_model_array(source) == model
    if not verify:
        return Verification(array_identical=identical, compared=False, notes=["not requested"])
    verification = compare_interpreters(model, arena.recommended_bytes, samples, seed,
                                        name=str(model_path))
    verification.array_identical = identical
    return verification


def _json_text(report: ExportReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n"


def _runnable_on_target(view: ModelView, model_path: Path, target):
    """The target's spec, after making sure every op runs on it (a TFLite Micro target)."""
    if target is None:
        return None
    from tflc.check import check_model, load_target

    spec = load_target(target)
    if "c" not in spec.runtime.exports:
        raise BadInput(
            f"--target {spec.name}: it runs {spec.runtime.name}, not TFLite Micro; C export is for "
            "microcontroller targets such as cortex-m4 (see `tflc targets`)")
    result = check_model(view, spec)
    refused: dict[str, list] = {}  # reason code -> [(op label, reason text)]
    for verdict in result.ops:
        if verdict.placement == "target":
            continue
        reasons = [r for r in verdict.reasons if r.code not in ("partition", "fallback")]
        if not reasons:
            continue  # runnable itself: only another op keeps the model off the target
        refused.setdefault(reasons[0].code, []).append((f"op {verdict.index} {verdict.op}",
                                                        reasons[0].text))
    if refused:
        shown = "; ".join(
            f"{label}: {text}" + (f" (and {len(found) - 1} more ops like it)" if len(found) > 1 else "")
            for (label, text), found in ((found[0], found) for found in refused.values()))
        hint = (f"compile it to full-integer int8 first (tflc compile MODEL --target {spec.name})"
                if _is_float(view) else f"see `tflc check {model_path} --target {spec.name}`")
        raise BadInput(f"{model_path}: cannot run on {spec.name}: {shown}; {hint}")
    return spec


def _is_float(view: ModelView) -> bool:
    return any(t.is_float for sg in view.subgraphs for t in sg.tensors)


def _source_name(name: str, layout: str) -> str:
    return f"src/{name}_model_data.cpp" if layout == "arduino" else f"{name}_model_data.cc"


def _render(model: bytes, model_path: Path, name: str, layout: str, ops: list[ResolverOp],
            arena: ArenaFigures, view: ModelView) -> dict[str, str]:
    """Relative path -> text of every generated file."""
    header, source = render_model_data(model, name, f"from {model_path.name}, "
                                       f"sha256 {sha256_bytes(model)}, {len(model)} bytes")
    prefix = "src/" if layout == "arduino" else ""
    files = {
        f"{prefix}{name}_model_data.h": header,
        _source_name(name, layout): source,
        f"{prefix}{name}_op_resolver.h": render_op_resolver_header(ops, name),
        f"{prefix}{name}_arena.h": render_arena_header(arena, name),
        "README.md": render_readme(name, layout, ops, arena, view, model_path),
    }
    if layout == "arduino":
        files["library.properties"] = render_library_properties(name)
        files[f"examples/{name}_inference/{name}_inference.ino"] = render_sketch(name, view)
    return files


def _io_lines(view: ModelView) -> list[str]:
    lines = []
    for kind, tensors in (("input", view.input_tensors()), ("output", view.output_tensors())):
        for i, t in enumerate(tensors):
            q = t.quantization
            quant = (f", scale {q.scales[0]:.6g}, zero point {q.zero_points[0]}"
                     if q is not None and len(q.scales) == 1 else "")
            lines.append(f"- {kind} {i}: `{user_text(t.name)}` {t.dtype} {list(t.shape)}{quant}")
    return lines


def _usage_snippet(name: str, view: ModelView) -> list[str]:
    upper = name.upper()
    return [
        f'#include "{name}_model_data.h"',
        f'#include "{name}_op_resolver.h"',
        f'#include "{name}_arena.h"',
        '#include "tensorflow/lite/micro/micro_interpreter.h"',
        "",
        f"alignas(16) static uint8_t tensor_arena[{upper}_TENSOR_ARENA_SIZE];",
        "",
        "tflite::MicroInterpreter* setup_model() {",
        f"  static {name}_OpResolver resolver;",
        f"  if ({name}_RegisterOps(resolver) != kTfLiteOk) return nullptr;",
        f"  const tflite::Model* model = tflite::GetModel({name}_model_data);",
        "  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena,",
        f"                                              {upper}_TENSOR_ARENA_SIZE);",
        "  if (interpreter.AllocateTensors() != kTfLiteOk) return nullptr;",
        "  return &interpreter;",
        "}",
        "",
        "// Then: fill interpreter->input(0)->data.int8, call interpreter->Invoke(), read",
        "// interpreter->output(0)->data.int8.",
    ]


def render_readme(name: str, layout: str, ops: list[ResolverOp], arena: ArenaFigures,
                  view: ModelView, model_path: Path) -> str:
    source = "src/" if layout == "arduino" else ""
    ext = "cpp" if layout == "arduino" else "cc"
    measured = (f"{arena.measured_bytes} B measured in the tflite-micro interpreter (reference kernels, "
                f"x86-64 host build)" if arena.measured_bytes is not None else
                "not measured (tflite-micro was not installed)")
    lines = [
        f"# {name}: TFLite Micro package generated by tflc",
        "",
        f"Model: `{user_text(model_path.name)}` ({view.size_bytes} bytes). Files:",
        "",
        f"- `{source}{name}_model_data.h` / `.{ext}`: the model as `{name}_model_data[]` (16-byte "
        f"aligned, `const` so it stays in flash; define `{name.upper()}_MODEL_SECTION` as a string "
        "to place it in a named linker section) and `" + name + "_model_data_len`.",
        f"- `{source}{name}_op_resolver.h`: `{name}_OpResolver` = `tflite::MicroMutableOpResolver<"
        f"{len(ops)}>` and `{name}_RegisterOps()`, which registers exactly: "
        + ", ".join(user_text(o.op) for o in ops) + ".",
        f"- `{source}{name}_arena.h`: `{name.upper()}_TENSOR_ARENA_SIZE` = {arena.recommended_bytes} B:"
        f" {measured}, plus a margin of {arena.margin_bytes} B ({arena.margin_rule}). "
        + (f"tflc's static estimate was {arena.estimated_bytes} B." if arena.estimated_bytes is not None
         else "tflc's static planner gave no estimate for this model."),
        "",
        "Inputs and outputs:",
        "",
        *_io_lines(view),
        "",
        "## Wiring it into a TFLite Micro application",
        "",
        "Add the `.h` and source files to your build (with TFLite Micro's sources and include "
        "paths), then:",
        "",
        "```cpp",
        *_usage_snippet(name, view),
        "```",
        "",
        "If `AllocateTensors()` fails on the device, TFLite Micro prints how many bytes were missing;"
        " raise the arena size by that much (optimized kernels may need more scratch memory than the"
        " reference kernels measured here).",
        "",
    ]
    if layout == "arduino":
        lines += [
            "## Arduino",
            "",
            "This folder is an Arduino library: copy it to your `libraries/` folder. It needs the "
            "TensorFlow Lite Micro Arduino library (`Arduino_TensorFlowLite`, from "
            "github.com/tensorflow/tflite-micro-arduino-examples) installed as well. "
            f"`examples/{name}_inference` runs one inference on an all-zero input.",
            "",
        ]
    return "\n".join(lines)


def render_library_properties(name: str) -> str:
    return "\n".join([
        f"name={name}",
        "version=1.0.0",
        "author=tflc",
        "maintainer=tflc",
        f"sentence=The {name} model for TensorFlow Lite Micro, generated by tflc.",
        "paragraph=Model array, op resolver with exactly the model's ops, and the tensor arena size.",
        "category=Data Processing",
        "url=https://github.com/tensorflow/tflite-micro-arduino-examples",
        "architectures=*",
        f"includes={name}_model_data.h,{name}_op_resolver.h,{name}_arena.h",
        "",
    ])


def render_sketch(name: str, view: ModelView) -> str:
    return "\n".join([
        f"// {name}_inference: set up the model and run one inference (generated by tflc).",
        "#include <TensorFlowLite.h>",
        "",
        *_usage_snippet(name, view)[:-3],
        "",
        "void setup() {",
        "  Serial.begin(115200);",
        "  tflite::MicroInterpreter* interpreter = setup_model();",
        "  if (interpreter == nullptr) {",
        '    Serial.println("AllocateTensors failed: raise the arena size");',
        "    return;",
        "  }",
        "  TfLiteTensor* input = interpreter->input(0);",
        "  memset(input->data.raw, 0, input->bytes);",
        "  if (interpreter->Invoke() != kTfLiteOk) {",
        '    Serial.println("Invoke failed");',
        "    return;",
        "  }",
        '  Serial.print("arena used: ");',
        "  Serial.println(interpreter->arena_used_bytes());",
        "}",
        "",
        "void loop() {}",
        "",
    ])
