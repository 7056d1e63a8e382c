"""Mixed precision on the four MLPerf Tiny models: int8, int16 budgets, all-16x8, side by side.

For each model, one run of `tflc compile --target cortex-m4` with: the converter's own int8
(plain PTQ), `--activations mixed` at several `--int16-budget` shares, and `--activations int16`
(every activation in 16x8). Per row: accuracy (KWS, on kws_dev's labelled dev set), output SQNR
against the float Keras model, the share of MACs that run in 16x8 (counted from the flatbuffer),
the tensor arena `tflc check` estimates for cortex-m4, the file size and the compile time. The
data are those of `benchmarks/ptq.py` (its docstring says what they are); calibration and
evaluation samples are disjoint. Writes benchmarks/results/mixed.md (and .json).

    .venv/bin/python benchmarks/mixed.py [--models kws,ic] [--budgets 0.1,0.25,0.5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ptq import MODELS, REPO, datasets, model_names  # noqa: E402  (sets TF_USE_LEGACY_KERAS first)

TARGET = "cortex-m4"


def int16_ops(model: Path) -> tuple[float, int]:
    """The share of MACs in ops writing int16, and how many such ops (QUANTIZE not counted)."""
    from tflc.profile.counts import macs
    from tflc.tflite.reader import read_model

    sg = read_model(model).subgraphs[0]
    total = sum(macs(sg, op) for op in sg.operators) or 1
    wide = [op for op in sg.operators
            if sg.tensors[op.outputs[0]].dtype == "int16" and op.op != "QUANTIZE"]
    return sum(macs(sg, op) for op in wide) / total, len(wide)


def row(label: str, report, seconds: float) -> dict:
    from tflc.check.verdicts import check_model

    check = check_model(report.tflite_path, TARGET)
    fidelity = report.evaluation["fidelity"][0]
    share, count = int16_ops(report.tflite_path)
    return {"setting": label, "accuracy": report.evaluation["int8_accuracy"],
            "sqnr_db": fidelity["sqnr_db"], "agreement": fidelity["top1_agreement"],
            "int16_share": round(share, 4), "int16_ops": count,
            "arena_bytes": check.memory.arena_bytes, "size_bytes": report.tflite_path.stat().st_size,
            "on_target": check.to_dict()["summary"]["ops_on_target"] ==
            check.to_dict()["summary"]["ops_total"],
            "seconds": round(seconds, 2)}


def run(name: str, folder: Path, budgets: list[float]) -> dict:
    import tflc

    model, _ = MODELS[name]
    calib, evaluation = datasets(name, folder)
    common = dict(calibration_data=calib, eval_data=evaluation, calibration_samples=100,
                  target=TARGET)
    settings = [("int8 (plain)", {})]
    settings += [(f"mixed {b:g}", {"activations": "mixed", "int16_budget": b}) for b in budgets]
    settings += [(f"mixed {budgets[-1]:g}, percentile ranges",
                  {"activations": "mixed", "int16_budget": budgets[-1], "ptq": "percentile"})]
    settings += [("int16 (all 16x8)", {"activations": "int16"})]
    rows, float_accuracy = [], None
    for i, (label, extra) in enumerate(settings):
        print(f"... {name}: {label}", file=sys.stderr)
        clock = time.perf_counter()
        report = tflc.compile(model, folder / f"{name}_{i}", **extra, **common)
        rows.append(row(label, report, time.perf_counter() - clock))
        float_accuracy = report.evaluation["float_accuracy"]
    return {"model": name, "float_accuracy": float_accuracy, "rows": rows,
            "data": {"calibration": calib.name, "evaluation": evaluation.name}}


def markdown(results: list[dict]) -> str:
    def num(v):
        return "-" if v is None else f"{v:.2f}"

    lines = ["# Mixed precision (`--activations mixed`) on the MLPerf Tiny models", "",
             "From `benchmarks/mixed.py` (one run, target cortex-m4; data as in `ptq.md`). "
             "Accuracy in % (KWS only: the others have no labels); SQNR of the model output "
             "against the float Keras model, dB; int16 share: the share of MACs in ops that write "
             "int16, counted from the flatbuffer; arena: `tflc check`'s estimate for cortex-m4. "
             "Compile times are whole `tflc compile` runs on a shared 2-core machine.", ""]
    for r in results:
        lines += [f"## {r['model']} (float accuracy {num(r['float_accuracy'])}; evaluated on "
                  f"{r['data']['evaluation']})", "",
                  "| setting | accuracy | SQNR dB | top-1 agreement | int16 share | int16 ops | "
                  "arena B | size B | all on cortex-m4 | compile s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for x in r["rows"]:
            lines.append(f"| {x['setting']} | {num(x['accuracy'])} | {num(x['sqnr_db'])} | "
                         f"{num(x['agreement'])} | {x['int16_share']:.2f} | {x['int16_ops']} | "
                         f"{x['arena_bytes'] or 0:,} | {x['size_bytes']:,} | {x['on_target']} | "
                         f"{x['seconds']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="kws,vww,ic,ad")
    parser.add_argument("--budgets", default="0.1,0.25,0.5")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mixed.md"))
    args = parser.parse_args()
    names = model_names(args.models)
    budgets = [float(b) for b in args.budgets.split(",") if b]
    from tflc.tf_env import import_tensorflow

    import_tensorflow()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(run(name, Path(tmp), budgets))
            print(json.dumps(results[-1]["rows"]), file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
