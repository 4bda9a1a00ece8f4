"""Evaluate any edgesent model directory (PyTorch or exported ONNX) on labelled data.

One entry point for both kinds, so fp32, int8 and pruned variants are compared on the same data
with the same metrics; the model's task (``edgesent.tasks``) says which metrics and how to get predictions.
ONNX directories need no torch; PyTorch models go through ``iter_torch_logits``, which imports torch only when
it runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgesent.artifacts import KIND_ONNX, MANIFEST_NAME, TASK_CLASSIFY, ModelDir, read_manifest, read_model_dir
from edgesent.config import check_number
from edgesent.data import LabelledTexts, encode_labels, load_dataset
from edgesent.errors import ConfigError, ModelError
from edgesent.metrics import classification_metrics


def iter_torch_logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batches: Iterable[Sequence[int]],
    max_length: int,
    desc: str | None = None,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Run a PyTorch classifier or tagger on groups of texts, each group tokenized as one padded batch.

    The one PyTorch inference loop of the library: evaluation, pruning's accuracy checks and the parity
    gate's reference all go through it, so they see the same tokenization.

    Args:
        model: A sequence- or token-classification model in eval mode, on any device.
        tokenizer: Its tokenizer.
        texts: All texts; ``batches`` index into them.
        batches: Text indices of each batch.
        max_length: Tokens per text (longer texts are truncated).
        desc: Progress bar label (shown on a terminal only).

    Yields:
        (inputs, logits) per batch: the tokenized batch as (B, T) int64 arrays, only the inputs the model's
        ``forward`` accepts (exactly what its ONNX export is fed), and its float32 logits: (B, C) for a
        classifier, (B, T, K) for a tagger.
    """
    import torch

    accepted = set(inspect.signature(model.forward).parameters)
    device = next(model.parameters()).device
    for rows in tqdm(batches, desc=desc, disable=None, leave=False):
        encoded = tokenizer(
            [texts[i] for i in rows], padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
        inputs = {k: v.astype(np.int64) for k, v in encoded.items() if k in accepted}  # (B, T) each
        with torch.inference_mode():  # per batch: a generator must not leave the mode on between yields
            logits = model(**{k: torch.from_numpy(v).to(device) for k, v in inputs.items()}).logits  # (B, C|T, K)
        yield inputs, logits.float().cpu().numpy()


def load_torch_model(model_dir: Path, task: str | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """The tokenizer and the PyTorch model (eval mode) of a saved model directory: the one loader behind
    evaluate, parity, prune, export's fallback and bench.

    Args:
        model_dir: a directory written by ``finetune`` or ``prune``.
        task: the model's task (``classify``/``spans`` or ``text-classification``/``token-classification``),
            which picks the model class; None: the task in the directory's ``edgesent.json``, else classification.
        kwargs: passed to ``from_pretrained`` (e.g. ``attn_implementation="eager"``).

    Raises:
        ModelError: the directory cannot be loaded (config only, no tokenizer, truncated weights), as one line.
    """
    from safetensors import SafetensorError
    from transformers import AutoTokenizer

    from edgesent.tasks import get_task

    if task is None:
        manifest = read_manifest(model_dir) if (Path(model_dir) / MANIFEST_NAME).is_file() else {}
        task = str(manifest.get("task", TASK_CLASSIFY))
    model_class = get_task(task).model_class()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = model_class.from_pretrained(model_dir, **kwargs).eval()
    except (OSError, ValueError, TypeError, RuntimeError, SafetensorError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelError(f"{model_dir}: cannot load the model ({first}); re-create it") from err
    return tokenizer, model


def torch_logits(
    model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 64, max_length: int = 128
) -> np.ndarray:
    """(N, C) logits of a PyTorch classifier in input order, batched by length so padding stays small."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = [order[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for rows, (_, logits) in zip(batches, iter_torch_logits(model, tokenizer, texts, batches, max_length)):
        out[rows] = logits
    return out


def evaluate_model(
    model_dir: str | Path,
    data_path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    batch_size: int = 64,
    skip_empty: bool = False,
    verify: bool = True,
    drop_labels: Sequence[str] = (),
) -> dict[str, Any]:
    """The task's metrics of a model on a labelled file: for classification accuracy, macro-F1, per-class report
    and confusion matrix; for spans exact-match and boundary-only span P/R/F1, polarity accuracy and macro-F1 on
    the spans found with correct boundaries, and a per-label report.

    Args:
        model_dir: A directory written by ``edgesent finetune``/``prune`` (PyTorch) or ``export`` (ONNX).
        data_path: Classification: CSV, TSV or JSONL with text and label columns, labels among the model's.
            Spans: JSONL with ``spans``, SemEval-2014 XML or CoNLL, span labels among the model's.
        text_column: column with the text (default ``text``).
        label_column: column with the label (default ``label``; classification).
        batch_size: texts per forward pass (default 64).
        skip_empty: drop rows with empty text instead of failing (default False; classification).
        verify: check the directory's files and manifest against their hashes first (default True).
        drop_labels: span labels to leave out of span data, e.g. ``("conflict",)`` (default none).

    Returns:
        The task's metrics plus ``model_dir``, ``kind``, ``task``, ``model_precision`` (fp32, int8, fp16) and
        ``data``; a classification report also has the model's precision as ``precision`` (a span report's
        ``precision`` is the span precision).

    Raises:
        ModelError: not an intact edgesent model directory. DataError: unusable data. ConfigError: bad batch_size,
            or options the task does not take.
    """
    from edgesent.tasks import get_task

    check_number("batch_size", batch_size, low=1, integer=True)
    model_dir = Path(model_dir)
    model = read_model_dir(model_dir, verify=verify)
    options = {
        "text_column": text_column,
        "label_column": label_column,
        "batch_size": batch_size,
        "skip_empty": skip_empty,
        "drop_labels": tuple(drop_labels),
    }
    report = get_task(model.task).evaluate(model, Path(data_path), options)
    # "precision" is the model's numeric precision (fp32, int8) in a classification report, as it always was; a
    # span report's "precision" is the exact-match span precision, so the model's is "model_precision" in both.
    return {
        "precision": model.precision,
        **report,
        "model_dir": str(model_dir),
        "kind": model.kind,
        "task": model.task,
        "model_precision": model.precision,
    }


def load_labelled_texts(data_path: Path, labels: Sequence[str], options: dict[str, Any]) -> LabelledTexts:
    """A labelled classification file (the classification task's ``load_labelled``).

    Raises:
        DataError: unusable data, or labels the model does not know. ConfigError: ``drop_labels`` (a span-data
            option).
    """
    if options.get("drop_labels"):
        raise ConfigError(f"--drop-label {', '.join(options['drop_labels'])}: only span data has labels to drop")
    data = load_dataset(data_path, options["text_column"], options["label_column"], options["skip_empty"])
    encode_labels(data, list(labels))
    return data


def _classification_scores(data: LabelledTexts, logits: np.ndarray, labels: list[str]) -> dict[str, Any]:
    return classification_metrics(np.asarray(encode_labels(data, labels)), logits.argmax(axis=-1), labels)


def classification_torch_report(
    model: Any, tokenizer: Any, data: LabelledTexts, labels: list[str], batch_size: int, max_length: int
) -> dict[str, Any]:
    """classification_metrics of an in-memory PyTorch classifier on labelled texts (eval mode, no grad)."""
    return _classification_scores(
        data, torch_logits(model.eval(), tokenizer, data.texts, batch_size, max_length), labels
    )


def classification_report(model: ModelDir, data_path: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The classification task's evaluation (``evaluate_model`` for a text-classification directory).

    ONNX directories go through the runtime predictor (no torch needed), PyTorch ones through ``torch_logits``.

    Raises:
        DataError: unusable data. ConfigError: ``drop_labels`` (a span-data option).
    """
    labels = list(model.labels)
    data = load_labelled_texts(data_path, labels, options)
    if model.kind == KIND_ONNX:
        from edgesent.runtime import Predictor

        # verified by read_model_dir already: the predictor need not hash the files a second time
        logits = Predictor.load(model.path, verify=False).predict_logits(data.texts, batch_size=options["batch_size"])
        report = _classification_scores(data, logits, labels)
    else:
        from edgesent._imports import require_train_extra

        require_train_extra("evaluate")
        tokenizer, torch_model = load_torch_model(model.path, model.task)
        report = classification_torch_report(
            torch_model, tokenizer, data, labels, options["batch_size"], model.max_length
        )
    return {**report, "data": data.fingerprint()}
