"""Mixed precision (`--activations mixed`, tflc.convert.mixed) on real models and runtimes.

The models are quantized by the real ai-edge-quantizer, run in LiteRT and in TFLite Micro's
interpreter; assertions read the produced flatbuffer back and measure on held-out data.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.conftest import MLPERF_KERAS, SHARED, need_mlperf
from tests.zoo.flatbuffer import assert_fully_integer
from tflc.tflite.reader import read_model

KWS_DEV = SHARED / "fixtures" / "kws_dev"


def _int16_share(model: bytes) -> tuple[float, dict]:
    """The share of MACs in ops that write int16, counted here from the flatbuffer alone."""
    from tflc.profile.counts import macs

    sg = read_model(model).subgraphs[0]
    total = wide = 0
    dtypes = {}
    for op in sg.operators:
        out = sg.tensors[op.outputs[0]]
        dtypes[out.name] = out.dtype
        total += macs(sg, op)
        wide += macs(sg, op) if out.dtype == "int16" else 0
    return wide / total, dtypes


def _requantizes(model: bytes) -> set[tuple[str, str]]:
    sg = read_model(model).subgraphs[0]
    return {(sg.tensors[op.inputs[0]].dtype, sg.tensors[op.outputs[0]].dtype)
            for op in sg.operators if op.op == "QUANTIZE"}


@pytest.fixture(scope="module")
def kws_mixed(tmp_path_factory):
    import tflc

    need_mlperf(MLPERF_KERAS["kws"])
    if not (KWS_DEV / "dev.npz").exists():
        pytest.skip(f"kws_dev fixture not found at {KWS_DEV} (expected ../shared beside the repo)")
    out = tmp_path_factory.mktemp("kws_mixed")
    report = tflc.compile(MLPERF_KERAS["kws"], out, calibration_data=KWS_DEV / "calib.npz",
                          eval_data=KWS_DEV / "dev.npz", activations="mixed", int16_budget=0.5,
                          target="cortex-m4")
    return report, report.tflite_path.read_bytes()


def test_kws_mixed_flatbuffer_holds_int8_and_int16_within_the_budget(kws_mixed):
    report, model = kws_mixed
    assert_fully_integer(model)
    share, dtypes = _int16_share(model)
    assert 0.0 < share <= 0.5, share
    assert {"int8", "int16"} <= set(dtypes.values())
    assert _requantizes(model) == {("int8", "int16"), ("int16", "int8")}
    view = read_model(model)
    assert [t.dtype for t in view.input_tensors() + view.output_tensors()] == ["int8", "int8"]
    promoted = [p for p in report.mixed["promotions"] if p["kept"]]
    assert promoted and all(dtypes[p["tensor"]] == "int16" for p in promoted)
    assert report.mixed["int16_share"] == pytest.approx(share, abs=0.02)  # the report's own count
    assert report.check["summary"]["ops_on_target"] == report.check["summary"]["ops_total"]


def test_kws_mixed_reaches_float_accuracy_and_beats_all_int8_on_dev(kws_mixed):
    from tflc.convert.evaluate import run_tflite, sqnr_db, top1_accuracy
    from tflc.convert.mixed import quantize_mixed
    from tflc.load.models import load_model

    report, model = kws_mixed
    ev = report.evaluation
    assert ev["int8_accuracy"] >= ev["float_accuracy"], ev
    dev = np.load(KWS_DEV / "dev.npz")
    loaded = load_model(MLPERF_KERAS["kws"])
    from tflc.convert.converter import convert_float

    float_bytes = convert_float(loaded, True, signature=True)
    calib = [np.load(KWS_DEV / "calib.npz")["x"]]
    all_int8 = quantize_mixed(float_bytes, calib, budget=0.0).model  # nothing may be promoted
    assert _int16_share(all_int8)[0] == 0.0
    reference = loaded.predict([dev["x"]])[0]
    mixed_out, int8_out = run_tflite(model, [dev["x"]])[0], run_tflite(all_int8, [dev["x"]])[0]
    assert sqnr_db(reference, mixed_out) > sqnr_db(reference, int8_out) + 1.0
    assert top1_accuracy(mixed_out, dev["y"]) == pytest.approx(ev["int8_accuracy"])


def test_kws_percentile_ranges_through_ai_edge_quantizer_equal_the_converters():
    """The two paths to fully-integer ranges, measured against each other: percentile ranges
    fed to ai-edge-quantizer (nothing in int16) score what the converter's hook path scores."""
    from tflc.convert.converter import ConvertOptions, convert_float, frozen_function
    from tflc.convert.evaluate import run_tflite, sqnr_db
    from tflc.convert.mixed import quantize_mixed
    from tflc.convert.ptq import PTQSettings, quantize
    from tflc.load.models import load_model

    need_mlperf(MLPERF_KERAS["kws"])
    if not (KWS_DEV / "dev.npz").exists():
        pytest.skip(f"kws_dev fixture not found at {KWS_DEV}")
    loaded = load_model(MLPERF_KERAS["kws"])
    calib = [np.load(KWS_DEV / "calib.npz")["x"]]
    x = np.load(KWS_DEV / "dev.npz")["x"]
    options = ConvertOptions(static_batch=True)
    hook = quantize(loaded, calib, options, frozen_function(loaded, True),
                    PTQSettings("percentile")).model
    ours = quantize_mixed(convert_float(loaded, True, signature=True), calib, budget=0.0,
                          ranges="percentile")
    assert ours.ranges == "percentile" and ours.int16_layers == []
    reference = loaded.predict([x])[0]
    via_hook = sqnr_db(reference, run_tflite(hook, [x])[0])
    via_aeq = sqnr_db(reference, run_tflite(ours.model, [x])[0])
    plain = sqnr_db(reference, run_tflite(quantize_mixed(convert_float(loaded, True, signature=True),
                                                         calib, budget=0.0).model, [x])[0])
    assert abs(via_aeq - via_hook) < 0.2 and via_aeq > plain + 2.0, (via_aeq, via_hook, plain)


