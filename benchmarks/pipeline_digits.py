"""What the compression pipeline buys on scikit-learn's digits, measured side by side in one run.

    .venv/bin/python benchmarks/pipeline_digits.py        # writes benchmarks/results/pipeline_digits.md/.json

One float CNN (tflc.examples.digits.build_cnn, width 32), then, each through
`tflc.optimize.pipeline.run_pipeline` and the same int8 conversion `tflc compile` uses:

    float                      the Keras model itself (accuracy only) and its float32 .tflite
    PTQ                        post-training int8 quantization of the float model
    QAT                        quantization-aware training, then int8
    QAT, TF-MOT's initial ...  the same without tflc's range initialisation: activation ranges
                               start at TF-MOT's [-6, 6] and move by a 0.999 moving average
    prune 50% + PQAT           magnitude pruning (polynomial schedule), sparsity-preserving QAT
    prune 80% + PQAT
    2:4 + PQAT                 structured: at most 2 non-zeros in every 4 input-channel weights
    cluster 16 + CQAT          16 shared values per layer, cluster-preserving QAT
    distilled half-width       a width-16 student trained against the float teacher, then PTQ

Columns: top-1 accuracy of the int8 model in LiteRT on held-out digits (the 25% test split, never
used for training, calibration or the pipeline's stage checks, which use a validation slice of the
training split); .tflite size; gzip -9 size (what pruning and clustering buy: the flatbuffer
stores weights uncompressed); median LiteRT latency of one inference (1 thread, XNNPACK, 2000
runs after warm-up). Pruned models run at dense speed in LiteRT's kernels: sparsity is reported
as size here, not speed.

Targets: prune 80% + PQAT within 1 point of the float model's accuracy, with a gzip
size at most 40% of the unpruned int8 (PTQ) model's; QAT at least as accurate as PTQ.
"""

from __future__ import annotations

import argparse
import gzip
import io
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tflc.fileio import atomic_write_json, atomic_write_text  # noqa: E402

WIDTH = 32
FLOAT_EPOCHS = 20
RESULTS = REPO / "benchmarks" / "results"

# Each row: the pipeline stages (as the YAML holds them); None = plain PTQ of the float model.
ROWS = {
    "PTQ": None,
    "QAT": [{"qat": {"epochs": 3}}],
    "QAT, TF-MOT's initial ranges": [{"qat": {"epochs": 3, "init_ranges": False}}],
    "prune 50% + PQAT": [{"prune": {"sparsity": 0.5, "epochs": 6}}, {"qat": {"epochs": 3}}],
    "prune 80% + PQAT": [{"prune": {"sparsity": 0.8, "epochs": 10}}, {"qat": {"epochs": 3}}],
    "2:4 + PQAT": [{"prune": {"structure": "2:4", "epochs": 6}}, {"qat": {"epochs": 3}}],
    "cluster 16 + CQAT": [{"cluster": {"clusters": 16, "epochs": 4}}, {"qat": {"epochs": 3}}],
    "distilled half-width": [{"distill": {"student": "{student}", "epochs": 40,
                                          "temperature": 4, "alpha": 0.7}}],
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="timed LiteRT invocations per model")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from tflc.convert.converter import ConvertOptions, convert_float, convert_int8
    from tflc.convert.evaluate import run_tflite, top1_accuracy
    from tflc.examples.digits import build_cnn, load_split, train
    from tflc.load.models import load_model
    from tflc.optimize.pipeline import resolve_config, run_pipeline
    from tflc.optimize.training import accuracy, describe_task
    from tflc.tf_env import import_tf_keras
    from tflc.tflite.reader import read_model

    keras = import_tf_keras()
    clock = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_split(seed=0)
    n_val = len(x_train) // 5  # the pipeline's stage checks use this slice, not the test split
    x_fit, y_fit, x_val, y_val = x_train[n_val:], y_train[n_val:], x_train[:n_val], y_train[:n_val]
    work = Path(tempfile.mkdtemp(prefix="tflc-pipeline-bench-"))
    np.savez(work / "train.npz", x=x_fit, y=y_fit)
    np.savez(work / "val.npz", x=x_val, y=y_val)
    calibration = [x_fit[:200]]

    print(f"training the float model (width {WIDTH}, {FLOAT_EPOCHS} epochs)", file=sys.stderr)
    model = train(keras, x_fit, y_fit, epochs=FLOAT_EPOCHS, seed=0, width=WIDTH)
    model.save(work / "float.keras")
    keras.utils.set_random_seed(1)
    build_cnn(keras, width=WIDTH // 2).save(work / "student.keras")
    loaded = load_model(work / "float.keras")
    task = describe_task(loaded.model)
    float_accuracy = accuracy(loaded.model, [x_test], y_test, task)
    float_tflite = convert_float(loaded)

    rows = [_row("float", None, float_accuracy, float_tflite, x_test, args.runs, quantized=False)]
    rows[0]["keras_accuracy"] = float_accuracy
    for name, stages in ROWS.items():
        print(f"{name} ...", file=sys.stderr)
        started = time.perf_counter()
        final, details = loaded, {}
        if stages is not None:
            stages = [_fill(stage, student=str(work / "student.keras")) for stage in stages]
            result = run_pipeline(loaded, resolve_config({"stages": stages}),
                                  work / "train.npz", work / "val.npz", seed=0)
            rolled_back = [s.label for s in result.stages if s.status == "rolled back"]
            assert not rolled_back, f"{name}: stages rolled back without a budget: {rolled_back}"
            final = result.loaded
            details = {s.label: s.details for s in result.stages[1:]}
        tflite = convert_int8(final, calibration, ConvertOptions())
        outputs = run_tflite(tflite, [x_test])[0]
        row = _row(name, stages, top1_accuracy(outputs, y_test), tflite, x_test, args.runs)
        row["keras_accuracy"] = accuracy(final.model, [x_test], y_test, task)
        row["seconds"] = round(time.perf_counter() - started, 1)
        row["details"] = details
        row["weights_zero_fraction"] = _zero_fraction(read_model(tflite))
        rows.append(row)

    by_name = {r["name"]: r for r in rows}
    ptq, qat, p80 = by_name["PTQ"], by_name["QAT"], by_name["prune 80% + PQAT"]
    targets = {
        "prune 80% + PQAT within 1 point of float (float minus it, points)": {
            "value": round(float_accuracy - p80["accuracy"], 2), "limit": 1.0,
            "passed": float_accuracy - p80["accuracy"] <= 1.0},
        "prune 80% + PQAT gzip <= 40% of PTQ int8 gzip (ratio)": {
            "value": round(p80["gzip_bytes"] / ptq["gzip_bytes"], 3), "limit": 0.40,
            "passed": p80["gzip_bytes"] <= 0.40 * ptq["gzip_bytes"]},
        "QAT accuracy >= PTQ accuracy (QAT minus PTQ, points)": {
            "value": round(qat["accuracy"] - ptq["accuracy"], 2), "limit": 0.0,
            "passed": qat["accuracy"] >= ptq["accuracy"]},
    }
    environment = _environment()
    report = {"rows": rows, "targets": targets, "float_accuracy": float_accuracy,
              "test_samples": int(len(y_test)), "environment": environment,
              "total_seconds": round(time.perf_counter() - clock, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "pipeline_digits.json", report)
    text = _markdown(report)
    atomic_write_text(args.out / "pipeline_digits.md", text)
    print(text)
    if not all(t["passed"] for t in targets.values()):
        sys.exit(1)


def _fill(stage, **values):
    """Put the student path into the distill row's stage."""
    kind, body = next(iter(stage.items()))
    return {kind: {k: (v.format(**values) if isinstance(v, str) else v) for k, v in body.items()}}


def _row(name, stages, accuracy, tflite: bytes, x_test, runs: int, quantized: bool = True):
    return {"name": name, "stages": stages, "accuracy": round(float(accuracy), 2),
            "tflite_bytes": len(tflite), "gzip_bytes": len(gzip.compress(tflite, 9, mtime=0)),
            "latency_us": _latency_us(tflite, x_test, runs), "int8": quantized}


def _latency_us(tflite: bytes, x_test, runs: int) -> float:
    """Median time of one `invoke()` in LiteRT (1 thread), after 100 warm-up runs."""
    from tflc.convert.evaluate import make_interpreter, quantize

    interpreter = make_interpreter(tflite, num_threads=1)
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], quantize(x_test[:1], detail))
    for _ in range(100):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        times.append(time.perf_counter_ns() - start)
    return round(statistics.median(times) / 1000, 2)


