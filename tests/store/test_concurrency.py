"""Concurrent writers lose nothing: several processes record, tag and promote at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.store.helpers import registry_dir
from tflc.store import Registry
from tflc.store.maintenance import verify

WORKER = r"""
import json, os, sys, time
from pathlib import Path
from tflc import store
from tflc.store import Registry

worker, count, go = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
while not go.exists():  # start together, so the writes really overlap
    time.sleep(0.005)
ids = []
for i in range(count):
    files = {"model.tflite": f"model {worker}/{i}".encode(), "shared.bin": b"the same in every run"}
    manifest = {"seed": i, "config": {"worker": worker, "i": i}, "metrics": {"i": i}}
    artifact_id = store.record("compile", files, manifest, strict=True)
    Registry().tag(artifact_id, f"w{worker}")
    if i % 5 == 0:
        Registry().promote(artifact_id, "shared-release")
    ids.append(artifact_id)
print(json.dumps(ids))
"""

WORKERS, RECORDS = 4, 15


def test_parallel_processes_record_tag_and_promote_without_losing_anything(tmp_path):
    go = tmp_path / "go"
    env = {
        **os.environ,
        "TFLC_REGISTRY": str(registry_dir()),
    }  # fresh: the first writers race to create it
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(w), str(RECORDS), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    time.sleep(0.5)  # let every interpreter start and wait at the line
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    ids = [i for out, _ in results for i in json.loads(out)]
    assert len(set(ids)) == WORKERS * RECORDS

    registry = Registry()
    listed = registry.list()
    assert sorted(r.id for r in listed) == sorted(ids)
    for w in range(WORKERS):
        assert len(registry.list(tag=f"w{w}")) == RECORDS
    history = registry.release_history("shared-release")
    assert len(history) == WORKERS * len(range(0, RECORDS, 5))
    assert [h["status"] for h in history].count("current") == 1
    assert verify(registry).ok
    shared = [
        p
        for p in Path(registry.files.objects).rglob("*")
        if p.is_file() and p.read_bytes() == b"the same in every run"
    ]
    assert len(shared) == 1
    events = (registry_dir() / "events.jsonl").read_text().splitlines()
    assert len(events) == WORKERS * RECORDS + len(history)  # every line whole
    assert all(json.loads(line) for line in events)


CREATOR = r"""
import sys, time
from pathlib import Path
from tflc.store import Registry

go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
Registry().ensure_database()
with Registry().transaction(write=True):
    pass
"""


def test_processes_racing_to_create_a_new_registry_all_succeed(tmp_path):
    """The first use of a registry, by several processes at once, is the narrowest race: one
    switches the new database to WAL while the others open it. Without the setup lock about a
    quarter of these rounds failed with "database is locked"."""
    for round_ in range(8):
        go = tmp_path / f"go{round_}"
        env = {**os.environ, "TFLC_REGISTRY": str(tmp_path / f"registry{round_}")}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CREATOR, str(go)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(5)
        ]
        time.sleep(0.3)
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"round {round_}: {err}"
