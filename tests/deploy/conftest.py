"""Fixtures for deploy, telemetry and device rollback: the real OpenSSH server of the bench
tests (tests/bench/conftest.py) and device Pythons, and two releases of the digits model."""

from __future__ import annotations

import json

import pytest

from tests.bench.conftest import numpy_only_python, sshd, tflite_runtime_python  # noqa: F401


@pytest.fixture(scope="session")
def releases(digits_compiled, digits_16x8, session_registry):
    """The release `guarded-digits` in the session registry: the 16x8 compile promoted first,
    then the int8 one, so guarded-digits@current is int8 and @previous is 16x8."""
    from tflc.store import Registry

    registry = Registry(session_registry)
    first = json.loads((digits_16x8 / "report.json").read_text())["artifact_id"]
    registry.promote(first, "guarded-digits")
    registry.promote(digits_compiled[0].artifact_id, "guarded-digits")
    return {"name": "guarded-digits", "current": digits_compiled[0].artifact_id,
            "previous": first, "registry": session_registry}

