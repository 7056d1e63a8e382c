"""The store without TensorFlow: recording, listing, tags, releases, references, diff, export."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from tests.store.helpers import cli, cli_json, record_fake, registry_dir
from tflc import store
from tflc.errors import BadInput
from tflc.fileio import sha256_bytes, sha256_file
from tflc.store import Registry, resolve_model_ref
from tflc.store.maintenance import gc


def test_record_writes_content_addressed_files_and_a_manifest_named_by_its_hash():
    artifact_id = record_fake(b"model-bytes", metrics={"accuracy": 97.5})
    folder = registry_dir() / "artifacts" / artifact_id
    manifest_bytes = (folder / "manifest.json").read_bytes()
    assert sha256_bytes(manifest_bytes).startswith(artifact_id)

    manifest = json.loads(manifest_bytes)
    assert manifest["kind"] == "compile"
    assert manifest["metrics"] == {"accuracy": 97.5}
    assert manifest["files"]["model.tflite"] == {"sha256": sha256_bytes(b"model-bytes"), "size": 11}
    for component in (
        "tflc",
        "tflc_source",
        "python",
        "tensorflow",
        "tf_keras",
        "tensorflow_model_optimization",
        "ai_edge_litert",
        "numpy",
    ):
        assert manifest["versions"][component], component
    assert manifest["platform"]["machine"]
    blob = (
        registry_dir() / "objects" / sha256_bytes(b"model-bytes")[:2] / sha256_bytes(b"model-bytes")
    )
    assert blob.read_bytes() == (folder / "model.tflite").read_bytes() == b"model-bytes"

    record = Registry().get(artifact_id[:6])  # a unique prefix is enough
    assert record.id == artifact_id and record.manifest == manifest


def test_identical_files_are_stored_once():
    a = record_fake(b"same model", kind="compile")
    b = record_fake(b"same model", kind="check")
    assert a != b  # two results, two artifacts...
    blobs = [p for p in (registry_dir() / "objects").rglob("*") if p.is_file()]
    model_blobs = [p for p in blobs if p.read_bytes() == b"same model"]
    assert len(model_blobs) == 1  # ...one stored copy of the model


def test_versions_are_read_without_importing_tensorflow():
    code = (
        "import sys; from tflc.store.versions import collect_versions; v = collect_versions(); "
        "import json; print(json.dumps({'loaded': 'tensorflow' in sys.modules, 'v': v}))"
    )
    out = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    assert out["loaded"] is False
    from importlib.metadata import version

    assert out["v"]["numpy"] == version("numpy")
    assert out["v"]["tensorflow"] == version("tensorflow-cpu")
    assert out["v"]["tf_keras"] == version("tf-keras")


def test_list_filters_by_kind_model_target_tag_and_date():
    a = record_fake(b"a", kind="compile", name="kws", target="cortex-m4")
    b = record_fake(b"b", kind="check", name="vww", target="ethos-u55-128")
    Registry().tag(b, "field-test")
    ids = lambda **kw: [r.id for r in Registry().list(**kw)]  # noqa: E731
    assert ids() == [b, a]  # newest first
    assert ids(kind="compile") == [a]
    assert ids(model="vww") == [b]
    assert ids(target="cortex-m4") == [a]
    assert ids(tag="field-test") == [b]
    assert ids(since="2000-01-01") == [b, a]
    assert ids(until="2000-01-01") == []
    with pytest.raises(BadInput, match="--since 'yesterday'"):
        Registry().list(since="yesterday")

    rows = cli_json("runs", "list", "--kind", "check")
    assert [r["id"] for r in rows] == [b]
    table = cli("runs", "list").stdout
    assert a in table and b in table and "field-test" in table


def test_promote_rollback_and_references():
    first, second = record_fake(b"release one"), record_fake(b"release two")
    registry = Registry()
    assert registry.promote(first, "kws").current == first
    change = registry.promote(second, "kws")
    assert (change.current, change.previous) == (second, first)
    assert resolve_model_ref("kws@current").read_bytes() == b"release two"
    assert resolve_model_ref("kws@previous").read_bytes() == b"release one"
    assert registry.get(second).releases == ["kws@current"]

    change = registry.rollback("kws")
    assert (change.current, change.replaced) == (first, second)
    assert resolve_model_ref("kws@current").read_bytes() == b"release one"
    with pytest.raises(BadInput, match="'kws' has no previous release"):
        resolve_model_ref("kws@previous")
    with pytest.raises(BadInput, match="single release"):
        registry.rollback("kws")
    statuses = [h["status"] for h in registry.release_history("kws")]
    assert statuses == ["rolled back", "current"]


def test_references_by_id_and_plain_paths(tmp_path):
    artifact_id = record_fake(b"by id")
    assert resolve_model_ref(artifact_id).read_bytes() == b"by id"
    assert resolve_model_ref(artifact_id[:8]).read_bytes() == b"by id"
    assert json.loads(resolve_model_ref(f"{artifact_id}:report.json").read_text()) == {"seed": 0}
    plain = tmp_path / "model.tflite"
    assert (
        resolve_model_ref(str(plain)) == plain
    )  # not there: passed through for the caller to report
    assert resolve_model_ref(plain) == plain
    with pytest.raises(BadInput, match="no release named 'nope'.*tflc promote ID --as nope"):
        resolve_model_ref("nope@current")
    with pytest.raises(BadInput, match="expected nope@current or nope@previous"):
        resolve_model_ref("nope@latest")


def test_promote_refuses_an_artifact_without_a_model():
    artifact_id = store.record("bench", {"bench.json": {"latency_ms": 1.0}}, {}, strict=True)
    result = cli("promote", artifact_id, "--as", "kws", ok=False)
    assert result.exit_code == 2
    assert "holds no .tflite model" in result.output


def test_cli_promote_rollback_show_and_tags():
    first, second = record_fake(b"one"), record_fake(b"two")
    assert "kws@current -> " + first in cli("promote", first, "--as", "kws").output
    assert "(previous: " + first in cli("promote", second[:6], "--as", "kws").output
    assert "already" in cli("promote", second, "--as", "kws").output
    assert cli("rollback", "kws").output.startswith(
        f"kws@current -> {first} (rolled back {second})"
    )
    cli("runs", "tag", "kws@current", "golden")
    shown = cli_json("runs", "show", first)
    assert shown["tags"] == ["golden"] and shown["releases"] == ["kws@current"]
    assert shown["file_status"] == {"model.tflite": "ok", "report.json": "ok"}
    text = cli("runs", "show", "kws@current").output
    assert "file model.tflite" in text and "ok" in text
    history = cli_json("runs", "releases", "kws")
    assert [h["status"] for h in history] == ["rolled back", "current"]
    result = cli("rollback", "kws", ok=False)
    assert result.exit_code == 2 and "nothing to roll back to" in result.output


def test_diff_names_what_changed():
    a = record_fake(b"a", seed=0, metrics={"accuracy": 97.0}, target="cortex-m4")
    b = record_fake(b"b", seed=1, metrics={"accuracy": 95.5}, target="cortex-m4")
    result = cli_json("runs", "diff", a, b)
    keys = {row["key"]: (row["a"], row["b"]) for row in result["differences"]}
    assert keys["seed"] == (0, 1)
    assert keys["config.seed"] == (0, 1)
    assert keys["metrics.accuracy"] == (97.0, 95.5)
    assert "files.model.tflite.sha256" in keys
    assert not any(k.startswith(("versions", "target", "inputs")) for k in keys)
    assert "metrics.accuracy" in cli("runs", "diff", a, b).output


def test_export_csv_and_json(tmp_path):
    a = record_fake(b"a", metrics={"accuracy": 97.0})
    b = record_fake(b"b", kind="bench", metrics={"latency_ms": 1.25})
    rows = list(csv.DictReader(io.StringIO(cli("runs", "export").stdout)))
    assert [r["id"] for r in rows] == [b, a]
    assert rows[1]["metrics.accuracy"] == "97.0" and rows[0]["metrics.latency_ms"] == "1.25"
    assert rows[0]["versions.tensorflow"]
    out = tmp_path / "runs.json"
    cli("runs", "export", "--format", "json", "-o", out, "--kind", "bench")
    assert [r["id"] for r in json.loads(out.read_text())] == [b]


def test_gc_keeps_tagged_and_released_artifacts_and_honours_dry_run():
    kept_tag, kept_release, doomed = (
        record_fake(b"tagged"),
        record_fake(b"released"),
        record_fake(b"doomed"),
    )
    registry = Registry()
    registry.tag(kept_tag, "keep")
    registry.promote(kept_release, "kws")
    _age_all_files(days=1)

    dry = gc(registry, keep_days=0, dry_run=True)
    # the doomed model's blob and the stored copy of its manifest
    assert dry.artifacts == [doomed] and dry.orphan_blobs == 2
    assert (registry.files.artifacts / doomed).is_dir()

    done = gc(registry, keep_days=0)
    assert done.artifacts == [doomed]
    assert not (registry.files.artifacts / doomed).exists()
    assert [r.id for r in registry.list()] == [kept_release, kept_tag]
    assert not registry.files.blob_path(sha256_bytes(b"doomed")).exists()
    assert registry.files.stored_manifest(kept_tag) and registry.files.stored_manifest(kept_release)
    assert resolve_model_ref("kws@current").read_bytes() == b"released"
    assert gc(registry, keep_days=0).artifacts == []
    assert "would remove 0 artifact(s)" in cli("runs", "gc", "--dry-run").output


def test_gc_spares_young_unreferenced_files_of_a_record_in_progress():
    registry = Registry()
    artifact_id = record_fake(b"indexed")
    registry.files.put_blob(b"written by another process, row not committed yet")
    assert gc(registry, keep_days=30).orphan_blobs == 0
    _age_all_files(days=1)
    report = gc(registry, keep_days=30)
    assert (report.artifacts, report.orphan_blobs) == ([], 1)
    assert resolve_model_ref(artifact_id).read_bytes() == b"indexed"


def test_recording_can_be_switched_off(monkeypatch):
    with store.recording_disabled():
        assert store.record("check", {"a.json": {}}, {}) is None
    monkeypatch.setenv("TFLC_NO_RECORD", "1")
    assert store.record("check", {"a.json": {}}, {}) is None
    assert not (registry_dir() / "registry.sqlite").exists()


def test_registry_option_points_commands_at_another_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    artifact_id = store.record("check", {"a.json": {}}, {}, registry=elsewhere, strict=True)
    assert Registry().list() == []
    rows = cli_json("runs", "list", "--registry", elsewhere)
    assert [r["id"] for r in rows] == [artifact_id]
    rows = json.loads(cli("--registry", elsewhere, "runs", "list", "--format", "json").stdout)
    assert [r["id"] for r in rows] == [artifact_id]
    assert sha256_file(elsewhere / "artifacts" / artifact_id / "a.json")


def _age_all_files(days: float) -> None:
    """Make every stored file look older than gc's window for records in progress."""
    import os
    import time

    past = time.time() - days * 86400
    for path in registry_dir().rglob("*"):
        os.utime(path, (past, past))


