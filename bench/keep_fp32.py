"""The targeted int8 remedy measured on a real model: keep the k most sensitive MatMuls in fp32, k = 0..K.

``edgesent.sensitivity`` ranks every quantized MatMul by leave-one-out (how much keeping it alone in fp32 lowers
the logit error against PyTorch on the gate's batches); the export's gate keeps the top ones in fp32 only when
full int8 fails. This measures what each step buys and costs when it is forced: accuracy and agreement with
PyTorch in the gate's batches (the predictor's) and one text at a time, and p50 latency at batch 1, one thread,
at ``--seq-len`` tokens and on the texts at their own lengths, every variant timed interleaved in one run.

    python bench/keep_fp32.py models/sst2-pruned-h70-f75-e3 models/sst2-pruned-e3-onnx-int8 \\
        models/sst2-pruned-e3-onnx-fp32/model.onnx --data ../shared/data/sst2/dev.tsv --top 4 \\
        --out bench/results/keep-fp32-sst2-pruned
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.artifacts import KIND_ONNX, read_model_dir
from edgesent.bench.runners import OrtRunner, create_bench_session, measure_units
from edgesent.parity import ParityConfig, TorchReference
from edgesent.quantize import QuantizeConfig
from edgesent.sensitivity import label_quality, quantize_excluding, rank_matmuls, run_logits


def _p50_ms(paths: Sequence[Path], feeds: Sequence[dict[str, np.ndarray]], runs: int) -> list[float]:
    """p50 ms per model, timed round-robin by ``measure_units`` (batch 1, one thread, edgesent's sessions)."""
    units = [OrtRunner(create_bench_session(path, "cpu", 1), io_binding=False) for path in paths]
    samples = measure_units(units, list(feeds), warmup=10, runs=runs, budget_s=None)
    return [float(np.median(ns)) / 1e6 for ns in samples]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Rank, quantize k = 0..top, and measure each variant; the result as a JSON-ready dict."""
    int8 = read_model_dir(args.int8_dir, kind=KIND_ONNX)
    # the fp32 graph as exported: smoothing (bench/smooth_quant.py) needs calibration texts this does not take
    cfg = replace(QuantizeConfig.resolve(int8.manifest["export"]["quantize"]), smooth_alpha=0.0)
    reference = TorchReference(args.source_dir, ParityConfig(data=args.data))
    if reference.y_true is None:
        raise SystemExit(f"{args.data}: needs labels")
    gold_gate, gold_alone = reference.y_true[reference.row_text], reference.y_true
    torch_alone = reference.text_logits
    ranking = rank_matmuls(args.fp32_onnx, reference.batches, cfg, reference_logits=reference.logits)
    alone = reference.alone_feeds(reference.texts, list(reference.batches[0]))
    rng = np.random.default_rng(0)
    long_feed = {name: np.zeros((1, args.seq_len), np.int64) for name in alone[0]}  # token types 0
    long_feed.update(attention_mask=np.ones((1, args.seq_len), np.int64))
    seen = np.concatenate([feed["input_ids"].ravel() for feed in alone])  # the texts' own token ids
    long_feed["input_ids"] = rng.choice(seen, (1, args.seq_len))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k in range(args.top + 1):
            nodes = ranking.names()[:k]
            path = Path(tmp) / f"keep{k}.onnx"
            quantize_excluding(args.fp32_onnx, path, nodes, cfg)
            paths.append(path)
            gate = label_quality(run_logits(path, reference.batches), reference.logits, gold_gate)
            one = label_quality(run_logits(path, alone), torch_alone, gold_alone)
            rows.append({"fp32_matmuls": k, "nodes": nodes, "gate": gate, "alone": one})
        at_len = _p50_ms(paths, [long_feed], args.runs)
        on_texts = _p50_ms(paths, alone, args.runs)
    for row, ms_len, ms_texts in zip(rows, at_len, on_texts):
        row.update(p50_ms_seq_len=ms_len, p50_ms_texts=ms_texts)
    torch_gate = label_quality(reference.logits, reference.logits, gold_gate)["accuracy"]
    return {
        "schema": "edgesent.keep-fp32/1",
        "source": str(args.source_dir),
        "int8_dir": str(args.int8_dir),
        "fp32_onnx": str(args.fp32_onnx),
        "data": str(args.data),
        "texts": len(reference.texts),
        "seq_len": args.seq_len,
        "runs": args.runs,
        "quantize": int8.manifest["export"]["quantize"],
        "accuracy_torch": torch_gate,
        "ranking": [asdict(node) for node in ranking.nodes[: max(args.top, 8)]],
        "variants": rows,
    }


def table(result: dict[str, Any]) -> list[str]:
    """The Markdown table of the variants, latency relative to full int8 (k = 0)."""
    base_len, base_texts = result["variants"][0]["p50_ms_seq_len"], result["variants"][0]["p50_ms_texts"]
    header = (
        "| MatMuls in fp32 | last one added | accuracy, gate batches | agreement | accuracy alone | agreement alone "
        f"| p50 ms @{result['seq_len']} | p50 ms texts |"
    )
    lines = [
        f"PyTorch accuracy: {result['accuracy_torch']:.2f} on {result['texts']} texts",
        "",
        header,
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["variants"]:
        gate, one = row["gate"], row["alone"]
        lines.append(
            f"| {row['fp32_matmuls']} | {row['nodes'][-1] if row['nodes'] else '-'} | {gate['accuracy']:.2f} "
            f"| {gate['agreement']:.2f}% | {one['accuracy']:.2f} | {one['agreement']:.2f}% "
            f"| {row['p50_ms_seq_len']:.3f} ({row['p50_ms_seq_len'] / base_len:.3f}x) "
            f"| {row['p50_ms_texts']:.3f} ({row['p50_ms_texts'] / base_texts:.3f}x) |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_dir", type=Path, help="The PyTorch model directory (finetune or prune output).")
    parser.add_argument("int8_dir", type=Path, help="Its default int8 export: the quantization settings to reuse.")
    parser.add_argument("fp32_onnx", type=Path, help="The fp32 graph int8 is made from (an fp32 export's model.onnx).")
    parser.add_argument("--data", type=Path, required=True, help="Labelled CSV/TSV/JSONL (e.g. the dev set).")
    parser.add_argument("--top", type=int, default=4, help="Most MatMuls kept in fp32 (k = 0..top).")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=200, help="Timed rounds per timing.")
    parser.add_argument("--out", type=Path, help="Write keep_fp32.json and keep_fp32.md here.")
    args = parser.parse_args(argv)
    result = measure(args)
    lines = table(result)
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "keep_fp32.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "keep_fp32.md").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
