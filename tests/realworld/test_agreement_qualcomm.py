"""tflc's qualcomm-htp descriptors against Qualcomm's real compiler on the real-world corpus:
the CI subset of tests/realworld/corpus.py, each op instance of the main graph compared with
where LiteRT's Qualcomm plugin puts it for the descriptor's SoC (tests/realworld/qnn_oracle.py;
SM8650 for qualcomm-htp, SM7325 for qualcomm-htp-sm7325).

A disagreement fails unless tests/realworld/known_disagreements.yaml lists it with its cause,
as for the other backends (test_agreement_realworld.py). The plugin's answers are cached by
model and SoC in the corpus cache, so a rerun asks only tflc.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.realworld.agreement import is_expected, load_expectations, measure
from tests.realworld.corpus import build_corpus
from tests.realworld.qnn_oracle import SOCS, available

WHY_NOT = available()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(WHY_NOT), reason=f"Qualcomm compiler unavailable: {WHY_NOT}")]

KNOWN = Path(__file__).with_name("known_disagreements.yaml")


@pytest.fixture(scope="module")
def corpus():
    return build_corpus("ci").paths()


# SM8650 in the default run; SM7325 (about 30 s more) under -m heavy: tests/aot's probes hold
# its rules to the plugin in the default run.
@pytest.mark.parametrize("oracle", [pytest.param(o, marks=pytest.mark.heavy) if o != "qnn-sm8650"
                                    else o for o in sorted(SOCS)])
def test_every_qualcomm_disagreement_is_known_with_its_cause(corpus, oracle):
    result = measure(corpus, (oracle,))[oracle]
    expectations = load_expectations(KNOWN)
    unexpected = [(i.model, i.index, i.op, i.cause) for i in result.disagreements
                  if not is_expected(i, result.target, expectations)]
    assert len(result.models) > 20 and len(result.compared) > 2000, result.unjudged
    # the corpus exercises both sides: ops the plugin leaves on the CPU are compared too
    assert 0 < sum(1 for i in result.compared if i.backend) < len(result.compared)
    assert not unexpected, (f"{oracle} disagrees with {result.target} in ways {KNOWN.name} "
                            f"does not list: {unexpected[:20]} ({len(unexpected)} in all)")
