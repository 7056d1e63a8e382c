"""The run registry under hostile hands: files damaged in place, deleted or junked, a registry
that cannot be written, and flags no sane user would give. Every input is made here."""

from __future__ import annotations

import pytest

from tests.store.helpers import cli, cli_json, record_fake, record_two_releases, registry_dir
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


def test_a_broken_manifest_and_a_deleted_database_keep_the_release():
    first, second = record_two_releases()
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

    first, _ = record_two_releases()
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
    first, _ = record_two_releases()
    events = registry_dir() / "events.jsonl"
    lines = events.read_text().splitlines()
    events.write_text("\n".join([lines[0], junk, *lines[1:]]) + "\n")
    _delete_database()

    result = cli("runs", "repair", "--format", "json")
    assert f"tflc: warning: {events} line 2: " in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    report = __import__("json").loads(result.stdout)
    assert report["events_replayed"] == 5 and report["events_skipped"] == 1
    assert resolve_model_ref("kws@current").read_bytes() == b"first model"

    result = cli("runs", "repair")  # a healthy database: the log is not replayed, nor warned about
    assert "warning" not in result.stderr


# ------------------------------------------------------------------ a registry it cannot write


def _freeze(path, on: bool) -> bool:
    """Make a folder tree unwritable even for root (the immutable attribute), or undo it."""
    import subprocess

    flag = "+i" if on else "-i"
    return subprocess.run(["chattr", "-R", flag, str(path)], capture_output=True).returncode == 0


@pytest.fixture
def read_only_registry():
    """A registry with a released artifact, then made unwritable (as a read-only mount is)."""
    artifact_id = record_fake(b"released model")
    Registry().promote(artifact_id, "kws")
    root = registry_dir()
    if not _freeze(root, True):
        pytest.skip("chattr +i is not available here")
    try:
        yield root, artifact_id
    finally:
        _freeze(root, False)


def _one_error_line(result, *fragments):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_read_only_registry_still_reads(read_only_registry):
    root, artifact_id = read_only_registry
    assert artifact_id in cli("runs", "list").output
    assert resolve_model_ref("kws@current").read_bytes() == b"released model"
    cli("runs", "verify")


def test_writing_to_a_read_only_registry_says_it_is_not_writable(read_only_registry):
    root, artifact_id = read_only_registry
    result = cli("runs", "tag", artifact_id, "golden", ok=False)
    assert result.exit_code == 2
    line = _one_error_line(result, str(root), "not writable")
    assert "runs repair" not in line and "unreadable" not in line


def test_repair_of_a_read_only_registry_says_it_is_not_writable_and_moves_nothing(
    read_only_registry,
):
    root, _ = read_only_registry
    result = cli("runs", "repair", ok=False)
    assert result.exit_code == 2
    line = _one_error_line(result, str(root), "not writable")
    assert "run `tflc runs repair`" not in line
    assert sorted(p.name for p in root.glob("registry.sqlite*")) == ["registry.sqlite"]


def test_recording_into_a_read_only_registry_warns_naming_it(read_only_registry, capsys):
    root, _ = read_only_registry
    from tflc import store

    assert store.record("check", {"check.json": {"n": 1}}, {}) is None
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(root) in err and "not writable" in err


def test_a_failure_without_a_file_name_still_names_the_path(capsys):
    from tflc import store

    # Reading these fails with an error that carries no file name of its own.
    assert store.record("check", {"check.json": "/proc/self/mem"}, {}) is None
    err = capsys.readouterr().err
    assert "/proc/self/mem" in err and "Errno" not in err

    artifact_id = record_fake(b"tagged model")
    events = registry_dir() / "events.jsonl"
    events.symlink_to("/dev/full")  # appending to the tag/release log fails: no space left
    result = cli("runs", "tag", artifact_id, "golden", ok=False)
    assert result.exit_code == 2
    _one_error_line(result, str(events), "No space left on device")
    assert Registry().get(artifact_id).tags == []  # the database and the log still agree


def test_a_too_short_artifact_id_states_the_rule():
    record_fake(b"some model")
    result = cli("runs", "show", "e", ok=False)
    assert result.exit_code == 2
    _one_error_line(result, "'e'", "at least 4 hex digits (0-9, a-f)")


