"""Post-training quantization methods (tflc.convert.ptq, ranges, layer_report), on real files.

Every model here is converted by the real TFLite converter and run in LiteRT; assertions read
the produced flatbuffer back (tflc.tflite.reader) or measure on held-out data.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import MLPERF_KERAS, SHARED, need_mlperf
from tests.zoo.flatbuffer import assert_fully_integer
from tflc.convert.ranges import RANGE_METHODS, choose_range, fake_quant

KWS_DEV = SHARED / "fixtures" / "kws_dev"


# ------------------------------------------------------------------------ ranges (numpy only)


def _heavy_tailed(seed=0):
    rng = np.random.default_rng(seed)
    body = rng.normal(0.0, 1.0, 200_000)
    return np.concatenate([body, [60.0, -45.0]])  # two outliers stretch min-max 15-fold


@pytest.mark.parametrize("method", RANGE_METHODS)
def test_every_range_holds_zero_and_stays_inside_min_max(method):
    v = _heavy_tailed()
    lo, hi = choose_range(v, method)
    assert v.min() <= lo <= 0.0 <= hi <= v.max()
    relu = np.abs(v)  # a ReLU output: the lower end stays at 0
    lo, hi = choose_range(relu, method)
    assert lo == 0.0 and 0.0 < hi <= relu.max()


@pytest.mark.parametrize("method", ["percentile", "kl"])
def test_clipping_methods_cut_the_outliers_and_lower_the_error(method):
    v = _heavy_tailed()
    lo, hi = choose_range(v, method)
    assert hi < 0.5 * v.max() and lo > 0.5 * v.min()
    body = v[np.abs(v) < 3.0]  # the typical values get finer steps

    def error(values, bounds):
        return float(np.mean((fake_quant(values, *bounds) - values) ** 2))
    assert error(body, (lo, hi)) < 0.5 * error(body, choose_range(v, "minmax"))


def test_mse_is_the_lowest_error_of_the_methods():
    v = np.random.default_rng(1).laplace(0.0, 1.0, 200_000)  # heavy tails, no planted outliers
    errors = {m: float(np.mean((fake_quant(v, *choose_range(v, m)) - v) ** 2)) for m in RANGE_METHODS}
    assert errors["mse"] <= min(errors.values()) * 1.05, errors
    assert errors["mse"] < 0.85 * errors["minmax"], errors


def test_uniform_values_keep_their_range():
    v = np.linspace(-1.0, 1.0, 10_001)  # no tails to clip: MSE keeps (nearly) the full range
    lo, hi = choose_range(v, "mse")
    assert hi > 0.9 and lo < -0.9


# ------------------------------------------------------------------ the digits CNN, converted


@pytest.fixture(scope="module")
def digits(digits_dir):
    from tflc.convert.converter import frozen_function
    from tflc.load.models import load_model

    loaded = load_model(digits_dir / "model.keras")
    calib = [np.load(digits_dir / "calib.npz")["x"][:100]]
    held = np.load(digits_dir / "eval.npz")
    return loaded, calib, frozen_function(loaded), held["x"], held["y"]


def test_an_identity_hook_gives_the_converters_own_bytes(digits):
    from tflc.convert.converter import ConvertOptions, convert_int8

    loaded, calib, frozen, *_ = digits
    plain = convert_int8(loaded, calib, ConvertOptions(), frozen)
    seen = []
    hooked = convert_int8(loaded, calib, ConvertOptions(), frozen,
                          calibration_hook=lambda b: seen.append(b) or b)
    assert hooked == plain and len(seen) == 1


def test_percentile_ranges_reach_the_flatbuffer(digits):
    """The scale of each conv/dense output in the int8 file is the one the chosen range gives."""
    from tensorflow.lite.tools import flatbuffer_utils

    from tflc.convert.converter import ConvertOptions, convert_int8
    from tflc.convert.ptq import BIAS_OPS, PTQSettings, quantize, set_ranges
    from tflc.tflite.reader import read_model

    loaded, calib, frozen, *_ = digits
    result = quantize(loaded, calib, ConvertOptions(), frozen, PTQSettings("percentile"))
    assert_fully_integer(result.model)
    edited = flatbuffer_utils.convert_bytearray_to_object(
        bytearray(set_ranges(result.calibrated, calib, "percentile")))
    chosen = {t.name.decode(): (float(t.quantization.min[0]), float(t.quantization.max[0]))
              for t in edited.subgraphs[0].tensors
              if t.quantization is not None and t.quantization.min is not None and t.buffer
              and not len(edited.buffers[t.buffer].data if edited.buffers[t.buffer].data is not None else [])}
    quant = read_model(result.model)
    plain = read_model(convert_int8(loaded, calib, ConvertOptions(), frozen))
    plain_scales = {t.name: t.quantization.scales[0] for t in plain.subgraphs[0].tensors
                    if not t.is_constant and t.quantization}
    checked = narrower = 0
    for op in quant.subgraphs[0].operators:
        t = quant.subgraphs[0].tensors[op.outputs[0]]
        if op.op not in BIAS_OPS or t.name not in chosen:
            continue
        lo, hi = chosen[t.name]
        assert t.quantization.scales[0] == pytest.approx((hi - lo) / 255.0, rel=1e-5), t.name
        checked += 1
        narrower += t.quantization.scales[0] < plain_scales[t.name]
    assert checked >= 3 and narrower >= 1


def test_bias_correction_writes_the_biases_it_computed_and_cuts_the_error(digits):
    from tflc.convert.converter import ConvertOptions
    from tflc.convert.evaluate import run_tflite, sqnr_db
    from tflc.convert.ptq import BIAS_OPS, PTQSettings, quantize
    from tflc.tflite.reader import read_model

    loaded, calib, frozen, x, _ = digits
    plain = quantize(loaded, calib, ConvertOptions(), frozen, PTQSettings("minmax"))
    corrected = quantize(loaded, calib, ConvertOptions(), frozen, PTQSettings("minmax", True))
    assert corrected.corrected_biases >= 1
    assert_fully_integer(corrected.model)
    a, b = read_model(plain.model), read_model(corrected.model)
    changed = 0
    for op_a, op_b in zip(a.subgraphs[0].operators, b.subgraphs[0].operators):
        if op_a.op not in BIAS_OPS:
            continue
        wa, wb = (v.tensor_data(v.subgraphs[0].tensors[o.inputs[1]]) for v, o in ((a, op_a), (b, op_b)))
        np.testing.assert_array_equal(wa, wb)  # weights untouched, only the int32 bias moves
        ba = a.tensor_data(a.subgraphs[0].tensors[op_a.inputs[2]]).astype(np.int64)
        bb = b.tensor_data(b.subgraphs[0].tensors[op_b.inputs[2]]).astype(np.int64)
        changed += int(np.any(ba != bb))
        assert np.max(np.abs(ba - bb)) < 2**20  # a correction, not a rewrite
    assert changed == corrected.corrected_biases == len(corrected.biases)
    for index, values in corrected.biases.items():  # what was computed is what the file holds
        np.testing.assert_array_equal(b.tensor_data(b.subgraphs[0].tensors[index]), values)
    held = x[:300]
    reference = loaded.predict([held])[0]
    before = sqnr_db(reference, run_tflite(plain.model, [held])[0])
    after = sqnr_db(reference, run_tflite(corrected.model, [held])[0])
    assert after > before - 0.5  # measured on held-out digits, not the calibration set


def test_layer_report_names_the_worst_layers_and_advice_follows_the_descriptor(digits):
    from tflc.check import load_target
    from tflc.convert.converter import ConvertOptions, convert_float, convert_int8
    from tflc.convert.layer_report import LOSSY_SQNR_DB, advise, measure_layers
    from tflc.tflite.reader import read_model

    loaded, calib, frozen, *_ = digits
    quant = convert_int8(loaded, calib, ConvertOptions(), frozen)
    report = measure_layers(convert_float(loaded, False, frozen), quant, calib, samples=16)
    view = read_model(quant)
    ops = [op.op for op in view.subgraphs[0].operators]
    assert [e.op for e in report.layers] == [op for op in ops if op not in ("QUANTIZE", "DEQUANTIZE")]
    assert all(np.isfinite(e.sqnr_db) and e.sqnr_db > 10 for e in report.layers)
    advised = advise(report, view, "int8", load_target("cortex-m4"), accuracy_drop=5.0)
    assert len(advised.worst) == 3 and advised.lowest()[0].layer in advised.worst[0]
    assert "--activations int16" in advised.advice[0]  # TFLite Micro has int16 kernels for them
    assert "--activations mixed" in advised.advice[1]  # and its descriptor allows mixed models
    report.advice = []
    edge = advise(report, view, "int8", load_target("edgetpu"), accuracy_drop=5.0)
    assert "not an option" in edge.advice[0] and "--activations int16" not in edge.advice[0]
    assert not any("mixed" in line for line in edge.advice)
    report.advice = []
    fine = advise(report, view, "int8", load_target("cortex-m4"), accuracy_drop=0.0)
    assert fine.advice == [] or min(e.sqnr_db for e in report.layers) < LOSSY_SQNR_DB


def test_auto_without_labels_keeps_the_highest_fidelity(digits):
    from tflc.convert.converter import ConvertOptions
    from tflc.convert.ptq import AUTO_ADAROUND_SWEEPS, PTQSettings, run_ptq
    from tflc.load.data import SampleSet

    loaded, calib, frozen, x, _ = digits
    unlabelled = SampleSet(x=[x[:150]], y=None, source="held-out digits")
    result = run_ptq(loaded, calib, ConvertOptions(), frozen, "auto", False, unlabelled)
    # 8 range x bias candidates, then the best of them with CLE and with AdaRound (a Keras model)
    assert len(result.candidates) == 10 and all(c.accuracy is None for c in result.candidates)
    best_ranged = max(result.candidates[:8], key=lambda c: (c.sqnr_db, c.settings.plain)).settings
    assert [c.settings for c in result.candidates[8:]] == [
        PTQSettings(best_ranged.ranges, best_ranged.bias_correction, equalize=True),
        PTQSettings(best_ranged.ranges, best_ranged.bias_correction, adaround=AUTO_ADAROUND_SWEEPS)]
    chosen = next(c for c in result.candidates if c.settings == result.chosen)
    assert chosen.sqnr_db == max(c.sqnr_db for c in result.candidates)
    assert_fully_integer(result.model)


# -------------------------------------------------------------------- compile, CLI, rebuild


def test_compile_ptq_auto_table_choice_and_rebuild_byte_identical(digits_dir, tmp_path):
    import tflc
    from tflc.store.rebuild import rebuild

    first = tflc.compile(digits_dir / "model.keras", tmp_path / "a", ptq="auto",
                         calibration_data=digits_dir / "calib.npz", eval_data=digits_dir / "eval.npz",
                         calibration_samples=100)
    again = rebuild(first.artifact_id, tmp_path / "registry", out_dir=tmp_path / "b")
    assert again.identical, again.verdict
    assert (tmp_path / "b" / "model.tflite").read_bytes() == first.tflite_path.read_bytes()
    assert_fully_integer(first.tflite_path)
    saved = json.loads((tmp_path / "a" / "report.json").read_text())
    table = saved["ptq"]["candidates"]
    ranged = [m + b for m in RANGE_METHODS for b in ("", "+bias")]
    assert [c["method"] for c in table[:8]] == ranged
    assert [c["method"] for c in table[8:]] == [table[8]["method"].removesuffix("+cle") + e
                                                for e in ("+cle", "+adaround")]
    assert table[8]["method"].removesuffix("+cle") in ranged
    best = max(c["accuracy"] for c in table)
    chosen = next(c for c in table if c["method"] == saved["ptq"]["chosen"])
    assert chosen["accuracy"] >= best - 100.0 / 449 - 1e-3
    assert saved["evaluation"]["int8_accuracy"] == pytest.approx(chosen["accuracy"])
    assert saved["config"]["ptq"] == "auto" and saved["layers"]["layers"]
    summary = first.summary()
    assert "ptq         chosen" in summary and "layers      lowest SQNR" in summary


def test_ptq_with_int16_activations_is_one_line_exit_2(digits_dir, tmp_path):
    from click.testing import CliRunner

    from tflc.cli import main

    result = CliRunner().invoke(main, ["compile", str(digits_dir / "model.keras"), "-o", str(tmp_path),
                                       "--calibration-data", str(digits_dir / "calib.npz"),
                                       "--activations", "int16", "--ptq", "mse"])
    assert result.exit_code == 2
    assert "--ptq mse" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "model.tflite").exists()


# ----------------------------------------------------------------------- MLPerf KWS, kws_dev


def _kws():
    need_mlperf(MLPERF_KERAS["kws"])
    if not (KWS_DEV / "dev.npz").exists():
        pytest.skip(f"kws_dev fixture not found at {KWS_DEV} (expected ../shared beside the repo)")
    from tflc.convert.converter import frozen_function
    from tflc.load.models import load_model

    loaded = load_model(MLPERF_KERAS["kws"])
    dev = np.load(KWS_DEV / "dev.npz")
    return loaded, [np.load(KWS_DEV / "calib.npz")["x"]], frozen_function(loaded), dev["x"], dev["y"]


def test_kws_percentile_ranges_beat_plain_on_dev():
    from tflc.convert.converter import ConvertOptions
    from tflc.convert.evaluate import run_tflite, sqnr_db, top1_accuracy
    from tflc.convert.ptq import PTQSettings, quantize

    loaded, calib, frozen, x, y = _kws()
    reference = loaded.predict([x])[0]
    scores = {}
    for settings in (PTQSettings("minmax"), PTQSettings("percentile"), PTQSettings("percentile", True)):
        model = quantize(loaded, calib, ConvertOptions(), frozen, settings).model
        assert_fully_integer(model)
        out = run_tflite(model, [x])[0]
        scores[settings.label] = (top1_accuracy(out, y), sqnr_db(reference, out))
    float_accuracy = top1_accuracy(reference, y)
    assert scores["percentile"][0] >= float_accuracy > scores["minmax"][0], scores
    assert scores["percentile"][1] > scores["minmax"][1] + 2.0, scores
    assert scores["percentile+bias"][1] > scores["percentile"][1], scores  # bias adds fidelity


@pytest.mark.heavy
def test_kws_ptq_auto_reaches_float_accuracy(tmp_path):
    import tflc

    need_mlperf(MLPERF_KERAS["kws"])
    if not (KWS_DEV / "dev.npz").exists():
        pytest.skip(f"kws_dev fixture not found at {KWS_DEV}")
    report = tflc.compile(MLPERF_KERAS["kws"], tmp_path, calibration_data=KWS_DEV / "calib.npz",
                          eval_data=KWS_DEV / "dev.npz", ptq="auto", target="cortex-m4")
    assert_fully_integer(report.tflite_path)
    ev = report.evaluation
    plain = next(c for c in report.ptq["candidates"] if c["method"] == "minmax")
    assert ev["int8_accuracy"] >= ev["float_accuracy"] and ev["int8_accuracy"] > plain["accuracy"]
