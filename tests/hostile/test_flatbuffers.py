"""Hostile .tflite flatbuffers: whatever LiteRT refuses, tflc refuses first, in one line, exit 2.

Every case is generated here from a real model (MLPerf Tiny's keyword-spotting int8 file) by
unpacking it with LiteRT's own generated object API, breaking one thing and packing it again, so
the rest of the file stays valid and only the named defect is under test. LiteRT is the oracle:
each case is first shown to be refused by LiteRT (in a subprocess, since a hostile model may crash
it), then `read_model` and `tflc check` must refuse it naming the file and the place.

Byte patches break the flatbuffer's structure where nothing reads (a string's terminating zero),
which only LiteRT's flatbuffers verifier notices; hand-built control-flow models call missing
subgraphs or themselves. The fuzz tests flip and cut bytes of valid models: whatever comes out,
`tflc check` ends with a result or one clean error, never a traceback, an "internal error" or a
hang, and on seeded flips tflc and LiteRT agree about what is damaged and what runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import MLPERF, MLPERF_INT8, SHARED, need_mlperf
from tflc.check import check_model
from tflc.cli import main
from tflc.errors import BadInput
from tflc.tflite.reader import read_model

schema = pytest.importorskip("ai_edge_litert.schema_py_generated",
                             reason="LiteRT (ai_edge_litert) is the oracle for these cases")
flatbuffers = pytest.importorskip("flatbuffers")

EDGETPU_PAIRS = SHARED / "fixtures" / "edgetpu_pairs"
KWS = MLPERF_INT8["kws"]

# The oracle: load, allocate, feed zeros, invoke. "ACCEPTED" only if all of it succeeds.
_INTERPRETER = r"""
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
try:
    it = Interpreter(model_content=open(sys.argv[1], "rb").read())
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
except Exception as exc:
    print("REFUSED", str(exc).replace("\n", " "))
    sys.exit(0)
print("ACCEPTED")
"""

# LiteRT's CompiledModel API, which partitions the graph before running it.
_COMPILED_MODEL = r"""
import sys
from ai_edge_litert.compiled_model import CompiledModel
try:
    model = CompiledModel.from_buffer(open(sys.argv[1], "rb").read())
    model.run_by_index(0, model.create_input_buffers(0), model.create_output_buffers(0))
except Exception as exc:
    print("REFUSED", str(exc).replace("\n", " "))
    sys.exit(0)
print("ACCEPTED")
"""


def _unpack(data: bytes):
    return schema.ModelT.InitFromPackedBuf(data, 0)


def _pack(model) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _set(obj, attr: str, index: int, value: int) -> None:
    """Replace one entry of an integer vector (the unpacked vectors are read-only numpy views)."""
    values = [int(v) for v in getattr(obj, attr)]
    values[index] = value
    setattr(obj, attr, values)


def _weights(model):
    """The first convolution's weight tensor (a per-channel int8 constant, shape 64x10x4x1)."""
    sg = model.subgraphs[0]
    return sg.tensors[int(sg.operators[0].inputs[1])]


def _buffer_index(m, sg):
    sg.tensors[1].buffer = 9999


def _negative_tensor_index(m, sg):
    _set(sg.operators[0], "inputs", 1, -5)


def _tensor_index_past_end(m, sg):
    _set(sg.operators[3], "outputs", 0, 10000)


def _subgraph_input_out_of_range(m, sg):
    sg.inputs = [10000]


def _subgraph_input_optional(m, sg):
    sg.inputs = [-1]


def _subgraph_output_negative(m, sg):
    sg.outputs = [-2]


def _buffer_past_the_file(m, sg):
    buf = m.buffers[_weights(m).buffer]
    size = len(buf.data)
    buf.data, buf.offset, buf.size = None, 1 << 20, size


def _constant_shorter_than_its_shape(m, sg):
    buf = m.buffers[_weights(m).buffer]
    buf.data = buf.data[:-4]


