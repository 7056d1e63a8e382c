"""Asserting "fully integer" on the flatbuffer itself, never on tflc's own report.

Every tensor an operator reads or writes must be an integer type, and no operator may be a
loop (`WHILE`), custom or Flex op: what a microcontroller or an int8 accelerator needs. Tensors
no operator touches (the fused LSTM's quantization-only "intermediates") carry no computation.
"""

from __future__ import annotations

from tflc.tflite.reader import read_model

INTEGER = {"int8", "int16", "int32", "int64", "uint8", "bool"}
NOT_BUILTIN = {"WHILE", "IF", "CALL_ONCE", "CUSTOM"}


def assert_fully_integer(model) -> dict:
    """Raise AssertionError naming the first float tensor or non-builtin op; the op histogram."""
    view = read_model(model)
    for sg in view.subgraphs:
        for op in sg.operators:
            assert op.op not in NOT_BUILTIN and not op.is_custom, f"op {op.op} #{op.index}"
            for index in op.inputs + op.outputs:
                if index < 0:
                    continue
                tensor = sg.tensors[index]
                assert tensor.dtype in INTEGER, (
                    f"{op.op} #{op.index} touches {tensor.dtype} tensor {tensor.name!r}")
        for index in list(sg.inputs) + list(sg.outputs):
            assert sg.tensors[index].dtype in INTEGER, f"model I/O {sg.tensors[index].name!r}"
    return view.op_histogram()
