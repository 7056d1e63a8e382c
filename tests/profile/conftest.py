"""Fixtures of the profile tests: the MLPerf Tiny models (skipped where absent), a long chain."""

from __future__ import annotations

import pytest

from tests.conftest import MLPERF_INT8, need_mlperf


@pytest.fixture(params=sorted(MLPERF_INT8))
def mlperf_model(request):
    """(name, path) of each MLPerf Tiny int8 reference model."""
    return request.param, need_mlperf(MLPERF_INT8[request.param])


@pytest.fixture(scope="session")
def chain_300(tmp_path_factory):
    """A 300-op model: ad01's 128x128 FULLY_CONNECTED layer repeated 300 times in a chain,
    built with LiteRT's schema object API (real weights and quantization, no training)."""
    import copy

    import flatbuffers

    from tflc.profile import cut

    source = need_mlperf(MLPERF_INT8["ad"])
    model = cut.unpack(source.read_bytes())
    sg = model.subgraphs[0]
    layer = next(op for op in sg.operators
                 if list(sg.tensors[op.inputs[0]].shape) == [1, 128]
                 and list(sg.tensors[op.outputs[0]].shape) == [1, 128])
    weights, bias = layer.inputs[1], layer.inputs[2]
    out_template = sg.tensors[layer.outputs[0]]
    first = copy.copy(sg.tensors[layer.inputs[0]])
    first.buffer = 0
    tensors = [first, copy.copy(sg.tensors[weights]), copy.copy(sg.tensors[bias])]
    ops = []
    for i in range(300):
        out = copy.copy(out_template)
        out.buffer = 0
        out.name = f"act{i}".encode()
        tensors.append(out)
        op = copy.copy(layer)
        op.inputs = [0 if i == 0 else len(tensors) - 2, 1, 2]
        op.outputs = [len(tensors) - 1]
        ops.append(op)
    sg.tensors, sg.operators = tensors, ops
    sg.inputs, sg.outputs = [0], [len(tensors) - 1]
    model.subgraphs = [sg]
    model.signatureDefs = []
    model.metadata = []
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path_factory.mktemp("chain") / "chain300.tflite"
    path.write_bytes(bytes(builder.Output()))
    return path
