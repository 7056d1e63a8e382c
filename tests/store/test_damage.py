"""Files in the registry deleted or edited by hand: a clear error naming the file, the rest keeps
working, and `tflc runs repair` restores what can be restored."""

from __future__ import annotations

import shutil

import pytest

from tests.store.helpers import cli, cli_json, record_fake, record_two_releases, registry_dir
from tflc import store
from tflc.errors import BadInput
from tflc.store import Registry, resolve_model_ref


@pytest.fixture
def two_releases():
    """Two artifacts with distinct models, a tag and a release history (second rolled back)."""
    return record_two_releases()


def _model(artifact_id):
    return registry_dir() / "artifacts" / artifact_id / "model.tflite"


def test_a_deleted_artifact_file_is_named_and_restored_by_repair(two_releases):
    first, second = two_releases
    _model(first).unlink()
    with pytest.raises(
        BadInput, match=rf"{_model(first)}: .*{first}.*was deleted.*tflc runs repair"
    ):
        resolve_model_ref("kws@current")
    assert resolve_model_ref("vww@current").read_bytes() == b"second model"  # the rest works

    result = cli("runs", "verify", ok=False)
    assert (
        result.exit_code == 1
        and f"{first}  model.tflite  missing  {_model(first)}" in result.output
    )
    result = cli("runs", "show", first, ok=False)
    assert result.exit_code == 1 and "model.tflite missing" in result.output

    report = cli_json("runs", "repair")
    assert report["restored"] == [{"artifact": first, "file": "model.tflite", "was": "missing"}]
    assert resolve_model_ref("kws@current").read_bytes() == b"first model"
    cli("runs", "verify")


def test_a_replaced_artifact_file_is_named_and_restored(two_releases):
    first, _ = two_releases
    _model(first).unlink()
    _model(first).write_bytes(b"edited by hand")  # an editor saving a new file
    with pytest.raises(BadInput, match=rf"{_model(first)}: .*was modified after it was recorded"):
        resolve_model_ref(first)
    assert cli_json("runs", "repair")["restored"][0]["was"] == "modified"
    assert resolve_model_ref(first).read_bytes() == b"first model"


def test_a_file_whose_stored_copy_is_damaged_too_is_reported_unrecoverable(two_releases):
    first, second = two_releases
    blob = next(p for p in (registry_dir() / "objects").glob("*/*") if p.read_bytes() == b"first model")
    for path in (_model(first), blob):
        path.chmod(0o644)
        with open(path, "r+b") as handle:
            handle.write(b"X")
    result = cli("runs", "repair", ok=False)
    assert result.exit_code == 1
    assert (
        f"cannot restore {first} model.tflite: modified, and its stored copy is gone or damaged"
        in result.output
    )
    with pytest.raises(BadInput, match="was modified"):
        resolve_model_ref(first)
    assert resolve_model_ref(second).read_bytes() == b"second model"
    assert record_fake(b"third model")  # recording still works


def test_a_deleted_artifact_folder_comes_back_from_the_database_and_blobs(two_releases):
    first, _ = two_releases
    shutil.rmtree(registry_dir() / "artifacts" / first)
    shown = cli_json("runs", "show", first)  # the database still knows it
    assert shown["file_status"]["model.tflite"] == "missing"
    cli("runs", "repair")
    assert resolve_model_ref(first).read_bytes() == b"first model"
    cli("runs", "verify")


def test_an_edited_manifest_is_named_and_restored(two_releases):
    first, _ = two_releases
    manifest = registry_dir() / "artifacts" / first / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"seed": 0', '"seed": 7'))
    result = cli("runs", "verify", ok=False)
    assert f"{first}  manifest.json  modified  {manifest}" in result.output
    cli("runs", "repair")
    cli("runs", "verify")
    assert '"seed": 0' in manifest.read_text()


def test_a_corrupted_database_is_named_and_rebuilt_with_tags_and_releases(two_releases, capsys):
    first, second = two_releases
    db = registry_dir() / "registry.sqlite"
    for side in (db.with_name("registry.sqlite-wal"), db.with_name("registry.sqlite-shm")):
        side.unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)

    result = cli("runs", "list", ok=False)
    assert result.exit_code == 2
    assert f"tflc: error: {db}: the run registry database is unreadable" in result.output
    assert "tflc runs repair" in result.output
    with pytest.raises(BadInput, match=str(db)):
        resolve_model_ref("kws@current")
    # A command that records keeps its result and says why it was not recorded.
    assert store.record("check", {"check.json": {}}, {}) is None
    assert f"not recorded in the run registry: {db}" in capsys.readouterr().err
    assert _model(first).read_bytes() == b"first model"  # the artifact files are untouched

    report = cli_json("runs", "repair")
    assert report["database_moved_to"].startswith(str(db) + ".damaged-")
    assert sorted(report["reindexed"]) == sorted([first, second])
    assert report["events_replayed"] == 5  # tag, promote x3, rollback
    registry = Registry()
    assert registry.get(first).tags == ["golden"]
    assert resolve_model_ref("kws@current").read_bytes() == b"first model"  # the rollback replayed
    assert resolve_model_ref("vww@current").read_bytes() == b"second model"
    assert [h["status"] for h in registry.release_history("kws")] == ["rolled back", "current"]


def test_a_deleted_database_is_named_and_rebuilt(two_releases, capsys):
    first, second = two_releases
    for path in registry_dir().glob("registry.sqlite*"):
        path.unlink()
    result = cli("runs", "list", ok=False)
    assert result.exit_code == 2
    assert "registry database is missing but 2 artifact(s) remain" in result.output
    assert store.record("check", {"check.json": {}}, {}) is None  # not silently restarted empty
    assert "database is missing" in capsys.readouterr().err

    cli("runs", "repair")
    assert sorted(r.id for r in Registry().list()) == sorted([first, second])
    assert resolve_model_ref("kws@current").read_bytes() == b"first model"


def test_a_torn_event_line_is_skipped_on_replay(two_releases):
    first, _ = two_releases
    events = registry_dir() / "events.jsonl"
    events.write_text(events.read_text() + '{"event": "tag", "artif')  # a crash mid-append
    for path in registry_dir().glob("registry.sqlite*"):
        path.unlink()
    assert cli_json("runs", "repair")["events_replayed"] == 5
    assert Registry().get(first).tags == ["golden"]
