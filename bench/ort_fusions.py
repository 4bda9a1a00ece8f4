"""What the predictor's ONNX Runtime fusions buy: each model with ONNX Runtime's own load-time fusions against
the same model as ``edgesent.sessions`` loads it (``fusions="edgesent"``: no ``SkipLayerNormFusion`` on the CPU).

For every ONNX export directory given, two sessions with the benchmark settings (``SESSION_SETTINGS``), timed
interleaved run by run with ``measure_units`` (all models and both settings in one rotation) in a cell per
``--seq-lens`` length (random token ids, ``--batch`` rows) and, with ``--data``, a cell of consecutive texts at
their own lengths (``--batch`` per run, padded to the longest, encoded by the predictor). The largest logit
difference between the two sessions on those inputs is reported too: the fusion changes float rounding only.

    python bench/ort_fusions.py models/sst2-minilm-onnx-int8 models/sst2-pruned-onnx-int8 \\
        --data ../shared/data/sst2/dev.tsv --runs 300

Writes ``fusions.json`` and ``fusions.md`` to ``--out`` (default ``bench/results/ort-fusions``) and prints the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.artifacts import KIND_ONNX, read_model_dir
from edgesent.bench.machine import machine_info
from edgesent.bench.runners import SESSION_SETTINGS, OrtRunner, measure_units, synthetic_inputs
from edgesent.data import load_dataset
from edgesent.runtime import Predictor
from edgesent.sessions import CPU_UNFUSED, FUSIONS, create_session


DEFAULT_OUT = Path("bench/results/ort-fusions")
SCHEMA = "edgesent.ort-fusions/1"


def _batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+", help="ONNX export directories (edgesent export)")
    parser.add_argument("--data", type=Path, help="texts at their real lengths (CSV/TSV/JSONL)")
    parser.add_argument("--texts", type=int, default=400, help="texts taken from --data (default 400)")
    parser.add_argument("--seq-lens", type=int, nargs="*", default=[16, 32, 64, 128])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200, help="timed rounds per cell (default 200)")
    parser.add_argument("--block", type=int, default=1, help="consecutive inputs per unit and turn (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if min(args.batch, args.threads, args.runs, args.block, args.texts) < 1:
        parser.error("--batch, --threads, --runs, --block and --texts must be >= 1")

    predictors = [Predictor.load(d, "cpu", args.threads, verify=False, **SESSION_SETTINGS) for d in args.models]
    units: dict[tuple[str, str], OrtRunner] = {}
    vocab_sizes = []
    for directory, predictor in zip(args.models, predictors):
        model_dir = read_model_dir(directory, kind=KIND_ONNX, verify=False)
        vocab_sizes.append(int(model_dir.hf_config()["vocab_size"]))
        path = model_dir.model_path
        plain = create_session(path, "cpu", args.threads, fusions="onnxruntime", **SESSION_SETTINGS)
        units[(directory.name, "onnxruntime")] = OrtRunner(plain, io_binding=False)
        units[(directory.name, "edgesent")] = OrtRunner(predictor.session, io_binding=False)

    cells: dict[str, list[dict[str, np.ndarray]]] = {}
    for seq_len in args.seq_lens:
        cells[f"{seq_len} tokens"] = [
            synthetic_inputs(args.batch, seq_len, min(vocab_sizes), seed) for seed in range(4)
        ]
    if args.data is not None:
        texts = load_dataset(args.data).texts[: args.texts]
        feeds = [predictors[0].encode(batch) for batch in _batches(texts, args.batch)]
        cells[f"{args.data.name} texts"] = feeds

    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "unfused_by_edgesent": list(CPU_UNFUSED),
        "settings": {k: getattr(args, k) for k in ("batch", "threads", "runs", "block")},
        "max_abs_logit_diff": {},
        "p50_ms": {},
    }
    for directory in args.models:
        name = directory.name
        pairs = [units[(name, fusions)] for fusions in FUSIONS]
        diffs = [
            np.abs(pairs[0].session.run(None, feed)[0] - pairs[1].session.run(None, feed)[0]).max()
            for feeds in cells.values()
            for feed in feeds[:20]
        ]
        result["max_abs_logit_diff"][name] = float(max(diffs))
    for cell, feeds in cells.items():
        rounds = max(args.runs // args.block, 1)
        samples = measure_units(list(units.values()), feeds, warmup=5, runs=rounds, budget_s=None, block=args.block)
        result["p50_ms"][cell] = {
            f"{name}/{fusions}": round(float(np.median(ns)) / 1e6, 3) for (name, fusions), ns in zip(units, samples)
        }
    table = markdown(result, [d.name for d in args.models])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusions.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "fusions.md").write_text(table)
    print(table)
    return result


def markdown(result: dict[str, Any], names: list[str]) -> str:
    """One row per model and cell: p50 with ONNX Runtime's fusions, with edgesent's, and the speedup."""
    settings = ", ".join(f"{k} {v}" for k, v in result["settings"].items())
    lines = [f"# ONNX Runtime's fusions against edgesent's ({result['created']}; {settings})", ""]
    lines += [
        "| model | cell | onnxruntime p50 ms | edgesent p50 ms | speedup |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for cell, times in result["p50_ms"].items():
        for name in names:
            ort_ms, ours = times[f"{name}/onnxruntime"], times[f"{name}/edgesent"]
            lines.append(f"| {name} | {cell} | {ort_ms} | {ours} | {ort_ms / ours:.3f}x |")
    lines += [
        "",
        "Largest logit difference between the two: "
        + ", ".join(f"{name} {diff:.2e}" for name, diff in result["max_abs_logit_diff"].items())
        + ".",
    ]
    lines += [
        f"Machine: {result['machine']['cpu_model']}; edgesent turns off {', '.join(result['unfused_by_edgesent'])}."
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
