"""`tflc export` against hostile input: names that try to become code in the generated package,
corrupt models, crashes inside TFLite Micro. Every input is generated here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.export.conftest import mixed_ops_models, mlperf, need_tool, run
from tflc.export import export_c

__all__ = ["mixed_ops_models"]  # the shared fixture, used below

WARNINGS = ["-Wall", "-Wextra", "-Werror"]
INJECTED = "injected_backdoor"
# A file name whose newlines would turn the rest of the name into C++ after a `//` comment.
HOSTILE_NAME = f'x\nextern "C" int {INJECTED}(void){{return 42;}}\n#define TFLC_TAIL .tflite'


def hostile_copy(folder: Path, name: str = HOSTILE_NAME) -> Path:
    """The kws model saved under a file name chosen by an attacker."""
    path = folder / name
    shutil.copyfile(mlperf("kws"), path)
    return path


def compiled_symbols(source: Path, work: Path) -> str:
    """`nm` of the object g++ makes from one generated source, with the house's warnings."""
    gxx, nm = need_tool("g++"), need_tool("nm")
    work.mkdir(parents=True, exist_ok=True)
    done = run([gxx, *WARNINGS, "-std=c++17", "-c", str(source), "-o", "out.o"], work)
    assert done.returncode == 0, done.stderr
    return subprocess.run([nm, "out.o"], cwd=work, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("layout, source", [("plain", "kws_model_data.cc"),
                                            ("arduino", "src/kws_model_data.cpp")])
def test_a_newline_in_the_model_file_name_never_becomes_code(tmp_path, layout, source):
    model = hostile_copy(tmp_path)
    out = tmp_path / "out"
    export_c(model, out, name="kws", layout=layout, measure=False, verify=False)
    symbols = compiled_symbols(out / source, tmp_path / "build")
    assert "kws_model_data" in symbols
    assert INJECTED not in symbols
    for path in (p for p in out.rglob("*") if p.is_file() and p.name != "export_report.json"):
        for line in path.read_text().splitlines():
            assert not line.lstrip().startswith((f'extern "C" int {INJECTED}', "#define TFLC_TAIL")), (
                path, line)


@pytest.mark.parametrize("tail", ["\\", "*/ int evil;", "??/", "\u202e", "`<b>`"])
def test_names_that_end_a_comment_or_continue_it_stay_inside_it(tmp_path, tail):
    from tflc.export.c_source import user_text

    text = user_text(f"model{tail}")
    assert text.isprintable() and not text.endswith("\\")
    for dangerous in ("*/", "/*", "??", "`", "\u202e"):
        assert dangerous not in text
    # Still readable: the safe characters are kept as they are.
    assert text.startswith("model")



def with_input_name(model: Path, name: str, out: Path) -> Path:
    """A copy of `model` whose first input tensor is called `name`."""
    flatbuffers = pytest.importorskip("flatbuffers")
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    obj = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model.read_bytes(), 0))
    graph = obj.subgraphs[0]
    graph.tensors[graph.inputs[0]].name = name.encode()
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(bytes(builder.Output()))
    return out


def test_a_tensor_name_cannot_add_lines_to_the_readme_or_the_terminal(tmp_path):
    hostile = "in`\n# Run this first\n\x1b[2J<script>alert(1)</script>"
    model = with_input_name(mlperf("kws"), hostile, tmp_path / "m\x1b[31m.tflite")
    out = tmp_path / "out"
    report = export_c(model, out, name="kws", measure=False, verify=False)
    readme = (out / "README.md").read_text()
    assert "# Run this first" not in readme.splitlines()
    line = next(line for line in readme.splitlines() if line.startswith("- input 0:"))
    assert line.count("`") == 2 and "\\x0a# Run this first" in line
    assert all(ch.isprintable() for ch in report.to_text().replace("\n", ""))


def rewritten(model: Path, out: Path, change) -> Path:
    """A copy of `model` with `change(model_object)` applied to its flatbuffer."""
    flatbuffers = pytest.importorskip("flatbuffers")
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    obj = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model.read_bytes(), 0))
    change(obj)
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    out.write_bytes(bytes(builder.Output()))
    return out


def _unknown_type(obj):
    obj.subgraphs[0].tensors[0].type = 77


def _negative_op_input(obj):
    op = obj.subgraphs[0].operators[0]
    op.inputs = [-5, *list(op.inputs)[1:]]


