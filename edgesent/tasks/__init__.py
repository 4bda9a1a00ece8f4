"""What differs between tasks: labels and ids, label alignment, decoding, metrics and the parity measure.

A task lives in one module here and changes no stage's control flow: the stages (finetune, evaluate, export,
parity, the Predictor) ask the task. Everything in this package is light (stdlib, numpy; no torch, transformers
or onnxruntime), so the runtime can decode without the training stack.

- ``spans``: token tagging with BIO tags whose type is the span's label (aspect-based sentiment: one pass
  returns every aspect with its polarity); tags, label alignment, decoding, span metrics and agreement.
- ``spans_data``: the span task's readers (JSONL with character spans, CoNLL, SemEval-2014 ABSA XML) and its
  embedded demo data.
"""

from __future__ import annotations


TASK_NAMES = ("classify", "spans")

__all__ = ["TASK_NAMES"]
