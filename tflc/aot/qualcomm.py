"""Qualcomm's real HTP compiler, run here: LiteRT's Qualcomm compiler plugin driven by LiteRT's
`apply_plugin_main`, over QAIRT's x86-64 host libraries.

What is needed and where it comes from (none of it is in a document; found by probing):

- `ai_edge_litert/tools/apply_plugin_main` and the plugin
  `ai_edge_litert/vendors/qualcomm/compiler/libLiteRtCompilerPlugin_Qualcomm.so` ship in the
  ai-edge-litert wheel (a core dependency).
- QAIRT's host libraries (`libQnnHtp.so`, `libHtpPrepare.so`, `libQnnSystem.so`, ...) ship in
  the onnxruntime-qnn wheel (`onnxruntime_qnn/`, their C++ runtime in `onnxruntime_qnn.libs/`):
  `pip install 'tflc[qualcomm]'`.
- The plugin names `libQnnLpai.so` as a DT_NEEDED entry and never calls it; no wheel carries it,
  so an empty shared library built once with gcc (cached) satisfies the loader.

`compile_soc(model_bytes, "SM8650")` runs the compiler in a child process with a timeout and
returns the compiled model: the ops the NPU runs become `DISPATCH_OP` custom ops carrying the QNN
context binary (appended to the flatbuffer); every other op stays as it was and runs on the CPU.
`placement(original, compiled)` tells which original ops went to the NPU by matching the ops
left in the compiled model to the original ones by their output tensor names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tflc.errors import BadInput, PipelineError

INSTALL_HINT = "pip install 'tflc[qualcomm]' (the onnxruntime-qnn wheel carries QAIRT's host libraries)"
DISPATCH = "DISPATCH_OP"
TIMEOUT = 600  # seconds for one compile (a large float model on two busy cores)
_SELECTED = re.compile(r"Partitioned subgraph<(\d+)>, selected (\d+) ops, from a total of (\d+) "
                       r"ops\. resulted in (\d+) partitions")
_QNN_LIBS = ("libQnnHtp.so", "libQnnSystem.so", "libHtpPrepare.so", "libQnnIr.so", "libQnnSaver.so")


@dataclass(frozen=True)
class Toolchain:
    """The pieces `apply_plugin_main` needs, found in the installed wheels."""

    apply_plugin: Path
    plugin_dir: Path
    qnn_dir: Path
    library_path: tuple[Path, ...]
    versions: dict = field(default_factory=dict, compare=False)

    def env(self) -> dict:
        paths = [str(p) for p in self.library_path]
        old = os.environ.get("LD_LIBRARY_PATH")
        return dict(os.environ, LD_LIBRARY_PATH=":".join(paths + ([old] if old else [])))


def toolchain(cache: Path | None = None) -> Toolchain:
    """Find the compiler and QAIRT's libraries; BadInput (one line, what to install) if absent."""
    if not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"):
        raise BadInput("the Qualcomm HTP compiler runs on x86-64 Linux only (QAIRT's host "
                       f"libraries); this is {sys.platform} {os.uname().machine}")
    try:
        import ai_edge_litert
    except ImportError as exc:
        raise BadInput("the Qualcomm HTP compiler needs ai-edge-litert: pip install ai-edge-litert") from exc
    litert = Path(ai_edge_litert.__file__).parent
    tool = litert / "tools" / "apply_plugin_main"
    plugin = litert / "vendors" / "qualcomm" / "compiler"
    if not tool.is_file() or not (plugin / "libLiteRtCompilerPlugin_Qualcomm.so").is_file():
        raise BadInput(f"this ai-edge-litert ({litert}) has no apply_plugin_main or Qualcomm "
                       "compiler plugin; install ai-edge-litert 2.3.0 or later")
    qnn_dir = _qnn_dir()
    missing = [n for n in _QNN_LIBS if not (qnn_dir / n).is_file()]
    if missing:
        raise BadInput(f"{qnn_dir} lacks {', '.join(missing)}; reinstall onnxruntime-qnn: {INSTALL_HINT}")
    stub = _lpai_stub(cache)
    runtime = qnn_dir.parent / "onnxruntime_qnn.libs"
    return Toolchain(tool, plugin, qnn_dir, (stub.parent, qnn_dir, runtime), _versions())


def _qnn_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_qnn")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"the Qualcomm HTP compiler needs QAIRT's host libraries: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("ai-edge-litert", "onnxruntime-qnn"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "unknown"
    return found


def _cache_dir(cache: Path | None) -> Path:
    if cache is not None:
        return Path(cache)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tflc" / "qnn-stub"


def _lpai_stub(cache: Path | None) -> Path:
    """An empty libQnnLpai.so (the plugin only names it as DT_NEEDED), built once with gcc."""
    folder = _cache_dir(cache)
    stub = folder / "libQnnLpai.so"
    if stub.is_file():
        return stub
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise BadInput("the Qualcomm HTP compiler needs an empty libQnnLpai.so built by gcc, and "
                       "gcc is not installed: install gcc (apt-get install gcc)")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".libQnnLpai.", suffix=".so")
    os.close(fd)
    try:
        done = subprocess.run([gcc, "-shared", "-fPIC", "-x", "c", "-", "-o", tmp],
                              input="", capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise BadInput(f"gcc could not build the empty libQnnLpai.so in {folder}: "
                           f"{done.stderr.strip()[-200:]}")
        os.replace(tmp, stub)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return stub


# ------------------------------------------------------------------------------ compiling


@dataclass
class Dispatch:
    """One DISPATCH_OP of a compiled model: a QNN graph the NPU runs."""

    index: int
    name: str  # the QNN graph's entry point (qnn_partition_N)
    bytecode_bytes: int  # the context binary's size
    inputs: list[str]
    outputs: list[str]

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "bytecode_bytes": self.bytecode_bytes,
                "inputs": self.inputs, "outputs": self.outputs}


