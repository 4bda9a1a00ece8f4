"""Evaluate any edgesent model directory (PyTorch or exported ONNX) on labelled data.

One entry point for both kinds, so fp32, int8 and pruned variants are compared on the same data
with the same metrics. ONNX directories go through the runtime predictor (no torch needed); PyTorch
models through ``iter_torch_logits``, which imports torch only when it runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edgesent.artifacts import KIND_ONNX, read_model_dir
from edgesent.config import check_number
from edgesent.data import encode_labels, load_dataset
from edgesent.errors import ModelError
from edgesent.metrics import classification_metrics


def iter_torch_logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batches: Iterable[Sequence[int]],
    max_length: int,
    desc: str | None = None,
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Run a PyTorch classifier on groups of texts, each group tokenized as one padded batch.

    The one PyTorch inference loop of the library: evaluation, pruning's accuracy checks and the parity
    gate's reference all go through it, so they see the same tokenization.

    Args:
        model: A sequence-classification model in eval mode, on any device.
        tokenizer: Its tokenizer.
        texts: All texts; ``batches`` index into them.
        batches: Text indices of each batch.
        max_length: Tokens per text (longer texts are truncated).
        desc: Progress bar label (shown on a terminal only).

    Yields:
        (inputs, logits) per batch: the tokenized batch as (B, T) int64 arrays, only the inputs the model's
        ``forward`` accepts (exactly what its ONNX export is fed), and its (B, C) float32 logits.
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
            logits = model(**{k: torch.from_numpy(v).to(device) for k, v in inputs.items()}).logits  # (B, C)
        yield inputs, logits.float().cpu().numpy()


def load_torch_model(model_dir: Path, **kwargs: Any) -> tuple[Any, Any]:
    """The tokenizer and the PyTorch model (eval mode) of a saved model directory: the one loader behind
    evaluate, parity, prune and export's fallback.

    Args:
        model_dir: a directory written by ``finetune`` or ``prune``.
        kwargs: passed to ``from_pretrained`` (e.g. ``attn_implementation="eager"``).

    Raises:
        ModelError: the directory cannot be loaded (config only, no tokenizer, truncated weights), as one line.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs).eval()
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
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class report and confusion matrix of a model on a labelled file.

    Args:
        model_dir: A directory written by ``edgesent finetune``/``prune`` (PyTorch) or ``export`` (ONNX).
        data_path: CSV, TSV or JSONL with text and label columns; labels must be among the model's.
        text_column: column with the text (default ``text``).
        label_column: column with the label (default ``label``).
        batch_size: texts per forward pass (default 64).
        skip_empty: drop rows with empty text instead of failing (default False).
        verify: check the directory's files and manifest against their hashes first (default True).

    Returns:
        ``classification_metrics`` plus ``model_dir``, ``kind``, ``precision`` and ``data``.

    Raises:
        ModelError: not an intact edgesent model directory. DataError: unusable data. ConfigError: bad batch_size.
    """
    check_number("batch_size", batch_size, low=1, integer=True)
    model_dir = Path(model_dir)
    model = read_model_dir(model_dir, verify=verify)
    labels = list(model.labels)
    data = load_dataset(data_path, text_column, label_column, skip_empty)
    y_true = np.asarray(encode_labels(data, labels))
    kind = model.kind
    if kind == KIND_ONNX:
        from edgesent.runtime import Predictor

        # verified above already: the predictor need not hash the files a second time
        logits = Predictor.load(model_dir, verify=False).predict_logits(data.texts, batch_size=batch_size)
    else:
        from edgesent._imports import require_train_extra

        require_train_extra("evaluate")
        tokenizer, torch_model = load_torch_model(model_dir)
        logits = torch_logits(torch_model, tokenizer, data.texts, batch_size, model.max_length)
    report = classification_metrics(y_true, logits.argmax(axis=-1), labels)
    return {
        **report,
        "model_dir": str(model_dir),
        "kind": kind,
        "precision": model.precision,
        "data": data.fingerprint(),
    }
