"""Activation smoothing (SmoothQuant) before dynamic int8: how much int8 error it removes, at what strength.

BERT's activations have outliers in a few hidden dimensions of every token, and ONNX Runtime's dynamic int8 takes
one range per activation tensor, so those few dimensions set the rounding step of all the others.
``edgesent.quantize.smooth_activations`` divides each outlier-heavy MatMul input by per-channel scales and
multiplies the weight rows by them (the fp32 graph computes the same). This sweeps its strength (``--alphas``) and
the outlier ratio above which an input is smoothed (``--min-ratios``; 0 smooths every weight MatMul's input),
calibrated on ``--calibration-samples`` seeded random texts of ``--calibration-data`` (never the evaluated ones) in
the predictor's padded batches, then quantizes each variant with the ``--target`` preset (this CPU's by default)
and reports the mean absolute logit error, agreement with PyTorch and accuracy, in the gate's batches and one
text at a time.

    python bench/smooth_quant.py models/sst2-minilm models/sst2-minilm-onnx-fp32/model.onnx \\
        --data ../shared/data/sst2/dev.tsv --calibration-data ../shared/data/sst2/train.tsv \\
        --out bench/results/smooth-quant-sst2/dense
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesent.data import load_dataset
from edgesent.parity import ParityConfig, TorchReference
from edgesent.quantize import QuantizeConfig, smooth_activations
from edgesent.sensitivity import label_quality, quantize_excluding, run_logits


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Smooth, quantize and measure every (alpha, min ratio) variant and the unsmoothed int8; a JSON-ready dict."""
    cfg = QuantizeConfig.for_target(args.target, per_channel=not args.per_tensor, smooth_alpha=0.0)
    reference = TorchReference(args.source_dir, ParityConfig(data=args.data))
    if reference.y_true is None:
        raise SystemExit(f"{args.data}: needs labels")
    gold = {"gate": reference.y_true[reference.row_text], "alone": reference.y_true}
    inputs = list(reference.batches[0])
    alone = reference.alone_feeds(reference.texts, inputs)
    texts = load_dataset(args.calibration_data, label_column=None).texts
    picked = np.random.default_rng(args.seed).choice(len(texts), args.calibration_samples, replace=False)
    calibration = reference.batch_feeds([texts[i] for i in picked], inputs)
    variants: list[tuple[float, float]] = [(0.0, 0.0)]  # (alpha, min ratio); alpha 0: not smoothed
    variants += [(float(a), float(r)) for r in args.min_ratios.split(",") for a in args.alphas.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for alpha, ratio in variants:
            fp32, int8_path = Path(tmp) / "smoothed.onnx", Path(tmp) / "int8.onnx"
            smoothed = smooth_activations(args.fp32_onnx, fp32, calibration, alpha, ratio)["matmuls"] if alpha else []
            if alpha and args.per_tensor:  # measures what QuantizeConfig refuses: drop the mark quantize_model checks
                marked = onnx.load(str(fp32))
                del marked.metadata_props[:]
                onnx.save(marked, str(fp32))
            qcfg = cfg if args.per_tensor else replace(cfg, smooth_alpha=alpha)
            quantize_excluding(fp32 if alpha else args.fp32_onnx, int8_path, [], qcfg)
            row = {
                "alpha": alpha,
                "min_ratio": ratio,
                "smoothed_matmuls": len(smoothed),
                "gate": label_quality(run_logits(int8_path, reference.batches), reference.logits, gold["gate"]),
                "alone": label_quality(run_logits(int8_path, alone), reference.text_logits, gold["alone"]),
            }
            rows.append(row)
            print(" | ".join(table([row])[-1:]), flush=True)
    return {
        "schema": "edgesent.smooth-quant/1",
        "source": str(args.source_dir),
        "fp32_onnx": str(args.fp32_onnx),
        "data": str(args.data),
        "calibration": {"data": str(args.calibration_data), "samples": args.calibration_samples, "seed": args.seed},
        "quantize": cfg.to_dict(),
        "accuracy_torch": 100.0 * float((reference.logits.argmax(-1) == gold["gate"]).mean()),
        "variants": rows,
    }


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown rows: the variant, then logit error, agreement and accuracy in the gate's batches and alone."""
    header = (
        "| alpha | min ratio | MatMuls smoothed | error, gate batches | agreement | accuracy | error alone "
        "| agreement alone | accuracy alone |"
    )
    lines = [
        header,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        gate, one = row["gate"], row["alone"]
        name = f"{row['alpha']:g} | {row['min_ratio']:g}" if row["alpha"] else "none | -"
        lines.append(
            f"| {name} | {row['smoothed_matmuls']} | {gate['logit_error']:.4f} | {gate['agreement']:.2f}% "
            f"| {gate['accuracy']:.2f} | {one['logit_error']:.4f} | {one['agreement']:.2f}% | {one['accuracy']:.2f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_dir", type=Path, help="The PyTorch model directory (finetune or prune output).")
    parser.add_argument("fp32_onnx", type=Path, help="Its fp32 graph (an fp32 export's model.onnx).")
    parser.add_argument("--data", type=Path, required=True, help="Labelled texts to measure on (e.g. the dev set).")
    parser.add_argument("--target", default="auto", help="The int8 preset (auto: this CPU's), made per-channel.")
    parser.add_argument("--calibration-data", type=Path, required=True, help="Texts to calibrate on (not --data).")
    parser.add_argument("--calibration-samples", type=int, default=300)
    parser.add_argument("--alphas", default="0.5,0.65,0.8,0.9", help="Comma-separated strengths in (0, 1].")
    parser.add_argument("--min-ratios", default="0,8", help="Comma-separated outlier ratios (0: every input).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the calibration sample.")
    parser.add_argument(
        "--per-tensor", action="store_true", help="Per-tensor weight scales instead of the export's per-channel."
    )
    parser.add_argument("--out", type=Path, help="Write smooth_quant.json and smooth_quant.md here.")
    args = parser.parse_args(argv)
    result = measure(args)
    lines = [f"PyTorch accuracy: {result['accuracy_torch']:.2f}", "", *table(result["variants"])]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "smooth_quant.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "smooth_quant.md").write_text("\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()
