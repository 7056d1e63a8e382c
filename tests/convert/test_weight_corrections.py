"""Cross-layer equalization and AdaRound (tflc.convert.weights), through the real converter.

The int8 weights and scales are read back from the flatbuffer (tflc.tflite.reader); fidelity
is measured on held-out digits, never on the calibration set.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.zoo.flatbuffer import assert_fully_integer


@pytest.fixture(scope="module")
def separable(digits_dir):
    """A tiny depthwise-separable CNN trained on digits, then with its depthwise channels
    deliberately unbalanced: channel i of the depthwise layer scaled by c_i and the pointwise
    conv's input channel i by 1 / c_i (ReLU between them: the float function is unchanged)."""
    from tflc.load.models import load_model
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    train = np.load(digits_dir / "train.npz")
    held = np.load(digits_dir / "eval.npz")
    inputs = keras.Input(train["x"].shape[1:])
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.ReLU(name="dw_relu")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train["x"], train["y"], epochs=15, batch_size=64, verbose=0)
    c = np.logspace(-2, 1, 8)  # channel scales from 0.01 to 10
    dw, pw = model.get_layer("dw"), model.get_layer("pw")
    k, b = dw.get_weights()
    dw.set_weights([k * c.reshape(1, 1, 8, 1), b * c])
    k2, b2 = pw.get_weights()
    pw.set_weights([k2 / c.reshape(1, 1, 8, 1), b2])
    path = digits_dir / "separable_unbalanced.h5"
    model.save(path)
    loaded = load_model(path)
    calib = [np.load(digits_dir / "calib.npz")["x"][:100]]
    return loaded, calib, held["x"][:300], held["y"][:300]


def _int8(loaded, calib):
    from tflc.convert.converter import ConvertOptions, convert_int8, frozen_function

    return convert_int8(loaded, calib, ConvertOptions(), frozen_function(loaded))


def test_cle_keeps_the_float_function_evens_the_ranges_and_helps_int8(separable):
    from tflc.convert.evaluate import run_tflite, sqnr_db
    from tflc.convert.weights import channel_ranges, correct_weights

    loaded, calib, x, _ = separable
    equalized, report = correct_weights(loaded, calib, True, None)
    assert ["dw", "pw", 8] in [list(e) for e in report.equalized]
    assert not any(e[1] == "dw" for e in report.equalized)  # a depthwise layer is never the second
    before, after = loaded.predict([x])[0], equalized.predict([x])[0]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    r0 = channel_ranges(loaded.model.get_layer("dw"))
    r1 = channel_ranges(equalized.model.get_layer("dw"))
    assert r1.max() / r1.min() < 0.1 * r0.max() / r0.min()  # 1000x spread cut at least tenfold
    assert np.array_equal(channel_ranges(loaded.model.get_layer("dw")), r0)  # the user's model is kept
    plain = run_tflite(_int8(loaded, calib), [x])[0]
    cle_model = _int8(equalized, calib)
    assert_fully_integer(cle_model)
    cle = run_tflite(cle_model, [x])[0]
    assert sqnr_db(before, cle) > sqnr_db(before, plain) + 10.0, (sqnr_db(before, cle), sqnr_db(before, plain))


