"""Post-training quantization methods on the four MLPerf Tiny models, side by side, one run.

For each model: `tflc compile` with the converter's own min-max PTQ (plain), with `--ptq auto`
(every range method with and without bias correction, and for Keras files the best of those with
CLE and with AdaRound, scored on the evaluation data), and (Keras
files) with `--cross-layer-equalization` and with `--adaround 8`, each alone; their
compile times, the per-method table from auto's report, and the MLPerf reference int8 file on
the same data. Inputs:

- kws: `../shared/fixtures/kws_dev` (100 unlabelled calibration samples, 300 labelled dev ones):
  accuracy, and output SQNR against the float model.
- vww, ic: no data set ships; real photographs do (scikit-learn's two sample images), cut
  into random patches at the model's input size (vww 0..1, ic 0..255 as the reference files'
  input scales say). No labels: output SQNR and top-1 agreement against the float model.
- ad: log-mel features (128 bands x 5 frames, dB, as MLPerf's AD front end) of synthetic
  machine sounds (a harmonic hum with random fundamental and noise). No labels: SQNR.

Calibration and evaluation samples are disjoint. Writes benchmarks/results/ptq.md (and .json).

    .venv/bin/python benchmarks/ptq.py [--models kws,ic] [--out benchmarks/results/ptq.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TFLC_NO_RECORD", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("TFLC_SHARED", REPO.parent / "shared")) / "fixtures"
MLPERF = SHARED / "mlperf_tiny"
MODELS = {
    "kws": (MLPERF / "kws" / "kws_ref_model_savedmodel", MLPERF / "kws" / "kws_ref_model_int8.tflite"),
    "vww": (MLPERF / "vww" / "vww_96.h5", MLPERF / "vww" / "vww_96_int8.tflite"),
    "ic": (MLPERF / "ic" / "resnet8.h5", MLPERF / "ic" / "resnet8_int8.tflite"),
    "ad": (MLPERF / "ad" / "ad01.h5", MLPERF / "ad" / "ad01_int8.tflite"),
}


def photo_patches(count: int, size: int, scale: float, seed: int) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    images = load_sample_images().images
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        image = images[i % len(images)]
        side = int(rng.integers(size, min(image.shape[:2])))  # a crop of any size, resized
        y, x = rng.integers(0, image.shape[0] - side), rng.integers(0, image.shape[1] - side)
        crop = image[y:y + side, x:x + side]
        rows = (np.arange(size) * side / size).astype(int)
        patch = crop[rows][:, rows]
        out[i] = (patch[:, ::-1] if rng.random() < 0.5 else patch) * scale
    return out


def _mel_filters(sr: int, n_fft: int, bands: int) -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    points = hz(np.linspace(mel(0.0), mel(sr / 2), bands + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sr)
    filters = np.zeros((bands, bins.size))
    for b in range(bands):
        lo, mid, hi = points[b:b + 3]
        filters[b] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return filters


def machine_features(count: int, seed: int) -> np.ndarray:
    """Log-mel (dB) of 5 consecutive frames: MLPerf AD's 640-value input, from synthetic hums."""
    rng = np.random.default_rng(seed)
    sr, n_fft, hop = 16000, 1024, 512
    filters = _mel_filters(sr, n_fft, 128)
    window = np.hanning(n_fft)
    out = np.empty((count, 640), np.float32)
    t = np.arange(n_fft + 4 * hop) / sr
    for i in range(count):
        f0 = rng.uniform(50, 400)
        hum = sum(rng.uniform(0.01, 0.2) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6))
                  for k in range(1, 12))
        audio = hum + rng.uniform(0.002, 0.05) * rng.standard_normal(t.size)
        frames = np.stack([audio[j * hop:j * hop + n_fft] * window for j in range(5)])
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        out[i] = (10.0 * np.log10(power @ filters.T + sys.float_info.epsilon)).ravel()
    return out


def datasets(name: str, folder: Path) -> tuple[Path, Path]:
    """calib.npz and eval.npz for a model (disjoint samples)."""
    if name == "kws":
        return SHARED / "kws_dev" / "calib.npz", SHARED / "kws_dev" / "dev.npz"
    make = {"vww": lambda n, s: photo_patches(n, 96, 1 / 255, s),
            "ic": lambda n, s: photo_patches(n, 32, 1.0, s),
            "ad": machine_features}[name]
    calib, evaluation = folder / f"{name}_calib.npz", folder / f"{name}_eval.npz"
    np.savez(calib, x=make(100, 1))
    np.savez(evaluation, x=make(200, 2))
    return calib, evaluation