def test_an_unwritable_registry_costs_no_result_only_a_warning(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TFLC_REGISTRY", str(blocker))
    assert store.record("check", {"a.json": {}}, {}) is None
    err = capsys.readouterr().err
    assert err.startswith("tflc: warning: this check result was not recorded in the run registry")
    assert str(blocker) in err


def test_an_older_registry_schema_is_migrated_in_place():
    import sqlite3

    artifact_id = record_fake(b"recorded by an older tflc", name="kws")
    db = sqlite3.connect(registry_dir() / "registry.sqlite")
    db.execute("ALTER TABLE artifacts DROP COLUMN model_name")  # what schema 1 lacked
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    assert [r.id for r in Registry().list()] == [artifact_id]
    assert record_fake(b"recorded now", name="vww")
    assert [r.model_name for r in Registry().list()] == ["vww", None]


def test_metrics_and_diffs_flatten_a_report_with_the_same_keys():
    from tflc.store.diff import flatten
    from tflc.store.manifests import numeric_leaves

    report = {
        "sizes": {"int8": 10, "ok": True, "note": "text", "empty": {}},
        "layers": [{"name": "dense", "bytes": 4}, {"bytes": 5}, {"name": 3, "bytes": 6}],
        "latency_ms": [1.5, 2.5],
    }
    assert numeric_leaves(report) == {
        "sizes.int8": 10,
        "sizes.ok": True,
        "layers[dense].bytes": 4,
        "layers[1].bytes": 5,
        "layers[2].name": 3,
        "layers[2].bytes": 6,
        "latency_ms[0]": 1.5,
        "latency_ms[1]": 2.5,
    }
    flat = flatten(report)
    assert flat["latency_ms"] == "[1.5, 2.5]" and flat["sizes.empty"] == "{}"
    for key, value in numeric_leaves(report).items():
        assert flat.get(key, value) == value  # where both have a key, it holds the same number


def test_runs_list_offers_every_kind_the_store_records():
    from tflc.cli import RECORD_KINDS
    from tflc.store.recording import KINDS

    assert list(KINDS) == RECORD_KINDS
