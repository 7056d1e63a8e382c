"""Compare tflc's placements with the real backends over a set of models.

`compare(backend, models, workdir)` returns an `Agreement`: per op instance, what tflc says and
what the backend does, so both the tests and benchmarks/agreement.py report the same numbers.
Known disagreements (with their cause) live in KNOWN; a test fails on any other disagreement and
on a known one that has gone away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tflc.check import check_model
from tflc.tflite.reader import read_model

# backend -> target descriptor it is compared with
TARGET_OF = {"xnnpack": "cpu", "tflm": "cortex-m4", "vela": "ethos-u55-128", "gpu": "gpu"}

# (backend, model, op index) -> cause. Empty means full agreement on the corpus.
KNOWN: dict[tuple[str, str, int], str] = {}


@dataclass
class Instance:
    model: str
    index: int
    op: str
    tflc: bool | None  # True: on the target (TFLM: the op itself is runnable; tflc then keeps
    # the whole model off when another op is not, as TFLite Micro does)
    backend: bool | None  # None: the backend says nothing about this op

    @property
    def agrees(self) -> bool | None:
        return None if self.backend is None else self.tflc == self.backend


@dataclass
class Agreement:
    backend: str
    target: str
    instances: list[Instance] = field(default_factory=list)
    models: int = 0
    skipped: list[str] = field(default_factory=list)  # models the backend cannot judge, with why

    @property
    def compared(self) -> list[Instance]:
        return [i for i in self.instances if i.agrees is not None]

    @property
    def disagreements(self) -> list[Instance]:
        return [i for i in self.compared if not i.agrees]

    def unexpected(self) -> list[Instance]:
        return [i for i in self.disagreements if (self.backend, i.model, i.index) not in KNOWN]

    def vanished(self) -> list[tuple]:
        found = {(self.backend, i.model, i.index) for i in self.disagreements}
        return [k for k in KNOWN if k[0] == self.backend and k not in found]

    def rate(self) -> float:
        return 1 - len(self.disagreements) / len(self.compared) if self.compared else 1.0


def _tflc(model: bytes, target: str) -> dict[int, str]:
    return {v.index: v.placement for v in check_model(model, target).ops if v.subgraph == 0}


def _tflc_supported(model: bytes, target: str) -> dict[int, bool]:
    """Per-op support before partitioning (the GPU analyzer and TFLite Micro judge ops one by one)."""
    return {v.index: not [r for r in v.reasons if r.code not in ("partition", "fallback")]
            for v in check_model(model, target).ops if v.subgraph == 0}


def compare(backend: str, models: dict[str, Path], workdir: Path) -> Agreement:
    from tests.check import oracles

    target = TARGET_OF[backend]
    result = Agreement(backend, target)
    for name, path in sorted(models.items()):
        data = Path(path).read_bytes()
        ops = read_model(data).main.operators
        mine = _tflc(data, target)
        if backend == "xnnpack":
            truth = oracles.xnnpack_placement(data)
            result.instances += [Instance(name, op.index, op.op, mine[op.index] == "target", truth[op.index])
                                 for op in ops]
        elif backend == "vela":
            try:
                truth = oracles.vela_placement(data, workdir / name)
            except oracles.VelaRejected as exc:
                result.skipped.append(f"{name}: vela rejects the whole model ({exc})")
                continue
            result.instances += [Instance(name, op.index, op.op, mine[op.index] == "target", truth[op.index])
                                 for op in ops]
        elif backend == "tflm":
            accepted, rejected, _ = oracles.tflm_verdict(data)
            supported = _tflc_supported(data, target)
            for op in ops:
                runs = supported[op.index]
                if accepted:
                    truth = True
                elif op.index == rejected:
                    truth = False
                else:
                    truth = None  # TFLite Micro stops at the first op it rejects

                result.instances.append(Instance(name, op.index, op.op, runs, truth))
        elif backend == "gpu":
            truth = oracles.gpu_analyzer(data)
            supported = _tflc_supported(data, target)
            result.instances += [Instance(name, op.index, op.op, supported[op.index], truth[op.index])
                                 for op in ops]
        result.models += 1
    return result


def per_model(agreement: Agreement) -> dict:
    """{model: {"compared": n, "agree": n}}: what the committed table is checked against."""
    out: dict[str, dict] = {}
    for i in agreement.compared:
        row = out.setdefault(i.model, {"compared": 0, "agree": 0})
        row["compared"] += 1
        row["agree"] += int(bool(i.agrees))
    return out