def reference_scores(name: str, ref: Path, evaluation: Path, keras_model) -> dict:
    from tflc.convert.evaluate import run_tflite, sqnr_db, top1_accuracy, top1_agreement
    from tflc.load.models import load_model

    data = np.load(evaluation)
    loaded = load_model(keras_model)
    reference = loaded.predict([data["x"]])[0]
    out = run_tflite(ref.read_bytes(), [data["x"]])[0]
    return {"accuracy": top1_accuracy(out, data["y"]) if "y" in data else None,
            "sqnr_db": sqnr_db(reference, out), "agreement": top1_agreement(reference, out),
            "size_bytes": ref.stat().st_size}


def run(name: str, folder: Path) -> dict:
    import tflc
    from tflc.errors import BadInput

    model, ref = MODELS[name]
    calib, evaluation = datasets(name, folder)
    common = dict(calibration_data=calib, eval_data=evaluation, calibration_samples=100)
    clock = time.perf_counter()
    plain = tflc.compile(model, folder / f"{name}_plain", **common)
    plain_seconds = time.perf_counter() - clock
    clock = time.perf_counter()
    auto = tflc.compile(model, folder / f"{name}_auto", ptq="auto", **common)
    auto_seconds = time.perf_counter() - clock
    weights = {}
    # the weight corrections edit Keras weights: a SavedModel tflc reads as Keras (its
    # keras_metadata) has them, another is refused, and the refusal is what the table shows
    for label, extra in (("cle", {"cross_layer_equalization": True}), ("adaround", {"adaround": 8})):
        clock = time.perf_counter()
        try:
            r = tflc.compile(model, folder / f"{name}_{label}", **extra, **common)
        except BadInput as refused:
            weights = {"refused": str(refused)}
            break
        weights[label] = {
            "accuracy": r.evaluation["int8_accuracy"], "sqnr_db": r.evaluation["fidelity"][0]["sqnr_db"],
            "seconds": round(time.perf_counter() - clock, 2), "pairs": len(r.weights["equalized"]),
            "skipped": len(r.weights["skipped"]), "layers_rounded": len(r.weights["adaround"]),
            "flipped": sum(v["flipped"] for v in r.weights["adaround"].values()),
            "fully_integer": r.verifier["integer_core"]}
    fully_integer = all(r.verifier["integer_core"] for r in (plain, auto))
    return {
        "model": name, "plain_seconds": round(plain_seconds, 2), "auto_seconds": round(auto_seconds, 2),
        "ratio": round(auto_seconds / plain_seconds, 2), "fully_integer": fully_integer,
        "float_accuracy": plain.evaluation["float_accuracy"],
        "plain": {"accuracy": plain.evaluation["int8_accuracy"],
                  "sqnr_db": plain.evaluation["fidelity"][0]["sqnr_db"],
                  "agreement": plain.evaluation["fidelity"][0]["top1_agreement"]},
        "auto": {"chosen": auto.ptq["chosen"], "accuracy": auto.evaluation["int8_accuracy"],
                 "sqnr_db": auto.evaluation["fidelity"][0]["sqnr_db"],
                 "agreement": auto.evaluation["fidelity"][0]["top1_agreement"]},
        "candidates": auto.ptq["candidates"],
        "weights": weights,
        "worst_layers_plain": (plain.layers or {}).get("worst"),
        "reference": reference_scores(name, ref, evaluation, model),
        "data": {"calibration": str(calib.name), "evaluation": str(evaluation.name)},
    }


