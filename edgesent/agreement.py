"""The label-agreement rule of the parity gate: judged where it is meaningful, with a bound that knows the sample size.

A quantized model is compared with its reference (PyTorch, or the fp32 export) on the same rows. Three ideas:

1. **Near-ties do not count.** A row whose reference margin (top-1 minus top-2 logit) is below
   ``near_tie_margin`` is one the reference itself barely decided; a flip there says more about the row than
   about the export. Such flips are counted and reported, and the rule is judged on the *decisive* rows only.
2. **The bound accounts for sample size.** The decisive flips are a binomial sample. The gate fails only when
   the data show, at ``confidence`` (one-sided, exact Clopper-Pearson), that the decisive flip rate is above
   the *acceptable* rate, ``healthy_share * (1 - min_agreement)``. Equivalently: the one-sided binomial test of
   "flip rate <= acceptable rate" rejects at level ``1 - confidence``. So 1 flip in 13 texts cannot fail a 99%
   rule (p = 0.063), and 10 flips in 1,000 do (p = 0.031).
3. **With labels, accuracy is the primary check.** A flip that turns a wrong answer right is not a regression;
   the accuracy drop (reference minus candidate, a fraction) against ``max_accuracy_drop`` decides, and the
   agreement check is still computed and reported.

Why the acceptable rate is half the budget (``healthy_share`` 0.5) and not the budget itself: a one-sided lower
bound never exceeds the observed rate, so a test against ``1 - min_agreement`` itself would pass any model that
sits exactly at the budget (10 in 1,000) however much data there is, and in general lets through models up to
about ``budget + 1.6 * sqrt(budget / n)``. Testing against half the budget is the acceptance-sampling reading
(AQL = half the budget, producer's risk ``1 - confidence``): a healthy model, flipping at half the budget or
less, fails at most 5% of the time at any sample size, while a model at the budget is caught with a
probability that grows with the data (54% with 1,000 decisive rows, 99% with 5,000), and one at twice the
budget 72% of the time with 300 rows. Small samples keep the benefit of the doubt: with 13
texts a single flip is the smallest non-zero rate they can show, and it is not evidence (with 10 or fewer it
is: p = 0.049 for 1 in 10).

numpy and the standard library only: importable anywhere, no torch, no onnxruntime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgesent.errors import ConfigError


__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_HEALTHY_SHARE",
    "DEFAULT_MAX_ACCURACY_DROP",
    "DEFAULT_MIN_AGREEMENT",
    "DEFAULT_NEAR_TIE_MARGIN",
    "AgreementVerdict",
    "agreement_verdict",
    "binomial_sf",
    "clopper_pearson",
    "max_decisive_flips",
    "reference_margins",
]

DEFAULT_MIN_AGREEMENT = 0.99
# Top-1 minus top-2 logit of the reference below which a row is a near-tie. 0.1 logits is a 52.5% / 47.5%
# split between two classes (sigmoid(0.1) = 0.525): the reference was tossing a coin. It is also about the
# size of the logit error dynamic int8 adds to a fine-tuned MiniLM, so flips below it are what int8 rounding
# does to any undecided row, not a sign of a broken export. Rows above it are judged in full.
DEFAULT_NEAR_TIE_MARGIN = 0.1
DEFAULT_CONFIDENCE = 0.95
DEFAULT_HEALTHY_SHARE = 0.5
DEFAULT_MAX_ACCURACY_DROP = 0.01
_BISECT_STEPS = 200


def _check_fraction(name: str, value: float, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if low_open else value >= 0) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")


def _log_pmf(j: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p) + (n - j) * math.log1p(-p)
    )


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact (summed in log space on the shorter side of k).

    Args:
        k: Count, any integer (k <= 0 gives 1.0, k > n gives 0.0).
        n: Trials, >= 0.
        p: Success probability in [0, 1].

    Returns:
        The upper-tail probability.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if n - k + 1 <= k:
        return min(1.0, math.fsum(math.exp(_log_pmf(j, n, p)) for j in range(k, n + 1)))
    return max(0.0, 1.0 - math.fsum(math.exp(_log_pmf(j, n, p)) for j in range(k)))


def _bisect(f: Any, target: float) -> float:
    """The p in [0, 1] where the increasing function f(p) crosses target."""
    low, high = 0.0, 1.0
    for _ in range(_BISECT_STEPS):
        mid = (low + high) / 2
        if f(mid) < target:
            low = mid
        else:
            high = mid
        if high - low < 1e-12:
            break
    return (low + high) / 2


def clopper_pearson(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Exact one-sided Clopper-Pearson bounds on a binomial rate, each at ``confidence``.

    The lower bound is the rate below which seeing ``k`` or more events in ``n`` has probability under
    ``1 - confidence``; the upper bound likewise for ``k`` or fewer. Together they form a two-sided interval
    at ``2 * confidence - 1``.

    Args:
        k: Events (e.g. decisive flips), 0 <= k <= n.
        n: Trials (e.g. decisive rows), >= 0.
        confidence: One-sided confidence in (0, 1) (default 0.95).

    Returns:
        (lower, upper); (0.0, 1.0) when n is 0.

    Raises:
        ConfigError: k outside [0, n] or confidence outside (0, 1).
    """
    _check_fraction("confidence", confidence, low_open=True, high_open=True)
    if not 0 <= k <= n:
        raise ConfigError(f"clopper_pearson: k={k} must be within [0, n={n}]")
    alpha = 1.0 - confidence
    lower = 0.0 if k == 0 else _bisect(lambda p: binomial_sf(k, n, p), alpha)
    upper = 1.0 if k == n else _bisect(lambda p: -(1.0 - binomial_sf(k + 1, n, p)), -alpha)
    return lower, upper


