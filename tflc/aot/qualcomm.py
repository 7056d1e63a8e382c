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
`partition_soc` stops after the plugin's selection (its per-op answer, in seconds).
`placement(original, compiled)` tells which original ops went to the NPU by matching the ops
left in the compiled model to the original ones by their output tensor names; `dispatch_ops`
reads each DISPATCH_OP (QNN graph name, context-binary size, the QNN nodes of each op inside).
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

from tflc.errors import BadInput

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
    # the ops compiled into it, in the partition's order: the plugin names each QNN node
    # `<location>/<QnnOp>_<n>_LiteRt_OpId_<position of the op in its partition>` in the binary
    nodes: list[list[str]] = field(default_factory=list)  # per op: the QNN node types made of it

    @property
    def op_count(self) -> int:
        return len(self.nodes)

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "bytecode_bytes": self.bytecode_bytes,
                "inputs": self.inputs, "outputs": self.outputs, "op_count": self.op_count,
                "nodes": self.nodes}


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
                "ops_total": self.total if self.total is not None else len(self.placement),
                "ops_on_npu": len(on), "partitions": self.partitions,
                "on_npu": on, "on_cpu": sorted(i for i, v in self.placement.items() if v is False),
                "dispatch": [d.to_dict() for d in self.dispatch], "versions": self.versions}


def compile_soc(data: bytes, soc: str, *, timeout: float = TIMEOUT,
                tool: Toolchain | None = None, log_path: Path | None = None) -> AotResult:
    """Compile a .tflite for one Qualcomm SoC (e.g. SM8650) with the real plugin
    (`apply_plugin_main --cmd=apply`): partition, then compile each partition with QNN."""
    return _run("apply", data, soc, timeout, tool, log_path)


def partition_soc(data: bytes, soc: str, *, timeout: float = TIMEOUT,
                  tool: Toolchain | None = None) -> AotResult:
    """Which ops the plugin takes for one SoC and how it groups them (`--cmd=partition`): the
    same selection `compile_soc` compiles, without QNN's graph preparation (seconds instead of
    minutes on a large float model). `data` is the partitioned model: each DISPATCH_OP calls
    a subgraph holding its partition's ops; it is not a deployable file."""
    return _run("partition", data, soc, timeout, tool, None)


