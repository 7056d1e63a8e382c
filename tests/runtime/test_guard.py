"""The deployment guard (tflc.runtime) on the real digits model in LiteRT: the profile every
compile writes, drift detection and fallback, NaN handling, recovery, telemetry and rotation,
and the module travelling on its own (standard library, numpy and an interpreter only)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tflc.runtime import Guard, Policy, read_profile
from tflc.runtime.interpreter import Model, dequantize
from tflc.runtime.telemetry import read_records

RUNTIME = Path(__file__).resolve().parents[2] / "tflc" / "runtime"


def test_every_compile_writes_a_profile_beside_the_model(digits_compiled):
    report, out = digits_compiled
    profile = read_profile(out)
    model_bytes = (out / "model.tflite").read_bytes()
    import hashlib

    assert profile["model_sha256"] == hashlib.sha256(model_bytes).hexdigest() == report.tflite_sha256
    (entry,) = profile["inputs"]
    assert entry["shape"] == [1, 8, 8, 1] and entry["limits"] == [-128, 127]
    assert len(entry["histogram"]["counts"]) == 1 and sum(entry["histogram"]["counts"][0]) == 200 * 64
    assert entry["saturation_rate"] == 0  # digits lie in [0, 1]: nothing clips at scale 1/255
    assert 0.3 < entry["at_limits_rate"] < 0.9  # but the black background sits at -128
    assert entry["features"]["count"] == 64 and len(entry["features"]["stuck_run"]) == 64
    assert profile["confidence"]["source"] == "eval-data"
    assert profile["confidence"]["samples"] == 449 and 0.8 < profile["confidence"]["mean"] <= 1.0
    # the default window holds at least 128 samples (the fold's fixed cost); shorter windows
    # keep thresholds of their own, from the same bootstrap, tighter as windows grow
    drift = profile["drift"]
    assert drift["window"] in (128, 256) and sorted(map(int, drift["windows_considered"])) == [
        32, 64, 128, 256]
    psi = [drift["windows_considered"][w]["psi"] for w in ("32", "64", "128", "256")]
    assert psi == sorted(psi, reverse=True) and drift["thresholds"]["psi"] <= 0.1
    assert report.profile["file"] == "profile.json"
    assert report.profile["window"] == profile["drift"]["window"]


def test_the_profile_is_recorded_with_the_compile(digits_compiled, session_registry):
    from tflc.store import Registry

    report, out = digits_compiled
    record = Registry(session_registry).get(report.artifact_id)
    assert "profile.json" in record.files
    stored = Registry(session_registry).files.file_path(report.artifact_id, "profile.json")
    assert stored.read_bytes() == (out / "profile.json").read_bytes()


def test_no_false_alarm_on_500_in_distribution_samples(digits_compiled, in_distribution):
    _, out = digits_compiled
    guard = Guard(out, telemetry=None)
    peak = 0.0
    for x in in_distribution:
        guard.predict(x)
        peak = max(peak, guard.drift_score)
    assert guard.events == [] and guard.state == "primary"
    assert guard.counts["samples"] >= 500 - guard.block
    assert 0.0 < peak < 1.0


@pytest.mark.parametrize("shift", ["inverted", "scaled", "frozen"])
def test_a_shift_switches_to_the_fallback_which_then_answers(shift, digits_compiled,
                                                             digits_fallback, in_distribution):
    _, out = digits_compiled
    guard = Guard(out, fallback=digits_fallback, telemetry=None)
    warm, rest = in_distribution[:guard.window], in_distribution[guard.window:]
    for x in warm:
        guard.predict(x)
    assert guard.state == "primary"
    shifted = {"inverted": 1.0 - rest, "scaled": 1.5 * rest,
               "frozen": np.repeat(rest[:1], len(rest), axis=0)}[shift]
    n = 0
    while guard.state == "primary" and n < len(shifted):
        guard.predict(shifted[n])
        n += 1
    assert guard.state == "fallback", guard.stats
    assert n <= 2 * guard.window
    (event,) = guard.events
    assert event["event"] == "fallback" and event["reasons"] and event["drift_score"] >= 1.0
    # the fallback (the 16x8 model) answers now: its own outputs, not the primary's
    x = shifted[n]
    got = guard.predict(x)
    fallback = Model(digits_fallback / "model.tflite")
    raw, _ = fallback.run([fallback.quantize(x[None])])
    np.testing.assert_array_equal(got, dequantize(raw[0], fallback.outputs[0]))
    assert guard.last_model == "fallback"


def test_recovers_when_the_inputs_settle(digits_compiled, digits_fallback, in_distribution):
    _, out = digits_compiled
    # a 32-sample window (the profile's thresholds for it): the 500 samples hold its four windows
    guard = Guard(out, fallback=digits_fallback, policy=Policy(window=32), telemetry=None)
    for x in 1.0 - in_distribution[:3 * 32]:
        guard.predict(x)
    assert guard.state == "fallback"
    for x in in_distribution[100:100 + 4 * guard.window]:
        guard.predict(x)
    assert [e["event"] for e in guard.events] == ["fallback", "recovered"]
    assert guard.state == "primary"


def test_nan_and_inf_never_crash_and_are_counted(digits_compiled, in_distribution):
    _, out = digits_compiled
    guard = Guard(out, telemetry=None)
    x = in_distribution[0].copy()
    clean = guard.predict(x)
    x[0, 0, 0], x[3, 3, 0], x[7, 7, 0] = np.nan, np.inf, -np.inf
    replaced = guard.predict(x)
    assert guard.last_nonfinite == 3 and np.isfinite(replaced).all()
    assert abs(replaced.sum() - 1.0) < 0.05 and replaced.argmax() == clean.argmax()
    everything = guard.predict(np.full((8, 8, 1), np.nan, dtype=np.float32))
    assert np.isfinite(everything).all()
    reject = Guard(out, policy=Policy(nonfinite="reject"), telemetry=None)
    assert reject.predict(x) is None and reject.counts["rejected"] == 1
    assert reject.predict(in_distribution[1]) is not None


def test_a_nan_storm_trips_the_guard(digits_compiled, digits_fallback, in_distribution):
    _, out = digits_compiled
    guard = Guard(out, fallback=digits_fallback, policy={"nonfinite": "reject"}, telemetry=None)
    storm = in_distribution[:2 * guard.window].copy()
    storm[:, 2, 2, 0] = np.nan
    for x in storm:
        assert guard.predict(x) is None
    assert guard.state == "fallback" and guard.events[0]["reasons"] == ["nonfinite"]


def test_a_stuck_pixel_is_found(digits_compiled, in_distribution):
    _, out = digits_compiled
    profile = read_profile(out)
    runs = profile["inputs"][0]["features"]["stuck_run"]
    feature = min((r, i) for i, r in enumerate(runs) if r)[1]  # the easiest one to catch
    guard = Guard(out, telemetry=None)
    stream = in_distribution.reshape(len(in_distribution), -1).copy()
    stream[:, feature] = 0.5  # frozen at a value it takes in calibration
    for x in stream[:300]:
        guard.predict(x.reshape(8, 8, 1))
        if guard.events:
            break
    assert guard.events and "stuck" in guard.events[0]["reasons"], guard.parts


def test_latency_slo_breaches_count(digits_compiled, in_distribution):
    _, out = digits_compiled
    guard = Guard(out, policy=Policy(latency_slo_ms=1e-6), telemetry=None)
    for x in in_distribution[:guard.window]:
        guard.predict(x)
    assert guard.counts["slo_breaches"] == guard.window
    assert guard.events[0]["event"] == "drift" and "latency" in guard.events[0]["reasons"]
    assert guard.state == "primary"  # no fallback: recorded, the primary keeps answering


def test_telemetry_lines_and_rotation(digits_compiled, in_distribution, tmp_path):
    _, out = digits_compiled
    path = tmp_path / "tel" / "guard.jsonl"
    policy = Policy(telemetry_every=8, telemetry_max_bytes=2000, telemetry_backups=2)
    with Guard(out, policy=policy, telemetry=path) as guard:
        for x in np.concatenate([in_distribution[:64], 1.0 - in_distribution[64:160]]):
            guard.predict(x)
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["guard.jsonl", "guard.jsonl.1", "guard.jsonl.2"]
    assert all(f.stat().st_size <= 2000 for f in files)
    records = read_records([path.parent / "guard.jsonl.2", path.parent / "guard.jsonl.1", path])
    kinds = {r["kind"] for r in records}
    assert {"stats", "event"} <= kinds
    assert [r["sample"] for r in records if r["kind"] == "stats"] == \
        sorted(r["sample"] for r in records if r["kind"] == "stats")
    event = next(r for r in records if r["kind"] == "event")
    assert event["event"] == "drift" and event["drift_score"] >= 1


def test_refuses_a_profile_of_another_model(digits_compiled, digits_fallback, tmp_path):
    _, out = digits_compiled
    shutil.copy(out / "model.tflite", tmp_path / "model.tflite")
    shutil.copy(digits_fallback / "profile.json", tmp_path / "profile.json")
    with pytest.raises(ValueError, match="belongs to another model"):
        Guard(tmp_path, telemetry=None)
    (tmp_path / "profile.json").unlink()
    with pytest.raises(ValueError, match="no profile.json"):
        Guard(tmp_path, telemetry=None)


def test_policy_values_are_checked():
    with pytest.raises(ValueError, match="nonfinite"):
        Policy(nonfinite="ignore")
    with pytest.raises(ValueError, match="window"):
        Policy(window=0)
    with pytest.raises(ValueError, match="psi"):
        Policy(psi=float("nan"))
    with pytest.raises(ValueError, match="unknown policy field"):
        Policy.from_dict({"windw": 3})


def test_the_runtime_imports_nothing_of_tflc():
    for path in RUNTIME.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                assert not (node.module or "").startswith("tflc"), (path.name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("tflc") for a in node.names), path.name


def test_the_runtime_travels_alone(digits_compiled, in_distribution, tmp_path):
    """Copied as `tflc_runtime` and run in a fresh Python where tflc cannot be imported."""
    _, out = digits_compiled
    shutil.copytree(RUNTIME, tmp_path / "tflc_runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    np.save(tmp_path / "x.npy", in_distribution[:40])
    script = (
        "import sys, json, numpy as np\n"
        "sys.modules['tflc'] = None  # importing tflc now fails\n"
        "from tflc_runtime import Guard\n"
        f"g = Guard({str(out)!r}, telemetry=None)\n"
        "ys = [g.predict(x) for x in np.load('x.npy')]\n"
        "print(json.dumps({'state': g.state, 'runtime': g.primary.runtime,\n"
        "                  'top': [int(y.argmax()) for y in ys]}))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    here = Guard(out, telemetry=None)
    assert answer["top"] == [int(here.predict(x).argmax()) for x in in_distribution[:40]]
    assert answer["state"] == "primary"