def _acceptable_rate(min_agreement: float, healthy_share: float) -> float:
    return healthy_share * (1.0 - min_agreement)


def max_decisive_flips(
    n: int,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    confidence: float = DEFAULT_CONFIDENCE,
    healthy_share: float = DEFAULT_HEALTHY_SHARE,
) -> int:
    """The most decisive flips in ``n`` decisive rows that still pass the agreement rule.

    E.g. at the defaults: 1 for 13 rows, 1 for 26, 2 for 100, 8 for 872, 9 for 1,000, 62 for 10,000.

    Args:
        n: Decisive rows, >= 0.
        min_agreement, confidence, healthy_share: As in :func:`agreement_verdict`.

    Returns:
        The largest passing count (n when every count passes).
    """
    acceptable = _acceptable_rate(min_agreement, healthy_share)
    alpha = 1.0 - confidence
    k = 0
    while k < n and binomial_sf(k + 1, n, acceptable) >= alpha:
        k += 1
    return k


def reference_margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit of each row: how decided the reference was.

    Args:
        logits: (N, C) with C >= 2.

    Returns:
        (N,) non-negative margins, in logits.

    Raises:
        ConfigError: not a 2-D array with at least two classes.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ConfigError(f"logits must be (rows, classes) with at least 2 classes, got shape {logits.shape}")
    top2 = np.sort(logits, axis=-1)[:, -2:]  # (N, 2): second, first
    return top2[:, 1] - top2[:, 0]


