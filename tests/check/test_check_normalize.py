"""Graph normalization, requantization, custom ops a runtime implements, and the Edge TPU rules
learned from the Coral pairs: each mechanism against the real oracle (LiteRT's XNNPACK delegate,
tflite-micro, the pairs' edgetpu_compiler output), on models made here for the purpose."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from tests.check.corpus import _k
from tests.check.oracles import tflm_verdict, xnnpack_placement
from tests.conftest import SHARED
from tflc.check import check_model, load_target
from tflc.check.normalize import Normalization, StaticWeightRule, normalize, producer_support
from tflc.tflite.reader import read_model

PAIRS = SHARED / "fixtures" / "edgetpu_pairs"


def _convert(model, *, fp16=False, sparse=False, int8_io=None, data_shape=None) -> bytes:
    from tflc.tf_env import import_tensorflow, quiet_native_output

    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    if sparse:
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if int8_io is not None:
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(8):
                yield [rng.uniform(-1, 1, data_shape).astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = int8_io[0]
        converter.inference_output_type = int8_io[1]
    with quiet_native_output():
        return converter.convert()


def _cnn(k):
    inp = k.Input((12, 12, 3), batch_size=1)
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = k.layers.DepthwiseConv2D(3, padding="same")(x)
    x = k.layers.PReLU(shared_axes=[1, 2])(x)
    x = k.layers.Flatten()(x)
    return k.Model(inp, k.layers.Dense(6)(x))


@pytest.fixture(scope="module")
def fp16_model() -> bytes:
    k, tf = _k()
    tf.random.set_seed(0)
    k.backend.clear_session()
    return _convert(_cnn(k), fp16=True)


@pytest.fixture(scope="module")
def sparse_model() -> bytes:
    k, tf = _k()
    tf.random.set_seed(0)
    k.backend.clear_session()
    inp = k.Input((16,), batch_size=1)
    x = k.layers.Dense(64, activation="relu")(inp)
    model = k.Model(inp, k.layers.Dense(64)(x))
    rng = np.random.default_rng(0)
    for layer in model.layers[1:]:
        w, b = layer.get_weights()
        layer.set_weights([w * (rng.random(w.shape) > 0.9), b])  # 90% zeros: stored sparse
    return _convert(model, sparse=True)


def _agreement(model: bytes, target: str) -> tuple[dict[int, bool], dict[int, bool]]:
    truth = xnnpack_placement(model)
    mine = {v.index: v.placement == "target" for v in check_model(model, target).ops
            if v.subgraph == 0}
    return mine, truth


def _without_normalization(tmp_path, parent: str = "cpu"):
    path = tmp_path / f"{parent}-as-written.yaml"
    path.write_text(f"extends: {parent}\nnormalize: null\nprovenance: [{{source: test}}]\n")
    return str(path)


# ------------------------------------------------------------------ static weights (XNNPACK)


def test_fp16_weights_count_as_constant_and_dequantize_goes_with_its_consumer(fp16_model, tmp_path):
    sg = read_model(fp16_model).main
    dequantize = [op.index for op in sg.operators if op.op == "DEQUANTIZE"]
    assert dequantize, "the fp16 conversion should store weights as fp16 behind DEQUANTIZE"
    mine, truth = _agreement(fp16_model, "cpu")
    assert mine == truth
    assert all(truth[i] for i in dequantize)
    assert all(truth[op.index] for op in sg.operators if op.op in ("CONV_2D", "PRELU"))
    # Judged op by op as written, every consumer "has computed weights": the mechanism matters.
    as_written = check_model(fp16_model, _without_normalization(tmp_path))
    conv = next(v for v in as_written.ops if v.op == "CONV_2D")
    assert conv.placement == "cpu" and conv.reasons[0].code == "constant_weights"


def test_sparse_weights_behind_densify_are_static(sparse_model):
    sg = read_model(sparse_model).main
    densify = [op.index for op in sg.operators if op.op == "DENSIFY"]
    assert densify, "the sparsity optimization should store the pruned weights sparse"
    mine, truth = _agreement(sparse_model, "cpu")
    assert mine == truth and all(truth[i] for i in densify)


def test_a_static_producer_whose_consumer_falls_back_runs_on_the_cpu(fp16_model, tmp_path):
    # Remove FULLY_CONNECTED from the CPU target: its DEQUANTIZE stays with it, on the CPU.
    custom = tmp_path / "cpu-no-fc.yaml"
    custom.write_text("extends: cpu\nops: {FULLY_CONNECTED: null}\nprovenance: [{source: test}]\n")
    result = check_model(fp16_model, str(custom))
    sg = read_model(fp16_model).main
    fc = next(op for op in sg.operators if op.op == "FULLY_CONNECTED")
    feeding = next(i for i, op in enumerate(sg.operators)
                   if op.op == "DEQUANTIZE" and op.outputs[0] == fc.inputs[1])
    verdict = result.ops[feeding]
    assert verdict.placement == "cpu" and verdict.cut_by == fc.index
    assert f"op #{fc.index} (FULLY_CONNECTED)" in verdict.reasons[0].text
    others = [v for v in result.ops if v.op == "DEQUANTIZE" and v.index != feeding]
    assert others and all(v.placement == "target" for v in others)


def test_whole_graph_placement_keeps_producers_on_the_cpu_in_a_partial_delegation(fp16_model):
    graph = normalize(Normalization((StaticWeightRule("DEQUANTIZE", ("float16",), "whole_graph"),)),
                      read_model(fp16_model).main)
    assert graph.producers
    ops = [op.index for op in graph.subgraph.operators if op.index not in graph.producers]
    everything = producer_support(graph, dict.fromkeys(ops, True))
    assert all(taken for taken, _ in everything.values())
    partial = producer_support(graph, {i: i != ops[-1] for i in ops})
    assert not any(taken for taken, _ in partial.values())
    # The GPU descriptor uses it: an all-float fp16 model is one partition, DEQUANTIZE included.
    gpu = check_model(fp16_model, "gpu")
    assert gpu.segments == 1 and all(v.placement == "target" for v in gpu.ops if v.op == "DEQUANTIZE")


def test_normalize_section_is_validated(tmp_path):
    from tflc.errors import BadInput

    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: cpu\nnormalize: {static_weights: [{op: DEQUANTISE}]}\n"
                   "provenance: [{source: test}]\n")
    with pytest.raises(BadInput, match="DEQUANTISE"):
        load_target(str(bad))
    bad.write_text("extends: cpu\nnormalize: {static_weights: [{op: DEQUANTIZE, placement: "
                   "sometimes}]}\nprovenance: [{source: test}]\n")
    with pytest.raises(BadInput, match="placement"):
        load_target(str(bad))


# --------------------------------------------------------------------- requantization


@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_quantize_between_int8_and_uint8_stays_on_the_cpu(io):
    k, tf = _k()
    tf.random.set_seed(0)
    k.backend.clear_session()
    inp = k.Input((6, 6, 2), batch_size=1)
    x = k.layers.Conv2D(4, 3, padding="same")(inp)
    model = k.Model(inp, k.layers.Conv2D(2, 1)(x))
    kind = {"uint8": tf.uint8, "int8": tf.int8}[io]
    data = _convert(model, int8_io=(kind, kind), data_shape=(1, 6, 6, 2))
    mine, truth = _agreement(data, "cpu")
    assert mine == truth
    quantize = [op for op in read_model(data).main.operators if op.op == "QUANTIZE"]
    if io == "uint8":
        assert len(quantize) == 2 and not any(truth[op.index] for op in quantize)
        reasons = check_model(data, "cpu").ops[quantize[0].index].reasons
        assert reasons[0].code == "requantize_same_type" and "uint8 to int8" in reasons[0].text
    else:
        assert not quantize


# --------------------------------------------------------- custom ops a runtime implements


def _custom_transpose_conv(corpus_model: bytes) -> bytes:
    """The TRANSPOSE_CONV of a converted model rewritten as MediaPipe's
    Convolution2DTransposeBias (inputs: input, filter, bias; options: padding, strides)."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    import flatbuffers

    model = schema.ModelT.InitFromPackedBuf(corpus_model, 0)
    sg = model.subgraphs[0]
    codes = model.operatorCodes
    index = next(i for i, op in enumerate(sg.operators)
                 if max(codes[op.opcodeIndex].builtinCode,
                        codes[op.opcodeIndex].deprecatedBuiltinCode) == schema.BuiltinOperator.TRANSPOSE_CONV)
    op = sg.operators[index]
    shape, weights, data = list(op.inputs)[:3]
    bias = list(op.inputs)[3] if len(op.inputs) > 3 else -1
    if bias < 0:  # the converter folded no bias in: give the custom op a zero one
        channels = int(sg.tensors[weights].shape[0])
        buffer = schema.BufferT()
        buffer.data = list(np.zeros(channels, np.float32).tobytes())
        model.buffers.append(buffer)
        tensor = schema.TensorT()
        tensor.shape, tensor.type = [channels], schema.TensorType.FLOAT32
        tensor.buffer, tensor.name = len(model.buffers) - 1, "custom_bias"
        sg.tensors.append(tensor)
        bias = len(sg.tensors) - 1
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "Convolution2DTransposeBias"
    code.version = 1
    codes.append(code)
    options = op.builtinOptions
    op.opcodeIndex = len(codes) - 1
    op.inputs = [data, weights, bias]
    op.builtinOptionsType = 0
    op.builtinOptions = None
    # TfLitePadding counts from 1 (SAME), the schema from 0
    op.customOptions = list(struct.pack("<3i", int(options.padding) + 1, int(options.strideW),
                                        int(options.strideH)))
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_transposed_convolution_with_bias_custom_op_runs_in_xnnpack(tmp_path):
    k, tf = _k()
    tf.random.set_seed(0)
    k.backend.clear_session()
    from tests.check.corpus import upconv

    data = _custom_transpose_conv(_convert(upconv(k, tf)))
    sg = read_model(data).main
    custom = next(op for op in sg.operators if op.is_custom)
    assert custom.op == "Convolution2DTransposeBias"
    mine, truth = _agreement(data, "cpu")
    assert truth[custom.index] and mine == truth
    # A runtime that does not list it leaves it on the CPU, naming the custom op.
    plain = tmp_path / "cpu-no-custom.yaml"
    plain.write_text("extends: cpu\nops: {Convolution2DTransposeBias: null}\n"
                     "provenance: [{source: test}]\n")
    verdict = check_model(data, str(plain)).ops[custom.index]
    assert verdict.placement == "cpu" and "custom op 'Convolution2DTransposeBias'" in verdict.reasons[0].text


