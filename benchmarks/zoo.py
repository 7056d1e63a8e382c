"""The zoo, measured: per architecture the ops, float/int8 sizes, fidelity float vs int8 on
random inputs, compile time against a bare converter script, and the verdict on cpu, cortex-m4
and edgetpu. Writes benchmarks/results/zoo.md.

The models are the test zoo's (tests/zoo/models.py): small, untrained, seeded. tflc compiles
each twice: as `--target cpu` would (batch free) and with the batch pinned to 1, as the targets
needing static shapes get it (cortex-m4, edgetpu); the verdicts come from `tflc check` on those
files. The bare script is the usual `TFLiteConverter.from_keras_model` + int8 settings with the
same calibration samples: where it fails, the table says how. Everything runs in one process
(TensorFlow imported once), so times are conversion times, not start-up.

    python benchmarks/zoo.py [--models k3_lstm,k3_gru] [--skip-slow] [--samples 16] [--update]

`--update` keeps the rows of the existing results file for the models not measured in this run
(the applications take minutes each: measure some, keep the rest).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def bare_convert(model, calib: list[np.ndarray]) -> tuple[float, str]:
    """Seconds and outcome of the plain converter script on the in-memory model."""
    import tensorflow as tf

    from tflc.tf_env import quiet_native_output

    start = time.perf_counter()
    try:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i:i + 1] for x in calib] for i in range(len(calib[0])))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        with quiet_native_output():
            converter.convert()
        outcome = "ok"
    except Exception as exc:  # what a user of the bare script sees
        lines = [line for line in str(exc).splitlines() if "error" in line.lower()] or [str(exc)]
        outcome = "fails: " + lines[-1].split("error:")[-1].strip()[:70]
    return time.perf_counter() - start, outcome


def verdict(tflite: Path, target: str) -> str:
    """`runs`, `runs, k/n on the target` (the rest on the CPU fallback), or `no` and why."""
    from tflc.check import check_model

    try:
        data = check_model(tflite, target).to_dict()
    except Exception as exc:  # a descriptor being edited: the row still gets its other columns
        return f"check failed: {str(exc)[:60]}"
    s = data["summary"]
    if s["runs"]:
        if s["ops_on_target"] == s["ops_total"]:
            return "runs" if s.get("within_budget", True) else "over budget"
        return f"runs, {s['ops_on_target']}/{s['ops_total']} on it"
    blamed = next((op for op in data["ops"] if op["reasons"] and not op.get("cut_by")), None)
    why = f": {blamed['op']} ({blamed['reasons'][0]['text'] if isinstance(blamed['reasons'][0], dict) else blamed['reasons'][0]})" if blamed else ""
    return f"no{why}"[:90]


def fidelity(model, tflite: Path, inputs: list[np.ndarray]) -> str:
    from tflc.convert.evaluate import run_tflite, sqnr_db, top1_agreement

    reference = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    reference = [np.asarray(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
    got = run_tflite(tflite.read_bytes(), inputs)
    return "; ".join(f"{top1_agreement(r, g):.0f}% / {sqnr_db(r, g):.1f} dB" for r, g in zip(reference, got))


def measure(name: str, samples: int, folder: Path) -> dict:
    import tflc
    from tests.zoo.models import TRUSTED_CODE, ZOO, build

    flavour = ZOO[name][0]
    model = build(name)
    source = folder / ("model.keras" if flavour == "k3" else "model.h5")
    model.save(source)
    row = {"name": name, "flavour": flavour, "params": model.count_params()}
    trusted = {"allow_unsafe_code": True} if name in TRUSTED_CODE else {}  # as the zoo tests
    start = time.perf_counter()
    try:
        report = tflc.compile(source, folder / "cpu", calibration="random", calibration_samples=samples,
                              **trusted)
    except Exception as exc:
        row["error"] = str(exc).splitlines()[0][:160]
        return row
    row["tflc_s"] = time.perf_counter() - start
    pinned = tflc.compile(source, folder / "static", calibration="random", calibration_samples=samples,
                          static_batch=True, **trusted)
    rng = np.random.default_rng(0)
    inputs = [rng.random((samples,) + tuple(spec["shape"][1:])).astype(np.float32) for spec in report.inputs]
    row.update(
        ops=", ".join(f"{op} {n}" for op, n in report.op_histogram.items()),
        float_kib=report.sizes["float_tflite_bytes"] / 1024, int8_kib=report.sizes["int8_tflite_bytes"] / 1024,
        fidelity=fidelity(model, report.tflite_path, inputs),
        cpu=verdict(report.tflite_path, "cpu"), m4=verdict(pinned.tflite_path, "cortex-m4"),
        edgetpu=verdict(pinned.tflite_path, "edgetpu"),
        lowered=", ".join(sorted({e["cls"] for e in (report.lowering or {}).get("layers", [])})) or "-",
    )
    row["bare_s"], row["bare"] = bare_convert(model, inputs)
    return row


HEAD = ("| model | keras | params | lowered | float KiB | int8 KiB | top-1 / SQNR (random inputs) | "
        "tflc s | bare script s | bare script | cpu | cortex-m4 | edgetpu | ops |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")


def kept_rows(path: Path, measured: set[str]) -> dict[str, str]:
    """The table lines of an earlier results file, by model, except the models in `measured`."""
    if not path.exists():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and line.startswith("| ") and cells[1] not in ("model", "") \
                and not set(cells[1]) <= set("-") and cells[1] not in measured:
            rows[cells[1]] = line
    return rows


def table(rows: list[dict], kept: dict[str, str] | None = None) -> str:
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['flavour']} | {r['params']:,} | | | | | | | | fails: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['name']} | {r['flavour']} | {r['params']:,} | {r['lowered']} | {r['float_kib']:.1f} | "
            f"{r['int8_kib']:.1f} | {r['fidelity']} | {r['tflc_s']:.1f} | {r['bare_s']:.1f} | {r['bare']} | "
            f"{r['cpu']} | {r['m4']} | {r['edgetpu']} | {r['ops']} |")
    by_name = {**(kept or {}), **{r["name"]: line for r, line in zip(rows, lines)}}
    return HEAD + "\n".join(by_name[name] for name in sorted(by_name)) + "\n"


def main() -> None:
    from tests.zoo.models import SLOW, ZOO

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated zoo names (default: all)")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the keras.applications models")
    parser.add_argument("--samples", type=int, default=16, help="calibration and fidelity samples")
    parser.add_argument("--out", default=str(HERE / "results" / "zoo.md"))
    parser.add_argument("--update", action="store_true",
                        help="keep the existing file's rows for the models not measured now")
    args = parser.parse_args()
    names = [n for n in (args.models.split(",") if args.models else sorted(ZOO)) if n]
    if args.skip_slow:
        names = [n for n in names if n not in SLOW]
    # rows of models no longer in the zoo are dropped; the others stay until measured again
    kept = {name: line for name, line in kept_rows(Path(args.out), set(names)).items()
            if name in ZOO} if args.update else {}
    rows = []
    for name in names:
        with tempfile.TemporaryDirectory() as folder:
            rows.append(measure(name, args.samples, Path(folder)))
        print(rows[-1], flush=True)
        write(rows, args, kept)  # after every model: an interrupted run keeps what it measured
    print(f"wrote {args.out}")


def write(rows: list[dict], args, kept: dict[str, str] | None = None) -> None:
    kept = {name: line for name, line in (kept or {}).items() if name not in {r["name"] for r in rows}}
    earlier = (f" ({len(kept)} rows kept from earlier runs: {', '.join(sorted(kept))})" if kept else "")
    text = (f"# Zoo: {len(rows) + len(kept)} architectures\n\n`python benchmarks/zoo.py "
            f"{' '.join(sys.argv[1:])}`{earlier} on "
            f"{platform.machine()} ({os.cpu_count()} cores shared with other jobs: times are indicative), "
            f"{args.samples} random calibration samples (uniform [0,1]); fidelity is the int8 file against "
            "the float Keras model on random inputs (top-1 agreement / SQNR per output; untrained models, "
            "so near-uniform scores make top-1 a hard test). tflc s: the whole `tflc compile` (both "
            "conversions, lowering, verification); bare script: `TFLiteConverter.from_keras_model` with "
            "int8 settings. Verdicts: `tflc check` for cpu on the default file, for cortex-m4 and edgetpu on "
            "the batch-1 file those targets get.\n\n" + table(rows, kept))
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
