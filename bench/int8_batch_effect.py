"""Does a text's label depend on the texts batched with it? Measured, not assumed.

Dynamic int8 quantization (ONNX Runtime's ``DynamicQuantizeLinear``) picks one activation scale per
tensor, i.e. per batch: a text's neighbours and the padding they bring change the scale its activations
are rounded with, so a near-tie can flip between one-at-a-time and batched prediction. fp32 and static
(calibrated, fixed-scale) int8 have no such dependence beyond float rounding.

For each model directory given, this predicts every text of ``--data`` alone (batch 1) and batched
(``--batch-size``, the predictor's length-sorted batching), counts the texts whose label differs, and
times both ways, so the cost of batch-independent prediction (batch 1) is measured beside the effect.
With ``--orders N`` it also predicts the texts in N seeded random input orders (the same predictor, so
other batch neighbours) and reports, with labels, the accuracy alone, in input order and its spread over
the orders: how much of an accuracy figure measured in batches is the batches' doing.

    python bench/int8_batch_effect.py models/sst2-int8 models/sst2-fp32 --data ../shared/data/sst2/dev.tsv \
        --orders 10 --out bench/results/int8-batch-effect
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgesent.data import load_dataset
from edgesent.runtime import Predictor
from edgesent.sessions import session_runtime


def _accuracy(predicted: Sequence[str], gold: Sequence[str] | None) -> float | None:
    return None if gold is None else 100.0 * sum(p == g for p, g in zip(predicted, gold)) / len(gold)


def _in_order(predictor: Predictor, texts: list[str], order: list[int], batch_size: int) -> list[str]:
    """Labels of ``texts`` (in their own order) predicted as the sequence ``texts[order]``."""
    labels = [p.label for p in predictor.predict([texts[i] for i in order], batch_size=batch_size)]
    out = [""] * len(texts)
    for position, index in enumerate(order):
        out[index] = labels[position]
    return out


def measure(
    model_dir: Path, texts: list[str], gold: list[str] | None, batch_size: int, threads: int, orders: int
) -> dict[str, Any]:
    """Labels alone vs batched for one model, the wall time of each way, and accuracy over input orders."""
    predictor = Predictor.load(model_dir, threads=threads)  # the runtime the export ships for, as a user gets it
    predictor.predict(texts[: batch_size * 2], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    alone = [predictor.predict(text).label for text in texts]
    alone_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = [p.label for p in predictor.predict(texts, batch_size=batch_size)]
    batched_s = time.perf_counter() - started
    differ = [i for i, (a, b) in enumerate(zip(alone, batched)) if a != b]
    shuffled = []
    for seed in range(orders):
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)
        shuffled.append(_in_order(predictor, texts, order, batch_size))
    unstable = sum(len({run[i] for run in [alone, batched, *shuffled]}) > 1 for i in range(len(texts)))
    order_acc = [a for a in (_accuracy(run, gold) for run in shuffled) if a is not None]
    return {
        "model": str(model_dir),
        "precision": predictor.manifest.get("precision"),
        "runtime": session_runtime(predictor.session),
        "texts": len(texts),
        "batch_size": batch_size,
        "labels_differ": len(differ),
        "differ_rate": len(differ) / len(texts),
        "differ_examples": [texts[i] for i in differ[:5]],
        "alone_texts_per_s": len(texts) / alone_s,
        "batched_texts_per_s": len(texts) / batched_s,
        "orders": orders,
        "texts_with_more_than_one_label": unstable,
        "accuracy_alone": _accuracy(alone, gold),
        "accuracy_batched": _accuracy(batched, gold),
        "accuracy_orders": order_acc,
        "accuracy_orders_min": min(order_acc, default=None),
        "accuracy_orders_mean": statistics.fmean(order_acc) if order_acc else None,
        "accuracy_orders_max": max(order_acc, default=None),
    }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The Markdown table of ``rows`` (one per model)."""
    header = (
        "| model | precision | runtime | texts | labels differ (alone vs batch) | texts with >1 label (all runs) "
        "| accuracy alone | batched, input order | batched, random orders min / mean / max "
        "| alone texts/s | batched texts/s |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['model']} | {r['precision']} | {r['runtime']} | {r['texts']} | {r['labels_differ']} ({r['differ_rate']:.2%}) "
        f"| {r['texts_with_more_than_one_label']} | {_fmt(r['accuracy_alone'])} | {_fmt(r['accuracy_batched'])} "
        f"| {_fmt(r['accuracy_orders_min'])} / {_fmt(r['accuracy_orders_mean'])} / {_fmt(r['accuracy_orders_max'])} "
        f"| {r['alone_texts_per_s']:.0f} | {r['batched_texts_per_s']:.0f} |"
        for r in rows
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dirs", nargs="+", type=Path, help="ONNX export directories (int8, fp32, ...).")
    parser.add_argument("--data", type=Path, required=True, help="CSV/TSV/JSONL with a text column.")
    parser.add_argument("--label-column", default="label", help="Gold label column ('' for none): accuracy too.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--orders", type=int, default=0, help="Seeded random input orders to predict in too.")
    parser.add_argument("--out", type=Path, help="Write results.json and results.md here.")
    args = parser.parse_args(argv)
    data = load_dataset(args.data, label_column=args.label_column or None, skip_empty=True)
    gold = data.labels if args.label_column else None
    rows = [
        measure(model_dir, data.texts, gold, args.batch_size, args.threads, args.orders)
        for model_dir in args.model_dirs
    ]
    lines = table(rows)
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        (args.out / "results.md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    main()