def test_adaround_integers_reach_the_flatbuffer_and_lower_the_layer_error(separable):
    from tflc.convert.weights import correct_weights, layer_inputs
    from tflc.tflite.reader import read_model

    loaded, calib, x, _ = separable
    rounded, report = correct_weights(loaded, calib, False, 4)
    assert set(report.integers) == {"stem", "dw", "pw", "logits"}
    view = read_model(_int8(rounded, calib))
    sg = view.subgraphs[0]
    kernels = {}
    for op in sg.operators:
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = sg.tensors[op.inputs[1]]
            kernels[op.op, w.shape] = (view.tensor_data(w), np.asarray(w.quantization.scales))
    # depthwise: TFLite holds (1, kh, kw, cin * mult), output channel c * mult + m last
    dw_chosen = report.integers["dw"]
    dw_data, dw_scales = kernels["DEPTHWISE_CONV_2D", (1, 3, 3, 8)]
    np.testing.assert_array_equal(dw_data, dw_chosen.reshape(1, 3, 3, 8))
    np.testing.assert_allclose(dw_scales, report.scales["dw"], rtol=1e-6)
    dw_round = report.rounded["dw"]
    assert dw_round["flipped"] > 0 and dw_round["mse"] < dw_round["mse_nearest"], dw_round
    differ = 0
    for name, chosen in report.integers.items():
        if name == "dw":
            continue
        layer = loaded.model.get_layer(name)
        # TFLite kernels: conv (cout, kh, kw, cin), fully connected (cout, cin)
        expected = np.moveaxis(chosen, -1, 0)
        data, scales = kernels["FULLY_CONNECTED" if name == "logits" else "CONV_2D",
                               tuple(expected.shape)]
        np.testing.assert_array_equal(data, expected)
        np.testing.assert_allclose(scales, report.scales[name], rtol=1e-6)
        w = np.asarray(layer.get_weights()[0], np.float64).reshape(-1, chosen.shape[-1])
        nearest = np.round(w / report.scales[name])
        differ += int(np.sum(nearest != chosen.reshape(nearest.shape)))
        # layer output error on calibration inputs: lower than round-to-nearest
        xin = layer_inputs(loaded.model, layer, calib)
        err_near = np.mean(np.square(xin @ (nearest * report.scales[name] - w)))
        err = np.mean(np.square(xin @ (chosen.reshape(w.shape) * report.scales[name] - w)))
        assert err < err_near, (name, err, err_near)
    assert differ > 0


def test_compile_with_cle_and_adaround_rebuilds_byte_identical(separable, digits_dir, tmp_path):
    import tflc
    from tflc.store.rebuild import rebuild

    first = tflc.compile(digits_dir / "separable_unbalanced.h5", tmp_path / "a",
                         cross_layer_equalization=True, adaround=2,
                         calibration_data=digits_dir / "calib.npz", calibration_samples=100)
    assert first.config["cross_layer_equalization"] is True and first.config["adaround"] == 2
    assert first.weights["equalized"] and first.weights["adaround"]
    again = rebuild(first.artifact_id, tmp_path / "registry", out_dir=tmp_path / "b")
    assert again.identical, again.verdict
    assert (tmp_path / "b" / "model.tflite").read_bytes() == first.tflite_path.read_bytes()


def test_cle_on_relu6_keeps_every_channel_under_the_clip():
    """ReLU6 is not scale-invariant: a channel that reaches 6 keeps its scale; one that would
    reach 6 after scaling is scaled less; the float outputs stay the same on the calibration set."""
    from tflc.convert.weights import correct_weights, equalizable_pairs
    from tflc.load.models import LoadedModel
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    x = keras.layers.ReLU(max_value=6.0, name="clip")(x)
    outputs = keras.layers.Conv2D(3, 1, name="b")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    k = rng.normal(0, 0.3, (3, 3, 2, 4))
    k[..., 0] *= 20.0  # channel 0 saturates at 6
    k[..., 1] *= 0.05  # channel 1 tiny, its consumer's row large: s_1 < 1 would push it up
    k2 = rng.normal(0, 0.3, (1, 1, 4, 3))
    k2[:, :, 1] *= 50.0
    model.get_layer("a").set_weights([k.astype(np.float32), np.zeros(4, np.float32)])
    model.get_layer("b").set_weights([k2.astype(np.float32), np.zeros(3, np.float32)])
    calib = [rng.uniform(0, 1, (64, 6, 6, 2)).astype(np.float32)]
    loaded = LoadedModel(path="mem", format="tf_keras", model=model, inputs=[], outputs=[],
                         param_count=0, sha256="")
    assert len(equalizable_pairs(model)[0]) == 1
    equalized, report = correct_weights(loaded, calib, True, None)
    new = equalized.model
    np.testing.assert_allclose(new.predict(calib[0], verbose=0), model.predict(calib[0], verbose=0),
                               rtol=1e-4, atol=1e-4)
    ka = new.get_layer("a").get_weights()[0]
    np.testing.assert_array_equal(ka[..., 0], k[..., 0].astype(np.float32))  # reached 6: kept
    assert not np.allclose(ka[..., 1:], k[..., 1:].astype(np.float32))  # the others were scaled
    peak = keras.Model(new.inputs, new.get_layer("a").output).predict(calib[0], verbose=0)
    assert np.all(peak.reshape(-1, 4).max(0)[1:] <= 6.0 + 1e-5)


