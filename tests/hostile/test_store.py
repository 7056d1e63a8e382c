"""The run registry under hostile hands: files damaged in place, deleted or junked, a registry
that cannot be written, and flags no sane user would give. Every input is made here."""

from __future__ import annotations

import pytest

from tests.store.helpers import cli, cli_json, record_fake, registry_dir
from tflc.store import Registry, resolve_model_ref


def _model(artifact_id: str):
    return registry_dir() / "artifacts" / artifact_id / "model.tflite"


def _write_in_place(path, data: bytes = b"X") -> None:
    """What an editor or a stray `dd` does: overwrite bytes without making a new file."""
    with open(path, "r+b") as handle:
        handle.write(data)


# -------------------------------------------------------------- artifact files are independent


def test_an_in_place_write_damages_only_that_artifact_and_repair_restores_it():
    sharing = [record_fake(b"shared model bytes", seed=seed) for seed in range(4)]
    Registry().promote(sharing[0], "kws")
    damaged = sharing[2]

    _write_in_place(_model(damaged))

    for artifact_id in sharing:
        if artifact_id != damaged:
            assert _model(artifact_id).read_bytes() == b"shared model bytes", artifact_id
    assert resolve_model_ref("kws@current").read_bytes() == b"shared model bytes"
    result = cli("runs", "verify", ok=False)
    assert result.exit_code == 1
    assert "1 problem(s)" in result.output
    assert f"{damaged}  model.tflite  modified  {_model(damaged)}" in result.output

    report = cli_json("runs", "repair")
    assert report["restored"] == [{"artifact": damaged, "file": "model.tflite", "was": "modified"}]
    assert report["unrecoverable"] == []
    assert _model(damaged).read_bytes() == b"shared model bytes"
    cli("runs", "verify")


def test_an_artifact_file_shares_no_inode_with_its_stored_object():
    artifact_id = record_fake(b"model")
    blobs = [p for p in (registry_dir() / "objects").rglob("*") if p.is_file()]
    inodes = {p.stat().st_ino for p in blobs}
    assert _model(artifact_id).stat().st_ino not in inodes
    assert _model(artifact_id).stat().st_nlink == 1


# ------------------------------------------------------------ verify and repair miss nothing


def _blob(data: bytes):
    from tflc.fileio import sha256_bytes

    sha = sha256_bytes(data)
    return registry_dir() / "objects" / sha[:2] / sha


def _delete_database() -> None:
    for path in registry_dir().glob("registry.sqlite*"):
        path.unlink()


def test_verify_names_a_deleted_stored_object_and_repair_puts_it_back():
    artifact_id = record_fake(b"model whose object goes")
    blob = _blob(b"model whose object goes")
    blob.unlink()

    result = cli("runs", "verify", ok=False)
    assert result.exit_code == 1
    assert f"{artifact_id}  model.tflite  stored copy missing  {blob}" in result.output

    cli("runs", "repair")
    assert blob.read_bytes() == b"model whose object goes"
    cli("runs", "verify")


def test_verify_names_an_edited_stored_object():
    artifact_id = record_fake(b"model whose object is edited")
    blob = _blob(b"model whose object is edited")
    blob.chmod(0o644)
    _write_in_place(blob)
    result = cli("runs", "verify", ok=False)
    assert f"{artifact_id}  model.tflite  stored copy modified  {blob}" in result.output
    cli("runs", "repair")
    cli("runs", "verify")


def _released_pair():
    first, second = record_fake(b"first model"), record_fake(b"second model")
    registry = Registry()
    registry.tag(first, "golden")
    registry.promote(second, "kws")
    registry.promote(first, "kws")
    return first, second


def test_a_broken_manifest_and_a_deleted_database_keep_the_release():
    first, second = _released_pair()
    before = cli_json("runs", "releases", "kws")
    manifest = registry_dir() / "artifacts" / first / "manifest.json"
    manifest.write_text("{ this is not json")
    _delete_database()

    report = cli_json("runs", "repair")
    assert sorted(report["reindexed"]) == sorted([first, second])
    assert report["unrecoverable"] == []
    assert cli_json("runs", "releases", "kws") == before
    assert resolve_model_ref("kws@current").read_bytes() == b"first model"
    assert Registry().get(first).tags == ["golden"]
    cli("runs", "verify")


def test_a_deleted_released_artifact_folder_and_database_come_back_from_the_objects():
    import shutil

    first, _ = _released_pair()
    shutil.rmtree(registry_dir() / "artifacts" / first)
    _delete_database()

    report = cli_json("runs", "repair")
    assert first in report["reindexed"]
    assert resolve_model_ref("kws@current").read_bytes() == b"first model"
    cli("runs", "verify")


@pytest.mark.parametrize(
    "junk",
    ["not json at all", "[1, 2]", '{"event": "tag"}', '{"event": "promote", "artifact": 7}'],
)
def test_a_junk_line_in_the_event_log_is_reported_with_its_line_number(junk):
    first, _ = _released_pair()
    events = registry_dir() / "events.jsonl"
    lines = events.read_text().splitlines()
    events.write_text("\n".join([lines[0], junk, *lines[1:]]) + "\n")
    _delete_database()

    result = cli("runs", "repair", "--format", "json")
    assert f"tflc: warning: {events} line 2: " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    report = __import__("json").loads(result.stdout)
    assert report["events_replayed"] == 3 and report["events_skipped"] == 1
    assert resolve_model_ref("kws@current").read_bytes() == b"first model"

    result = cli("runs", "repair")  # a healthy database: the log is not replayed, nor warned about
    assert "warning" not in result.stderr
