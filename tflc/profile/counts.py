"""What each operator costs by count, from tensor shapes alone: MACs and bytes.

Why counted and not measured: MACs and bytes are properties of the graph, identical on every
device, and they explain measured times (a conv with 40% of the MACs taking 40% of the time is
compute bound; one taking far more is memory or overhead bound). The rules are the usual ones
(one multiply-accumulate per weight per output position), the ones vela and MLPerf Tiny quote.
"""

from __future__ import annotations

from tflc.tflite.reader import ModelView, OperatorInfo, SubgraphInfo


def _shape(sg: SubgraphInfo, op: OperatorInfo, position: int, outputs: bool = False):
    ids = op.outputs if outputs else op.inputs
    if position >= len(ids) or ids[position] < 0:
        return None
    return sg.tensors[ids[position]].shape


def _elements(shape) -> int:
    total = 1
    for dim in shape or ():
        total *= max(int(dim), 1)
    return total


def macs(sg: SubgraphInfo, op: OperatorInfo) -> int:
    """Multiply-accumulates of one op: per output element, one per weight it reads.

    CONV_2D: filter [O, kh, kw, I/groups] -> out elements x kh x kw x I/groups.
    DEPTHWISE_CONV_2D: filter [1, kh, kw, O] -> out elements x kh x kw.
    FULLY_CONNECTED: weights [units, depth] -> out elements x depth.
    TRANSPOSE_CONV: filter [O, kh, kw, I] -> input elements x kh x kw x O.
    BATCH_MATMUL: out elements x the shared dimension. Pools, elementwise ops: 0 MACs.
    """
    out = _shape(sg, op, 0, outputs=True)
    name = op.op
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D"):
        weights = _shape(sg, op, 1)
        if not weights or out is None:
            return 0
        if name == "DEPTHWISE_CONV_2D":
            return _elements(out) * _elements(weights[1:3])
        return _elements(out) * _elements(weights[1:]) if name != "CONV_3D" \
            else _elements(out) * _elements(weights[:4])
    if name == "TRANSPOSE_CONV":
        weights, data = _shape(sg, op, 1), _shape(sg, op, 2)
        if not weights or not data:
            return 0
        return _elements(data) * _elements(weights[1:3]) * int(weights[0])
    if name == "BATCH_MATMUL":
        left = _shape(sg, op, 0)
        if not left or out is None:
            return 0
        adjoint = bool(op.options.get("adjX") or op.options.get("adj_x"))
        depth = left[-2] if adjoint and len(left) >= 2 else left[-1]
        return _elements(out) * max(int(depth), 1)
    return 0


def param_bytes(sg: SubgraphInfo, op: OperatorInfo) -> int:
    """Bytes of the constants the op reads (weights, biases, constant operands)."""
    seen, total = set(), 0
    for t in op.inputs:
        if t >= 0 and t not in seen and sg.tensors[t].is_constant:
            seen.add(t)
            total += sg.tensors[t].nbytes
    return total


def activation_bytes(sg: SubgraphInfo, op: OperatorInfo) -> tuple[int, int]:
    """(input, output) activation bytes: the non-constant tensors the op reads and writes."""
    inputs = sum(sg.tensors[t].nbytes for t in set(op.inputs)
                 if t >= 0 and not sg.tensors[t].is_constant)
    outputs = sum(sg.tensors[t].nbytes for t in set(op.outputs) if t >= 0)
    return inputs, outputs


def count_ops(view: ModelView) -> list[dict]:
    """Per op of every subgraph: index, subgraph, op, macs, param/input/output bytes."""
    rows = []
    for sg in view.subgraphs:
        for op in sg.operators:
            read, written = activation_bytes(sg, op)
            rows.append({"index": op.index, "subgraph": sg.index, "op": op.op,
                         "macs": macs(sg, op), "param_bytes": param_bytes(sg, op),
                         "input_bytes": read, "output_bytes": written})
    return rows
