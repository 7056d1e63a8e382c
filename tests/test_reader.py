"""tflc's own flatbuffer reader and the fully-integer verifier, without TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import MLPERF, MLPERF_INT8, need_mlperf
from tflc.convert.integer_verifier import verify_integer
from tflc.errors import BadInput
from tflc.tflite.reader import read_model


@pytest.mark.parametrize("name", sorted(MLPERF_INT8))
def test_reads_the_mlperf_reference_files(name):
    view = read_model(need_mlperf(MLPERF_INT8[name]))
    histogram = view.op_histogram()
    expected = {
        "kws": {"CONV_2D": 5, "DEPTHWISE_CONV_2D": 4, "AVERAGE_POOL_2D": 1, "RESHAPE": 1,
                "FULLY_CONNECTED": 1, "SOFTMAX": 1},
        "ic": {"CONV_2D": 9, "ADD": 3, "AVERAGE_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1, "SOFTMAX": 1},
        "ad": {"FULLY_CONNECTED": 10},
    }
    if name in expected:
        assert histogram == expected[name]
    assert verify_integer(view).fully_integer
    conv = next(op for op in view.operators if op.op in ("CONV_2D", "FULLY_CONNECTED"))
    weights = view.main.tensors[conv.inputs[1]]
    assert weights.is_constant and weights.dtype == "int8"
    # weight granularity, as the fixtures' README states
    assert weights.quantization.per_channel == (name != "ad")
    data = view.tensor_data(weights)
    assert data.shape == weights.shape and not data.flags.owndata  # a view, not a copy


def test_options_and_versions_are_decoded():
    view = read_model(need_mlperf(MLPERF_INT8["ic"]))
    conv = next(op for op in view.operators if op.op == "CONV_2D")
    assert conv.version >= 1
    assert conv.options["padding"] in ("SAME", "VALID")
    assert conv.options["fused_activation_function"] in ("NONE", "RELU", "RELU6")
    assert {"stride_w", "stride_h", "dilation_w_factor"} <= set(conv.options)


def test_float_model_is_reported_by_the_verifier():
    view = read_model(need_mlperf(MLPERF / "vww" / "vww_96_float.tflite"))
    verdict = verify_integer(view)
    assert not verdict.fully_integer and not verdict.integer_core
    assert "NOT fully integer" in verdict.verdict
    assert {t.role for t in verdict.float_tensors} >= {"input", "output", "constant", "activation"}


def test_every_truncation_is_a_clean_error_or_a_model(digits_tflite):
    data = digits_tflite.read_bytes()
    for cut in list(range(0, 64)) + list(range(64, len(data), 89)):
        try:
            read_model(data[:cut])
        except BadInput as exc:
            assert "TFLite" in str(exc) or "TFL3" in str(exc)


def test_random_bytes_behind_the_identifier_are_a_clean_error(tmp_path):
    rng = np.random.default_rng(0)
    for _ in range(200):
        blob = bytearray(rng.integers(0, 256, size=int(rng.integers(8, 4000)), dtype=np.uint8).tobytes())
        blob[4:8] = b"TFL3"
        blob[0:4] = int(rng.integers(8, len(blob))).to_bytes(4, "little")
        try:
            read_model(bytes(blob))
        except BadInput:
            pass


def test_files_that_are_not_models(tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("hello")
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    for path, fragment in ((text, "no 'TFL3' identifier"), (empty, "empty"), (tmp_path / "missing.tflite", "no such file")):
        with pytest.raises(BadInput, match=fragment) as info:
            read_model(path)
        assert str(path) in str(info.value)


def test_the_reader_does_not_import_tensorflow(digits_tflite):
    code = ("import sys; sys.modules['tensorflow'] = None; "
            "from tflc.tflite.reader import read_model; from tflc.convert.integer_verifier import verify_integer; "
            f"v = read_model({str(digits_tflite)!r}); print(verify_integer(v).fully_integer)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def _mutated_kws(mutate) -> bytes:
    """The MLPerf keyword-spotting int8 model with one change, through LiteRT's object API."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(need_mlperf(MLPERF_INT8["kws"]).read_bytes(), 0)
    mutate(model.subgraphs[0], model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_a_constant_buffer_longer_than_its_tensor_reads_like_litert():
    """LiteRT runs a model whose constant buffer has bytes to spare (it reads the first ones);
    `tensor_data` hands out the tensor's own bytes, shaped, instead of failing to reshape."""

    def pad(sg, model):
        weights = sg.tensors[int(sg.operators[0].inputs[1])]
        buf = model.buffers[weights.buffer]
        buf.data = np.concatenate([buf.data, np.full(8, 7, np.uint8)])

    view = read_model(_mutated_kws(pad))
    weights = view.main.tensors[view.main.operators[0].inputs[1]]
    original = read_model(need_mlperf(MLPERF_INT8["kws"]))
    data = view.tensor_data(weights)
    assert data.shape == weights.shape == (64, 10, 4, 1)
    assert np.array_equal(data, original.tensor_data(original.main.tensors[weights.index]))


def test_names_that_are_not_utf8_do_not_make_a_model_corrupt():
    """Names are opaque bytes to LiteRT, which runs such a model; the reader keeps what it can."""

    def rename(sg, model):
        sg.tensors[22].name = b"conv\xff\xfeout"

    view = read_model(_mutated_kws(rename))
    assert view.main.tensors[22].name.startswith("conv") and "\ufffd" in view.main.tensors[22].name


def test_types_newer_than_the_tflite_package_are_named():
    """LiteRT already knows INT2, UINT4 and the FLOAT8 types; the reader names them rather than
    reporting a number, and counts their packed bytes."""

    def retype(sg, model):
        for index, code in zip((22, 23, 24, 25), (19, 20, 21, 22)):
            sg.tensors[index].type = code

    tensors = read_model(_mutated_kws(retype)).main.tensors
    assert [tensors[i].dtype for i in (22, 23, 24, 25)] == ["int2", "uint4", "float8_e4m3fn", "float8_e5m2"]
    assert tensors[22].nbytes == (tensors[22].num_elements + 3) // 4
    assert tensors[23].nbytes == (tensors[23].num_elements + 1) // 2


def test_ops_written_with_only_the_new_builtin_code_are_read_as_litert_reads_them():
    """Writers may leave `deprecated_builtin_code` at its default (0, ADD) and set only
    `builtin_code` (ai-edge-quantizer writes its QUANTIZE so); LiteRT takes the larger of the two.
    The tflite package's accessor takes the deprecated one under 127, so every such op read ADD."""
    from ai_edge_litert.interpreter import Interpreter

    def only_new_codes(sg, model):
        for code in model.operatorCodes:
            code.builtinCode = max(code.builtinCode, code.deprecatedBuiltinCode)
            code.deprecatedBuiltinCode = 0

    data = _mutated_kws(only_new_codes)
    interpreter = Interpreter(model_content=data)
    litert = [d["op_name"] for d in interpreter._get_ops_details()]
    ours = [op.op for op in read_model(data).main.operators]
    assert ours == litert == [op.op for op in read_model(need_mlperf(MLPERF_INT8["kws"])).main.operators]
    assert "ADD" not in ours and "CONV_2D" in ours