def test_batch_norms_are_folded_before_cle_and_the_function_kept():
    from tflc.convert.weights import correct_weights
    from tflc.load.models import LoadedModel
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(5, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Activation("relu", name="r1")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="r2")(x)
    outputs = keras.layers.Conv2D(4, 1, name="c2")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(3)
    for name in ("bn1", "bn2"):
        bn = model.get_layer(name)
        n = bn.get_weights()[0].size
        bn.set_weights([rng.uniform(0.1, 3, n), rng.normal(0, 1, n), rng.normal(0, 1, n),
                        rng.uniform(0.1, 4, n)])
    loaded = LoadedModel(path="mem", format="tf_keras", model=model, inputs=[], outputs=[],
                         param_count=0, sha256="")
    calib = [rng.uniform(0, 1, (32, 6, 6, 3)).astype(np.float32)]
    equalized, report = correct_weights(loaded, calib, True, None)
    assert report.folded == [["c1", "bn1"], ["dw", "bn2"]]
    assert [e[:2] for e in report.equalized] == [("dw", "c2")]  # c1 -> dw: depthwise is no second
    before = model.predict(calib[0], verbose=0)
    np.testing.assert_allclose(equalized.model.predict(calib[0], verbose=0), before, rtol=1e-4,
                               atol=1e-4 * np.abs(before).max())
    assert [type(layer).__name__ for layer in model.layers].count("BatchNormalization") == 2  # kept


@pytest.mark.heavy
def test_adaround_integers_survive_the_converters_batch_norm_fold_on_mlperf_ic():
    """ResNet8 has a batch norm after every conv: the converter folds it into the kernel, which
    scales q x s and its per-channel max alike, so the integers (up to the sign of gamma) stay."""
    from tests.conftest import MLPERF_KERAS, need_mlperf
    from tflc.convert.weights import correct_weights
    from tflc.load.models import load_model
    from tflc.tflite.reader import read_model

    need_mlperf(MLPERF_KERAS["ic"])
    loaded = load_model(MLPERF_KERAS["ic"])
    calib = [np.random.default_rng(0).uniform(0, 255, (32, 32, 32, 3)).astype(np.float32)]
    rounded, report = correct_weights(loaded, calib, False, 4)
    view = read_model(_int8(rounded, calib))
    sg = view.subgraphs[0]
    kernels = [view.tensor_data(sg.tensors[op.inputs[1]]).astype(int) for op in sg.operators
               if op.op in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(report.integers) == len(kernels) == 10
    def same_up_to_channel_sign(k, e):
        if k.shape != e.shape:
            return False
        k, e = k.reshape(len(k), -1), e.reshape(len(e), -1)
        return bool(np.all(np.all(k == e, 1) | np.all(k == -e, 1)))

    for name, chosen in report.integers.items():
        expected = np.moveaxis(chosen, -1, 0).astype(int)
        assert any(same_up_to_channel_sign(k, expected) for k in kernels), name
        assert report.rounded[name]["mse"] < report.rounded[name]["mse_nearest"], name
