"""Knowledge distillation (Hinton et al. 2015) for pruning's recovery, and the task loss importance is scored on.

Both tasks share one loss: it is taken over the rows that carry a label, one per text for a classifier
((B, C) logits, (B,) labels) and one per tagged word for a span tagger ((B, T, K) logits, (B, T) labels with
-100 on special tokens, later sub-tokens and padding), so a tagged word weighs what a text weighs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from edgesent.tasks.spans import IGNORE_INDEX


def _labelled_rows(
    logits: torch.Tensor, labels: torch.Tensor, *others: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """(N, K) logits and (N,) labels of the rows that carry a label: every text of a classifier ((B, C) logits,
    (B,) labels), the tagged tokens of a tagger ((B, T, K) logits, (B, T) labels, -100 on the rest); ``others``
    (a teacher's logits of the same shape) are cut alike."""
    keep = labels.reshape(-1) != IGNORE_INDEX
    rows = [t.reshape(-1, t.shape[-1])[keep] for t in (logits, *others)]
    return rows[0], labels.reshape(-1)[keep], tuple(rows[1:])


def task_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the labelled rows (one per text, or one per tagged token): the loss both tasks train
    with, so importance is scored for spans as for labels."""
    rows, targets, _ = _labelled_rows(logits, labels)
    return F.cross_entropy(rows, targets, reduction=reduction)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """``alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))``.

    The ``T^2`` factor keeps the soft-target gradients on the same scale as the hard ones whatever the
    temperature (Hinton et al. 2015). ``student`` and ``teacher`` are (B, C) logits with (B,) labels, or a
    tagger's (B, T, K) logits with (B, T) labels; both terms average over the labelled rows (texts, or the
    words' first sub-tokens the tags sit on), so a tagged word weighs what a text weighs for a classifier.
    """
    rows, targets, (teacher_rows,) = _labelled_rows(student, labels, teacher)
    hard = F.cross_entropy(rows, targets)
    soft = F.kl_div(
        F.log_softmax(rows / temperature, dim=-1),
        F.log_softmax(teacher_rows / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * hard + (1.0 - alpha) * temperature**2 * soft


class DistillationTrainer(Trainer):
    """Trainer whose loss is ``distillation_loss`` against a frozen teacher (the unpruned model)."""

    def __init__(self, *args: Any, teacher: nn.Module, temperature: float, alpha: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
        self.temperature = temperature
        self.alpha = alpha

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        features = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**features)
        with torch.no_grad():
            teacher_logits = self.teacher(**features).logits  # (B, C) or (B, T, K)
        loss = distillation_loss(
            outputs.logits.float(), teacher_logits.float(), inputs["labels"], self.temperature, self.alpha
        )
        return (loss, outputs) if return_outputs else loss