def test_kws_mixed_runs_in_tflite_micro_as_in_litert(kws_mixed):
    from tflite_micro.python.tflite_micro import runtime

    from tflc.convert.evaluate import make_interpreter, quantize

    _, model = kws_mixed
    x = np.load(KWS_DEV / "dev.npz")["x"][:100]
    litert = make_interpreter(model)
    detail, out = litert.get_input_details()[0], litert.get_output_details()[0]
    micro = runtime.Interpreter.from_bytes(model)
    agree = 0
    for i in range(len(x)):
        q = quantize(x[i:i + 1], detail)
        litert.set_tensor(detail["index"], q)
        litert.invoke()
        micro.set_input(q, 0)
        micro.invoke()
        agree += int(litert.get_tensor(out["index"]).argmax() == micro.get_output(0).argmax())
    assert agree >= 98, agree


def test_check_judges_the_mixed_model_by_each_targets_int16_kernels(kws_mixed):
    from tflc.check.verdicts import check_model

    _, model = kws_mixed
    for target in ("cortex-m4", "ethos-u55-128"):
        summary = check_model(model, target).to_dict()["summary"]
        assert summary["ops_on_target"] == summary["ops_total"], (target, summary)
    edgetpu = check_model(model, "edgetpu").to_dict()
    assert edgetpu["summary"]["ops_on_target"] < edgetpu["summary"]["ops_total"]
    reasons = " ".join(" ".join(op["reasons"]) for op in edgetpu["ops"])
    assert "int16" in reasons


# ------------------------------------------------------------- the digits CNN: the whole path


