"""The automatic search space on real Keras models: found from the configuration, applied, and
rebuilt into models that build, run and have the widths, layers and classes asked for."""

from __future__ import annotations

import numpy as np
import pytest

from tflc.search import space as sp


def _shapes(model):
    out, ins = {}, {}
    for layer in model.layers:
        out[layer.name] = tuple(layer.output.shape)
        if not isinstance(layer.input, (list, tuple)):
            ins[layer.name] = tuple(layer.input.shape)
    return out, ins


@pytest.fixture(scope="module")
def keras():
    from tflc.tf_env import import_tf_keras

    return import_tf_keras()


def _residual(keras):
    """Two stages; a residual block (conv-conv-Add) with a repeated conv, a classifier."""
    layers = keras.layers
    x_in = keras.Input((12, 12, 3), name="img")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(x_in)
    y = layers.Conv2D(8, 3, padding="same", activation="relu", name="body_a")(x)
    y = layers.Conv2D(8, 3, padding="same", name="body_b")(y)
    x = layers.Add(name="merge")([x, y])
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="down")(x)
    x = layers.Conv2D(16, 1, name="again")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(5, activation="softmax", name="cls")(x)
    return keras.Model(x_in, out)


def test_digits_cnn_space_and_rebuild(keras):
    from tflc.examples.digits import build_cnn
    from tflc.search.trial import _build

    seed = build_cnn(keras, 16)
    space = sp.analyze(seed.get_config(), *_shapes(seed))
    assert [s.layers for s in space.stages] == [["conv1", "conv2"], ["fc1"]]  # probs is kept
    assert space.stages[0].separable == ["conv1", "conv2"]
    assert space.input_hw == (8, 8) and space.resolutions == (0.5, 0.75, 1.0)
    params = {"width_0": 0.25, "width_1": 0.5, "separable_0": True, "resolution": 0.5}
    model = _build(keras, sp.apply(seed.get_config(), space, params))
    by = {layer.name: layer for layer in model.layers}
    assert type(by["conv1"]).__name__ == "SeparableConv2D" and by["conv1"].filters == 4
    assert by["conv2"].filters == 8 and by["fc1"].units == 16 and by["probs"].units == 10
    assert tuple(model.input.shape) == (None, 4, 4, 1)
    assert model.predict(np.zeros((2, 4, 4, 1), np.float32), verbose=0).shape == (2, 10)
    identity = _build(keras, sp.apply(seed.get_config(), space, space.identity))
    assert identity.count_params() == seed.count_params()


def test_residual_widths_tied_and_repeated_block_dropped(keras):
    from tflc.search.trial import _build

    seed = _residual(keras)
    space = sp.analyze(seed.get_config(), *_shapes(seed))
    first = space.stages[0]
    # stem and body_b meet in the Add: one multiplier; body_a/body_b/again are repeats
    assert set(first.layers) == {"stem", "body_a", "body_b"}
    assert first.droppable == ["body_a", "body_b"]
    assert space.stages[1].droppable == ["again"]
    params = {"width_0": 0.5, "width_1": 0.25, "drop_1": 1, "drop_0": 0}
    model = _build(keras, sp.apply(seed.get_config(), space, params))
    names = [layer.name for layer in model.layers]
    assert "again" not in names and "cls" in names
    by = {layer.name: layer for layer in model.layers}
    assert by["stem"].filters == by["body_b"].filters == 4 and by["down"].filters == 4
    assert model.predict(np.zeros((1, 12, 12, 3), np.float32), verbose=0).shape == (1, 5)


def test_keras3_and_sequential_configs_rebuild():
    from tflc.search.trial import _build
    from tflc.tf_env import import_keras3

    k3 = import_keras3()
    seq = k3.Sequential([k3.Input((10, 10, 2)), k3.layers.Conv2D(6, 3, name="c1"),
                         k3.layers.Conv2D(6, 3, padding="same", name="c2"),
                         k3.layers.Flatten(name="f"), k3.layers.Dense(3, name="out")])
    space = sp.analyze(seq.get_config(), *_shapes(seq))
    assert space.stages[0].layers == ["c1", "c2"] and space.stages[0].droppable == ["c2"]
    model = _build(k3, sp.apply(seq.get_config(), space,
                                {"width_0": 0.5, "drop_0": 1, "separable_0": True}))
    assert [type(layer).__name__ for layer in model.layers] == ["SeparableConv2D", "Flatten",
                                                                "Dense"]
    assert model.layers[0].filters == 3
    assert model.predict(np.zeros((1, 10, 10, 2), np.float32), verbose=0).shape == (1, 3)


