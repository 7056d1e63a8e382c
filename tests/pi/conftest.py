"""Fixtures for the emulated Raspberry Pi (see emulated_pi.py): its sshd, client configs for
its two logins, and the tiny models of the bench tests.

The userland is built by `python3 tests/pi/emulated_pi.py build` (CI's .ci/run does it once per
run); building it inside a test would cost minutes in the middle of the suite, so the tests skip,
naming that command, where it was not built, and where it cannot run at all (not root, no qemu).
The sshd is started here for the session, on a free loopback port, and stopped after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bench.conftest import tiny_models  # noqa: F401 - the same models as tests/bench
from tests.pi import emulated_pi as builder

# Emulation is some 500x slower than the host: few runs, tiny models, generous time-outs.
QUICK = {"runs": 3, "warmup": 1, "progress": False, "timeout_s": 300}


@dataclass
class EmulatedPi:
    """A running login into the emulated Pi: `url(user)`, `config` (ssh -F) and the device
    Pythons by name (builder.PYTHONS)."""

    port: int
    config: Path
    root: Path
    log: Path
    pythons: dict

    def url(self, user: str = "pi", python: str | None = None) -> str:
        query = f"?python={self.pythons.get(python, python)}" if python else ""
        return f"ssh://{user}@127.0.0.1:{self.port}{query}"


@pytest.fixture(scope="session")
def emulated_pi(tmp_path_factory):
    """The emulated Pi's sshd for this session, or a skip saying why there is none."""
    if os.environ.get("TFLC_SKIP_PI"):
        pytest.skip("TFLC_SKIP_PI is set")
    try:
        facts = builder.start_sshd(builder.CACHE / "sshd-tests")
    except builder.Unavailable as exc:
        pytest.skip(f"emulated Pi unavailable: {exc}")
    process = facts.pop("process")
    try:
        yield EmulatedPi(port=facts["port"],
                         config=builder.write_client_config(tmp_path_factory.mktemp("pi-client"),
                                                            facts),
                         root=Path(facts["root"]), log=Path(facts["log"]),
                         pythons=dict(facts["pythons"]))
    finally:
        process.terminate()
        process.wait(timeout=10)
