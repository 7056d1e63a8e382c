"""Zoo conversions cached by content hash in build/zoo-cache (git-ignored).

The key covers everything the result depends on: the model's architecture and weights, the
compile options, and tflc's own source. Change any of them and the model is compiled again;
change nothing and a rerun costs a file read. The cache holds model.tflite and report.json.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "zoo-cache"


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "tflc").rglob("*.py")) + sorted((REPO / "targets").glob("*.yaml")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def model_key(model, options: dict) -> str:
    import numpy as np

    digest = hashlib.sha256(model.to_json().encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    digest.update(json.dumps(options, sort_keys=True).encode())
    digest.update(_source_hash().encode())
    return digest.hexdigest()[:24]


def compiled(model, flavour: str, workdir: Path, **options) -> tuple[Path, dict, bool]:
    """(model.tflite path, report dict, whether it came from the cache)."""
    import tflc

    key = model_key(model, options)
    entry = CACHE / key
    if (entry / "report.json").exists():
        return entry / "model.tflite", json.loads((entry / "report.json").read_text()), True
    source = workdir / ("model.keras" if flavour == "k3" else "model.h5")
    model.save(source)
    report = tflc.compile(source, workdir / "out", **options)
    entry.mkdir(parents=True, exist_ok=True)
    shutil.copy(report.tflite_path, entry / "model.tflite")
    (entry / "report.json").write_text(json.dumps(report.to_dict(), default=str))
    return entry / "model.tflite", report.to_dict(), False