def test_keras3_functional_config_rebuilds_with_a_dropped_block():
    from tflc.search.trial import _build
    from tflc.tf_env import import_keras3

    k3 = import_keras3()
    x_in = k3.Input((8, 8, 1), name="img")
    x = k3.layers.Conv2D(8, 3, padding="same", name="a")(x_in)
    x = k3.layers.Conv2D(8, 3, padding="same", name="b")(x)
    x = k3.layers.Flatten(name="f")(x)
    out = k3.layers.Dense(4, activation="softmax", name="cls")(x)
    seed = k3.Model(x_in, out)
    space = sp.analyze(seed.get_config(), *_shapes(seed))
    assert space.stages[0].droppable == ["b"]
    model = _build(k3, sp.apply(seed.get_config(), space,
                                {"width_0": 0.5, "drop_0": 1, "resolution": 0.5}))
    assert [layer.name for layer in model.layers] == ["img", "a", "f", "cls"]
    assert model.get_layer("a").filters == 4 and tuple(model.input.shape) == (None, 4, 4, 1)
    assert model.predict(np.zeros((1, 4, 4, 1), np.float32), verbose=0).shape == (1, 4)


def test_builder_replaces_the_architecture_space(tmp_path, keras):
    import optuna

    from tflc.search import space as sp
    from tflc.search.core import SearchOptions, _builder, _candidate
    from tflc.search.trial import _build

    (tmp_path / "m.keras").write_bytes(b"x")
    for name in ("t.npz", "e.npz"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "arch.py").write_text(
        "from tflc.tf_env import import_tf_keras\n"
        "def build(hp):\n"
        "    k = import_tf_keras()\n"
        "    inp = k.Input((6, 6, 1))\n"
        "    x = k.layers.Conv2D(hp.choice('filters', [3, 5]), 3)(inp)\n"
        "    x = k.layers.Flatten()(x)\n"
        "    return k.Model(inp, k.layers.Dense(hp.int('classes', 2, 2))(x))\n")
    options = SearchOptions(str(tmp_path / "m.keras"), "cortex-m4", str(tmp_path / "t.npz"),
                            str(tmp_path / "e.npz"), str(tmp_path / "out"),
                            builder=f"{tmp_path / 'arch.py'}:build", precisions=("int8",))
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    trial = study.ask()
    params, config, flavor, hw = _candidate(options, trial, None, _builder(options.builder),
                                            None, None)
    assert params["filters"] in (3, 5) and params["classes"] == 2 and params["precision"] == "int8"
    assert {"clusters", "qat"} <= set(params) and flavor == "tf_keras" and hw is None
    model = _build(keras, config)
    # the builder's model gets a sparsity per weighted layer too (its Conv2D and Dense)
    weighted = [layer.name for layer in model.layers if layer.weights]
    assert sorted(sp.layer_sparsities(params)) == sorted(weighted) and len(weighted) == 2
    assert model.layers[1].filters == params["filters"]


def test_pareto_front_keeps_only_undominated_complete_trials():
    from tflc.search import pareto_front

    def row(n, acc, lat, arena, status="complete"):
        return {"number": n, "status": status, "accuracy": acc, "latency_ms": lat,
                "arena_bytes": arena, "macs": 1}

    trials = [row(0, 90, 1.0, 100), row(1, 95, 2.0, 100), row(2, 89, 1.5, 100),
              row(3, 99, 0.1, 10, status="infeasible"), row(4, 90, 1.0, 50)]
    assert [t["number"] for t in pareto_front(trials)] == [4, 1]
