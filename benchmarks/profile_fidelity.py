"""How well do per-op latencies add up to the whole model? (tflc profile's method error)

For each MLPerf Tiny int8 reference model, on this CPU (LiteRT, XNNPACK, one thread), through
the bench runner as `tflc profile` uses it:

- single-op models (the method `tflc profile` uses): the sum of per-op medians, each minus the
  empty model's invoke() time, against the whole model timed in the same process;
- prefix models (ops 0..k): per-op times as differences of consecutive prefix medians; their
  sum is the whole by construction, so what matters is how noisy the differences are
  (negative ones) and how far they are from the single-op figures.

Each model is profiled `TRIALS` times; the table gives the median error and the worst one.
Writes benchmarks/results/profile_fidelity.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tflc.profile import ProfileOptions, cut, profile  # noqa: E402
from tflc.profile.measure import time_models  # noqa: E402

SHARED = Path(os.environ.get("TFLC_SHARED", REPO.parent / "shared")) / "fixtures" / "mlperf_tiny"
MODELS = {"kws": "kws/kws_ref_model_int8.tflite", "vww": "vww/vww_96_int8.tflite",
          "ic": "ic/resnet8_int8.tflite", "ad": "ad/ad01_int8.tflite"}
TRIALS = 3


def single_op(path: Path) -> list[dict]:
    rows = []
    for _ in range(TRIALS):
        started = time.perf_counter()
        result = profile(ProfileOptions(str(path), "cpu"))
        rows.append({"whole": result.total.latency_ms, "sum": result.total.sum_op_latency_ms,
                     "error": result.method_error, "ops": [o.latency_ms for o in result.ops],
                     "seconds": time.perf_counter() - started,
                     "overhead": result.details.invoke_overhead_ms})
    return rows


def prefix(path: Path) -> dict:
    data = path.read_bytes()
    model = cut.unpack(data)
    count = len(model.subgraphs[0].operators)
    files = {"empty": cut.empty_model(model)}
    for k in range(1, count):
        files[f"p{k}"] = cut.prefix_model(model, k)
    files[f"p{count}"] = data
    medians, _, _ = time_models(files)
    times = [medians["empty"]] + [medians[f"p{k}"] for k in range(1, count + 1)]
    return {"ops": [b - a for a, b in zip(times, times[1:])], "whole": times[-1]}


def main() -> None:
    lines = ["# Profile fidelity: sum of per-op latencies vs the whole model", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, load average "
             f"{os.getloadavg()[0]:.2f} at the start (a shared machine). LiteRT via the bench "
             f"runner, XNNPACK, 1 thread; {TRIALS} profiles per model. Regenerate with "
             "`python benchmarks/profile_fidelity.py`.", "",
             "| model | ops | whole [ms] | sum of single-op [ms] | error (median) | error (worst) "
             "| invoke overhead [us] | profile time [s] | prefix: negative differences | "
             "prefix vs single-op per op (median abs. diff., share of whole) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, relative in MODELS.items():
        path = SHARED / relative
        if not path.exists():
            lines.append(f"| {name} | missing: {path} | | | | | | | | |")
            continue
        rows = single_op(path)
        errors = [r["error"] for r in rows]
        middle = sorted(rows, key=lambda r: r["error"])[len(rows) // 2]
        pre = prefix(path)
        negative = sum(1 for v in pre["ops"] if v < 0)
        diffs = [abs(a - (b or 0)) for a, b in zip(pre["ops"], middle["ops"])]
        lines.append(
            f"| {name} | {len(middle['ops'])} | {middle['whole']:.4f} | {middle['sum']:.4f} | "
            f"{statistics.median(errors):+.1%} | {max(errors, key=abs):+.1%} | "
            f"{middle['overhead'] * 1e3:.2f} | {statistics.median(r['seconds'] for r in rows):.1f} | "
            f"{negative} of {len(pre['ops'])} | {statistics.median(diffs) / pre['whole']:.1%} |")
        print(lines[-1], flush=True)
    lines += ["", "Method chosen: single-op models. Their sum tracks the whole model within the "
              "errors above on every model, each op is timed on its own (no differences of two "
              "noisy medians, no negative times), and the cost grows linearly with the number of "
              "ops, where prefix models grow quadratically (a 300-op model would need 300 ever "
              "larger models). The empty model's invoke() time is subtracted from each op: "
              "without it, the ad model's ten tiny ops add ten call overheads and the sum "
              "overshoots the whole model by about 2x.", ""]
    out = REPO / "benchmarks" / "results" / "profile_fidelity.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
