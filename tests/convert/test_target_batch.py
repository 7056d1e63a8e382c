"""A target whose runtime takes only static shapes (its descriptor's `runtime.static_batch`)
gets the batch pinned to 1 without --static-batch; other targets keep the free batch."""

from __future__ import annotations

import pytest

from tests.convert.test_lowering import _compile, _keras3
from tests.zoo.flatbuffer import assert_fully_integer
from tflc.check import load_target


def _flatten_model():
    """Keras 3's Flatten with a free batch traces to a SHAPE/STRIDED_SLICE/PACK chain."""
    keras = _keras3()
    keras.utils.set_random_seed(0)
    i = keras.Input((6, 6, 1))
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(i))
    return keras.Model(i, keras.layers.Dense(3, activation="softmax")(x))


def test_descriptors_say_which_runtimes_need_static_shapes():
    needs = {name: load_target(name).runtime.static_batch
             for name in ("cpu", "gpu", "cortex-m4", "cortex-m7", "edgetpu", "ethos-u55-128")}
    assert needs == {"cpu": False, "gpu": False, "cortex-m4": True, "cortex-m7": True,
                     "edgetpu": True, "ethos-u55-128": True}


@pytest.mark.parametrize("target,pinned", [("cortex-m4", True), ("cpu", False)])
def test_target_pins_the_batch_by_itself(target, pinned, tmp_path):
    report = _compile(_flatten_model(), tmp_path, target=target)
    ops = assert_fully_integer(report.tflite_path)
    assert report.options["static_batch"] is pinned
    assert ("SHAPE" in ops) is not pinned
    assert any("batch pinned to 1" in w for w in report.warnings) is pinned
