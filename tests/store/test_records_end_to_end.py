"""Real results in the registry: compile records, rebuilds byte-identically (or names what
changed), and a promote/rollback cycle read back by `tflc check`, `tflc bench` and `tflc export`
through NAME@current."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import tflc
from tests.store.helpers import cli, cli_json
from tflc import store
from tflc.fileio import sha256_file
from tflc.store import Registry, resolve_model_ref
from tflc.store.rebuild import rebuild


def test_compile_records_its_result_with_inputs_config_versions_and_metrics(
    digits_compiled, digits_dir, session_registry
):
    report, out = digits_compiled
    assert report.artifact_id
    assert json.loads((out / "report.json").read_text())["artifact_id"] == report.artifact_id
    record = Registry(session_registry).get(report.artifact_id)
    m = record.manifest
    assert record.kind == "compile"
    assert (
        record.files["model.tflite"]["sha256"]
        == sha256_file(out / "model.tflite")
        == report.tflite_sha256
    )
    assert m["inputs"]["model"]["sha256"] == sha256_file(digits_dir / "model.keras")
    assert m["inputs"]["calibration_data"]["sha256"] == sha256_file(digits_dir / "calib.npz")
    assert m["inputs"]["eval_data"]["sha256"] == sha256_file(digits_dir / "eval.npz")
    assert m["config"] == report.config and m["seed"] == report.config["seed"] == 0
    assert m["metrics"]["evaluation.int8_accuracy"] == report.evaluation["int8_accuracy"]
    assert m["metrics"]["sizes.int8_tflite_bytes"] == report.sizes["int8_tflite_bytes"]
    assert m["versions"]["tensorflow"] and m["versions"]["tf_keras"]
    assert m["target"] is None and m["stages"] is None


def test_a_recorded_compile_rebuilds_byte_identically(digits_compiled, session_registry, tmp_path):
    report, _ = digits_compiled
    result = rebuild(report.artifact_id, session_registry, out_dir=tmp_path / "again")
    assert result.identical, result.verdict
    assert sha256_file(tmp_path / "again" / "model.tflite") == report.tflite_sha256
    assert not any(i["status"] != "same" for i in result.inputs)
    before = len(Registry(session_registry).list())
    out = cli("rebuild", report.artifact_id, "--registry", session_registry).output
    assert out.startswith(f"rebuild {report.artifact_id}: identical")
    assert len(Registry(session_registry).list()) == before  # a rebuild records nothing new


def test_rebuild_names_a_changed_or_missing_input(
    digits_compiled, digits_dir, session_registry, tmp_path
):
    report, _ = digits_compiled
    with np.load(digits_dir / "calib.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["x"] = arrays["x"][::-1].copy()  # same samples, other order: other calibration bytes
    changed = tmp_path / "calib.npz"
    np.savez(changed, **arrays)
    args = ["rebuild", report.artifact_id, "--registry", session_registry]

    result = cli(*args, "--input", f"calibration_data={changed}", ok=False)
    assert result.exit_code == 3
    assert f"not rebuilt: input calibration_data {changed} is changed" in result.output

    result = cli(*args, "--input", f"eval_data={tmp_path / 'gone.npz'}", ok=False)
    assert result.exit_code == 2
    assert (
        f"input eval_data {tmp_path / 'gone.npz'} is gone; pass --input eval_data=PATH"
        in result.output
    )

    moved = tmp_path / "moved_eval.npz"
    shutil.copy(digits_dir / "eval.npz", moved)
    result = cli_json(*args, "--input", f"eval_data={moved}")  # a moved input is fine
    assert result["identical"] is True


def test_rebuild_names_the_versions_that_changed_when_bytes_differ(
    digits_compiled, session_registry
):
    report, _ = digits_compiled
    recorded = Registry(session_registry).get(report.artifact_id)
    # The same compile as recorded "under another TensorFlow" that produced other bytes.
    manifest = {
        k: v
        for k, v in recorded.manifest.items()
        if k not in ("schema", "kind", "created", "files")
    }
    manifest["versions"] = {**manifest["versions"], "tensorflow": "2.0.0"}
    manifest["result"] = {**manifest["result"], "tflite_sha256": "0" * 64}
    old = store.record("compile", {"model.tflite": b"other bytes"}, manifest, strict=True)

    result = cli(*["rebuild", old, "--format", "json"], ok=False)
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert data["identical"] is False and data["rebuilt_sha256"] == report.tflite_sha256
    tf_now = recorded.manifest["versions"]["tensorflow"]
    assert f"tensorflow 2.0.0 -> {tf_now}" in data["differences"]
    assert (
        data["verdict"].startswith("differs:")
        and f"tensorflow 2.0.0 -> {tf_now}" in data["verdict"]
    )


def test_promote_and_rollback_end_to_end_with_check_and_bench(digits_dir, tmp_path):
    common = dict(calibration_data=digits_dir / "calib.npz", eval_data=digits_dir / "eval.npz")
    first = tflc.compile(digits_dir / "model.keras", tmp_path / "a", **common)
    second = tflc.compile(
        digits_dir / "model.keras", tmp_path / "b", weights="per-tensor", **common
    )
    assert first.tflite_sha256 != second.tflite_sha256

    cli("promote", first.artifact_id, "--as", "digits")
    cli("promote", second.artifact_id, "--as", "digits")
    assert sha256_file(resolve_model_ref("digits@current")) == second.tflite_sha256

    def check_current():
        result = cli(
            "check", "digits@current", "--target", "cortex-m4", "--format", "json", ok=False
        )
        assert result.exit_code in (0, 3), result.output
        data = json.loads(result.stdout)
        record = Registry().get(data["artifact_id"])
        return record.manifest["inputs"]["model"]

    def bench_current():
        data = cli_json("bench", "digits@current", "--runs", "3", "--warmup", "0")
        record = Registry().get(data["artifact_id"])
        assert record.kind == "bench" and record.manifest["metrics"]["latency_ms.p50"] > 0
        return record.manifest["inputs"]["model"]

    def export_current():
        out = tmp_path / f"c{len(list(tmp_path.glob('c*')))}"
        data = json.loads(cli("export", "digits@current", "-o", out, "--json").stdout)
        record = Registry().get(data["artifact_id"])
        assert json.loads((out / "export_report.json").read_text())["artifact_id"] == record.id
        assert record.files["package/model_model_data.cc"]["sha256"] == sha256_file(
            out / "model_model_data.cc"
        )
        return record.manifest["inputs"]["model"]

    readers = (check_current, bench_current, export_current)
    for read in readers:
        model = read()
        assert (model["artifact"], model["sha256"]) == (second.artifact_id, second.tflite_sha256)

    assert f"digits@current -> {first.artifact_id}" in cli("rollback", "digits").output
    for read in readers:
        model = read()
        assert (model["artifact"], model["sha256"]) == (first.artifact_id, first.tflite_sha256)

    listed = cli_json("runs", "list", "--model", "digits")
    assert {r["kind"] for r in listed} == {"compile"}  # released compiles match the release name
    assert [r["kind"] for r in cli_json("runs", "list")].count("check") == 2
    diff = cli_json("runs", "diff", first.artifact_id, second.artifact_id)
    keys = {row["key"] for row in diff["differences"]}
    assert "config.weights" in keys and "result.tflite_sha256" in keys


@pytest.mark.parametrize("ref", ["digits@current", "digits@previous"])
def test_unknown_release_gives_one_clear_line(ref):
    result = cli("check", ref, "--target", "cortex-m4", ok=False)
    assert result.exit_code == 2
    assert result.output.startswith("tflc: error: no release named 'digits'")
