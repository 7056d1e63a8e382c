"""The run registry under hostile hands: files damaged in place, deleted or junked, a registry
that cannot be written, and flags no sane user would give. Every input is made here."""

from __future__ import annotations

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
