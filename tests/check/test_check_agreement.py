"""tflc's per-op verdicts against the real backends that run here (the fidelity tests).

Each test compares every op instance of the corpus (tests/check/corpus.py) and the MLPerf Tiny
int8 files with what the backend itself does, and fails on any disagreement that is not listed
with its cause in tests/check/agreement.py (KNOWN), or on a listed one that no longer happens.
The committed table benchmarks/agreement.md must show the same counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.check.agreement import compare, per_model

REPO = Path(__file__).resolve().parents[2]


def _assert_agrees(agreement):
    unexpected = [(i.model, i.index, i.op, f"tflc={i.tflc}", f"{agreement.backend}={i.backend}")
                  for i in agreement.unexpected()]
    assert not unexpected, f"{agreement.backend} disagrees with {agreement.target}: {unexpected}"
    assert not agreement.vanished(), f"known disagreements no longer seen: {agreement.vanished()}"
    assert agreement.compared, "nothing was compared"
    _assert_table(agreement)


def _assert_table(agreement):
    """benchmarks/agreement.json (from benchmarks/agreement.py) holds the same counts per model.

    Models absent here (the MLPerf files when ../shared is missing) are not compared.
    """
    table = json.loads((REPO / "benchmarks" / "agreement.json").read_text())
    committed = table["backends"][agreement.backend]["per_model"]
    measured = per_model(agreement)
    stale = {m: (committed.get(m), row) for m, row in measured.items() if committed.get(m) != row}
    assert not stale, f"benchmarks/agreement.json is stale, rerun benchmarks/agreement.py: {stale}"
    missing = set(committed) - set(measured)
    assert all(m.startswith("mlperf_") for m in missing), missing


def test_xnnpack_delegate_takes_what_cpu_descriptor_says(agreement_models, tmp_path):
    agreement = compare("xnnpack", agreement_models, tmp_path)
    # The corpus has ops XNNPACK declines (so the test can fail both ways).
    assert any(not i.backend for i in agreement.compared)
    assert any(i.backend for i in agreement.compared)
    _assert_agrees(agreement)


def test_tflite_micro_accepts_what_cortex_m_descriptor_says(agreement_models, tmp_path):
    agreement = compare("tflm", agreement_models, tmp_path)
    assert any(i.backend is False for i in agreement.instances)
    _assert_agrees(agreement)


def test_vela_places_on_npu_what_ethos_descriptor_says(agreement_models, tmp_path):
    agreement = compare("vela", agreement_models, tmp_path)
    assert any(not i.backend for i in agreement.compared)
    _assert_agrees(agreement)


def test_gpu_analyzer_agrees_with_gpu_descriptor(corpus, tmp_path):
    from tests.check import oracles

    if not oracles.gpu_analyzer_works(corpus["argmax"].read_bytes()):
        pytest.skip("tf.lite.experimental.Analyzer in this TensorFlow build has no GPU "
                    "compatibility checker (it calls every model compatible, even ARG_MAX); "
                    "see benchmarks/agreement.md")
    _assert_agrees(compare("gpu", corpus, tmp_path))


def test_partition_count_matches_xnnpack(agreement_models):
    """tflc's partitioner groups delegated ops into as many segments as LiteRT does."""
    from tests.check import oracles
    from tflc.check import check_model

    counts = {name: (check_model(path, "cpu").segments, oracles.xnnpack_partitions(path.read_bytes()))
              for name, path in agreement_models.items()}
    assert {n: c for n, c in counts.items() if c[0] != c[1]} == {}
    assert any(mine > 1 for mine, _ in counts.values())


def test_a_wrong_descriptor_is_caught(corpus, tmp_path, monkeypatch):
    """The comparison can fail: a cpu descriptor that forgot CONV_2D disagrees with XNNPACK."""
    from tests.check import agreement as module

    wrong = tmp_path / "cpu-without-conv.yaml"
    wrong.write_text("extends: cpu\nops: {CONV_2D: null}\nprovenance: [{source: test}]\n")
    monkeypatch.setitem(module.TARGET_OF, "xnnpack", str(wrong))
    result = compare("xnnpack", {"cnn": corpus["cnn"]}, tmp_path)
    assert {i.op for i in result.unexpected()} == {"CONV_2D"}
