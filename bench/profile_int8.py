"""Where an int8 model's time goes, by operator type: ONNX Runtime's per-operator profiler over a small grid.

For each cell (batch sizes x lengths; default batch 1 and 32, lengths 32 and 128) a fresh profiled session
runs ``--runs`` times on random token ids of exactly that shape; the kernel times of the trace (events of
category ``Node`` named ``*_kernel_time``) are summed per operator type and reported as a share of the
cell's total kernel time. The session options are ``edgesent.sessions.session_options`` with the settings
of ``edgesent bench`` (all graph optimisations, no spinning), plus ``enable_profiling``; the operator types
are those of the optimised graph ORT actually ran (e.g. ``MatMulIntegerToFloat``, ``DynamicQuantizeLinear``).

    python bench/profile_int8.py models/sst2-minilm-onnx-int8 --threads 1 --runs 20

Writes ``profile.json`` and ``profile.md`` to ``--out`` (default ``bench/results/profile-int8``) and prints
the table. Profiling adds overhead per node; the shares are what it is for, not the absolute times.
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgesent.sessions import FUSIONS


DEFAULT_OUT = Path("bench/results/profile-int8")
SCHEMA = "edgesent.profile/1"
TOP_OPS = 8  # columns of the Markdown table; the rest are summed into "other"


def op_times(trace: list[dict[str, Any]]) -> dict[str, float]:
    """Microseconds of kernel time per operator type in an ORT profile trace (the JSON list of events).

    Args:
        trace: The events of the file ``InferenceSession.end_profiling()`` names.

    Returns:
        op type -> summed ``dur`` (us) of its ``*_kernel_time`` node events, largest first.
    """
    totals: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            totals[str(event.get("args", {}).get("op_name", "?"))] += float(event.get("dur", 0))
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def profile_cell(
    model_path: Path, batch: int, seq_len: int, threads: int, runs: int, vocab: int, fusions: str = "edgesent"
) -> dict[str, Any]:
    """Profile ``runs`` runs of one (batch, length) cell in a fresh session, after one run left out.

    The session is built from ``edgesent.sessions.session_options`` (the benchmark settings, and the load-time
    fusions ``fusions`` names) with profiling on: ``create_session`` takes no profiling switch, and the options
    are what make sessions comparable.
    """
    from edgesent.bench.runners import SESSION_SETTINGS, synthetic_inputs
    from edgesent.sessions import CPU_PROVIDER, disabled_fusions, session_options

    feeds = synthetic_inputs(batch, seq_len, vocab, 0)
    options = session_options(
        threads, **SESSION_SETTINGS, disabled_optimizers=disabled_fusions(fusions, [CPU_PROVIDER])
    )
    options.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="edgesent-profile-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model_path), options, providers=[CPU_PROVIDER])
        feed = {i.name: feeds[i.name] for i in session.get_inputs()}
        for _ in range(runs + 1):
            session.run(None, feed)
        trace = json.loads(Path(session.end_profiling()).read_text())
    # The first run pays allocation and weight prepacking: its events are left out.
    first = min((e for e in trace if e.get("name") == "model_run"), key=lambda e: e["ts"], default=None)
    end_of_first = first["ts"] + first["dur"] if first else -1
    counted = [e for e in trace if e.get("ts", 0) > end_of_first]
    totals = op_times(counted)
    total = sum(totals.values()) or 1.0
    return {
        "batch": batch,
        "seq_len": seq_len,
        "threads": threads,
        "runs": runs,
        "kernel_ms_per_run": total / runs / 1e3,
        "op_us": totals,
        "op_share": {op: us / total for op, us in totals.items()},
    }


def markdown(cells: list[dict[str, Any]]) -> str:
    """One row per cell: % of kernel time for the operator types that take the most overall, then the rest."""
    overall: dict[str, float] = defaultdict(float)
    for cell in cells:
        for op, share in cell["op_share"].items():
            overall[op] += share
    ops = [op for op, _ in sorted(overall.items(), key=lambda kv: -kv[1])[:TOP_OPS]]
    lines = [
        "| batch | length | kernel ms/run | " + " | ".join(ops) + " | other |",
        "| ---: | ---: | ---: | " + " | ".join("---:" for _ in ops) + " | ---: |",
    ]
    for cell in cells:
        shares = [cell["op_share"].get(op, 0.0) for op in ops]
        other = max(0.0, 1.0 - sum(shares))
        lines.append(
            f"| {cell['batch']} | {cell['seq_len']} | {cell['kernel_ms_per_run']:.2f} | "
            + " | ".join(f"{s:.1%}" for s in shares)
            + f" | {other:.1%} |"
        )
    return "\n".join(lines) + "\n"


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("model", type=Path, help="an int8 export directory (edgesent export --int8) or .onnx file")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 32])
    parser.add_argument("--seq-lens", type=_int_list, default=[32, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20, help="profiled runs per cell (default 20)")
    parser.add_argument(
        "--fusions",
        choices=FUSIONS,
        default="edgesent",
        help="load-time fusions: the predictor's (default) or all of ONNX Runtime's",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1:
        parser.error("--runs and --threads must be >= 1")
    model_path, vocab = args.model, 30522
    if args.model.is_dir():
        from edgesent.artifacts import KIND_ONNX, read_model_dir

        model = read_model_dir(args.model, kind=KIND_ONNX)
        model_path = model.model_path
        vocab = int(json.loads((model.path / "config.json").read_text()).get("vocab_size", vocab))
    cells = [
        profile_cell(model_path, batch, seq_len, args.threads, args.runs, vocab, args.fusions)
        for batch in args.batch_sizes
        for seq_len in args.seq_lens
    ]
    from edgesent.bench.machine import machine_info

    result = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": str(model_path),
        "onnxruntime": ort.__version__,
        "fusions": args.fusions,
        "machine": machine_info(),
        "cells": cells,
    }
    table = markdown(cells)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "profile.md").write_text(f"# Time by operator type: {model_path}\n\n{table}")
    print(table)
    return result


if __name__ == "__main__":
    main()