def test_mixed_compile_is_reproducible_and_rebuilds_byte_identical(digits_dir, tmp_path):
    import tflc
    from tflc.store.rebuild import rebuild

    first = tflc.compile(digits_dir / "model.keras", tmp_path / "a", activations="mixed",
                         int16_budget=1.0, calibration_data=digits_dir / "calib.npz",
                         calibration_samples=100, target="cortex-m4")
    again = rebuild(first.artifact_id, tmp_path / "registry", out_dir=tmp_path / "b")
    assert again.identical, again.verdict
    assert (tmp_path / "b" / "model.tflite").read_bytes() == first.tflite_path.read_bytes()
    saved = json.loads((tmp_path / "a" / "report.json").read_text())
    assert saved["config"]["activations"] == "mixed" and saved["config"]["int16_budget"] == 1.0
    assert saved["options"]["io_type"] == "int8"
    # conv2's output reaches through pool and reshape (they only move values) to the dense
    # layer that computes with it: conv2, pool, reshape and fc1 form one unit
    conv2 = next(p for p in saved["mixed"]["promotions"] if "conv2" in p["layer"])
    assert len(conv2["ops"]) == 4, saved["mixed"]["promotions"]
    assert "mixed       " in first.summary() and saved["layers"]["layers"]


def _cli(args):
    from click.testing import CliRunner

    from tflc.cli import main

    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("extra, words", [
    (["--activations", "mixed", "--target", "edgetpu"], "mixed_precision"),
    (["--int16-budget", "0.3"], "--activations mixed"),
    (["--activations", "mixed", "--int16-budget", "1.5"], "--int16-budget 1.5"),
    (["--activations", "mixed", "--io-type", "float32"], "--io-type float32"),
    (["--activations", "mixed", "--adaround"], "--adaround"),
    (["--activations", "mixed", "--ptq", "auto"], "--ptq auto"),
    (["--activations", "mixed", "--bias-correction"], "--bias-correction"),
])
def test_mixed_refusals_are_one_line_exit_2(digits_dir, tmp_path, extra, words):
    result = _cli(["compile", str(digits_dir / "model.keras"), "-o", str(tmp_path / "out"),
                   "--calibration-data", str(digits_dir / "calib.npz"), *extra])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "out").exists()


def test_descriptor_mixed_precision_must_be_true_or_false(tmp_path):
    from tflc.check.spec import load_target
    from tflc.errors import BadInput

    path = tmp_path / "board.yaml"
    path.write_text("extends: cortex-m4\nmixed_precision: sometimes\n")
    with pytest.raises(BadInput, match="mixed_precision"):
        load_target(path)
    path.write_text("extends: cortex-m4\nmixed_precision: false\n")
    assert load_target(path).mixed_precision is False and load_target("cortex-m4").mixed_precision


def test_a_dead_channel_keeps_its_bias_in_int16(tmp_path):
    """A filter with near-zero weights and a real bias (its output is the bias): the raw
    ai-edge-quantizer output loses it in int16; tflc's repair rescales it as the converter does."""
    from ai_edge_quantizer import quantizer as aeq

    from tflc.convert.converter import convert_float
    from tflc.convert.evaluate import run_tflite, sqnr_db
    from tflc.convert.mixed import _Quantizer
    from tflc.load.models import load_model
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input((8, 8, 1)),
                              keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(3, name="head")])
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 0] = 1e-9  # a dead filter: its output is its bias, 2.0
    bias[0] = 2.0
    model.get_layer("conv").set_weights([kernel, bias])
    model.save(tmp_path / "dead.keras")
    loaded = load_model(tmp_path / "dead.keras")
    float_bytes = convert_float(loaded, True, signature=True)
    x = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 1)).astype(np.float32)
    ours = _Quantizer(float_bytes, [x], per_tensor=False)
    scopes = tuple(t.name + ";" for t in read_model(float_bytes).subgraphs[0].tensors
                   if "conv" in t.name and not t.is_constant)
    repaired = ours.quantize(scopes)
    raw = aeq.Quantizer(float_bytes)
    raw.add_static_config(".*", "*", 8, 8)
    for scope in scopes:
        raw.add_static_config("^" + re.escape(scope) + "$", "*", 16, 8)
    raw_bytes = bytes(raw.quantize(ours.calibration).quantized_model)
    assert {"int16"} <= {t.dtype for t in read_model(repaired).subgraphs[0].tensors}
    reference = run_tflite(float_bytes, [x])[0]
    good = sqnr_db(reference, run_tflite(repaired, [x])[0])
    bad = sqnr_db(reference, run_tflite(raw_bytes, [x])[0])
    assert good > 30.0 and good > bad + 10.0, (good, bad)