@dataclass
class AotResult:
    soc: str
    data: bytes | None  # the compiled model; None when the compiler stopped
    error: str = ""  # one line, when it stopped
    selected: int | None = None  # ops of subgraph 0 the plugin took, as its log says
    total: int | None = None
    partitions: int | None = None
    placement: dict[int, bool | None] = field(default_factory=dict)  # subgraph-0 op -> on the NPU
    dispatch: list[Dispatch] = field(default_factory=list)
    versions: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.data is not None

    def summary(self) -> dict:
        on = sorted(i for i, v in self.placement.items() if v)
        return {"soc": self.soc, "compiled": self.ok, "error": self.error,
                "ops_total": self.total, "ops_on_npu": len(on), "partitions": self.partitions,
                "on_npu": on, "on_cpu": sorted(i for i, v in self.placement.items() if v is False),
                "dispatch": [d.to_dict() for d in self.dispatch], "versions": self.versions}


def compile_soc(data: bytes, soc: str, *, timeout: float = TIMEOUT,
                tool: Toolchain | None = None, log_path: Path | None = None) -> AotResult:
    """Compile a .tflite for one Qualcomm SoC (e.g. SM8650) with the real plugin."""
    from tflc.tflite.reader import read_model

    tool = tool or toolchain()
    original = read_model(data)
    with tempfile.TemporaryDirectory(prefix="tflc-qnn-") as tmp:
        src, out, err = Path(tmp) / "in.tflite", Path(tmp) / "out.tflite", Path(tmp) / "log.txt"
        src.write_bytes(data)
        cmd = [str(tool.apply_plugin), "--cmd=apply", f"--model={src}", f"--o={out}",
               "--soc_manufacturer=Qualcomm", f"--soc_model={soc}", f"--libs={tool.plugin_dir}",
               f"--qualcomm_qnn_lib_dir={tool.qnn_dir}", "--err=--"]
        try:
            with err.open("w") as log:
                code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                                      env=tool.env(), timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return AotResult(soc, None, f"the Qualcomm compiler did not finish in {timeout:.0f} s",
                             versions=tool.versions)
        text = err.read_text(errors="replace")
        if log_path is not None:
            Path(log_path).write_text(text)
        result = AotResult(soc, None, versions=tool.versions)
        for sg, selected, total, parts in _SELECTED.findall(text):
            if sg == "0":
                result.selected, result.total, result.partitions = int(selected), int(total), int(parts)
        if code != 0 or not out.is_file() or out.stat().st_size == 0:
            result.error = _error_line(text, code)
            return result
        result.data = out.read_bytes()
    compiled = read_model(result.data)
    result.dispatch = dispatch_ops(compiled)
    result.placement = placement(original, compiled)
    return result


def _error_line(text: str, code: int) -> str:
    """The compiler's own reason, one line: its last ERROR line (or the exit status)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Failed" in ln or "failed" in ln]
    pick = (errors or lines or [f"exit {code}"])[-1]
    pick = re.sub(r"^\s*[\d.]+ms\s+", "", pick)
    return f"the Qualcomm compiler stopped (exit {code}): {pick[:300]}"


def dispatch_ops(view) -> list[Dispatch]:
    """The DISPATCH_OP custom ops of a compiled model's main graph, with their QNN graph name
    and context-binary size (from the op's flexbuffer options)."""
    found = []
    sg = view.main
    for op in sg.operators:
        if op.custom_code != DISPATCH:
            continue
        options = _custom_options(view, op)
        found.append(Dispatch(op.index, str(options.get("name", "")),
                              int(options.get("bytecode_size", 0) or 0),
                              [sg.tensors[t].name for t in op.inputs if t >= 0],
                              [sg.tensors[t].name for t in op.outputs if t >= 0]))
    return found


def _custom_options(view, op) -> dict:
    import tflite
    from flatbuffers import flexbuffers

    model = tflite.Model.GetRootAsModel(view._data, 0)
    fb_op = model.Subgraphs(op.subgraph).Operators(op.index)
    if not fb_op.CustomOptionsLength():
        return {}
    try:
        value = flexbuffers.Loads(bytes(fb_op.CustomOptionsAsNumpy().tobytes()))
    except Exception:  # options written by another plugin version: the op is still a dispatch
        return {}
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in value.items()} \
        if isinstance(value, dict) else {}


def placement(original, compiled) -> dict[int, bool | None]:
    """Original main-graph op index -> True (inside a DISPATCH_OP: the NPU), False (left in the
    compiled model: the CPU), None (an op without named outputs, which cannot be matched)."""
    left = Counter()
    for op in compiled.main.operators:
        if op.custom_code == DISPATCH:
            continue
        left[(op.op, _out_names(compiled.main, op))] += 1
    result: dict[int, bool | None] = {}
    for op in original.main.operators:
        key = (op.op, _out_names(original.main, op))
        if not any(key[1]):
            result[op.index] = None
        elif left[key] > 0:
            left[key] -= 1
            result[op.index] = False
        else:
            result[op.index] = True
    return result


def _out_names(sg, op) -> tuple[str, ...]:
    return tuple(sg.tensors[t].name for t in op.outputs if t >= 0)


def require_compiled(result: AotResult) -> AotResult:
    """The result, or PipelineError with the compiler's own reason."""
    if not result.ok:
        raise PipelineError(result.error or f"the Qualcomm compiler produced nothing for {result.soc}")
    return result