def _negative_dimension(m, sg):
    sg.tensors[int(sg.operators[0].outputs[0])].shape = [1, -4, 5, 64]


def _element_count_overflow(m, sg):
    sg.tensors[int(sg.operators[0].outputs[0])].shape = [(1 << 31) - 1] * 3 + [64]


def _unknown_tensor_type(m, sg):
    sg.tensors[int(sg.operators[0].outputs[0])].type = -6


def _schema_version(m, sg):
    m.version = 2


def _opcode_index(m, sg):
    sg.operators[2].opcodeIndex = 99


def _operator_version_zero(m, sg):
    m.operatorCodes[0].version = 0


def _negative_builtin_code(m, sg):
    m.operatorCodes[0].builtinCode = m.operatorCodes[0].deprecatedBuiltinCode = -5


def _zero_points_fewer_than_scales(m, sg):
    q = _weights(m).quantization
    q.zeroPoint = q.zeroPoint[:-1]


def _zero_points_missing(m, sg):
    _weights(m).quantization.zeroPoint = None


def _quantized_dimension_out_of_range(m, sg):
    _weights(m).quantization.quantizedDimension = 7


def _scales_unlike_the_channels(m, sg):
    _weights(m).quantization.quantizedDimension = 1  # 64 scales for a dimension of 10


def _input_is_its_output(m, sg):
    op = sg.operators[1]
    _set(op, "outputs", 0, int(op.inputs[0]))


def _tensor_written_twice(m, sg):
    _set(sg.operators[2], "outputs", 0, int(sg.operators[0].outputs[0]))


def _writes_a_subgraph_input(m, sg):
    _set(sg.operators[1], "outputs", 0, int(sg.inputs[0]))


def _operator_cycle(m, sg):
    """Operator 1 reads what operator 2 writes, and operator 2 reads what operator 1 writes."""
    _set(sg.operators[1], "inputs", 0, int(sg.operators[2].outputs[0]))


def _no_subgraphs(m, sg):
    m.subgraphs = []


# (id, mutation, fragment of tflc's message, LiteRT oracle or None when LiteRT runs it regardless)
CASES = [
    ("buffer-index", _buffer_index, "subgraph 0 tensor 1 names buffer 9999", _INTERPRETER),
    ("negative-tensor-index", _negative_tensor_index, "subgraph 0 operator 0 (CONV_2D) input 1 names tensor -5",
     _INTERPRETER),
    ("tensor-index-past-end", _tensor_index_past_end, "operator 3 (DEPTHWISE_CONV_2D) output 0 names tensor 10000",
     _INTERPRETER),
    ("subgraph-input-out-of-range", _subgraph_input_out_of_range, "subgraph 0 input 0 names tensor 10000",
     _INTERPRETER),
    ("subgraph-input-optional", _subgraph_input_optional, "subgraph 0 input 0 names tensor -1", _INTERPRETER),
    ("subgraph-output-negative", _subgraph_output_negative, "subgraph 0 output 0 names tensor -2", _INTERPRETER),
    ("buffer-past-the-file", _buffer_past_the_file, "beyond the end of the file", _INTERPRETER),
    ("constant-shorter-than-its-shape", _constant_shorter_than_its_shape, "needs 2560 bytes", _INTERPRETER),
    ("negative-dimension", _negative_dimension, "subgraph 0 tensor 22", _INTERPRETER),
    ("element-count-overflow", _element_count_overflow, "subgraph 0 tensor 22", _INTERPRETER),
    ("unknown-tensor-type", _unknown_tensor_type, "unknown type -6", _INTERPRETER),
    ("schema-version", _schema_version, "schema version 2", _INTERPRETER),
    ("opcode-index", _opcode_index, "operator 2 names operator code 99", _INTERPRETER),
    ("operator-version-zero", _operator_version_zero, "operator code 0 (CONV_2D) has version 0", _INTERPRETER),
    ("negative-builtin-code", _negative_builtin_code, "operator code 0 has builtin code -5", _INTERPRETER),
    ("zero-points-fewer-than-scales", _zero_points_fewer_than_scales, "64 scales but 63 zero points", _INTERPRETER),
    ("zero-points-missing", _zero_points_missing, "64 scales but 0 zero points", _INTERPRETER),
    ("quantized-dimension-out-of-range", _quantized_dimension_out_of_range, "quantized dimension 7",
     _INTERPRETER),
    ("scales-unlike-the-channels", _scales_unlike_the_channels, "64 scales", _INTERPRETER),
    ("input-is-its-output", _input_is_its_output, "operator 1 (DEPTHWISE_CONV_2D) reads and writes tensor 22",
     _INTERPRETER),
    ("tensor-written-twice", _tensor_written_twice, "operator 2 (CONV_2D) writes tensor 22", _INTERPRETER),
    ("writes-a-subgraph-input", _writes_a_subgraph_input, "writes tensor 0", _INTERPRETER),
    ("operator-cycle", _operator_cycle, "operator 1 (DEPTHWISE_CONV_2D) reads tensor 24 before", _COMPILED_MODEL),
    ("no-subgraphs", _no_subgraphs, "no subgraphs", _INTERPRETER),
]


