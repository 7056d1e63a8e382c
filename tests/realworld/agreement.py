"""tflc's verdicts against the real backends, op instance by op instance, over the real-world
corpus (tests/realworld/corpus.py), with every disagreement given a cause.

`measure(corpus_paths, backends)` returns one `Backend` per oracle: the instances compared, the
models the oracle could not judge (and why) and the disagreements. `cause(...)` names the
mechanism behind a disagreement from the graph itself (the op, the dtypes, what produces its
weights, custom op names, QUANTIZE's conversion), never from the model's name, so the report
groups many models under one cause and the next step can fix causes, not models.

The oracles (tests/check/oracles.py) run in a child process per backend (oracle_child.py), and
their answers are cached by the model's content hash, the backend and its version: a rerun asks
only tflc again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tflc.check import check_model
from tflc.tflite.reader import read_model

from . import qnn_oracle
from .corpus import CACHE, EDGETPU_PAIRS, REPO
from .qnn_oracle import SOCS as QNN_SOCS

# backend -> target descriptor compared with it
TARGET_OF = {"xnnpack": "cpu", "tflm": "cortex-m4", "vela": "ethos-u55-128", "edgetpu": "edgetpu",
             **{name: target for name, (_, target) in QNN_SOCS.items()}}
ORACLE_OF = {
    "xnnpack": "ai-edge-litert's interpreter with its default XNNPACK delegate: the ops inside "
               "its DELEGATE nodes",
    "tflm": "tflite-micro's Python interpreter: the model allocates and runs, or the op it "
            "rejects (ops it prepared before that op count as accepted)",
    "vela": "vela --accelerator-config ethos-u55-128 --show-cpu-operations (it names CPU ops by "
            "their output tensors, so ops without outputs, such as CALL_ONCE and ASSIGN_VARIABLE, "
            "are not judged)",
    "edgetpu": "edgetpu_compiler's real output for the 16 Coral pairs (placements.json)",
    **{name: f"LiteRT's Qualcomm compiler plugin over QAIRT's host libraries for {soc}: the ops "
             "inside its DISPATCH_OP partitions (tests/realworld/qnn_oracle.py)"
       for name, (soc, _) in QNN_SOCS.items()},
}
VERSIONS_OF = {"xnnpack": "ai-edge-litert", "tflm": "tflite-micro", "vela": "ethos-u-vela"}
ORACLE_TIMEOUT = 600  # seconds for one model in one backend (vela on a large float model)


@dataclass
class Instance:
    model: str
    index: int
    op: str
    tflc: bool  # tflc puts the op on the target (TFLM: the op itself is runnable there)
    backend: bool | None  # None: the backend says nothing about this op
    cause: str = ""  # for a disagreement: the mechanism (see `cause`)
    reasons: str = ""  # tflc's reasons, for the report

    @property
    def agrees(self) -> bool | None:
        return None if self.backend is None else self.tflc == self.backend


@dataclass
class Backend:
    name: str
    target: str
    instances: list[Instance] = field(default_factory=list)
    models: list[str] = field(default_factory=list)  # models compared
    unjudged: dict[str, str] = field(default_factory=dict)  # model -> why the oracle said nothing

    @property
    def compared(self) -> list[Instance]:
        return [i for i in self.instances if i.agrees is not None]

    @property
    def disagreements(self) -> list[Instance]:
        return [i for i in self.compared if not i.agrees]

    def exact_models(self) -> list[str]:
        wrong = {i.model for i in self.disagreements}
        judged = {i.model for i in self.compared}
        return [m for m in self.models if m in judged and m not in wrong]

    def rate(self) -> float:
        return 1 - len(self.disagreements) / len(self.compared) if self.compared else 1.0


# --------------------------------------------------------------------------------- oracles


def _versions(backend: str) -> str:
    from importlib.metadata import version

    code = b"".join((REPO / p).read_bytes() for p in
                    ("tests/check/oracles.py", "tests/realworld/oracle_child.py"))
    return f"{version(VERSIONS_OF[backend])}:{hashlib.sha256(code).hexdigest()[:12]}"


def _death_site(backend: str, path: Path) -> str:
    """Where TFLite Micro died on a model, found as `tflc export` finds it (bisecting prefixes)."""
    if backend != "tflm":
        return ""
    import numpy as np

    from tflc.export.crosscheck import crashing_op, input_details

    try:
        data = path.read_bytes()
        batch = [np.zeros(d["shape"], dtype=d["dtype"]) for d in input_details(data, path.name)]
        return crashing_op(data, 64 << 20, batch, path.name, timeout=ORACLE_TIMEOUT)
    except Exception:  # noqa: BLE001 - the site is a courtesy; the death is recorded regardless
        return ""


def _cache_file(backend: str, path: Path, versions: str, cache: Path) -> Path:
    digest = hashlib.sha256(path.read_bytes() + versions.encode()).hexdigest()[:24]
    return cache / "oracles" / backend / f"{digest}.json"


def oracle_answers(backend: str, models: dict[str, Path], cache: Path = CACHE) -> dict[str, dict]:
    """{model: {"truth": {index: bool|None} or None, "note": text}}, cached; for edgetpu, read
    from placements.json for the pairs' CPU models only."""
    if backend == "edgetpu":
        return _edgetpu_answers(models)
    if backend in QNN_SOCS:  # the compiler runs in its own process per model already
        return {} if qnn_oracle.available() else qnn_oracle.answers(backend, models, cache)
    versions = _versions(backend)
    answers, todo = {}, {}
    for name, path in models.items():
        cached = _cache_file(backend, path, versions, cache)
        if cached.exists():
            answers[name] = json.loads(cached.read_text())
        else:
            todo[name] = path
    for name, answer in _run_children(backend, todo):
        cached = _cache_file(backend, todo[name], versions, cache)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(answer))
        answers[name] = answer
    return answers