def _negative_dimension(obj):
    graph = obj.subgraphs[0]
    tensor = graph.tensors[graph.inputs[0]]
    tensor.shape = [1, -3, *list(tensor.shape)[2:]]


def _weights_past_their_buffer(obj):
    """The first FULLY_CONNECTED claims 1000 times the weight rows its buffer holds."""
    graph = obj.subgraphs[0]
    op = graph.operators[0]
    for tensor_index, axis in ((op.inputs[1], 0), (op.inputs[2], 0), (op.outputs[0], 1)):
        tensor = graph.tensors[tensor_index]
        shape = [int(d) for d in tensor.shape]
        shape[axis] *= 1000
        tensor.shape = shape


CORRUPTIONS = {"unknown_type": ("kws", _unknown_type),
               "negative_op_input": ("kws", _negative_op_input),
               "negative_dimension": ("kws", _negative_dimension),
               "weights_past_their_buffer": ("ad", _weights_past_their_buffer)}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_model_exits_2_naming_the_file_and_writes_nothing(tmp_path, corruption):
    from tests.export.conftest import tflc

    base, change = CORRUPTIONS[corruption]
    work = tmp_path / "work"  # tmp_path also holds the test's private registry
    work.mkdir()
    model = rewritten(mlperf(base), work / f"{corruption}.tflite", change)
    out = work / "out"
    done = tflc("export", str(model), "-o", str(out), "--name", "m")
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert err.startswith("tflc: error:") and len(err.splitlines()) == 1, err
    assert str(model) in err and "internal error" not in err
    assert not out.exists()
    assert [p.name for p in work.iterdir()] == [model.name]


def _buffer_out_of_range(obj):
    obj.subgraphs[0].tensors[0].buffer = 2**31 - 1  # gigabytes past the buffer table


def test_tflite_micro_crashing_while_setting_up_is_one_line_naming_the_crash(tmp_path, capfd):
    from tflc.errors import PipelineError
    from tflc.export.arena import ArenaProber, measure_arena

    pytest.importorskip("tflite_micro")
    model = rewritten(mlperf("kws"), tmp_path / "m.tflite", _buffer_out_of_range).read_bytes()
    with pytest.raises(PipelineError) as caught:
        measure_arena(model, hint=24_272)
    message = caught.value.message
    assert len(message.splitlines()) == 1
    assert "crashed" in message and "SIGSEGV" in message
    assert "not for lack of memory" in message  # a crash at every size is not "too small"
    assert capfd.readouterr().err == ""
    with ArenaProber(model) as probe:  # and the crash costs two probes, not a search to 256 MiB
        ok, log = probe(24_272)
    assert not ok and probe.crashes == 1 and "SIGSEGV" in log[0]


def test_tflite_micro_crashing_while_running_is_one_line(tmp_path, capfd):
    import numpy as np

    from tflc.errors import PipelineError
    from tflc.export.crosscheck import run_micro

    pytest.importorskip("tflite_micro")
    model = rewritten(mlperf("ad"), tmp_path / "m.tflite", _weights_past_their_buffer).read_bytes()
    with pytest.raises(PipelineError) as caught:
        run_micro(model, 20_000_000, [[np.ones((1, 640), np.int8)]])
    message = caught.value.message
    assert len(message.splitlines()) == 1
    assert "crashed" in message and "SIGSEGV" in message and "sample 0" in message
    # the silent death is located by bisecting the graph's prefixes: the corrupted op is named
    assert "at op 0 (FULLY_CONNECTED, output tensor" in message
    assert capfd.readouterr().err == ""


def test_a_model_tflite_micro_refuses_exits_2_and_leaves_no_folder(tmp_path):
    from tests.export.conftest import tflc

    def softmax_first(obj):
        """Well-formed, but the first operator (a convolution with 3 inputs) becomes SOFTMAX."""
        codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in obj.operatorCodes]
        obj.subgraphs[0].operators[0].opcodeIndex = codes.index(softmax_code(obj))

    pytest.importorskip("tflite_micro")
    work = tmp_path / "work"
    work.mkdir()
    model = rewritten(mlperf("kws"), work / "softmax.tflite", softmax_first)
    done = tflc("export", str(model), "-o", str(work / "out"), "--no-verify")
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert str(model) in err and "TFLite Micro cannot set up" in err and "SOFTMAX" in err
    assert sorted(p.name for p in work.iterdir()) == ["softmax.tflite"]


