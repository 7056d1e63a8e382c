"""The pipeline's stage table (terminal) and its plot of accuracy against compressed size (PNG).

Both read the stage dicts as report.json stores them, so a saved report can be re-rendered:

    tflc.optimize.stage_report.stage_table(json.load(open("OUT/report.json"))["stages"])
"""

from __future__ import annotations

import io

from tflc.units import format_bytes


def stage_table(stages: list[dict]) -> str:
    """One row per stage: accuracy, change against float, int8 accuracy, sizes, sparsity, time."""
    head = ["#", "stage", "status", "accuracy", "vs float", "int8 acc", ".tflite", "gzip",
            "sparsity", "time"]
    rows = []
    for s in stages:
        rows.append([
            str(s["index"]), s["label"], s["status"], f"{s['accuracy']:.2f}%",
            "-" if s["index"] == 0 else f"{s['accuracy_change']:+.2f}",
            "-" if s.get("int8_accuracy") is None else f"{s['int8_accuracy']:.2f}%",
            format_bytes(s["tflite_bytes"], unit="KiB"), format_bytes(s["gzip_bytes"], unit="KiB"), f"{s['sparsity']:.0%}",
            f"{s['seconds']:.1f}s",
        ])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    left = {1, 2}
    lines = ["  ".join(c.ljust(w) if i in left else c.rjust(w)
                       for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [head, *rows]]
    return "\n".join(lines)  # why a stage was rolled back is in its `reason` (and the warnings)


def stage_plot_png(stages: list[dict]) -> bytes:
    """Accuracy (Keras model, and int8) against gzip-compressed int8 size, one point per stage."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for s in stages:
        size = s["gzip_bytes"] / 1024
        kept = s["status"] != "rolled back"
        ax.scatter(size, s["accuracy"], marker="o" if kept else "x", s=50,
                   color="tab:blue" if kept else "tab:red", zorder=3)
        if s.get("int8_accuracy") is not None:
            ax.scatter(size, s["int8_accuracy"], marker="s", s=25, color="tab:green", zorder=3)
        ax.annotate(f"{s['index']}: {s['label']}", (size, s["accuracy"]), fontsize=8,
                    xytext=(5, 4), textcoords="offset points")
    accepted = [s for s in stages if s["status"] != "rolled back"]
    ax.plot([s["gzip_bytes"] / 1024 for s in accepted], [s["accuracy"] for s in accepted],
            color="tab:blue", alpha=0.4, zorder=2)
    ax.scatter([], [], marker="o", color="tab:blue", label="stage model (Keras)")
    ax.scatter([], [], marker="s", color="tab:green", label="converted to int8 (LiteRT)")
    if len(accepted) != len(stages):
        ax.scatter([], [], marker="x", color="tab:red", label="rolled back")
    ax.set_xlabel("int8 .tflite size after gzip (KiB)")
    ax.set_ylabel("accuracy on the evaluation data (%)")
    ax.set_title("compression pipeline: accuracy against compressed size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