@dataclass(frozen=True)
class AgreementVerdict:
    """What the agreement rule found and decided.

    Counts are over *units*: rows, or groups of rows when ``groups`` was given (a group flips when any of its
    rows flips, and is a near-tie when any of its rows is). Fractions are in [0, 1].

    Attributes:
        passed: The verdict of the primary check.
        primary: ``"accuracy"`` when labels were given, else ``"agreement"``.
        n: Units compared.
        flips: Units whose predicted label changed.
        near_tie_flips: Flips on near-ties (reference margin < ``near_tie_margin``): reported, not judged.
        decisive_flips: Flips on decisive units: what the rule judges.
        n_decisive: Decisive units (the denominator of the flip rate).
        agreement: Raw agreement over all units, ``1 - flips / n``.
        decisive_agreement: ``1 - decisive_flips / n_decisive``.
        acceptable_flip_rate: ``healthy_share * (1 - min_agreement)``.
        flip_rate_lower, flip_rate_upper: One-sided Clopper-Pearson bounds on the decisive flip rate.
        p_value: P(>= decisive_flips | n_decisive, acceptable_flip_rate); the rule fails below ``1 - confidence``.
        agreement_passed: The agreement rule's own verdict (gates only when ``primary`` is ``"agreement"``).
        accuracy_reference, accuracy_candidate, accuracy_drop: With labels (drop = reference - candidate).
        fixed, broken: With labels, units the candidate got right where the reference was wrong, and vice versa.
        accuracy_passed: ``accuracy_drop <= max_accuracy_drop`` with labels, else None.
        min_agreement, near_tie_margin, confidence, healthy_share, max_accuracy_drop: The parameters.
        flipped: Indices of the flipped units (all of them), for the report.
        near_tie: Which of ``flipped`` were near-ties.
    """

    passed: bool
    primary: str
    n: int
    flips: int
    near_tie_flips: int
    decisive_flips: int
    n_decisive: int
    agreement: float
    decisive_agreement: float
    acceptable_flip_rate: float
    flip_rate_lower: float
    flip_rate_upper: float
    p_value: float
    agreement_passed: bool
    accuracy_reference: float | None
    accuracy_candidate: float | None
    accuracy_drop: float | None
    fixed: int | None
    broken: int | None
    accuracy_passed: bool | None
    min_agreement: float
    near_tie_margin: float
    confidence: float
    healthy_share: float
    max_accuracy_drop: float
    flipped: tuple[int, ...]
    near_tie: tuple[bool, ...]

    def message(self) -> str:
        """One line: the verdict with the figures behind it."""
        agreement = (
            f"{self.decisive_flips} decisive flip(s) in {self.n_decisive} (+{self.near_tie_flips} on near-ties "
            f"< {self.near_tie_margin:g} logits, not judged); {self.confidence:.0%} lower bound on the flip rate "
            f"{self.flip_rate_lower:.2%} {'>' if not self.agreement_passed else '<='} acceptable "
            f"{self.acceptable_flip_rate:.2%} (half of 1 - min_agreement {self.min_agreement:g} at healthy_share "
            f"{self.healthy_share:g}; p = {self.p_value:.3g})"
        )
        if self.primary == "agreement":
            return f"agreement {'passed' if self.passed else 'FAILED'}: {agreement}"
        return (
            f"accuracy {'passed' if self.passed else 'FAILED'}: drop {self.accuracy_drop:.4f} "
            f"{'<=' if self.accuracy_passed else '>'} {self.max_accuracy_drop:.4f} ({self.accuracy_reference:.4f} -> "
            f"{self.accuracy_candidate:.4f}; {self.fixed} fixed, {self.broken} broken); agreement, not gating: "
            f"{agreement}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus ``message``."""
        out = asdict(self)
        out["flipped"], out["near_tie"] = list(self.flipped), list(self.near_tie)
        return {**out, "message": self.message()}


def _group(values: np.ndarray, groups: np.ndarray, reduce: Any) -> np.ndarray:
    """``reduce`` (np.any or np.all) of ``values`` over each group, in group order; linear in the rows."""
    values = np.asarray(values, dtype=bool)
    if not len(values):
        return np.zeros(0, dtype=bool)
    _, inverse = np.unique(groups, return_inverse=True)
    hits = np.bincount(inverse, weights=values.astype(np.int64))
    sizes = np.bincount(inverse)
    return hits > 0 if reduce is np.any else hits == sizes


def agreement_verdict(
    reference_logits: np.ndarray,
    candidate_logits: np.ndarray,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    near_tie_margin: float = DEFAULT_NEAR_TIE_MARGIN,
    confidence: float = DEFAULT_CONFIDENCE,
    healthy_share: float = DEFAULT_HEALTHY_SHARE,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    groups: Sequence[int] | np.ndarray | None = None,
) -> AgreementVerdict:
    """Judge a candidate's predicted labels against the reference's (see the module docstring for the rule).

    Args:
        reference_logits: (N, C) logits of the reference (PyTorch, or the fp32 export).
        candidate_logits: (N, C) logits of the model under test, same rows.
        labels: (N,) true class ids; with them accuracy drop is the primary check.
        min_agreement: The agreement bound (default 0.99); 1.0 makes any decisive flip fail.
        near_tie_margin: Reference top-1 minus top-2 logit below which a row is a near-tie (default 0.1);
            0 judges every row.
        confidence: One-sided confidence of the bound (default 0.95).
        healthy_share: The acceptable decisive flip rate as a share of ``1 - min_agreement`` (default 0.5).
        max_accuracy_drop: With labels, the largest allowed accuracy drop as a fraction (default 0.01).
        groups: (N,) unit id per row, to count a text once when it was run in several rows (parity runs each
            probe text both in a mixed batch and alone); None: every row is a unit.

    Returns:
        The AgreementVerdict.

    Raises:
        ConfigError: shapes that do not match, or a parameter out of range.
    """
    _check_fraction("min_agreement", min_agreement)
    _check_fraction("confidence", confidence, low_open=True, high_open=True)
    _check_fraction("healthy_share", healthy_share)
    _check_fraction("max_accuracy_drop", max_accuracy_drop)
    if not (isinstance(near_tie_margin, (int, float)) and math.isfinite(near_tie_margin) and near_tie_margin >= 0):
        raise ConfigError(f"near_tie_margin must be a finite number >= 0 (logits), got {near_tie_margin!r}")
    reference = np.asarray(reference_logits, dtype=np.float64)  # (N, C)
    candidate = np.asarray(candidate_logits, dtype=np.float64)  # (N, C)
    if reference.shape != candidate.shape:
        raise ConfigError(f"reference logits {reference.shape} and candidate logits {candidate.shape} differ")
    margins = reference_margins(reference)  # (N,)
    pred_ref, pred_cand = reference.argmax(-1), candidate.argmax(-1)  # (N,)
    flipped = pred_ref != pred_cand  # (N,)
    tie = margins < near_tie_margin  # (N,)
    y = None if labels is None else np.asarray(labels).reshape(-1)
    if y is not None and y.shape[0] != reference.shape[0]:
        raise ConfigError(f"labels: {y.shape[0]} labels for {reference.shape[0]} rows")
    right_ref = None if y is None else pred_ref == y
    right_cand = None if y is None else pred_cand == y
    if groups is not None:
        g = np.asarray(groups).reshape(-1)
        if g.shape[0] != reference.shape[0]:
            raise ConfigError(f"groups: {g.shape[0]} ids for {reference.shape[0]} rows")
        flipped, tie = _group(flipped, g, np.any), _group(tie, g, np.any)
        if right_ref is not None and right_cand is not None:
            right_ref, right_cand = _group(right_ref, g, np.all), _group(right_cand, g, np.all)
    n = int(flipped.size)
    flips = int(flipped.sum())
    near_tie_flips = int((flipped & tie).sum())
    decisive_flips = flips - near_tie_flips
    n_decisive = int((~tie).sum())
    acceptable = _acceptable_rate(min_agreement, healthy_share)
    lower, upper = clopper_pearson(decisive_flips, n_decisive, confidence)
    p_value = binomial_sf(decisive_flips, n_decisive, acceptable)
    agreement_passed = p_value >= 1.0 - confidence
    accuracy: dict[str, Any] = dict.fromkeys(
        ("accuracy_reference", "accuracy_candidate", "accuracy_drop", "fixed", "broken", "accuracy_passed")
    )
    if right_ref is not None and right_cand is not None:
        acc_ref, acc_cand = float(right_ref.mean()) if n else 1.0, float(right_cand.mean()) if n else 1.0
        accuracy.update(
            accuracy_reference=acc_ref,
            accuracy_candidate=acc_cand,
            accuracy_drop=acc_ref - acc_cand,
            fixed=int((right_cand & ~right_ref).sum()),
            broken=int((right_ref & ~right_cand).sum()),
            accuracy_passed=acc_ref - acc_cand <= max_accuracy_drop + 1e-12,
        )
    primary = "agreement" if accuracy["accuracy_passed"] is None else "accuracy"
    index = np.flatnonzero(flipped)
    return AgreementVerdict(
        passed=bool(agreement_passed if primary == "agreement" else accuracy["accuracy_passed"]),
        primary=primary,
        n=n,
        flips=flips,
        near_tie_flips=near_tie_flips,
        decisive_flips=decisive_flips,
        n_decisive=n_decisive,
        agreement=1.0 - flips / n if n else 1.0,
        decisive_agreement=1.0 - decisive_flips / n_decisive if n_decisive else 1.0,
        acceptable_flip_rate=acceptable,
        flip_rate_lower=lower,
        flip_rate_upper=upper,
        p_value=p_value,
        agreement_passed=bool(agreement_passed),
        **accuracy,
        min_agreement=float(min_agreement),
        near_tie_margin=float(near_tie_margin),
        confidence=float(confidence),
        healthy_share=float(healthy_share),
        max_accuracy_drop=float(max_accuracy_drop),
        flipped=tuple(int(i) for i in index),
        near_tie=tuple(bool(tie[i]) for i in index),
    )
