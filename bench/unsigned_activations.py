"""Signed or unsigned activations in the OpenVINO int8 export: what each runtime makes of the same QDQ model.

NNCF's ONNX backend writes an asymmetric activation quantizer as int8 when its range dips below zero;
``edgesent.quantize.unsigned_fc_activations`` shifts those that feed weight MatMuls to uint8 (the same values).
This builds NNCF's int8 of an fp32 export once, makes its unsigned twin, compares both with each other and with
the fp32 model on the calibration texts, and times both on ONNX Runtime and on OpenVINO (batch 1, one thread, at
each ``--lengths``).

Each timing runs in its own process, one model alone, and the two models alternate over ``--rounds`` (A B, then
B A, ...): timed side by side in one process, two copies of the same model differed by up to 5% with the order
and the memory they landed in, more than the effect measured.

    python bench/unsigned_activations.py models/sst2-minilm-onnx-plain \\
        --calibration-data ../shared/data/sst2/train.tsv --out bench/results/unsigned-activations
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


SCHEMA = "edgesent.unsigned-activations/1"
RUNTIMES = {"onnxruntime": "cpu", "openvino": "openvino"}


def _time_one(path: Path, provider: str, lengths: Sequence[int], runs: int, vocab: int) -> dict[str, float]:
    """p50 ms of one model alone at each length (batch 1, one thread): what a child process reports."""
    from edgesent.bench.runners import OrtRunner, measure_units, synthetic_inputs
    from edgesent.sessions import create_session

    runner = OrtRunner(create_session(path, provider, threads=1), io_binding=False)
    result = {}
    for length in lengths:
        feed = synthetic_inputs(1, length, vocab, seed=length)
        (samples,) = measure_units([runner], [feed], warmup=max(10, runs // 10), runs=runs, budget_s=None)
        result[str(length)] = float(np.median(samples)) / 1e6
    return result


def _child(path: Path, provider: str, args: argparse.Namespace, vocab: int) -> dict[str, float]:
    lengths = [str(n) for n in args.lengths]
    command = [sys.executable, __file__, "--time-one", str(path), provider, str(args.runs), str(vocab), *lengths]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Quantize once, rewrite a copy, compare labels and time both on each runtime; a JSON-ready dict."""
    import onnx

    from edgesent.artifacts import KIND_ONNX, read_model_dir
    from edgesent.data import load_dataset
    from edgesent.quantize import quantize_nncf, unsigned_fc_activations
    from edgesent.runtime import Predictor
    from edgesent.sensitivity import run_logits
    from edgesent.sessions import openvino_available

    model = read_model_dir(args.fp32_dir, kind=KIND_ONNX)
    vocab = int(json.loads((args.fp32_dir / "config.json").read_text())["vocab_size"])
    texts = load_dataset(args.calibration_data, label_column=None, skip_empty=True).texts[: args.calibration_samples]
    predictor = Predictor.load(args.fp32_dir, provider="cpu", threads=1)
    feeds = [predictor.encode([text]) for text in texts]  # (1, T) each, truncated at the model's max_length
    signed, info = quantize_nncf(onnx.load(str(model.model_path)), feeds)
    unsigned = onnx.ModelProto()
    unsigned.CopyFrom(signed)
    rewritten = unsigned_fc_activations(unsigned)
    fp32 = run_logits(model.model_path, feeds)
    runtimes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgesent-unsigned-") as tmp:
        paths = {"signed": Path(tmp) / "signed.onnx", "unsigned": Path(tmp) / "unsigned.onnx"}
        onnx.save(signed, str(paths["signed"]))
        onnx.save(unsigned, str(paths["unsigned"]))
        for runtime, provider in RUNTIMES.items():
            if runtime == "openvino" and not openvino_available():
                runtimes[runtime] = {"skipped": "the openvino extra is not installed"}
                continue
            logits = {name: run_logits(path, feeds, provider=provider) for name, path in paths.items()}
            order = list(paths)
            timings: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
            for _ in range(args.rounds):
                for name in order:
                    timings[name].append(_child(paths[name], provider, args, vocab))
                order.reverse()
            runtimes[runtime] = {
                "label_agreement": float((logits["signed"].argmax(-1) == logits["unsigned"].argmax(-1)).mean()),
                "max_abs_logit_diff": float(np.abs(logits["signed"] - logits["unsigned"]).max()),
                "against_fp32": {
                    name: {
                        "label_agreement": float((values.argmax(-1) == fp32.argmax(-1)).mean()),
                        "mean_abs_logit_error": float(np.abs(values - fp32).mean()),
                    }
                    for name, values in logits.items()
                },
                "p50_ms": {
                    name: {str(n): float(np.median([r[str(n)] for r in rounds])) for n in args.lengths}
                    for name, rounds in timings.items()
                },
                "rounds": timings,
            }
    return {
        "schema": SCHEMA,
        "fp32_dir": str(args.fp32_dir),
        "calibration_data": str(args.calibration_data),
        "calibration_texts": len(feeds),
        "quantize": info,
        "unsigned_activations": rewritten,
        "lengths": list(args.lengths),
        "runs": args.runs,
        "rounds": args.rounds,
        "runtimes": runtimes,
    }


def table(result: dict[str, Any]) -> list[str]:
    """Markdown: per runtime and length, both p50s (median over rounds) and unsigned/signed."""
    head = (
        f"{result['unsigned_activations']} activation quantizers made unsigned; batch 1, one thread, "
        f"{result['runs']} runs per process, median of {result['rounds']} processes per model"
    )
    lines = [
        head,
        "",
        "| runtime | length | signed p50 ms | unsigned p50 ms | unsigned / signed | labels agree | max logit diff | "
        + "agreement with fp32: signed, unsigned |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for runtime, row in result["runtimes"].items():
        if "skipped" in row:
            lines.append(f"| {runtime} | skipped: {row['skipped']} | | | | | | |")
            continue
        for n in result["lengths"]:
            signed, unsigned = row["p50_ms"]["signed"][str(n)], row["p50_ms"]["unsigned"][str(n)]
            lines.append(
                f"| {runtime} | {n} | {signed:.3f} | {unsigned:.3f} | {unsigned / signed:.3f}x "
                f"| {100 * row['label_agreement']:.2f}% | {row['max_abs_logit_diff']:.4f} "
                f"| {100 * row['against_fp32']['signed']['label_agreement']:.2f}%, "
                f"{100 * row['against_fp32']['unsigned']['label_agreement']:.2f}% |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--time-one"]:  # a child process: one model alone
        path, provider, runs, vocab, *lengths = argv[1:]
        print(json.dumps(_time_one(Path(path), provider, [int(n) for n in lengths], int(runs), int(vocab))))
        return {}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32_dir", type=Path, help="An fp32 export (edgesent export, no --int8): NNCF's input.")
    parser.add_argument("--calibration-data", type=Path, required=True, help="Texts (CSV/TSV/JSONL) to calibrate.")
    parser.add_argument("--calibration-samples", type=int, default=300)
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128], help="Token counts timed (batch 1).")
    parser.add_argument("--runs", type=int, default=300, help="Timed runs per process and length.")
    parser.add_argument("--rounds", type=int, default=4, help="Processes per model, alternating with the other.")
    parser.add_argument("--out", type=Path, default=Path("bench/out/unsigned-activations"))
    args = parser.parse_args(argv)
    result = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "unsigned_activations.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = table(result)
    (args.out / "unsigned_activations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
