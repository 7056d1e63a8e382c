"""How much time does `tflc compile` add over a bare TFLiteConverter script?

Both do the same full-int8 conversion of the same model (MobileNetV2, alpha 1.0, random
weights, 3.5 M parameters) with the same 200 random calibration samples. Each run is a fresh
process (TensorFlow's import included, as a user would run it), interleaved A B A B so that
machine load affects both alike; the medians and their ratio are printed and written to
benchmarks/results/compile_overhead.md. Target: tflc adds at most 15%.

    python benchmarks/compile_overhead.py [--repeats 3] [--size 160]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BARE_SCRIPT = '''
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import tf_keras

model = tf_keras.models.load_model(sys.argv[1], compile=False)
calib = np.load(sys.argv[2])["x"]

def representative_dataset():
    for i in range(len(calib)):
        yield [calib[i:i + 1]]

if sys.argv[4] == "keras":
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
else:  # the route tflc takes: a frozen concrete function
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    spec = tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]), tf.float32)
    function = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.representative_dataset = representative_dataset
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
converter.inference_input_type = tf.int8
converter.inference_output_type = tf.int8
with open(sys.argv[3], "wb") as f:
    f.write(converter.convert())
'''


def build_inputs(folder: Path, size: int, samples: int) -> tuple[Path, Path]:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    from tflc.tf_env import import_tf_keras

    keras = import_tf_keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), weights=None, classes=1000)
    model_path = folder / "mobilenet_v2.keras"
    model.save(model_path)
    calib_path = folder / "calib.npz"
    np.savez(calib_path, x=np.random.default_rng(0).uniform(-1, 1, (samples, size, size, 3)).astype(np.float32))
    return model_path, calib_path, model.count_params()


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=160, help="input height and width")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_path, calib_path, params = build_inputs(folder, args.size, args.samples)
        bare_script = folder / "bare_convert.py"
        bare_script.write_text(BARE_SCRIPT)
        bare_cmd = [sys.executable, str(bare_script), str(model_path), str(calib_path), str(folder / "bare.tflite"), "keras"]
        frozen_cmd = bare_cmd[:-2] + [str(folder / "frozen.tflite"), "frozen"]
        tflc_cmd = [sys.executable, "-m", "tflc", "compile", str(model_path), "-o", str(folder / "tflc"),
                    "--calibration-data", str(calib_path), "--calibration-samples", str(args.samples)]
        env_note = f"TFLC_REGISTRY={folder / 'registry'}"
        os.environ["TFLC_REGISTRY"] = str(folder / "registry")
        bare, frozen, ours = [], [], []
        for i in range(args.repeats):
            bare.append(timed(bare_cmd))
            frozen.append(timed(frozen_cmd))
            ours.append(timed(tflc_cmd))
            print(f"run {i + 1}: bare {bare[-1]:.1f} s, bare frozen {frozen[-1]:.1f} s, tflc {ours[-1]:.1f} s", flush=True)
        bare_size = (folder / "bare.tflite").stat().st_size
        frozen_size = (folder / "frozen.tflite").stat().st_size
        tflc_size = (folder / "tflc" / "model.tflite").stat().st_size
    ratio = statistics.median(ours) / statistics.median(bare)
    ratio_frozen = statistics.median(ours) / statistics.median(frozen)
    lines = [
        "# tflc compile vs a bare TFLiteConverter script",
        "",
        f"MobileNetV2 (alpha 1.0, {args.size}x{args.size}x3, {params:,} parameters, random weights), "
        f"{args.samples} random calibration samples, full int8 with int8 I/O. Fresh process per run "
        f"(TensorFlow import included), interleaved, {args.repeats} runs each; {env_note}.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "| | median (s) | runs (s) | .tflite bytes |",
        "|---|---|---|---|",
        f"| bare TFLiteConverter.from_keras_model | {statistics.median(bare):.2f} | {', '.join(f'{t:.1f}' for t in bare)} | {bare_size:,} |",
        f"| bare from_concrete_functions (tflc's route) | {statistics.median(frozen):.2f} | {', '.join(f'{t:.1f}' for t in frozen)} | {frozen_size:,} |",
        f"| tflc compile | {statistics.median(ours):.2f} | {', '.join(f'{t:.1f}' for t in ours)} | {tflc_size:,} |",
        "",
        f"**ratio tflc / bare from_keras_model: {ratio:.3f}; tflc / bare from_concrete_functions: "
        f"{ratio_frozen:.3f}** (target: at most 1.15). The second ratio is tflc's own overhead: its run "
        "also converts a float model for the size baseline, parses and verifies the flatbuffer, hashes "
        "inputs and records the run. from_keras_model is slower because it first saves the model as a "
        "SavedModel on disk.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "compile_overhead.md").write_text(text)


if __name__ == "__main__":
    main()
