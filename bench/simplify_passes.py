"""Which ``edgesent.simplify`` passes make each runtime's int8 fastest: every subset of passes asked for, applied
to one plain fp32 export, quantized for each runtime and timed against the others on that runtime.

For each ``--passes`` subset (comma-separated pass names; an empty string: none) the script simplifies the
plain export (``edgesent export --no-simplify``) with ``simplify_model(model, passes)`` and builds:

- for ``onnxruntime``: ONNX Runtime's dynamic int8 with this CPU's preset (``quantize_model``), run as the
  predictor runs it (``create_session``, the benchmark's settings);
- for ``openvino``: NNCF's static int8 (``quantize_nncf``, edgesent's preset) calibrated on the first
  ``--calibration-samples`` texts of ``--calibration-data``, run on OpenVINO.

The variants of one runtime are timed interleaved (``measure_units``), batch 1, one thread, at ``--seq-len``
random tokens and on the texts of ``--data`` at their own lengths, once per ``--blocks`` value (consecutive
inputs per variant and turn). Runtimes are timed apart: one runtime's run slows the next one's
(``bench/README.md``). Accuracy is each variant's on all of ``--data``, one text at a time.

    python bench/simplify_passes.py models/sst2-minilm-onnx-plain --calibration-data ../shared/data/sst2/train.tsv \\
        --data ../shared/data/sst2/dev.tsv --runs 400

Writes ``passes.json`` and ``passes.md`` to ``--out`` (default ``bench/results/simplify-passes``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgesent.artifacts import KIND_ONNX, RUNTIME_OPENVINO, read_model_dir
from edgesent.bench.machine import machine_info
from edgesent.bench.runners import SESSION_SETTINGS, OrtRunner, measure_units, synthetic_inputs
from edgesent.config.quantize import QuantizeConfig
from edgesent.data import load_dataset
from edgesent.quantize import quantize_model, quantize_nncf
from edgesent.runtime import Predictor
from edgesent.sessions import create_session
from edgesent.simplify import PASSES, simplify_model


DEFAULT_OUT = Path("bench/results/simplify-passes")
DEFAULT_SUBSETS = ["", "fold_shapes", "fold_shapes,fold_scales", "fold_shapes,merge_matmuls", ",".join(PASSES)]
RUNTIMES = ("onnxruntime", RUNTIME_OPENVINO)
SCHEMA = "edgesent.simplify-passes/1"


def _label(passes: tuple[str, ...]) -> str:
    return "+".join(passes) or "none"


def _build(
    plain: onnx.ModelProto, passes: tuple[str, ...], runtime: str, calibration: list[dict[str, np.ndarray]], out: Path
) -> tuple[Path, int]:
    """The int8 model of ``runtime`` from ``plain`` simplified with ``passes``: its path and node count."""
    model = copy.deepcopy(plain)
    simplify_model(model, passes)
    target = out / f"{_label(passes)}.{runtime}.onnx"
    if runtime == RUNTIME_OPENVINO:
        quantized, _ = quantize_nncf(model, calibration)
        onnx.save(quantized, str(target))
    else:  # ONNX Runtime's quantizer reads a file
        fp32 = out / f"{_label(passes)}.fp32.onnx"
        onnx.save(model, str(fp32))
        quantize_model(fp32, target, QuantizeConfig.for_target(smooth_alpha=0.0))
        fp32.unlink()
    return target, len(onnx.load(str(target), load_external_data=False).graph.node)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("plain", type=Path, help="an fp32 export directory made with edgesent export --no-simplify")
    parser.add_argument("--data", type=Path, required=True, help="labelled texts (CSV/TSV/JSONL): timing, accuracy")
    parser.add_argument("--calibration-data", type=Path, help="texts NNCF calibrates on (needed for openvino)")
    parser.add_argument("--calibration-samples", type=int, default=300)
    parser.add_argument("--runtime", action="append", choices=RUNTIMES, help="repeatable (default: both)")
    parser.add_argument("--passes", action="append", help=f"a comma-separated subset of {', '.join(PASSES)}")
    parser.add_argument("--texts", type=int, default=400, help="texts of --data timed (default 400)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--runs", type=int, default=400, help="timed runs per variant and cell (default 400)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    runtimes = args.runtime or list(RUNTIMES)
    subsets = [tuple(p for p in s.split(",") if p) for s in (args.passes or DEFAULT_SUBSETS)]
    if RUNTIME_OPENVINO in runtimes and args.calibration_data is None:
        parser.error("--calibration-data is needed for the openvino runtime")
    if min(args.runs, args.texts, args.seq_len, args.calibration_samples, *args.blocks) < 1:
        parser.error("--runs, --texts, --seq-len, --calibration-samples and --blocks must be >= 1")

    source = read_model_dir(args.plain, kind=KIND_ONNX, verify=False)
    predictor = Predictor.load(args.plain, "cpu", 1, verify=False)
    plain = onnx.load(str(source.model_path))
    data = load_dataset(args.data)
    feeds = [predictor.encode([text]) for text in data.texts]
    calibration = []
    if args.calibration_data is not None:
        texts = load_dataset(args.calibration_data).texts[: args.calibration_samples]
        calibration = [predictor.encode([text]) for text in texts]
    vocab = int(source.hf_config()["vocab_size"])
    cells = {
        f"{args.seq_len} tokens": [synthetic_inputs(1, args.seq_len, vocab, seed) for seed in range(4)],
        f"{args.data.name} texts": feeds[: args.texts],
    }
    work = args.out / "models"
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {k: getattr(args, k) for k in ("seq_len", "texts", "runs", "blocks", "calibration_samples")},
        "rows": [],
    }
    for runtime in runtimes:
        sessions, rows = [], []
        for passes in subsets:
            path, nodes = _build(plain, passes, runtime, calibration, work)
            session = create_session(path, runtime if runtime == RUNTIME_OPENVINO else "cpu", 1, **SESSION_SETTINGS)
            predicted = [predictor.labels[int(np.argmax(session.run(None, feed)[0]))] for feed in feeds]
            accuracy = float(np.mean([str(p) == str(label) for p, label in zip(predicted, data.labels)]))
            sessions.append(session)
            rows.append(
                {"runtime": runtime, "passes": list(passes), "nodes": nodes, "accuracy": accuracy, "p50_ms": {}}
            )
        units = [OrtRunner(session, io_binding=False) for session in sessions]
        for block in args.blocks:
            for cell, inputs in cells.items():
                samples = measure_units(units, inputs, 5, max(args.runs // block, 1), None, block)
                for row, ns in zip(rows, samples):
                    row["p50_ms"][f"{cell}, block {block}"] = round(float(np.median(ns)) / 1e6, 3)
        result["rows"] += rows
    for path in work.iterdir():
        path.unlink()
    work.rmdir()
    table = markdown(result)
    (args.out / "passes.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "passes.md").write_text(table)
    print(table)
    return result


def markdown(result: dict[str, Any]) -> str:
    """One row per runtime and subset of passes: node count, p50 per cell and block, accuracy."""
    cells = list(result["rows"][0]["p50_ms"]) if result["rows"] else []
    lines = [f"# simplify passes by runtime, int8 ({result['created']}; p50 ms, batch 1, one thread)", ""]
    lines += ["| runtime | passes | nodes | " + " | ".join(cells) + " | accuracy |"]
    lines += ["| --- | --- | ---: | " + " | ".join("---:" for _ in cells) + " | ---: |"]
    for row in result["rows"]:
        times = " | ".join(str(row["p50_ms"][cell]) for cell in cells)
        passes = _label(tuple(row["passes"]))
        lines.append(f"| {row['runtime']} | {passes} | {row['nodes']} | {times} | {100 * row['accuracy']:.2f} |")
    lines += ["", f"Machine: {result['machine']['cpu_model']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
