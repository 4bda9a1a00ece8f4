"""Accuracy of fine-tuned classifiers alone and as one probability-averaged ensemble on a labelled file.

If an ensemble of several differently trained models scores no better than its best member, the models share
their errors and no recipe change (nor distilling the ensemble into one student) is likely to move the
accuracy: the base is the limit (issue 14). PyTorch, batch 64, each model's own ``max_length`` from its
manifest.

    python bench/ensemble_eval.py ../shared/data/sst2/dev.tsv models/sst2-minilm models/sst2-3ep models/sst2-llrd
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from edgesent.artifacts import read_manifest
from edgesent.data import encode_labels, load_dataset
from edgesent.evaluate import load_torch_model, torch_logits
from edgesent.metrics import softmax


def probabilities(model_dir: Path, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """(N, C) class probabilities and the model's label order, through evaluate's PyTorch loader and loop."""
    tokenizer, model = load_torch_model(model_dir)
    max_length = int(read_manifest(model_dir)["max_length"])
    probs = softmax(torch_logits(model, tokenizer, texts, batch_size=64, max_length=max_length))
    return probs, [model.config.id2label[i] for i in range(model.config.num_labels)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="labelled CSV/TSV/JSONL")
    parser.add_argument("models", type=Path, nargs="+", help="fine-tuned model directories with one label set")
    args = parser.parse_args()

    data = load_dataset(args.data)
    accuracy: dict[str, float] = {}
    members = []
    reference_labels: list[str] | None = None
    for model_dir in args.models:
        probs, labels = probabilities(model_dir, list(data.texts))
        if reference_labels is not None and labels != reference_labels:
            raise SystemExit(f"{model_dir}: labels {labels} differ from {reference_labels}")
        reference_labels = labels
        gold = np.asarray(encode_labels(data, labels))
        accuracy[str(model_dir)] = round(float((probs.argmax(-1) == gold).mean()), 4)
        members.append(probs)
    accuracy["ensemble (mean probability)"] = round(float((np.mean(members, axis=0).argmax(-1) == gold).mean()), 4)
    print(json.dumps(accuracy, indent=2))


if __name__ == "__main__":
    main()
