"""`tflc deploy` to the emulated Pi (emulated_pi.py): aarch64 CPython 3.11 under qemu-user,
tflite-runtime 2.14 on Debian's numpy 1.24, reached through a real sshd. The release is checked
by the Pi's own Python, the guard runs there on a stream of digits that drifts, its telemetry
comes back, and the Pi rolls back to its previous release."""

from __future__ import annotations

import io
import json
import shlex

import numpy as np

from tests.deploy.conftest import releases  # noqa: F401 - the digits releases of tests/deploy
from tflc.deploy import deploy, fetch_telemetry, rollback_device
from tflc.deploy.device import Shell

ROOT = "~/tflc-test-releases"  # removed again by the test

APP = r"""
import io, json, os, sys
import numpy as np
release = os.path.expanduser("~/tflc-test-releases/guarded-digits/current")
sys.path.insert(0, release)
from tflc_runtime import Guard
stream = np.load(io.BytesIO(sys.stdin.buffer.read()))
with Guard(release) as guard:
    tops = [int(guard.predict(x).argmax()) for x in stream]
print(json.dumps({"state": guard.state, "events": [e["event"] for e in guard.events],
                  "runtime": guard.primary.runtime, "numpy": np.__version__, "tops": tops,
                  "window": guard.window}))
"""


def test_deploy_guard_and_rollback_on_the_emulated_pi(releases, emulated_pi, digits_dir):  # noqa: F811
    device = emulated_pi.url("pi")
    python = emulated_pi.pythons["tflite_runtime"]
    ssh = {"ssh_config": emulated_pi.config, "python": python, "root": ROOT}
    with Shell(device, python, ssh_config=emulated_pi.config) as shell:  # an earlier failed run
        shell.run('rm -rf "$HOME/tflc-test-releases"', "cleaning up")
    first = deploy("guarded-digits@previous", device, fallback=False, registry=releases["registry"],
                   **ssh)
    # the policy travels in release.json: a 32-sample window (the profile's thresholds for it)
    done = deploy("guarded-digits@current", device, registry=releases["registry"],
                  policy={"window": 32}, **ssh)
    assert done.device_check["runtime"] == "tflite_runtime"
    assert done.device_check["numpy"].startswith("1.24.") and done.previous == first.release
    x = np.load(digits_dir / "eval.npz")["x"]
    stream = np.concatenate([x[:32], 1.0 - x[32:96]]).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, stream)
    with Shell(device, python, ssh_config=emulated_pi.config) as shell:
        code, out, err = shell.run(f"{shell.python_word} -c {shlex.quote(APP)}", "running the guard",
                                   stdin=buffer.getvalue(), timeout=900)
    assert code == 0, err[-2000:]
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["runtime"] == "tflite_runtime" and answer["events"] == ["fallback"]
    assert answer["window"] == 32
    summary = fetch_telemetry(device, name="guarded-digits", **ssh)
    data = summary.releases["guarded-digits"]
    assert [e["event"] for e in data["events"]] == ["fallback"] and data["samples"] == 96
    back = rollback_device("guarded-digits", device, **ssh)
    assert back.current == first.release and back.replaced == done.release
    with Shell(device, python, ssh_config=emulated_pi.config) as shell:
        shell.run('rm -rf "$HOME/tflc-test-releases"', "cleaning up")
