"""The agreement rule: the issue's two examples, the near-tie exemption, accuracy as the primary check, the bounds."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgesent.agreement import (
    DEFAULT_NEAR_TIE_MARGIN,
    agreement_verdict,
    binomial_sf,
    clopper_pearson,
    max_decisive_flips,
    reference_margins,
)
from edgesent.errors import ConfigError


def logits_with_flips(n: int, flips: int, margin: float = 2.0, near_tie: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(reference, candidate) two-class logits: ``flips`` decisive flips and ``near_tie`` flips on near-ties."""
    reference = np.tile([margin, 0.0], (n, 1))  # (N, 2), class 0 by ``margin`` logits
    reference[:near_tie] = [0.02, 0.0]  # near-ties first
    candidate = reference.copy()
    changed = np.arange(near_tie + flips)
    candidate[changed] = reference[changed][:, ::-1]  # swap: the argmax flips
    return reference, candidate


def test_one_flip_in_13_texts_cannot_fail_a_99_percent_rule():
    verdict = agreement_verdict(*logits_with_flips(13, 1), min_agreement=0.99)
    assert verdict.passed and verdict.primary == "agreement"
    assert (verdict.n, verdict.flips, verdict.decisive_flips) == (13, 1, 1)
    assert verdict.agreement == pytest.approx(12 / 13)  # a naive 99% rule would fail it
    assert verdict.p_value == pytest.approx(1 - 0.995**13)  # 0.063 >= 0.05
    assert verdict.flip_rate_lower < verdict.acceptable_flip_rate == pytest.approx(0.005)


def test_ten_flips_in_1000_texts_fail_a_99_percent_rule():
    verdict = agreement_verdict(*logits_with_flips(1000, 10), min_agreement=0.99)
    assert not verdict.passed and not verdict.agreement_passed
    assert verdict.agreement == pytest.approx(0.99)
    assert verdict.p_value < 0.05 and verdict.flip_rate_lower > verdict.acceptable_flip_rate
    assert "FAILED" in verdict.message() and "10 decisive flip(s) in 1000" in verdict.message()
    assert agreement_verdict(*logits_with_flips(1000, 9)).passed  # the largest passing count at n = 1,000
    assert max_decisive_flips(1000) == 9 and max_decisive_flips(13) == 1


def test_flips_on_near_ties_are_reported_and_not_judged():
    reference, candidate = logits_with_flips(100, 0, near_tie=20)
    verdict = agreement_verdict(reference, candidate)
    assert verdict.passed
    assert (verdict.flips, verdict.near_tie_flips, verdict.decisive_flips, verdict.n_decisive) == (20, 20, 0, 80)
    assert verdict.agreement == pytest.approx(0.8) and verdict.decisive_agreement == 1.0
    assert all(verdict.near_tie) and len(verdict.flipped) == 20
    # The same flips on decisive rows fail, and a margin of 0 judges every row.
    assert not agreement_verdict(*logits_with_flips(100, 20)).passed
    assert not agreement_verdict(reference, candidate, near_tie_margin=0.0).passed


def test_a_perfect_rule_fails_on_any_decisive_flip():
    assert agreement_verdict(*logits_with_flips(13, 0), min_agreement=1.0).passed
    assert not agreement_verdict(*logits_with_flips(13, 1), min_agreement=1.0).passed


def test_with_labels_the_accuracy_drop_is_the_primary_check():
    reference, candidate = logits_with_flips(1000, 30)
    # The reference was wrong on every flipped row: int8 fixes them, accuracy rises, agreement alone would fail.
    labels = reference.argmax(-1)
    labels[:30] = 1
    verdict = agreement_verdict(reference, candidate, labels)
    assert verdict.primary == "accuracy" and verdict.passed and not verdict.agreement_passed
    assert (verdict.fixed, verdict.broken) == (30, 0) and verdict.accuracy_drop == pytest.approx(-0.03)
    labels = reference.argmax(-1)  # the reference was right: int8 broke 30 rows, a 3-point drop
    verdict = agreement_verdict(reference, candidate, labels)
    assert (
        not verdict.passed and verdict.accuracy_drop == pytest.approx(0.03) and "accuracy FAILED" in verdict.message()
    )


def test_groups_count_a_text_once():
    reference, candidate = logits_with_flips(13, 1)
    twice = agreement_verdict(np.vstack([reference, reference]), np.vstack([candidate, candidate]))
    once = agreement_verdict(
        np.vstack([reference, reference]), np.vstack([candidate, candidate]), groups=np.tile(np.arange(13), 2)
    )
    assert (twice.n, twice.flips) == (26, 2) and (once.n, once.flips) == (13, 1) and once.passed


def test_clopper_pearson_matches_closed_forms():
    # k = 0 and k = n have closed forms: (1 - c)^(1/n) and its mirror.
    assert clopper_pearson(0, 13, 0.95) == (0.0, pytest.approx(1 - 0.05 ** (1 / 13)))
    assert clopper_pearson(13, 13, 0.95) == (pytest.approx(0.05 ** (1 / 13)), 1.0)
    lower, upper = clopper_pearson(10, 1000, 0.95)
    assert binomial_sf(10, 1000, lower) == pytest.approx(0.05, abs=1e-9)
    assert 1 - binomial_sf(11, 1000, upper) == pytest.approx(0.05, abs=1e-9)
    assert lower < 0.01 < upper
    assert binomial_sf(0, 5, 0.3) == 1.0 and binomial_sf(6, 5, 0.3) == 0.0
    assert binomial_sf(3, 5, 0.5) == pytest.approx(0.5)


def test_margins_and_bad_inputs():
    assert reference_margins(np.array([[1.0, 3.0, 2.5]])) == pytest.approx([0.5])
    assert DEFAULT_NEAR_TIE_MARGIN == 0.1
    with pytest.raises(ConfigError, match="at least 2 classes"):
        reference_margins(np.zeros(3))
    with pytest.raises(ConfigError, match="differ"):
        agreement_verdict(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ConfigError, match="confidence"):
        agreement_verdict(np.zeros((3, 2)), np.zeros((3, 2)), confidence=1.0)
    with pytest.raises(ConfigError, match="near_tie_margin"):
        agreement_verdict(np.zeros((3, 2)), np.zeros((3, 2)), near_tie_margin=-1)
    with pytest.raises(ConfigError, match="labels"):
        agreement_verdict(np.zeros((3, 2)), np.zeros((3, 2)), [0, 1])


def test_verdict_is_json_ready():
    import json

    data = agreement_verdict(*logits_with_flips(13, 1)).to_dict()
    assert json.loads(json.dumps(data))["decisive_flips"] == 1 and data["message"].startswith("agreement passed")


def test_agreement_imports_neither_torch_nor_onnxruntime():
    code = "import sys, edgesent.agreement; print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_grouped_verdict_on_no_rows_and_many_groups() -> None:
    empty = np.zeros((0, 2), dtype=np.float32)
    verdict = agreement_verdict(empty, empty, groups=np.zeros(0, dtype=np.int64))
    assert verdict.passed and verdict.n == 0
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20_000, 2)).astype(np.float32)
    groups = np.arange(20_000) // 2  # every text twice
    flipped = logits.copy()
    flipped[0] = flipped[0][::-1] * 100  # one decisive flip, in group 0 only
    logits[0] = logits[0] * 100
    verdict = agreement_verdict(logits, flipped, groups=groups, near_tie_margin=0.0)
    assert verdict.n == 10_000 and verdict.decisive_flips == 1