def _run_children(backend: str, todo: dict[str, Path]):
    """Yield (model, answer) from a child process; when it dies or hangs on a model, record that
    and go on with a new child for the models after it."""
    pending = list(todo)
    while pending:
        done = set()
        for name, answer in _one_child(backend, {n: todo[n] for n in pending}):
            done.add(name)
            yield name, answer
        pending = [n for n in pending if n not in done]


def _one_child(backend: str, todo: dict[str, Path]):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tests.realworld.oracle_child", backend],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True, cwd=REPO, env=env)
        proc.stdin.write("".join(f"{n}\t{p}\n" for n, p in todo.items()))
        proc.stdin.close()
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put("")],
                                  daemon=True)
        reader.start()
        current = None
        while True:
            try:
                line = lines.get(timeout=ORACLE_TIMEOUT)
            except queue.Empty:  # hung on `current`
                proc.kill()
                break
            if not line:
                break
            record = json.loads(line)
            if record.pop("start", False):
                current = record["model"]
                continue
            current = None
            yield record.pop("model"), record
        code = proc.wait()
        if current is None and code == 0:
            return
        err.seek(0)
        tail = " ".join(err.read().strip().splitlines()[-2:])[-300:]
        if current is not None:
            site = _death_site(backend, todo[current]) if code < 0 else ""
            yield current, {"truth": None,
                            "note": f"{backend} died or hung (exit {code}){site}: {tail}"}
        else:
            raise RuntimeError(f"oracle child for {backend} failed (exit {code}): {tail}")


def _edgetpu_answers(models: dict[str, Path]) -> dict[str, dict]:
    pairs = EDGETPU_PAIRS / "placements.json"
    if not pairs.exists():
        return {}
    by_file = {entry["cpu_file"]: entry for entry in json.loads(pairs.read_text())}
    answers = {}
    for name, path in models.items():
        entry = by_file.get(Path(path).name)
        if entry and Path(path).parent == EDGETPU_PAIRS:
            truth = {i: True for i in entry["on_edgetpu"]} | {i: False for i in entry["on_cpu"]}
            answers[name] = {"truth": {str(k): v for k, v in truth.items()}, "note": ""}
    return answers