@pytest.fixture(scope="module")
def kws_bytes() -> bytes:
    return need_mlperf(KWS).read_bytes()


def _hostile(kws_bytes: bytes, mutate, tmp_path: Path, name: str) -> Path:
    model = _unpack(kws_bytes)
    mutate(model, model.subgraphs[0] if model.subgraphs else None)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(_pack(model))
    return path


def _litert(oracle: str, path: Path) -> str:
    try:
        proc = subprocess.run([sys.executable, "-c", oracle, str(path)], capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "REFUSED (hung)"
    if proc.returncode != 0:
        return f"REFUSED (crashed, exit {proc.returncode})"
    return proc.stdout.strip().splitlines()[-1]


def test_the_repacked_model_is_valid_for_litert_and_tflc(kws_bytes, tmp_path):
    """The unpack/pack round trip alone breaks nothing, so each case tests only its mutation."""
    path = tmp_path / "kws.tflite"
    path.write_bytes(_pack(_unpack(kws_bytes)))
    assert _litert(_INTERPRETER, path) == "ACCEPTED"
    assert len(read_model(path).main.operators) == 13


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_litert_refuses_the_case(case, kws_bytes, tmp_path):
    name, mutate, _, oracle = case
    path = _hostile(kws_bytes, mutate, tmp_path, name)
    assert _litert(oracle, path).startswith("REFUSED"), f"LiteRT runs {name}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_read_model_refuses_naming_the_file_and_the_place(case, kws_bytes, tmp_path):
    name, mutate, fragment, _ = case
    path = _hostile(kws_bytes, mutate, tmp_path, name)
    with pytest.raises(BadInput) as info:
        read_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_check_exits_2_with_one_line(case, kws_bytes, tmp_path):
    name, mutate, fragment, _ = case
    path = _hostile(kws_bytes, mutate, tmp_path, name)
    result = CliRunner().invoke(main, ["check", str(path), "--target", "cpu"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["export", "bench"])
def test_every_command_refuses_through_the_reader(command, kws_bytes, tmp_path):
    """export and bench read the model through the same reader: one line naming the user's file
    (not a private copy), exit 2, and no output folder left behind."""
    name, mutate, fragment, _ = CASES[0]
    path = _hostile(kws_bytes, mutate, tmp_path, name)
    out = tmp_path / "out"
    args = ["export", str(path), "-o", str(out)] if command == "export" else ["bench", str(path), "--runs", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and fragment in lines[0], result.stderr
    assert not out.exists()


def test_a_tensor_read_before_it_is_written_is_refused(kws_bytes, tmp_path):
    """Operators run in the order the file lists them. With the first two swapped, LiteRT's
    interpreter runs the depthwise convolution on a tensor nothing has written yet (uninitialised
    arena memory) and returns garbage without a word; LiteRT's C++ verifier (`tflite::Verify`)
    refuses the same file ("input tensor is not produced"). tflc refuses it like the verifier."""

    def swap(m, sg):
        sg.operators[0], sg.operators[1] = sg.operators[1], sg.operators[0]

    path = _hostile(kws_bytes, swap, tmp_path, "swapped")
    with pytest.raises(BadInput, match=r"operator 0 \(DEPTHWISE_CONV_2D\) reads tensor 22 before"):
        read_model(path)


def test_the_real_command_prints_one_line_and_no_traceback(kws_bytes, tmp_path):
    """The installed entry point, in a process of its own, for two of the cases."""
    for name, mutate, fragment, _ in (CASES[0], CASES[10]):
        path = _hostile(kws_bytes, mutate, tmp_path, name)
        proc = subprocess.run([sys.executable, "-m", "tflc", "check", str(path), "--target", "cpu"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and str(path) in proc.stderr and fragment in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def _unterminated(data: bytes, text: bytes) -> bytes:
    """`data` with the zero that ends the string `text` overwritten (flatbuffers strings keep one)."""
    assert data.count(text + b"\0") == 1, text
    end = data.index(text + b"\0") + len(text)
    return data[:end] + b"X" + data[end + 1:]


STRUCTURE = [  # byte patches that only LiteRT's flatbuffers verifier notices: nothing reads there
    ("tensor-name-unterminated", lambda d: _unterminated(d, read_model(d).main.tensors[22].name.encode())),
    ("metadata-name-unterminated", lambda d: _unterminated(d, b"min_runtime_version")),
]


@pytest.mark.parametrize("case", STRUCTURE, ids=[c[0] for c in STRUCTURE])
def test_a_damaged_flatbuffer_is_refused_like_litert_does(case, kws_bytes, tmp_path):
    name, patch = case
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(patch(kws_bytes))
    assert "not a valid Flatbuffer" in _litert(_INTERPRETER, path)
    with pytest.raises(BadInput, match="the string at byte [0-9]+ has no terminating zero") as info:
        read_model(path)
    assert str(info.value).startswith(f"{path}: ")
    result = CliRunner().invoke(main, ["check", str(path), "--target", "cpu"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output


def _if_model(then_index: int, else_index: int) -> bytes:
    """A float model whose main graph is one IF choosing between two subgraphs (x + 1, x - 1)."""
    m = schema.ModelT()
    m.version = 3
    m.operatorCodes = []
    for builtin in (schema.BuiltinOperator.IF, schema.BuiltinOperator.ADD, schema.BuiltinOperator.SUB):
        code = schema.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        m.operatorCodes.append(code)
    one = schema.BufferT()
    one.data = np.ones(4, np.float32).view(np.uint8)
    m.buffers = [schema.BufferT(), one]

    def tensor(sg, name, dtype=schema.TensorType.FLOAT32, buffer=0, shape=(1, 4)):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, buffer
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def op(sg, opcode, inputs, outputs, options=None, kind=schema.BuiltinOptions.NONE):
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode, inputs, outputs
        o.builtinOptions, o.builtinOptionsType = options, kind
        sg.operators.append(o)

    main = schema.SubGraphT()
    main.tensors, main.operators = [], []
    cond = tensor(main, "cond", schema.TensorType.BOOL, shape=(1,))
    x, y = tensor(main, "x"), tensor(main, "y")
    choice = schema.IfOptionsT()
    choice.thenSubgraphIndex, choice.elseSubgraphIndex = then_index, else_index
    op(main, 0, [cond, x], [y], choice, schema.BuiltinOptions.IfOptions)
    main.inputs, main.outputs = [cond, x], [y]
    m.subgraphs = [main]
    for opcode in (1, 2):
        branch = schema.SubGraphT()
        branch.tensors, branch.operators = [], []
        bx, c, by = tensor(branch, "x"), tensor(branch, "one", buffer=1), tensor(branch, "y")
        op(branch, opcode, [bx, c], [by])
        branch.inputs, branch.outputs = [bx], [by]
        m.subgraphs.append(branch)
    return _pack(m)


CALLS = [  # (id, then, else, fragment); LiteRT refuses the first two and crashes on the third
    ("branch-out-of-range", 99, 2, "then_subgraph_index names subgraph 99, but the model has 3"),
    ("branch-negative", 1, -3, "else_subgraph_index names subgraph -3"),
    ("branch-calls-its-caller", 0, 2, "subgraph 0 calls itself (0 -> 0)"),
]


def test_the_control_flow_model_is_valid(tmp_path):
    path = tmp_path / "if.tflite"
    path.write_bytes(_if_model(1, 2))
    assert _litert(_INTERPRETER, path) == "ACCEPTED"
    assert [sg.operators[0].op for sg in read_model(path).subgraphs] == ["IF", "ADD", "SUB"]


@pytest.mark.parametrize("case", CALLS, ids=[c[0] for c in CALLS])
def test_subgraph_calls_litert_cannot_make_are_refused(case, tmp_path):
    """A control-flow operator names a subgraph that does not exist, or calls back into a graph
    that is running (LiteRT recurses until it crashes); tflc's planner would recurse too."""
    name, then_index, else_index, fragment = case
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(_if_model(then_index, else_index))
    assert _litert(_INTERPRETER, path).startswith("REFUSED")
    with pytest.raises(BadInput) as info:
        read_model(path)
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value), str(info.value)
    result = CliRunner().invoke(main, ["check", str(path), "--target", "cortex-m4"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output


def _valid_models() -> list[Path]:
    found = sorted(MLPERF.glob("*/*.tflite")) + sorted(EDGETPU_PAIRS.glob("*.tflite"))
    return found or [MLPERF / "missing.tflite"]


@pytest.mark.parametrize("path", _valid_models(), ids=lambda p: p.name)
def test_valid_models_are_not_refused(path):
    """MLPerf Tiny's int8 and float files and the Coral pairs (Edge TPU custom ops included)."""
    if not path.exists():
        pytest.skip(f"shared model fixtures not found at {path.parent} (expected ../shared beside the repo)")
    view = read_model(path)
    assert view.main.operators
    if path.name.endswith("_edgetpu.tflite"):
        assert "edgetpu-custom-op" in view.op_set()


def _chain(n_ops: int) -> bytes:
    """A float model of `n_ops` ADD operators in a chain, each adding a constant."""
    m = schema.ModelT()
    m.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    code.version = 1
    m.operatorCodes = [code]
    empty = schema.BufferT()
    const = schema.BufferT()
    const.data = np.ones(4, np.float32).view(np.uint8)
    m.buffers = [empty, const]
    sg = schema.SubGraphT()
    sg.tensors, sg.operators = [], []

    def tensor(name, buffer):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, 4], schema.TensorType.FLOAT32, buffer
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    c = tensor("c", 1)
    x = tensor("x0", 0)
    sg.inputs = [x]
    for i in range(n_ops):
        y = tensor(f"x{i + 1}", 0)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, [x, c], [y]
        sg.operators.append(op)
        x = y
    sg.outputs = [x]
    m.subgraphs = [sg]
    return _pack(m)


def test_reading_stays_linear():
    """A 300-op model reads in well under a second, and ten times the ops take about ten times
    as long, not a hundred (no walk over all operators per operator)."""
    small, large = _chain(300), _chain(3000)
    read_model(small)
    start = time.perf_counter()
    assert len(read_model(small).main.operators) == 300
    t_small = time.perf_counter() - start
    start = time.perf_counter()
    assert len(read_model(large).main.operators) == 3000
    t_large = time.perf_counter() - start
    assert t_small < 0.5, t_small
    assert t_large < 30 * max(t_small, 0.01), (t_small, t_large)


def _fuzz_inputs(data: bytes, seed: int, flips: int, cuts: int):
    """Seeded variants of a valid model: truncations at spread offsets and 1-4 random byte flips."""
    rng = np.random.default_rng(seed)
    for cut in np.linspace(8, len(data) - 1, cuts).astype(int):
        yield f"cut{cut}", data[:cut]
    for i in range(flips):
        blob = bytearray(data)
        for pos in rng.integers(8, len(blob), size=int(rng.integers(1, 5))):
            blob[pos] = int(rng.integers(0, 256))
        yield f"flip{i}", bytes(blob)


def _fuzz_base() -> bytes:
    small = EDGETPU_PAIRS / "split_concat.tflite"
    return need_mlperf(small if small.exists() else KWS).read_bytes()


# Judges many files in one process, each in a forked child (a file may crash LiteRT): one line
# per file, "ACCEPTED", "REFUSED <message>" or "CRASHED".
_FORKING_ORACLE = r"""
import os, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

def judge(path):
    try:
        it = Interpreter(model_content=open(path, "rb").read())
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()
    except Exception as exc:
        return "REFUSED " + str(exc).replace("\n", " ")
    return "ACCEPTED"

for path in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, judge(path).encode()[:2000])
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        verdict = pipe.read().decode(errors="replace")
    os.waitpid(pid, 0)
    print(verdict or "CRASHED", flush=True)
"""


def test_flipped_bytes_agree_with_litert(tmp_path):
    """Seeded byte flips of a small valid model, judged by LiteRT and by tflc: whatever LiteRT's
    flatbuffers verifier refuses, tflc refuses; whatever LiteRT loads and runs, tflc reads, except
    operators put out of order (LiteRT runs them on unwritten memory; its C++ verifier refuses)."""
    data = _fuzz_base()
    paths = []
    for label, blob in _fuzz_inputs(data, seed=21, flips=120, cuts=0):
        paths.append(tmp_path / f"{label}.tflite")
        paths[-1].write_bytes(blob)
    proc = subprocess.run([sys.executable, "-c", _FORKING_ORACLE, *map(str, paths)],
                          capture_output=True, text=True, timeout=600)
    verdicts = proc.stdout.splitlines()
    assert len(verdicts) == len(paths), proc.stderr[-2000:]
    damaged = 0
    for path, verdict in zip(paths, verdicts):
        try:
            read_model(path)
            ours = None
        except BadInput as exc:
            ours = str(exc)
        if "not a valid Flatbuffer" in verdict:
            damaged += 1
            assert ours is not None, f"{path.name}: LiteRT says {verdict}"
        if verdict == "ACCEPTED" and ours is not None:
            assert " before operator " in ours or "already wrote" in ours, f"{path.name}: {ours}"
    assert damaged >= 3, "the seed no longer damages the flatbuffer structure: pick another"


@pytest.mark.parametrize("seed, target", [(0, "cpu"), (1, "cortex-m4")])
def test_fuzzed_models_give_a_result_or_one_clean_error(seed, target, tmp_path):
    """In-process, through the same library call `tflc check` makes (for TFLite Micro with the
    arena planner too): only BadInput may escape."""
    data = _fuzz_base() if seed == 0 else need_mlperf(KWS).read_bytes()
    start = time.perf_counter()
    path = tmp_path / "fuzzed.tflite"
    for label, blob in _fuzz_inputs(data, seed, flips=150, cuts=20):
        path.write_bytes(blob)
        try:
            check_model(path, target)
        except BadInput as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), (label, str(exc))
    assert time.perf_counter() - start < 120


def test_fuzzed_models_through_the_command(tmp_path):
    """A few flipped files through the real command: exit 0, 2 or 3, never a traceback."""
    data = _fuzz_base()
    for label, blob in list(_fuzz_inputs(data, seed=7, flips=4, cuts=2)):
        path = tmp_path / f"{label}.tflite"
        path.write_bytes(blob)
        proc = subprocess.run([sys.executable, "-m", "tflc", "check", str(path), "--target", "cpu"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode in (0, 2, 3), (label, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, (label, proc.stderr)
        if proc.returncode == 2:
            assert proc.stderr.count("\n") == 1 and str(path) in proc.stderr, proc.stderr
