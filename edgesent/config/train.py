"""``TrainConfig``: the settings of ``edgesent finetune`` (and of pruning's recovery run), stdlib only.

The CLI builds it from the options that were given and lets it validate; ``edgesent.train`` runs it. Every
number is checked as finite and in range here, so ``--lr nan`` or ``--epochs inf`` fail before any model
loads instead of training a model whose weights are all NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgesent.config._base import (
    ConfigBase,
    check_bool,
    check_choice,
    check_number,
    check_text,
    check_texts,
    optional_path,
)
from edgesent.errors import ConfigError
from edgesent.tasks import CLASSIFY, TASK_NAMES


DEFAULT_BASE = "minilm-l6"
DEVICES = ("auto", "cpu", "cuda")
CLASS_WEIGHTS = ("none", "auto")
MIN_MAX_LENGTH = 8
MAX_MAX_LENGTH = 8192
MAX_SEED = 2**32 - 1  # numpy's and torch's seeding accept [0, 2**32)
# Unknown-token rate of the training/eval data under the base's tokenizer: above the first a warning, above the
# second a refusal unless allow_unknown_tokens (a base that cannot read the language trains to near chance).
UNKNOWN_TOKEN_WARN_RATE = 0.02
UNKNOWN_TOKEN_MAX_RATE = 0.20


@dataclass
class TrainConfig(ConfigBase):
    """Everything a fine-tuning run depends on; validated on creation, recorded in the manifest.

    Args:
        data: Training file (CSV, TSV, JSONL; span data: JSONL with ``spans``, SemEval-2014 XML, CoNLL); None:
            the demo data shipped with edgesent (3-class reviews; aspects with their polarity for ``spans``).
        eval_data: Evaluation file; None: a seeded ``eval_split`` of ``data`` is held out (stratified for
            classification), or the demo's evaluation file without ``data``.
        task: ``classify`` (text classification) or ``spans`` (aspects/spans by token tagging); None (default):
            what ``data`` holds (``edgesent.tasks.detect_task``).
        drop_labels: Span labels to leave out of span data, e.g. ``("conflict",)`` (default none; spans only).
        base: Base model: an alias (``minilm-l6``, the default), a local Hugging Face directory or a hub id.
        out: Output directory; None: ``models/<data name>-<base name>``.
        epochs: Training epochs (default 3.0; fractions allowed).
        lr: Peak learning rate (default 5e-5).
        batch_size: Training batch size per device (default 32).
        eval_batch_size: Evaluation batch size (default 64).
        max_length: Tokens per text, longer ones are truncated (default 128; at most the base's positions).
        warmup_ratio: Fraction of the steps with a linear warm-up, in [0, 1) (default 0.1).
        weight_decay: AdamW weight decay, >= 0 (default 0.01).
        layer_lr_decay: Layer-wise learning-rate decay in (0, 1]: the head trains at ``lr``, the top encoder layer
            at ``lr * d``, each layer below at one more factor ``d``, the embeddings at ``lr * d**(layers + 1)``
            (default 1.0: one rate for all). Lower layers hold the general features the base was trained for.
        grad_accum: Gradient accumulation steps (default 1).
        seed: Random seed for the split, the head's initialisation and the data order (default 42).
        early_stopping: Patience in epochs without a better best-epoch metric (macro-F1; span F1 for spans);
            0 turns it off (default 2).
        class_weights: ``none`` (default) or ``auto``: loss weighted by inverse class frequency.
        device: ``auto`` (default: CUDA when torch sees a GPU), ``cpu`` or ``cuda``.
        max_steps: Cap on optimiser steps; the run stops at whichever comes first, ``epochs`` or this
            (0, the default: no cap).
        eval_split: Held-out fraction without ``eval_data``, in (0, 1) (default 0.1).
        text_column, label_column: Column names (default ``text``/``label``).
        skip_empty: Skip rows with empty text instead of failing (default False).
        group_by_length: Batch texts of similar length together (default True).
        allow_unknown_tokens: Train even when over 20% of the data's tokens are unknown to the base's
            tokenizer (default False: refused, since such a base cannot read the data).
        overwrite: Replace an existing output directory (default False).

    Raises:
        ConfigError: a bad value, naming the field and the value.
    """

    data: Path | None = None
    eval_data: Path | None = None
    task: str | None = None
    drop_labels: tuple[str, ...] = ()
    base: str = DEFAULT_BASE
    out: Path | None = None
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int = 128
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    layer_lr_decay: float = 1.0
    grad_accum: int = 1
    seed: int = 42
    early_stopping: int = 2
    class_weights: str = "none"
    device: str = "auto"
    max_steps: int = 0
    eval_split: float = 0.1
    text_column: str = "text"
    label_column: str = "label"
    skip_empty: bool = False
    group_by_length: bool = True
    allow_unknown_tokens: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.data, self.eval_data, self.out = map(optional_path, (self.data, self.eval_data, self.out))
        if self.class_weights is None:  # manifests written before "none" was the default recorded None
            self.class_weights = "none"
        check_text("base", self.base)
        if self.task is not None:
            check_choice("task", self.task, TASK_NAMES)
        self.drop_labels = check_texts("drop_labels", self.drop_labels)
        if self.drop_labels and self.task == CLASSIFY:
            raise ConfigError(
                f"drop_labels {list(self.drop_labels)!r}: only span data has labels to drop (--task spans)"
            )
        check_number("epochs", self.epochs, low=0, low_open=True)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("eval_batch_size", self.eval_batch_size, low=1, integer=True)
        check_number("max_length", self.max_length, low=MIN_MAX_LENGTH, high=MAX_MAX_LENGTH, integer=True)
        check_number("warmup_ratio", self.warmup_ratio, low=0, high=1, high_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("layer_lr_decay", self.layer_lr_decay, low=0, high=1, low_open=True)
        check_number("grad_accum", self.grad_accum, low=1, integer=True)
        check_number("seed", self.seed, low=0, high=MAX_SEED, integer=True)
        check_number("early_stopping", self.early_stopping, low=0, integer=True)
        check_choice("class_weights", self.class_weights, CLASS_WEIGHTS)
        check_choice("device", self.device, DEVICES)
        check_number("max_steps", self.max_steps, low=0, integer=True)
        check_number("eval_split", self.eval_split, low=0, high=1, low_open=True, high_open=True)
        check_text("text_column", self.text_column)
        check_text("label_column", self.label_column)
        for name in ("skip_empty", "group_by_length", "allow_unknown_tokens", "overwrite"):
            check_bool(name, getattr(self, name))