# ---------------------------------------------------------------- TFLite Micro's own rules


def test_tflite_micro_refuses_fp16_dequantize_and_hybrid_kernels(fp16_model):
    accepted, index, _ = tflm_verdict(fp16_model)
    assert not accepted
    result = check_model(fp16_model, "cortex-m4")
    assert not result.runs
    bad = {v.index for v in result.ops if [r for r in v.reasons if r.code not in ("partition", "fallback")]}
    assert index in bad
    assert result.ops[index].reasons[0].code == "input_dtype_in"


def _signal_window_model(custom: str) -> bytes:
    """One custom op of TFLite Micro's signal library (SignalWindow: int16 input times int16
    weights, shifted), built with the flatbuffers object API."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    import flatbuffers
    from flatbuffers import flexbuffers

    model = schema.ModelT()
    model.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode, code.version = custom, 1
    model.operatorCodes = [code]
    weights = schema.BufferT()
    weights.data = list(np.ones(16, np.int16).tobytes())
    model.buffers = [schema.BufferT(), weights, schema.BufferT()]
    tensors = []
    for name, buffer in (("x", 0), ("window", 1), ("y", 2)):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [16], schema.TensorType.INT16, buffer
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.customOptions = list(flexbuffers.Dumps({"shift": 12}))
    sg = schema.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs = tensors, [op], [0], [2]
    model.subgraphs = [sg]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize("custom, runs", [("SignalWindow", True), ("SignalNotInTheLibrary", False)])
def test_tflite_micro_signal_library_ops_are_its_own(custom, runs):
    data = _signal_window_model(custom)
    accepted, _, _ = tflm_verdict(data)
    assert accepted is runs
    for board in ("cortex-m4", "cortex-m7", "cortex-m55"):
        result = check_model(data, board)
        assert result.runs is runs, (board, [r.text for v in result.ops for r in v.reasons])
    if not runs:
        assert f"custom op '{custom}'" in check_model(data, "cortex-m4").ops[0].reasons[0].text


# ---------------------------------------------------------------------- Edge TPU pairs


def _pairs() -> list[dict]:
    if not (PAIRS / "placements.json").exists():
        pytest.skip(f"the Edge TPU pairs are not here ({PAIRS})")
    return json.loads((PAIRS / "placements.json").read_text())


def test_edgetpu_pairs_are_all_exact():
    wrong = {}
    for entry in _pairs():
        result = check_model(PAIRS / entry["cpu_file"], "edgetpu")
        mine = {v.index: v.placement == "target" for v in result.ops if v.subgraph == 0}
        truth = {i: True for i in entry["on_edgetpu"]} | {i: False for i in entry["on_cpu"]}
        bad = [i for i in truth if mine.get(i) != truth[i]]
        if bad:
            wrong[entry["model"]] = bad
    assert not wrong, wrong


def _pair_op(model: str, index: int):
    entry = next(e for e in _pairs() if e["model"] == model)
    result = check_model(PAIRS / entry["cpu_file"], "edgetpu")
    return result.ops[index], index in entry["on_edgetpu"]


def test_edgetpu_cast_then_quantize_at_the_input_cuts_nothing():
    view = read_model(PAIRS / "movenet_single_pose_lightning_ptq.tflite")
    first = view.main.operators[:2]
    assert [op.op for op in first] == ["CAST", "QUANTIZE"]
    verdict, on_tpu = _pair_op("movenet_single_pose_lightning_ptq", 5)
    assert on_tpu and verdict.placement == "target" and verdict.cut_by is None


def test_edgetpu_resize_limits_follow_the_pairs():
    big, on_tpu = _pair_op("deeplabv3_mnv2_pascal_quant", 64)  # 1x1 -> 33x33, align_corners
    assert not on_tpu and big.reasons[0].code == "resize_size_limits"
    small, on_tpu = _pair_op("movenet_single_pose_lightning_ptq", 71)  # 6x6 -> 12x12, version 3
    assert on_tpu and small.version == 3 and small.placement == "target"


def test_edgetpu_int16_lstm_state_and_tile_map():
    lstm, on_tpu = _pair_op("keras_lstm_mnist_ptq", 1)
    assert on_tpu and lstm.placement == "target"
    tile, on_tpu = _pair_op("deeplab_mobilenet_edgetpu_slim_cityscapes_quant", 76)
    assert on_tpu and tile.op == "TILE" and tile.placement == "target"


def test_batch_axis_rule_looks_at_the_size_of_the_batch():
    from dataclasses import replace

    from tflc.check.constraints import OpContext, evaluate

    _pairs()
    view = read_model(PAIRS / "movenet_single_pose_lightning_ptq.tflite")
    sg = view.main
    pack = next(op for op in sg.operators if op.op == "PACK")
    out = sg.tensors[pack.outputs[0]]

    def verdict(axis: int, batch: int):
        shape = (batch, *out.shape[1:])
        graph = replace(sg, tensors=[replace(t, shape=shape) if t.index == out.index else t
                                     for t in sg.tensors])
        op = replace(pack, options=dict(pack.options, axis=axis))
        return evaluate("no_batch_axis", {}, OpContext(view, graph, op))

    assert verdict(0, 1) is None  # along a batch of one nothing is joined
    assert "axis 0 of size 3" in verdict(0, 3)
    assert verdict(1, 3) is None


# ------------------------------------------------------------------------------- vela rules


def _vela_model(build) -> bytes:
    k, tf = _k()
    tf.random.set_seed(0)
    k.backend.clear_session()
    inp = k.Input((4, 4, 8), batch_size=1)
    return _convert(k.Model(inp, build(k, tf, inp)), int8_io=(tf.int8, tf.int8),
                    data_shape=(1, 4, 4, 8))


@pytest.mark.parametrize("name, build, op, on_npu", [
    # MEAN over the channels of an 8-channel 4x4 map: "reduction over depth is only supported if
    # any of h,w,c == 1"; over a 1-pixel-wide map it is.
    ("depth_mean", lambda k, tf, x: k.layers.Conv2D(4, 1)(k.layers.Lambda(
        lambda t: tf.reduce_mean(t, axis=-1, keepdims=True))(x)), "MEAN", False),
    ("depth_mean_w1", lambda k, tf, x: k.layers.Conv2D(4, 1)(k.layers.Lambda(
        lambda t: tf.reduce_mean(t[:, :, :1, :], axis=-1, keepdims=True))(x)), "MEAN", True),
    # ARG_MAX takes its axis as an input: along the height it stays on the CPU.
    ("argmax_h", lambda k, tf, x: k.layers.Lambda(lambda t: tf.argmax(t, axis=1))(x), "ARG_MAX", False),
    ("argmax_c", lambda k, tf, x: k.layers.Lambda(lambda t: tf.argmax(t, axis=-1))(x), "ARG_MAX", True),
])
def test_vela_reduction_rules_against_vela(name, build, op, on_npu, tmp_path):
    pytest.importorskip("ethosu.vela")
    from tests.check.oracles import vela_placement

    data = _vela_model(build)
    sg = read_model(data).main
    index = next(o.index for o in sg.operators if o.op == op)
    truth = vela_placement(data, tmp_path / name)
    assert truth[index] is on_npu
    verdict = check_model(data, "ethos-u55-128").ops[index]
    assert (verdict.placement == "target") is on_npu, [r.text for r in verdict.reasons]