def softmax_code(obj) -> int:
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    return schema.BuiltinOperator.SOFTMAX


def test_weights_past_their_buffer_are_bad_input_before_tflite_micro_runs_them(tmp_path):
    from tflc.errors import BadInput
    from tflc.export.crosscheck import compare_interpreters

    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tflite_micro")
    # Weights past their buffer: LiteRT and tflc's reader check buffer sizes, TFLite Micro does
    # not and would read past them. TFLite Micro judges what runs, never memory safety.
    model = rewritten(mlperf("ad"), tmp_path / "m.tflite", _weights_past_their_buffer)
    with pytest.raises(BadInput) as caught:
        compare_interpreters(model.read_bytes(), 20_000_000, samples=1, name=str(model))
    message = caught.value.message
    assert message.startswith(f"{model}: invalid TFLite model") and "needs 512000 bytes" in message
    assert len(message.splitlines()) == 1


def test_a_model_litert_and_tflite_micro_both_refuse_is_bad_input_naming_litert(tmp_path):
    from tflc.errors import BadInput
    from tflc.export.crosscheck import compare_interpreters

    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tflite_micro")
    # Valid for the reader, but a 20-byte arena is too small for TFLite Micro, and a custom
    # op LiteRT lacks makes LiteRT refuse: both say no, so the model is bad input.
    model = (Path(__file__).parents[1] / "data" / "tflm_examples" / "audio_preprocessor_int8.tflite")
    if not model.exists():
        pytest.skip(f"{model} missing")
    with pytest.raises(BadInput) as caught:
        compare_interpreters(model.read_bytes(), 20, samples=1, name=str(model))
    message = caught.value.message
    assert message.startswith(f"{model}: LiteRT refuses this model") and len(message.splitlines()) == 1
    assert "unresolved custom op: SignalWindow" in message
    assert "TFLite Micro crashed" in message or "TFLite Micro cannot allocate" in message


def test_the_tflite_micro_child_cannot_write_to_the_users_terminal():
    """glibc writes fatal messages ("double free or corruption") to the controlling terminal,
    not to stderr: the child has none (a session of its own) and is told to use stderr, which
    goes to a log file tflc reads."""
    import os

    from tflc.export.arena import ArenaProber

    pytest.importorskip("tflite_micro")
    with ArenaProber(mlperf("ad").read_bytes()) as probe:
        assert probe(1 << 20)[0]
        pid = probe._child.pid
        session = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        stderr = os.readlink(f"/proc/{pid}/fd/2")
    assert session == pid != os.getsid(0)
    assert b"LIBC_FATAL_STDERR_=1" in environ
    assert "/dev/" not in stderr  # a file tflc reads, never the terminal


def test_tflite_micro_that_never_finishes_is_stopped_with_one_line():
    import numpy as np

    from tflc.errors import PipelineError
    from tflc.export.crosscheck import run_micro

    pytest.importorskip("tflite_micro")
    with pytest.raises(PipelineError, match="did not finish the sample inputs in 0.01 s"):
        run_micro(mlperf("ad").read_bytes(), 1 << 20, [[np.ones((1, 640), np.int8)]] * 50,
                  timeout=0.01)


def test_a_model_the_planner_cannot_follow_is_one_line_naming_the_op(
        mixed_ops_models, tmp_path):
    from tests.export.conftest import tflc

    def mean_without_axis(obj):
        """MEAN keeps only its data operand: the planner's kernel table expects the axis too."""
        schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in obj.operatorCodes]
        for op in obj.subgraphs[0].operators:
            if codes[op.opcodeIndex] == schema.BuiltinOperator.MEAN:
                op.inputs = list(op.inputs)[:1]

    pytest.importorskip("tflite_micro")
    work = tmp_path / "work"
    work.mkdir()
    model = rewritten(mixed_ops_models["int8"], work / "mean.tflite", mean_without_axis)
    done = tflc("export", str(model), "-o", str(work / "out"), "--no-verify")
    err = done.stderr.strip()
    # TFLite Micro dies of it; the planner's reason names the op.
    assert done.returncode == 1 and len(err.splitlines()) == 1, err
    assert str(model) in err and "internal error" not in err and "crashed (SIGSEGV)" in err
    assert "op #9 (MEAN)" in err
    assert sorted(p.name for p in work.iterdir()) == ["mean.tflite"]