def test_repair_leaves_a_database_of_a_newer_tflc_in_place():
    import sqlite3

    record_fake(b"model")
    db = registry_dir() / "registry.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=99")
    result = cli("runs", "repair", ok=False)
    assert result.exit_code == 2
    _one_error_line(result, str(db), "newer tflc")
    assert not list(registry_dir().glob("registry.sqlite.damaged-*"))


# ------------------------------------------------------------------------- flags out of reason


@pytest.mark.parametrize("days", ["-1", "nan", "inf", "-inf"])
def test_gc_refuses_a_keep_days_that_is_no_age(days):
    artifact_id = record_fake(b"model")
    result = cli("runs", "gc", "--keep-days", days, ok=False)
    assert result.exit_code == 2
    _one_error_line(result, "--keep-days", days)
    assert Registry().get(artifact_id)


def test_gc_with_an_age_beyond_the_calendar_keeps_everything():
    artifact_id = record_fake(b"model")
    assert cli_json("runs", "gc", "--keep-days", "1e308")["artifacts"] == []
    assert Registry().get(artifact_id)


def test_runs_export_under_a_regular_file_names_the_path(tmp_path):
    record_fake(b"model")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / "runs.csv"
    result = cli("runs", "export", "-o", target, ok=False)
    assert result.exit_code == 2
    _one_error_line(result, str(target))
    assert blocker.read_text() == "not a folder"


def test_runs_export_into_a_new_folder_creates_it(tmp_path):
    record_fake(b"model")
    target = tmp_path / "reports" / "runs.csv"
    cli("runs", "export", "-o", target)
    assert target.read_text().startswith("id,")


def test_repair_refuses_a_folder_whose_manifest_is_json_but_no_manifest():
    import hashlib

    record_fake(b"model")
    for text in (b"{}", b"[]", b'{"kind": "compile"}'):
        artifact_id = hashlib.sha256(text).hexdigest()[:12]
        folder = registry_dir() / "artifacts" / artifact_id
        folder.mkdir()
        (folder / "manifest.json").write_bytes(text)
    _delete_database()
    result = cli("runs", "repair", "--format", "json", ok=False)
    assert result.exit_code == 1
    report = __import__("json").loads(result.stdout)
    assert len(report["reindexed"]) == 1 and len(report["unrecoverable"]) == 3
    assert all("not a tflc manifest" in u["reason"] for u in report["unrecoverable"])


def test_an_event_naming_no_artifact_id_is_junk():
    first, _ = record_two_releases()
    events = registry_dir() / "events.jsonl"
    with events.open("a") as handle:
        handle.write('{"event": "promote", "artifact": "../../etc", "name": "kws", "time": "t"}\n')
    _delete_database()
    result = cli("runs", "repair", "--format", "json")
    report = __import__("json").loads(result.stdout)
    assert report["events_skipped"] == 1 and report["unrecoverable"] == []
    assert f"{events} line 6: " in result.stderr


def test_an_artifact_file_that_cannot_be_read_is_named_and_replaced():
    artifact_id = record_fake(b"readable model")
    _model(artifact_id).unlink()
    _model(artifact_id).symlink_to("/proc/self/mem")  # exists, and every read fails
    from tflc.errors import BadInput

    with pytest.raises(BadInput, match=rf"artifact {artifact_id} .* cannot be read .*runs repair"):
        resolve_model_ref(artifact_id)
    result = cli("runs", "verify", ok=False)
    assert f"{artifact_id}  model.tflite  unreadable  {_model(artifact_id)}" in result.output
    cli("runs", "repair")
    assert _model(artifact_id).read_bytes() == b"readable model"


@pytest.mark.parametrize("command", [("runs", "list"), ("runs", "tag", "abcdef", "t"), ("runs", "repair")])
def test_a_registry_path_that_is_a_file_is_named(command, tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "registry-file"
    not_a_folder.write_text("mine")
    monkeypatch.setenv("TFLC_REGISTRY", str(not_a_folder))
    result = cli(*command, ok=False)
    assert result.exit_code == 2
    _one_error_line(result, str(not_a_folder), "not a folder")
    assert not_a_folder.read_text() == "mine"

    from tflc import store

    assert store.record("check", {"check.json": {}}, {}) is None
    assert "not a folder" in capsys.readouterr().err
