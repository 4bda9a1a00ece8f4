"""``ParityConfig``: what the parity gate runs on and the bounds it enforces, stdlib only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edgesent.artifacts import TASK_SPANS
from edgesent.config._base import (
    ConfigBase,
    check_bool,
    check_choice,
    check_number,
    check_optional_number,
    optional_path,
)
from edgesent.errors import ConfigError


PRECISIONS = ("fp32", "int8", "fp16")
# Bounds per precision; None = not checked. fp32 must match to float rounding. int8 changes logits by
# design, so it is judged on decisions. fp16 on a CPU runs partly through casts: looser, still strict.
# near_tie_margin: a label flip where PyTorch's top-1 minus top-2 logit is below it is reported, not judged
# (edgesent.agreement): at fp32 only a flip that float rounding can explain (twice max_abs_diff); at int8 and
# fp16 a 52.5/47.5 split (0.1 logits), where PyTorch itself barely decided.
# probe_max_prob_diff: when real texts decide, the probe texts (empty, emoji, scripts, over-long) still run, and
# their largest probability difference (any class, any real token) must stay under it: a catch for a broken
# model, not a second agreement rule. int8 measured 0.02-0.11 on the SST-2 and SemEval models (dense, pruned,
# ONNX Runtime and OpenVINO), so 0.5 leaves room; fp32 within float rounding.
DEFAULT_THRESHOLDS: dict[str, dict[str, float | None]] = {
    "fp32": {
        "max_abs_diff": 1e-4,
        "min_agreement": 1.0,
        "max_accuracy_drop": 0.0,
        "near_tie_margin": 2e-4,
        "probe_max_prob_diff": 1e-3,
    },
    "int8": {
        "max_abs_diff": None,
        "min_agreement": 0.99,
        "max_accuracy_drop": 0.01,
        "near_tie_margin": 0.1,
        "probe_max_prob_diff": 0.5,
    },
    "fp16": {
        "max_abs_diff": 1e-2,
        "min_agreement": 0.99,
        "max_accuracy_drop": 0.01,
        "near_tie_margin": 0.1,
        "probe_max_prob_diff": 0.5,
    },
}
# Span models (task token-classification) are judged on spans too: min_span_f1 bounds the exact-match F1 of the
# ONNX model's spans against PyTorch's (one flipped tag breaks a span twice, a missed and an extra one, so the
# bound sits below min_agreement, which counts tags); max_accuracy_drop bounds the drop of the span F1 on gold.
SPAN_THRESHOLDS: dict[str, dict[str, float | None]] = {
    "fp32": {"min_span_f1": 1.0},
    "int8": {"min_span_f1": 0.97},
    "fp16": {"min_span_f1": 0.97},
}
DEFAULT_BATCH_SIZE = 32


@dataclass
class ParityConfig(ConfigBase):
    """What parity runs on and the bounds it enforces.

    Args:
        data: CSV/TSV/JSONL of texts (and labels) to compare on; None: the source model's parity sample
            (``parity_sample.jsonl``, written by finetune and prune), else the built-in probe texts.
        text_column, label_column: Columns of ``data``; ``label_column`` None or "" for unlabelled text.
        max_length: Tokens per text; None: the ONNX directory's manifest, else the source model's.
        batch_size: Texts per batch (default 32), batched as the predictor batches them (length-sorted windows);
            the probe texts keep one mixed batch, so padding is exercised.
        precision: ``fp32``, ``int8`` or ``fp16``: picks the default bounds; None: the ONNX manifest's.
        max_abs_diff: Bound on the largest absolute logit difference (fp32 1e-4, fp16 1e-2, int8 off);
            ``inf`` turns the check off. NaN is refused.
        min_agreement: Minimum fraction of rows whose argmax agrees (fp32 1.0, int8 and fp16 0.99). With labelled
            data the default is reported, not gating (the accuracy drop decides); a value set here gates.
        max_accuracy_drop: With labels, the largest allowed accuracy drop as a fraction, 0.01 = 1 point
            (fp32 0, int8 and fp16 0.01); for span models the drop of the exact-match span F1 on the gold spans.
        near_tie_margin: Logits: a flip where PyTorch's own top-1 minus top-2 margin is below this is reported but
            not judged (fp32 2e-4, int8 and fp16 0.1; 0 judges every row). The agreement bound also allows for
            sample size: see ``edgesent.agreement``.
        probe_max_prob_diff: When ``data`` (or the model's parity sample) decides, the probe texts run too, for
            shapes, finiteness and this bound on their largest probability difference (fp32 1e-3, int8 and fp16
            0.5); they never decide label agreement.
        min_span_f1: Span models only: minimum exact-match F1 of the ONNX spans against the PyTorch spans
            (fp32 1.0, int8 and fp16 0.97); ``min_agreement`` is then the per-token tag agreement. With gold spans
            both defaults are reported, not gating (the span F1 drop decides); a value set here gates.
        verify: Check the file hashes of the source model directory and of an edgesent ONNX directory first
            (default True).

    Raises:
        ConfigError: a value out of range, naming the field.
    """

    data: Path | None = None
    text_column: str = "text"
    label_column: str | None = "label"
    max_length: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    precision: str | None = None
    max_abs_diff: float | None = None
    min_agreement: float | None = None
    max_accuracy_drop: float | None = None
    min_span_f1: float | None = None
    near_tie_margin: float | None = None
    probe_max_prob_diff: float | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        self.data = optional_path(self.data)
        self.label_column = self.label_column or None
        if self.precision is not None:
            check_choice("precision", self.precision, PRECISIONS)
        check_optional_number("max_length", self.max_length, low=8, integer=True)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        if self.max_abs_diff is not None and self.max_abs_diff != math.inf:  # inf: explicitly unchecked
            check_number("max_abs_diff", self.max_abs_diff, low=0)
        for name in ("min_agreement", "max_accuracy_drop", "min_span_f1", "probe_max_prob_diff"):
            value = getattr(self, name)
            check_optional_number(name, value)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a fraction in [0, 1], got {value!r}")
        check_optional_number("near_tie_margin", self.near_tie_margin, low=0)
        check_bool("verify", self.verify)

    def thresholds(self, precision: str, task: str | None = None) -> dict[str, float | None]:
        """The bounds in force for a ``precision`` model: the ones set here, its defaults for the rest.

        Args:
            precision: ``fp32``, ``int8`` or ``fp16``.
            task: the model's task; span models (``token-classification``) get ``SPAN_THRESHOLDS`` too.
        """
        defaults = {**DEFAULT_THRESHOLDS[precision], **(SPAN_THRESHOLDS[precision] if task == TASK_SPANS else {})}
        resolved = {
            name: getattr(self, name) if getattr(self, name) is not None else default
            for name, default in defaults.items()
        }
        return {k: None if v is not None and math.isinf(v) else v for k, v in resolved.items()}

    def labels_decide(self, name: str, bound: float) -> bool:
        """Whether, given labelled data, the accuracy (or span F1) drop decides in place of bound ``name``.

        A default bound below 1.0 is then reported, not gating (``edgesent.agreement``); a bound the caller set is
        enforced as set, and so is fp32's exact 1.0, where any flip is an export bug.
        """
        return getattr(self, name) is None and bound < 1.0
