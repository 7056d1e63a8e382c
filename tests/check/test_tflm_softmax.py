"""TFLite Micro's int8 SOFTMAX aborts on rows of 512 or more elements when that many scores tie
at the maximum (a flat input); varied rows of the same length run. The abort depends on the
data, so `tflc check` does not refuse such a SOFTMAX; the cortex-m4 descriptor's notes say it.

The models are micro_speech's own SOFTMAX (TFLite Micro's example, committed under tests/data)
cut out alone with its row length rewritten, so the kernel, scales and options are real.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tflc.check import check_model, load_target

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "tflm_examples" / "micro_speech_quantized.tflite"
RUN = """
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime
it = runtime.Interpreter.from_bytes(open(sys.argv[1], "rb").read())
d = it.get_input_details(0)
flat = sys.argv[2] == "flat"
x = np.zeros(d["shape"], d["dtype"]) if flat else np.random.default_rng(0).integers(-128, 128, d["shape"])
it.set_input(x.astype(d["dtype"]), 0)
it.invoke()
print("ran")
"""


def _softmax_of_width(width: int, folder: Path) -> Path:
    import flatbuffers

    from tflc.profile import cut

    source = cut.unpack(EXAMPLE.read_bytes())
    index = next(op_index for op_index, op in enumerate(source.subgraphs[0].operators)
                 if cut.op_name(source, op) == "SOFTMAX")
    alone = cut.unpack(cut.single_op_model(source, 0, index))
    graph = alone.subgraphs[0]
    op = graph.operators[0]
    for tensor in (op.inputs[0], op.outputs[0]):
        graph.tensors[tensor].shape = [1, width]
        graph.tensors[tensor].shapeSignature = None
    builder = flatbuffers.Builder(1024)
    builder.Finish(alone.Pack(builder), file_identifier=b"TFL3")
    path = folder / f"softmax_{width}.tflite"
    path.write_bytes(bytes(builder.Output()))
    return path


@pytest.mark.parametrize("width, rows, runs", [(511, "flat", True), (512, "flat", False),
                                               (512, "varied", True)])
def test_int8_softmax_aborts_only_on_long_flat_rows(width, rows, runs, tmp_path):
    pytest.importorskip("tflite_micro")
    model = _softmax_of_width(width, tmp_path)
    done = subprocess.run([sys.executable, "-c", RUN, str(model), rows], capture_output=True,
                          text=True)
    assert (done.returncode == 0 and "ran" in done.stdout) == runs, (done.returncode,
                                                                      done.stderr[-300:])
    assert check_model(model, "cortex-m4").fully_on_target  # data decide: no refusal
    assert any("512 or more elements" in note for note in load_target("cortex-m4").notes)
