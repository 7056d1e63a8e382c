"""TFLite Micro's own example models (tests/data/tflm_examples, copied from tflite-micro) export,
with TFLite Micro as the judge: each writes its package, has its arena measured in TFLite Micro,
runs its samples there, and its sources compile with g++ -Wall -Wextra -Werror. None of these
models was built by tflc's tests; the one that cannot run on a host build says why in one line.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from tests.export.conftest import tflc
from tests.export.test_export import compile_and_run
from tflc.export import export_c
from tflc.tflite.reader import read_model

EXAMPLES = Path(__file__).parents[1] / "data" / "tflm_examples"
MODELS = sorted(p.name for p in EXAMPLES.glob("*.tflite"))
# Compiled by vela for the Arm Ethos-U NPU: its one operator is the NPU's, not a CPU kernel.
CANNOT_RUN = {"person_detect_vela.tflite": "ethos-u"}

pytestmark = pytest.mark.skipif(not MODELS, reason=f"no models in {EXAMPLES}")


@pytest.fixture(autouse=True)
def _interpreters():
    pytest.importorskip("tflite_micro")
    pytest.importorskip("ai_edge_litert")


def test_the_examples_are_all_here():
    assert len(MODELS) == 13, MODELS


@pytest.mark.parametrize("target", [None, "cortex-m4"])
@pytest.mark.parametrize("model", [m for m in MODELS if m not in CANNOT_RUN])
def test_tflite_micro_example_exports_and_compiles(model, target, tmp_path):
    path = EXAMPLES / model
    out = tmp_path / "pkg"
    report = export_c(path, out, target=target, name="example")
    data = path.read_bytes()
    assert report.arena.basis == "measured" and report.arena.measured_bytes > 0
    assert report.verification.array_identical
    assert report.verification.tflm, report.verification.notes  # TFLite Micro ran the samples
    if target:
        assert report.budget is not None and report.passed
    (length, crc, misalignment, arena), (registered, capacity) = compile_and_run(
        out, "example", "cc", tmp_path / "build")
    assert (length, crc, misalignment) == (len(data), zlib.crc32(data), 0)
    assert arena == report.arena.recommended_bytes
    assert registered == capacity == len(read_model(path, judge="tflite-micro").op_set())
    saved = json.loads((out / "export_report.json").read_text())
    assert saved["verification"]["notes"] == report.verification.notes


@pytest.mark.parametrize("model", sorted(CANNOT_RUN))
def test_an_example_that_cannot_run_here_is_one_line(model, tmp_path):
    done = tflc("export", str(EXAMPLES / model), "-o", str(tmp_path / "out"), "--target", "cortex-m4")
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert CANNOT_RUN[model] in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_signal_library_ops_are_registered_by_their_resolver_methods(tmp_path):
    """micro_speech's audio front end: TFLite Micro's own signal-library custom ops."""
    out = tmp_path / "pkg"
    report = export_c(EXAMPLES / "audio_preprocessor_int8.tflite", out, target="cortex-m4",
                      name="audio", verify=False)
    header = (out / "audio_op_resolver.h").read_text()
    for method in ("AddWindow", "AddFftAutoScale", "AddRfft", "AddEnergy", "AddFilterBank",
                   "AddFilterBankSquareRoot", "AddFilterBankSpectralSubtraction", "AddPCAN",
                   "AddFilterBankLog"):
        assert f"resolver.{method}()" in header
    assert "signal library" in header
    assert {o["op"] for o in report.ops} >= {"SignalWindow", "SignalPCAN", "CAST"}


def test_a_model_litert_refuses_but_tflite_micro_runs_exports_with_a_note(tmp_path):
    """person_detect's biases carry the filters' quantized dimension 3 on a 1-D shape: LiteRT
    refuses that, TFLite Micro ignores it. TFLite Micro judges; the cross-check says why it
    was skipped."""
    report = export_c(EXAMPLES / "person_detect.tflite", tmp_path / "pkg", target="cortex-m4")
    assert not report.verification.compared and report.verification.tflm
    assert any("LiteRT refuses this model" in n for n in report.verification.notes)
    assert any("quantized dimension 3" in n and "TFLite Micro" in n for n in report.notes)
    assert "not compared" in report.to_text()


def test_litert_crashing_in_the_cross_check_is_a_note_not_glibcs_text(tmp_path, capfd):
    """keyword_scrambled_8bit: LiteRT's reference kernels corrupt the heap (glibc aborts with
    "double free or corruption" or a SIGSEGV); LiteRT runs in a child, TFLite Micro judges."""
    report = export_c(EXAMPLES / "keyword_scrambled_8bit.tflite", tmp_path / "pkg")
    err = capfd.readouterr().err
    assert "corruption" not in err and "free()" not in err
    assert report.verification.tflm  # TFLite Micro ran the samples
    # LiteRT has crashed on every run seen; should it survive one, the outputs are compared.
    assert report.verification.compared or any("LiteRT crashed" in n
                                               for n in report.verification.notes)


def test_the_reader_judged_by_tflite_micro_records_what_only_litert_refuses():
    from tflc.errors import BadInput

    path = EXAMPLES / "person_detect.tflite"
    with pytest.raises(BadInput, match="tensor 33 has quantized dimension 3, outside its 1"):
        read_model(path)  # LiteRT's rules, the default for every other command
    view = read_model(path, judge="tflite-micro")
    assert len(view.waived) == 14 and "subgraph 0 tensor 33 has quantized dimension 3" in view.waived[0]
    assert read_model(EXAMPLES / "hello_world_int8.tflite", judge="tflite-micro").waived == []
    with pytest.raises(ValueError, match="judge"):
        read_model(path, judge="vela")


def test_a_custom_op_outside_the_signal_library_is_still_refused(tmp_path):
    """Renaming one signal op's custom code makes it a vendor op: refused in one line naming it,
    and the signal ops beside it are not blamed."""
    flatbuffers = pytest.importorskip("flatbuffers")
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    data = (EXAMPLES / "audio_preprocessor_int8.tflite").read_bytes()
    obj = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    code = next(c for c in obj.operatorCodes if c.customCode == b"SignalPCAN")
    code.customCode = b"VendorNoiseGate"
    builder = flatbuffers.Builder(1024)
    builder.Finish(obj.Pack(builder), file_identifier=b"TFL3")
    model = tmp_path / "vendor.tflite"
    model.write_bytes(bytes(builder.Output()))
    done = tflc("export", str(model), "-o", str(tmp_path / "out"), "--no-verify", "--no-measure")
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert "VendorNoiseGate" in err and "Signal" not in err
