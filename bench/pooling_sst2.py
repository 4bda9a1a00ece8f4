"""Does the head's pooling hold SST-2 accuracy back? [CLS] pooler against mean pooling, same recipe (issue 14).

all-MiniLM-L6-v2 was trained as a sentence encoder with mean pooling over tokens; the classifier that
``edgesent finetune`` trains (``BertForSequenceClassification``) reads the [CLS] token through the pooler, which
that training never used (the package's pooler weights look untrained: bias all zero). This script trains both
heads on the same data with the same seed and settings through the Transformers ``Trainer`` and prints dev
accuracy. It is an experiment, not a stage: a mean-pooling head is not something Optimum's exporter or the
predictor know yet.

    python bench/pooling_sst2.py ../shared/data/sst2/train.tsv ../shared/data/sst2/dev.tsv --pooling mean
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, DataCollatorWithPadding, Trainer, TrainingArguments

from edgesent.data import encode_labels, load_dataset
from edgesent.train_inputs import load_tokenizer, resolve_base


class MeanPoolClassifier(torch.nn.Module):
    """Encoder, mean over the attended tokens, dropout, linear: sentence-transformers' pooling plus a head."""

    def __init__(self, base: str, num_labels: int) -> None:
        super().__init__()
        self.encoder = AutoModel.from_pretrained(base, add_pooling_layer=False)
        hidden = self.encoder.config.hidden_size
        self.dropout = torch.nn.Dropout(self.encoder.config.hidden_dropout_prob)
        self.classifier = torch.nn.Linear(hidden, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None) -> dict[str, Any]:
        states = self.encoder(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


def _model(pooling: str, base: str, num_labels: int) -> torch.nn.Module:
    if pooling == "mean":
        return MeanPoolClassifier(base, num_labels)
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(base, num_labels=num_labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", help="labelled training file")
    parser.add_argument("dev", help="labelled evaluation file")
    parser.add_argument("--pooling", choices=("cls", "mean"), default="mean")
    parser.add_argument("--base", default="minilm-l6")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=8e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup-ratio", type=float, default=0.0)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    base = str(resolve_base(args.base))
    tokenizer, _ = load_tokenizer(base)
    train, dev = load_dataset(args.train), load_dataset(args.dev)
    labels = sorted(set(train.labels), key=str)

    def encode(data: Any) -> list[dict[str, Any]]:
        enc = tokenizer(list(data.texts), truncation=True, max_length=args.max_length)
        ids = encode_labels(data, labels)
        return [{**{k: enc[k][i] for k in enc}, "labels": ids[i]} for i in range(len(ids))]

    model = _model(args.pooling, base, len(labels))
    with tempfile.TemporaryDirectory() as work:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=work,
                num_train_epochs=args.epochs,
                learning_rate=args.lr,
                per_device_train_batch_size=args.batch_size,
                per_device_eval_batch_size=64,
                warmup_ratio=args.warmup_ratio,
                weight_decay=args.weight_decay,
                seed=args.seed,
                save_strategy="no",
                logging_strategy="epoch",
                report_to=[],
                use_cpu=True,
                group_by_length=True,
            ),
            train_dataset=encode(train),
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        # With group_by_length the Trainer also length-groups (and shuffles) evaluation batches: take the labels
        # from the same prediction output, never in file order.
        output = trainer.predict(encode(dev))
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    accuracy = float((np.asarray(logits).argmax(-1) == np.asarray(output.label_ids)).mean())
    print(json.dumps({**vars(args), "dev_accuracy": round(accuracy, 4), "train_wall_s": round(wall, 1)}))


if __name__ == "__main__":
    main()