def _run(cmd_name: str, data: bytes, soc: str, timeout: float, tool: Toolchain | None,
         log_path: Path | None) -> AotResult:
    tool = tool or toolchain()
    with tempfile.TemporaryDirectory(prefix="tflc-qnn-") as tmp:
        src, out, err = Path(tmp) / "in.tflite", Path(tmp) / "out.tflite", Path(tmp) / "log.txt"
        src.write_bytes(data)
        cmd = [str(tool.apply_plugin), f"--cmd={cmd_name}", f"--model={src}", f"--o={out}",
               "--soc_manufacturer=Qualcomm", f"--soc_model={soc}", f"--libs={tool.plugin_dir}",
               f"--qualcomm_qnn_lib_dir={tool.qnn_dir}", "--err=--"]
        with err.open("w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
                                    env=tool.env(), start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                return AotResult(soc, None, f"the Qualcomm compiler did not finish in {timeout:.0f} s",
                                 versions=tool.versions)
            except BaseException:  # interrupted: the compiler must not outlive us
                proc.kill()
                proc.wait()
                raise
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
    result.dispatch = dispatch_ops(result.data)
    result.placement = placement(data, result.data)
    return result


def _error_line(text: str, code: int) -> str:
    """The compiler's own reason, one line: its last ERROR line (or the exit status)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "ERROR" in ln or "Failed" in ln or "failed" in ln]
    pick = (errors or lines or [f"exit {code}"])[-1]
    pick = re.sub(r"^\s*[\d.]+ms\s+", "", pick)
    return f"the Qualcomm compiler stopped (exit {code}): {pick[:300]}"


@dataclass(frozen=True)
class _Op:
    """One op of a main graph, read without the reader's checks (the plugin's partitioned file
    drops a sparse tensor's sparsity parameters, which the reader then rightly refuses)."""

    index: int
    op: str
    custom: str | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    options: bytes


def _main_ops(data: bytes) -> list[_Op]:
    import tflite

    from tflc.tflite.reader import _BUILTIN_NAMES, builtin_code

    model = tflite.Model.GetRootAsModel(data, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = builtin_code(code)
        custom = code.CustomCode().decode(errors="replace") if code.CustomCode() else None
        codes.append((_BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}"), custom))
    sg = model.Subgraphs(0)
    names = [(sg.Tensors(i).Name() or b"").decode(errors="replace") for i in range(sg.TensorsLength())]
    ops = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        name, custom = codes[op.OpcodeIndex()]
        if custom is not None and name in ("CUSTOM", "ADD"):  # see tflc.tflite.reader._opcode
            name = custom
        else:
            custom = None
        ins = tuple(names[t] for t in op.InputsAsNumpy() if t >= 0) if op.InputsLength() else ()
        outs = tuple(names[t] for t in op.OutputsAsNumpy() if t >= 0) if op.OutputsLength() else ()
        options = op.CustomOptionsAsNumpy().tobytes() if op.CustomOptionsLength() else b""
        ops.append(_Op(i, name, custom, ins, outs, options))
    return ops


def dispatch_ops(model) -> list[Dispatch]:
    """The DISPATCH_OP custom ops of a compiled model's main graph (bytes, a path or a
    ModelView), with their QNN graph name, context-binary size and the QNN nodes inside."""
    data = _bytes_of(model)
    found = []
    for op in _main_ops(data):
        if op.custom != DISPATCH:
            continue
        options = _flex(op.options)
        size = int(options.get("bytecode_size", 0) or 0)
        offset = int(options.get("bytecode_offset", 0) or 0)
        binary = bytes(data[offset:offset + size]) if 0 < offset < len(data) else b""
        found.append(Dispatch(op.index, str(options.get("name", "")), size, list(op.inputs),
                              list(op.outputs), _qnn_nodes(binary)))
    return found


def _bytes_of(model) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return Path(model).read_bytes()
    return bytes(model._data)  # a tflc.tflite.reader.ModelView


_NODE = re.compile(rb"([A-Za-z][A-Za-z0-9]*)_\d+_LiteRt_OpId_(\d+)")


def _qnn_nodes(binary: bytes) -> list[list[str]]:
    """Per op of the partition (its position), the QNN node types made of it, from the binary."""
    nodes: dict[int, list[str]] = {}
    for kind, index in _NODE.findall(binary):
        names = nodes.setdefault(int(index), [])
        if kind.decode() not in names:
            names.append(kind.decode())
    count = max(nodes) + 1 if nodes else 0
    return [sorted(nodes.get(i, [])) for i in range(count)]


def _flex(raw: bytes) -> dict:
    from flatbuffers import flexbuffers

    if not raw:
        return {}
    try:
        value = flexbuffers.Loads(raw)
    except Exception:  # options written by another plugin version: the op is still a dispatch
        return {}
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in value.items()} \
        if isinstance(value, dict) else {}


def placement(original, compiled) -> dict[int, bool | None]:
    """Original main-graph op index -> True (inside a DISPATCH_OP: the NPU), False (left in the
    compiled model: the CPU), None (an op without named outputs, which cannot be matched).
    Both models as bytes, paths or ModelViews."""
    left = Counter((op.op, op.outputs) for op in _main_ops(_bytes_of(compiled))
                   if op.custom != DISPATCH)
    result: dict[int, bool | None] = {}
    for op in _main_ops(_bytes_of(original)):
        key = (op.op, op.outputs)
        if not any(op.outputs):
            result[op.index] = None
        elif left[key] > 0:
            left[key] -= 1
            result[op.index] = False
        else:
            result[op.index] = True
    return result
