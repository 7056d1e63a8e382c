"""The fully-integer verifier: walk a .tflite and list every float tensor or op that remains.

"Fully integer" is what an int8-only accelerator or a microcontroller needs, and the converter's
own flags do not guarantee it (a layer can quietly stay float). This reads the produced
flatbuffer and says exactly what is float and where. Float tensors that only carry a model input
into its first QUANTIZE, or a last DEQUANTIZE into a model output, are the I/O boundary that
`--io-type float32` asks for; anything else is a float op inside the graph.

A float tensor that no operator reads or writes and that is no graph input or output carries
no computation: the fused int8 LSTM lists such tensors as "intermediates", holding only
quantization parameters its kernel reads. They are counted (`unused_float_tensors`), not listed
as float.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tflc.tflite.reader import ModelView


@dataclass
class FloatTensor:
    subgraph: int
    index: int
    name: str
    dtype: str
    role: str  # "input", "output", "constant" or "activation"


@dataclass
class FloatOp:
    subgraph: int
    index: int
    op: str
    boundary: bool  # a QUANTIZE of a float model input or a DEQUANTIZE into a float model output


@dataclass
class VerifyResult:
    fully_integer: bool
    integer_core: bool
    float_tensors: list[FloatTensor] = field(default_factory=list)
    float_ops: list[FloatOp] = field(default_factory=list)
    unused_float_tensors: int = 0  # float tensors no op reads or writes (fused-op intermediates)

    @property
    def verdict(self) -> str:
        if self.fully_integer:
            return "fully integer: no float tensor or op remains"
        if self.integer_core:
            return "integer inside; float only at the model's inputs/outputs (QUANTIZE/DEQUANTIZE at the edges)"
        inner = [op for op in self.float_ops if not op.boundary]
        names = ", ".join(f"{op.op}#{op.index}" for op in inner[:8])
        more = f" and {len(inner) - 8} more" if len(inner) > 8 else ""
        return f"NOT fully integer: {len(inner)} float op(s) inside the graph: {names}{more}"

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, **asdict(self)}


def verify_integer(view: ModelView) -> VerifyResult:
    tensors: list[FloatTensor] = []
    ops: list[FloatOp] = []
    unused = 0
    for sg in view.subgraphs:
        inputs, outputs = set(sg.inputs), set(sg.outputs)
        used = inputs | outputs | {i for op in sg.operators for i in op.inputs + op.outputs}
        for t in sg.tensors:
            if t.is_float and t.index not in used and not t.is_constant:
                unused += 1
            elif t.is_float:
                role = ("input" if t.index in inputs else "output" if t.index in outputs
                        else "constant" if t.is_constant else "activation")
                tensors.append(FloatTensor(sg.index, t.index, t.name, t.dtype, role))
        for op in sg.operators:
            touched = [i for i in op.inputs + op.outputs if i >= 0 and sg.tensors[i].is_float]
            if not touched:
                continue
            boundary = (
                (op.op == "QUANTIZE" and set(touched) <= inputs)
                or (op.op == "DEQUANTIZE" and set(touched) <= outputs)
            )
            ops.append(FloatOp(sg.index, op.index, op.op, boundary))
    boundary_tensors_only = all(t.role in ("input", "output") for t in tensors)
    return VerifyResult(
        fully_integer=not tensors and not ops,
        integer_core=boundary_tensors_only and all(op.boundary for op in ops),
        float_tensors=tensors,
        float_ops=ops,
        unused_float_tensors=unused,
    )