def _zero_fraction(view) -> float:
    zeros = total = 0
    for tensor in view.main.tensors:
        if tensor.is_constant and tensor.dtype == "int8" and len(tensor.shape) >= 2:
            values = view.tensor_data(tensor)
            zeros, total = zeros + int((values == 0).sum()), total + values.size
    return round(zeros / total, 4) if total else 0.0


def _environment() -> dict:
    from importlib.metadata import version

    return {"python": platform.python_version(), "machine": platform.machine(),
            "tensorflow": version("tensorflow-cpu"),
            "tensorflow-model-optimization": version("tensorflow-model-optimization"),
            "ai-edge-litert": version("ai-edge-litert")}


def _markdown(report: dict) -> str:
    out = io.StringIO()
    float_accuracy = report["float_accuracy"]
    ptq_gzip = next(r["gzip_bytes"] for r in report["rows"] if r["name"] == "PTQ")
    out.write("# Compression pipeline on digits\n\n")
    out.write(f"`.venv/bin/python benchmarks/pipeline_digits.py` ({report['total_seconds']:.0f} s "
              f"on {report['environment']['machine']}, tensorflow "
              f"{report['environment']['tensorflow']}, TF-MOT "
              f"{report['environment']['tensorflow-model-optimization']}, ai-edge-litert "
              f"{report['environment']['ai-edge-litert']}).\n\n")
    out.write(f"Accuracy: top-1 in LiteRT on {report['test_samples']} held-out digits (float row: "
              "the Keras model). Latency: median of one LiteRT invoke, 1 thread.\n\n")
    out.write("| model | accuracy | vs float | .tflite | gzip | gzip vs PTQ | zeros | latency |\n")
    out.write("|---|---:|---:|---:|---:|---:|---:|---:|\n")
    for r in report["rows"]:
        change = "" if r["name"] == "float" else f"{r['accuracy'] - float_accuracy:+.2f}"
        zeros = f"{r['weights_zero_fraction']:.0%}" if "weights_zero_fraction" in r else "float"
        out.write(f"| {r['name']} | {r['accuracy']:.2f}% | {change} | {r['tflite_bytes']:,} B | "
                  f"{r['gzip_bytes']:,} B | {r['gzip_bytes'] / ptq_gzip:.0%} | {zeros} | "
                  f"{r['latency_us']:.1f} us |\n")
    out.write("\n## Targets\n\n")
    for name, t in report["targets"].items():
        out.write(f"- {name}: {t['value']} (limit {t['limit']}) — "
                  f"{'PASS' if t['passed'] else 'FAIL'}\n")
    return out.getvalue()


if __name__ == "__main__":
    main()