def markdown(results: list[dict]) -> str:
    lines = ["# PTQ methods on the MLPerf Tiny models", "",
             "From `benchmarks/ptq.py` (one run; data described in its docstring). Accuracy in %; "
             "SQNR of the model output against the float Keras model, in dB; drop = float minus int8, "
             "points. `*` marks what `--ptq auto` chose. Compile times are whole `tflc compile` runs "
             "(load, float and int8 conversion, evaluation, layer report) on a shared 2-core machine.", "",
             "| model | float acc | plain acc | plain SQNR | auto (chosen) | auto acc | auto SQNR | "
             "MLPerf int8 acc | MLPerf int8 SQNR | plain s | auto s | auto/plain | fully integer |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def num(v):
        return "-" if v is None else f"{v:.2f}"
    for r in results:
        lines.append(f"| {r['model']} | {num(r['float_accuracy'])} | {num(r['plain']['accuracy'])} | "
                     f"{num(r['plain']['sqnr_db'])} | {r['auto']['chosen']} | {num(r['auto']['accuracy'])} | "
                     f"{num(r['auto']['sqnr_db'])} | {num(r['reference']['accuracy'])} | "
                     f"{num(r['reference']['sqnr_db'])} | {r['plain_seconds']:.1f} | "
                     f"{r['auto_seconds']:.1f} | {r['ratio']:.2f}x | {r['fully_integer']} |")
    lines += ["", "Mixed int8/16x8 precision (`--activations mixed`) on the same models and data: "
              "[mixed.md](mixed.md), from `benchmarks/mixed.py`."]
    lines += ["", "## Weight corrections (`--cross-layer-equalization`, `--adaround 8`), each alone on "
              "plain min-max ranges", "",
              "| model | plain acc | plain SQNR | CLE pairs | CLE acc | CLE SQNR | CLE s | AdaRound layers "
              "| weights off nearest | AdaRound acc | AdaRound SQNR | AdaRound s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        w = r.get("weights") or {}
        if not w or "refused" in w:
            lines.append(f"| {r['model']} | {num(r['plain']['accuracy'])} | {num(r['plain']['sqnr_db'])} | "
                         f"refused: {w.get('refused', 'not run')} | | | | | | | | |")
            continue
        c, a = w["cle"], w["adaround"]
        lines.append(f"| {r['model']} | {num(r['plain']['accuracy'])} | {num(r['plain']['sqnr_db'])} | "
                     f"{c['pairs']} | {num(c['accuracy'])} | {num(c['sqnr_db'])} | {c['seconds']:.1f} | "
                     f"{a['layers_rounded']} | {a['flipped']:,} | {num(a['accuracy'])} | "
                     f"{num(a['sqnr_db'])} | {a['seconds']:.1f} |")
    for r in results:
        lines += ["", f"## {r['model']}: every method (on {r['data']['evaluation']})", "",
                  "| method | accuracy | drop | SQNR dB | size B | time s |", "|---|---|---|---|---|---|"]
        for c in r["candidates"]:
            drop = "-" if c["accuracy"] is None or r["float_accuracy"] is None else \
                f"{r['float_accuracy'] - c['accuracy']:+.2f}"
            mark = " *" if c["method"] == r["auto"]["chosen"] else ""
            lines.append(f"| {c['method']}{mark} | {num(c['accuracy'])} | {drop} | {c['sqnr_db']:.2f} | "
                         f"{c['size_bytes']:,} | {c['seconds']:.2f} |")
        lines.append(f"\nLowest-SQNR layers of plain PTQ: {'; '.join(r['worst_layers_plain'] or [])}")
    return "\n".join(lines) + "\n"


def model_names(text: str) -> list[str]:
    """`--models kws,ic` as a list; exits naming the models whose fixtures are not there."""
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"--models {unknown[0]}: expected some of {', '.join(MODELS)}")
    missing = [n for n in names if not MODELS[n][0].exists()]
    if missing:
        sys.exit(f"MLPerf Tiny fixtures not found for {', '.join(missing)} under {MLPERF}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="kws,vww,ic,ad")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ptq.md"))
    args = parser.parse_args()
    names = model_names(args.models)
    from tflc.tf_env import import_tensorflow

    import_tensorflow()  # the first compile should not pay TensorFlow's import alone
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"... {name}", file=sys.stderr)
            results.append(run(name, Path(tmp)))
            print(json.dumps({k: results[-1][k] for k in ("model", "plain", "auto", "ratio")}),
                  file=sys.stderr)
    text = markdown(results)
    print(text)
    from tflc.fileio import atomic_write_json, atomic_write_text

    atomic_write_text(args.out, text)
    atomic_write_json(Path(args.out).with_suffix(".json"), results)


if __name__ == "__main__":
    main()
