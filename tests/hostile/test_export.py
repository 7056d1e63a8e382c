"""`tflc export` against hostile input: names that try to become code in the generated package,
corrupt models, crashes inside TFLite Micro. Every input is generated here."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.export.conftest import mlperf, need_tool, run
from tflc.export import export_c

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