# ------------------------------------------------------------------------------ comparison


def measure(models: dict[str, Path], backends=tuple(TARGET_OF), cache: Path = CACHE,
            log=None) -> dict[str, Backend]:
    """Compare every model with every backend's oracle (edgetpu: the pairs only)."""
    results = {}
    for backend in backends:
        answers = oracle_answers(backend, models, cache)
        result = Backend(backend, TARGET_OF[backend])
        for name in sorted(answers):
            _compare_model(result, name, models[name], answers[name])
        results[backend] = result
        if log:
            log(f"{backend}: {len(result.models)} models, {len(result.compared)} op instances, "
                f"{len(result.disagreements)} disagreements")
    return results


def _compare_model(result: Backend, name: str, path: Path, answer: dict) -> None:
    if answer["truth"] is None:
        result.unjudged[name] = answer["note"]
        return
    view = read_model(path)
    verdicts = {v.index: v for v in check_model(view, result.target).ops if v.subgraph == 0}
    truth = {int(k): v for k, v in answer["truth"].items()}
    result.models.append(name)
    for op in view.main.operators:
        verdict = verdicts[op.index]
        if result.name == "tflm":  # TFLite Micro judges ops one by one, tflc then whole-model
            mine = not [r for r in verdict.reasons if r.code not in ("partition", "fallback")]
        else:
            mine = verdict.placement == "target"
        told = truth.get(op.index)
        if result.name == "vela" and not [t for t in op.outputs if t >= 0]:
            told = None  # vela names CPU ops by their outputs: one without outputs is never named
        instance = Instance(name, op.index, op.op, mine, told,
                            reasons="; ".join(f"[{r.code}] {r.text}" for r in verdict.reasons))
        if instance.agrees is False:
            instance.cause = cause(view, op, verdict, instance.backend)
        result.instances.append(instance)


# ---------------------------------------------------------------------------------- causes


def cause(view, op, verdict, backend_on: bool) -> str:
    """The mechanism behind one disagreement, from the graph: what the op is, what feeds it and
    which of tflc's rules decided; the same words for every model where the same thing happens."""
    sg = view.main
    direction = "backend runs it, tflc does not" if backend_on else "tflc runs it, backend does not"
    what = _op_kind(sg, op)
    rules = sorted({r.code for r in verdict.reasons}) or ["none"]
    if rules == ["partition"]:
        cut = verdict.cut_by
        cut = _op_kind(sg, sg.operators[cut]) if isinstance(cut, int) else cut
        return f"{what}: partitioning (cut by {cut}); {direction}"
    return f"{what}: tflc rule {'+'.join(rules)}; {direction}"


def _op_kind(sg, op) -> str:
    """The op and the facts that distinguish the usual causes (weights' producer, dtypes)."""
    tensors = sg.tensors
    if op.is_custom:
        return f"custom op {op.op}"
    inputs = [tensors[t] for t in op.inputs if t >= 0]
    outputs = [tensors[t] for t in op.outputs if t >= 0]
    if op.op in ("DEQUANTIZE", "DENSIFY") and inputs:
        chain = _static_chain(sg, inputs[0].index)
        if chain is None:
            return f"{op.op} of a computed {inputs[0].dtype} tensor"
        steps, dtype = chain
        via = "".join(f"{s} of " for s in steps)
        sparse = " sparse" if "DENSIFY" in steps or op.op == "DENSIFY" else ""
        return f"{op.op} of {via}a constant {dtype}{sparse} tensor"
    if op.op == "QUANTIZE" and inputs and outputs:
        a, b = inputs[0].dtype, outputs[0].dtype
        return f"QUANTIZE {a} requantize" if a == b else f"QUANTIZE {a}->{b}"
    fed = [_static_chain(sg, t.index) for t in inputs[1:]]
    fed = [c for c in fed if c and c[0]]
    if fed:
        steps = sorted({"->".join(reversed(c[0])) for c in fed})
        dtypes = sorted({c[1] for c in fed})
        return f"{op.op} with weights from {'/'.join(steps)} of {'/'.join(dtypes)}"
    act = inputs[0].dtype if inputs else (outputs[0].dtype if outputs else "?")
    weights = sorted({t.dtype for t in inputs[1:] if t.is_constant})
    if act == "float32" and {"int8", "uint8"} & set(weights):
        return f"{op.op} hybrid (float32 activations, constant int8 weights)"
    return f"{op.op} {act}" + (f" (constant {'/'.join(weights)})" if weights else "")


