"""Runs one backend's oracle over models named on stdin, one JSON line per model on stdout.

A child process, because the backends are native code that can die on a model (TFLite Micro's
arena probe has ended in "double free or corruption", LiteRT aborts on some custom ops): the
parent (tests/realworld/agreement.py) notices a death, records it for that model and starts a
new child for the rest. Usage: `python -m tests.realworld.oracle_child xnnpack|tflm|vela`, then
lines `NAME<TAB>PATH`.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

_TFLM_NODE = re.compile(r"Node (\S+) \(number (\d+)\) failed to (prepare|invoke)")


def judge(backend: str, path: Path, workdir: Path) -> dict:
    """{"truth": {op index: True/False/None}, "note": text} for one model."""
    from tests.check import oracles
    from tflc.tflite.reader import read_model

    data = path.read_bytes()
    ops = read_model(data).main.operators
    if backend == "xnnpack":
        return {"truth": oracles.xnnpack_placement(data), "note": ""}
    if backend == "vela":
        try:
            return {"truth": oracles.vela_placement(data, workdir), "note": ""}
        except oracles.VelaRejected as exc:
            return {"truth": None, "note": f"vela rejects the whole model: {exc}"}
    accepted, rejected, message = oracles.tflm_verdict(data)
    return {"truth": _tflm_truth(ops, accepted, rejected, message), "note": message}


def _tflm_truth(ops, accepted: bool, rejected: int | None, message: str) -> dict:
    """Accepted: every op runs. Rejected at op k: k does not; the ops TFLite Micro prepared (or
    ran) before k did, when it failed in prepare or invoke; nothing is known of the others."""
    truth: dict[int, bool | None] = {}
    before_ran = bool(_TFLM_NODE.search(message))
    for op in ops:
        if accepted:
            truth[op.index] = True
        elif op.index == rejected:
            truth[op.index] = False
        elif before_ran and rejected is not None and op.index < rejected:
            truth[op.index] = True
        else:
            truth[op.index] = None
    return truth


def main() -> None:
    backend = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix=f"tflc-oracle-{backend}-") as tmp:
        for n, line in enumerate(sys.stdin):
            name, path = line.rstrip("\n").split("\t")
            print(json.dumps({"model": name, "start": True}), flush=True)
            try:
                result = judge(backend, Path(path), Path(tmp) / str(n))
            except Exception as exc:  # a backend that refuses the model outright
                result = {"truth": None, "note": f"{type(exc).__name__}: {str(exc)[:300]}"}
            if result["truth"] is not None:
                result["truth"] = {str(k): v for k, v in result["truth"].items()}
            print(json.dumps({"model": name, **result}), flush=True)


if __name__ == "__main__":
    main()
