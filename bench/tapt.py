"""Task-adaptive pre-training (issue 14): masked-language modelling on a task's own training texts, then the
adapted encoder as ``edgesent finetune --base DIR``.

all-MiniLM-L6-v2 is MiniLM-L6-H384 after contrastive sentence-embedding training; eight fine-tuning recipes
on SST-2 plateau at 89.5-90.0 dev on it, and the ensemble of five of them scores no better (see
``bench/results/finetune_sst2.md``). Gururangan et al. (2020, "Don't Stop Pretraining") recover accuracy by a
second round of MLM on the task's unlabelled text before fine-tuning; this script does that round through the
Transformers ``Trainer`` and ``DataCollatorForLanguageModeling``. The package ships no MLM head, so the head's
transform starts fresh (its decoder is tied to the word embeddings). The saved directory holds the adapted
encoder with the base's own pooler and tokenizer, so ``finetune`` trains on it exactly as on the base.

Only the training file's texts are read, never the evaluation file's. SST-2's training rows are phrases of
its sentences; ``--maximal`` keeps only the texts that are no substring of a longer one (the sentences), so an
epoch reads each sentence once instead of once per phrase.

``--sentences-out FILE`` writes those sentences with their own labels as a TSV (and trains nothing without
``--out``): the data of the sentence-level second stage in ``bench/results/finetune_sst2.md``.

    python bench/tapt.py ../shared/data/sst2/train.tsv --out models/minilm-tapt-sst2 --maximal --epochs 4
    edgesent finetune --base models/minilm-tapt-sst2 --data ../shared/data/sst2/train.tsv ...
    python bench/tapt.py ../shared/data/sst2/train.tsv --sentences-out models/sst2-sentences.tsv
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModel, AutoModelForMaskedLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

from edgesent.data import load_dataset
from edgesent.train_inputs import load_tokenizer, resolve_base


def maximal_texts(texts: list[str]) -> list[str]:
    """The distinct texts that are no substring of a longer one, longest first, ties in file order (a sentence,
    not its phrases)."""
    kept: list[str] = []
    joined = ""
    for text in sorted(dict.fromkeys(texts), key=len, reverse=True):
        if text not in joined:
            kept.append(text)
            joined += "\n" + text
    return kept


def write_sentences(path: Path, kept: list[str], texts: list[str], labels: list[str]) -> None:
    """``kept`` (the maximal texts) with the label of their first row in ``texts``, as a ``text<TAB>label`` file."""
    label_of: dict[str, str] = {}
    for text, label in zip(texts, labels):
        label_of.setdefault(text, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{label_of[text]}\n" for text in kept), encoding="utf-8")


def adapted_encoder(base: str, mlm: torch.nn.Module) -> torch.nn.Module:
    """The base encoder (pooler included) with the MLM-trained encoder weights; only the pooler keeps the base's."""
    encoder = AutoModel.from_pretrained(base)
    result = encoder.load_state_dict(mlm.bert.state_dict(), strict=False)
    if result.unexpected_keys or any(not key.startswith("pooler.") for key in result.missing_keys):
        raise RuntimeError(f"encoder weights do not match: {result}")
    return encoder


class MaskedOnlyTrainer(Trainer):
    """MLM loss with the vocabulary projection applied to the masked tokens only: the same loss as
    ``BertForMaskedLM``'s, without projecting the other 85% of the tokens onto 30,522 words (half the step's time
    on MiniLM-L6)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        states = model.bert(**inputs)[0]
        masked = labels != -100
        logits = model.cls(states[masked])
        loss = torch.nn.functional.cross_entropy(logits, labels[masked])
        return (loss, {"logits": logits}) if return_outputs else loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", help="training file (only its text column is read)")
    parser.add_argument("--out", type=Path, help="directory for the adapted base")
    parser.add_argument("--sentences-out", type=Path, help="write the maximal texts with their labels (TSV)")
    parser.add_argument("--base", default="minilm-l6")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--maximal", action="store_true", help="only texts that are no substring of another")
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--warmup-ratio", type=float, default=0.06)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.out is None and args.sentences_out is None:
        parser.error("nothing to do: give --out, --sentences-out or both")
    # One read and one maximal-text pass serve both outputs; labels are read only for --sentences-out.
    data = load_dataset(args.train, text_column=args.text_column, label_column="label" if args.sentences_out else None)
    texts = list(data.texts)
    maximal = maximal_texts(texts) if args.maximal or args.sentences_out else []
    if args.sentences_out:
        write_sentences(args.sentences_out, maximal, texts, list(data.labels))
        print(json.dumps({"sentences_out": str(args.sentences_out), "rows": len(maximal)}))
    if args.out is None:
        return

    torch.manual_seed(args.seed)
    base = str(resolve_base(args.base))
    tokenizer, _ = load_tokenizer(base)
    corpus = maximal if args.maximal else texts
    enc = tokenizer(corpus, truncation=True, max_length=args.max_length, return_special_tokens_mask=True)
    features = [{key: enc[key][i] for key in enc} for i in range(len(corpus))]
    mlm = AutoModelForMaskedLM.from_pretrained(base)
    with tempfile.TemporaryDirectory() as work:
        trainer = MaskedOnlyTrainer(
            model=mlm,
            args=TrainingArguments(
                output_dir=work,
                num_train_epochs=args.epochs,
                learning_rate=args.lr,
                per_device_train_batch_size=args.batch_size,
                warmup_ratio=args.warmup_ratio,
                weight_decay=0.01,
                seed=args.seed,
                save_strategy="no",
                logging_strategy="epoch",
                report_to=[],
                use_cpu=True,
            ),
            train_dataset=features,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=args.mlm_probability),
        )
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        losses = [round(e["loss"], 4) for e in trainer.state.log_history if "loss" in e]
    args.out.mkdir(parents=True, exist_ok=True)
    adapted_encoder(base, mlm).save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    report = {
        **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "texts": len(texts),
        "corpus_texts": len(corpus),
        "corpus_tokens": sum(len(ids) for ids in enc["input_ids"]),
        "mlm_loss_by_epoch": losses,
        "train_wall_s": round(wall, 1),
    }
    (args.out / "tapt.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
