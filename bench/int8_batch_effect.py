"""Does a text's label depend on the texts batched with it? Measured, not assumed.

Dynamic int8 quantization (ONNX Runtime's ``DynamicQuantizeLinear``) picks one activation scale per
tensor, i.e. per batch: a text's neighbours and the padding they bring change the scale its activations
are rounded with, so a near-tie can flip between one-at-a-time and batched prediction. fp32 and static
(calibrated, fixed-scale) int8 have no such dependence beyond float rounding.

For each model directory given, this predicts every text of ``--data`` alone (batch 1) and batched
(``--batch-size``, the predictor's length-sorted batching), counts the texts whose label differs, and
times both ways, so the cost of batch-independent prediction (batch 1) is measured beside the effect.

    python bench/int8_batch_effect.py models/sst2-int8 models/sst2-fp32 --data ../shared/data/sst2/dev.tsv \
        --out bench/results/int8-batch-effect
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgesent.data import load_dataset
from edgesent.runtime import Predictor


def measure(model_dir: Path, texts: list[str], batch_size: int, threads: int) -> dict[str, object]:
    """Labels alone vs batched for one model, with the wall time of each way."""
    predictor = Predictor.load(model_dir, provider="cpu", threads=threads)
    predictor.predict(texts[: batch_size * 2], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    alone = [predictor.predict(text).label for text in texts]
    alone_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = [p.label for p in predictor.predict(texts, batch_size=batch_size)]
    batched_s = time.perf_counter() - started
    differ = [i for i, (a, b) in enumerate(zip(alone, batched)) if a != b]
    return {
        "model": str(model_dir),
        "precision": predictor.manifest.get("precision"),
        "texts": len(texts),
        "batch_size": batch_size,
        "labels_differ": len(differ),
        "differ_rate": len(differ) / len(texts),
        "differ_examples": [texts[i] for i in differ[:5]],
        "alone_texts_per_s": len(texts) / alone_s,
        "batched_texts_per_s": len(texts) / batched_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dirs", nargs="+", type=Path, help="ONNX export directories (int8, fp32, ...).")
    parser.add_argument("--data", type=Path, required=True, help="CSV/TSV/JSONL with a text column.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="Write results.json and results.md here.")
    args = parser.parse_args()
    texts = load_dataset(args.data, label_column=None, skip_empty=True).texts
    rows = [measure(model_dir, texts, args.batch_size, args.threads) for model_dir in args.model_dirs]
    table = ["| model | precision | texts | labels differ (alone vs batch) | alone texts/s | batched texts/s |"]
    table.append("|---|---|---|---|---|---|")
    table += [
        f"| {r['model']} | {r['precision']} | {r['texts']} | {r['labels_differ']} ({r['differ_rate']:.2%}) "
        f"| {r['alone_texts_per_s']:.0f} | {r['batched_texts_per_s']:.0f} |"
        for r in rows
    ]
    print("\n".join(table))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        (args.out / "results.md").write_text("\n".join(table) + "\n")


if __name__ == "__main__":
    main()
