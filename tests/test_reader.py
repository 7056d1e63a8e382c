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
