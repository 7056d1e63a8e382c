"""Small helpers shared by the store tests: recording without a compile, running the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from tflc import store
from tflc.cli import main


def registry_dir() -> Path:
    """The per-test registry tests/conftest.py points TFLC_REGISTRY at."""
    return Path(os.environ["TFLC_REGISTRY"])


def record_fake(
    payload: bytes,
    *,
    kind: str = "compile",
    metrics: dict | None = None,
    target: str | None = None,
    seed: int = 0,
    name: str = "net",
) -> str:
    """Record an artifact around arbitrary model bytes (the store never parses them)."""
    manifest = {
        "model_name": name,
        "inputs": {"model": {"path": f"/data/{name}.keras", "sha256": "ab" * 32}},
        "config": {"model": f"/data/{name}.keras", "seed": seed},
        "target": {"name": target, "sha256": "cd" * 32} if target else None,
        "seed": seed,
        "metrics": metrics or {},
    }
    return store.record(
        kind, {"model.tflite": payload, "report.json": {"seed": seed}}, manifest, strict=True
    )


def record_two_releases() -> tuple[str, str]:
    """Two artifacts with distinct models, a tag and a release history: `first` is tagged
    golden and kws@current (second was promoted over it, then rolled back), second is vww."""
    first, second = record_fake(b"first model"), record_fake(b"second model")
    registry = store.Registry()
    registry.tag(first, "golden")
    registry.promote(first, "kws")
    registry.promote(second, "kws")
    registry.rollback("kws")
    registry.promote(second, "vww")
    return first, second


def cli(*args, ok: bool = True):
    """Run `tflc ARGS` in-process; returns the click Result (stdout and stderr separate)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if ok:
        assert result.exit_code == 0, result.output
    return result


def cli_json(*args):
    return json.loads(cli(*args, "--format", "json").stdout)