def _static_chain(sg, tensor: int):
    """([producer ops, nearest first], dtype of the constant) when a tensor is a constant or is
    made from one by DEQUANTIZE/DENSIFY only (what runtimes treat as static weights); else None."""
    producers = sg.producers()
    steps = []
    while not sg.tensors[tensor].is_constant:
        op = producers.get(tensor)
        if op is None or sg.operators[op].op not in ("DEQUANTIZE", "DENSIFY"):
            return None
        steps.append(sg.operators[op].op)
        tensor = sg.operators[op].inputs[0]
    return steps, sg.tensors[tensor].dtype


# --------------------------------------------------------------------------- expectations


def load_expectations(path: Path) -> list[dict]:
    """The committed known disagreements: [{models: [glob...], target, op, cause, why}]."""
    import yaml

    if not path.exists():
        return []
    return yaml.safe_load(path.read_text()) or []


def is_expected(instance: Instance, target: str, expectations: list[dict]) -> bool:
    return any(e["target"] == target and e["op"] == instance.op and e["cause"] == instance.cause
               and any(fnmatch.fnmatchcase(instance.model, m) for m in e["models"])
               for e in expectations)


MECHANISMS = (  # (words in a cause, the mechanism it belongs to), first match wins
    ("partitioning (cut by", "partitioning: a consequence of another op's verdict"),
    ("custom op", "custom op the runtime implements (or not) itself"),
    ("DENSIFY", "weights from DENSIFY of a constant sparse tensor (graph normalization)"),
    ("DEQUANTIZE of a constant", "weights from DEQUANTIZE of a constant (graph normalization)"),
    ("weights from DEQUANTIZE", "weights from DEQUANTIZE of a constant (graph normalization)"),
    ("QUANTIZE ", "QUANTIZE: requantization or integer type change"),
    ("hybrid", "hybrid (dynamic-range) kernel: float activations, int8 weights"),
)


def mechanism(cause_text: str) -> str:
    """The broad mechanism a cause belongs to (what the next step would change)."""
    head = cause_text.split(":")[0] if "partitioning" not in cause_text else cause_text
    for words, name in MECHANISMS:
        if words in (cause_text if words.startswith("partitioning") else head):
            return name
    return "an op rule of the descriptor (dtype, version, constraint, missing op)"


def group_disagreements(backend: Backend) -> list[dict]:
    """[{op, cause, count, models: [...], examples: [(model, index, reasons)]}], largest first."""
    groups: dict[tuple, dict] = {}
    for i in backend.disagreements:
        row = groups.setdefault((i.op, i.cause), {"op": i.op, "cause": i.cause,
                                                  "mechanism": mechanism(i.cause), "count": 0,
                                                  "models": [], "examples": []})
        row["count"] += 1
        if i.model not in row["models"]:
            row["models"].append(i.model)
        if len(row["examples"]) < 3:
            row["examples"].append({"model": i.model, "index": i.index, "tflc": i.reasons[:240]})
    return sorted(groups.values(), key=lambda r: (-r["count"], r["op"], r["cause"]))
