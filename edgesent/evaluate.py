"""Evaluate any edgesent model directory (PyTorch or exported ONNX) on labelled data.

One entry point for both kinds, so fp32, int8 and pruned variants are compared on the same data
with the same metrics. ONNX directories go through the runtime predictor (no torch needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgesent.artifacts import KIND_ONNX, KIND_PYTORCH, read_manifest
from edgesent.data import encode_labels, load_dataset
from edgesent.errors import ModelError
from edgesent.metrics import classification_metrics


def torch_logits(model_dir: Path, texts: list[str], batch_size: int = 64, max_length: int | None = None) -> np.ndarray:
    """(N, C) logits of a PyTorch model directory, batched by length so padding stays small."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    manifest = read_manifest(model_dir)
    max_length = max_length or manifest.get("max_length", 128)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length,
                              padding=True, return_tensors="pt")  # fmt: skip
            out[idx] = model(**batch).logits.float().numpy()  # (B, C)
    return out


def evaluate_model(
    model_dir: str | Path,
    data_path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    batch_size: int = 64,
    skip_empty: bool = False,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class report and confusion matrix of a model on a labelled file.

    Args:
        model_dir: A directory written by ``edgesent finetune``/``prune`` (PyTorch) or ``export`` (ONNX).
        data_path: CSV, TSV or JSONL with text and label columns; labels must be among the model's.

    Returns:
        ``classification_metrics`` plus ``model_dir``, ``kind``, ``precision`` and ``data``.

    Raises:
        ModelError: not an edgesent model directory. DataError: unusable data.
    """
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    labels = manifest.get("labels")
    if not labels:
        raise ModelError(f"{model_dir}: manifest has no labels")
    data = load_dataset(data_path, text_column, label_column, skip_empty)
    y_true = np.asarray(encode_labels(data, labels))
    kind = manifest.get("kind")
    if kind == KIND_ONNX:
        from edgesent.runtime import Predictor

        logits = Predictor.load(model_dir).predict_logits(data.texts, batch_size=batch_size)
    elif kind == KIND_PYTORCH:
        from edgesent._imports import require_train_extra

        require_train_extra("evaluate")
        logits = torch_logits(model_dir, data.texts, batch_size)
    else:
        raise ModelError(f"{model_dir}: unknown model kind {kind!r} in manifest")
    report = classification_metrics(y_true, logits.argmax(axis=-1), labels)
    return {
        **report,
        "model_dir": str(model_dir),
        "kind": kind,
        "precision": manifest.get("precision", "fp32"),
        "data": data.fingerprint(),
    }
