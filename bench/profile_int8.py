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

For an export directory (whose config gives the FLOPs), each cell is also timed without the profiler and set
against ONNX Runtime's int8 and fp32 GEMM peaks measured in the same run (``edgesent.bench.measure_gemm_peak``):
the fraction of the int8 peak the model reaches (as ``edgesent bench`` counts it), what its int8 GEMMs and its
fp32 attention products reach of their own peaks, and a ceiling: the fraction the model would reach with every
matrix product at its peak and everything else (softmax, LayerNorm, Gelu, transposes, ...) as measured. The
time left for everything else if the model is to reach ``TARGET_PEAK_FRACTION`` says whether that goal is a
matter of faster GEMMs at all.
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
# The kernels of the int8 GEMMs in ONNX Runtime's optimised graph, the quantization of their activations included.
INT8_GEMM_OPS = frozenset(
    {
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "MatMulInteger",
        "DynamicQuantizeLinear",
        "QGemm",
        "QLinearMatMul",
    }
)
# fp32 products; in a default int8 export these are attention's products of activations, which have no weight.
FP32_PRODUCT_OPS = frozenset({"MatMul", "FusedMatMul"})
TARGET_PEAK_FRACTION = 0.70  # issue 16's goal for the dense int8 model


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


def wall_ms(model_path: Path, batch: int, seq_len: int, threads: int, runs: int, vocab: int, fusions: str) -> float:
    """p50 ms of ``runs`` unprofiled runs of one cell, in a session like the profiled one (its settings, fusions)."""
    from edgesent.bench.runners import (
        SESSION_SETTINGS,
        OrtRunner,
        measure_units,
        summarize_latencies,
        synthetic_inputs,
    )
    from edgesent.sessions import create_session

    session = create_session(model_path, "cpu", threads, **SESSION_SETTINGS, fusions=fusions)
    (samples,) = measure_units(
        [OrtRunner(session, io_binding=False)], [synthetic_inputs(batch, seq_len, vocab, 0)], 3, runs, None
    )
    return float(summarize_latencies(samples, batch)["p50_ms"])


def ceiling(
    op_share: dict[str, float], flops: dict[str, int], wall: float, peak: dict[str, Any]
) -> dict[str, float | None]:
    """How near the int8 GEMM peak one cell is, and how near it could get with every matrix product at its peak.

    The profile's shares, applied to the unprofiled time ``wall`` (ms), split it three ways: int8 GEMMs
    (``INT8_GEMM_OPS``), fp32 products (``FP32_PRODUCT_OPS``) and the rest. The ceiling moves the first two to
    the peaks ``peak`` gives (``measure_gemm_peak``) and keeps the rest: no GEMM kernel can do better than that.

    Args:
        op_share: operator type -> share of kernel time (``profile_cell``).
        flops: ``edgesent.flops.flops_by_kind`` at the cell's shape.
        wall: unprofiled p50 ms of the cell.
        peak: ``int8_gops`` and ``fp32_gops``.

    Returns:
        ``peak_fraction`` (all FLOPs / wall / int8 peak, as ``edgesent bench`` counts it), ``gemm_fraction``
        and ``product_fraction`` (each kind's rate over its own peak; None where it did not run),
        ``rest_ms``, ``ceiling_fraction``, and ``rest_budget_ms``: the time the rest may take for the model to
        reach ``TARGET_PEAK_FRACTION`` with the products at peak (negative: out of reach even with no rest).
    """
    int8_per_ms, fp32_per_ms = peak["int8_gops"] * 1e6, peak["fp32_gops"] * 1e6  # FLOPs per ms
    gemm_share = sum(share for op, share in op_share.items() if op in INT8_GEMM_OPS)
    product_share = sum(share for op, share in op_share.items() if op in FP32_PRODUCT_OPS)
    total = flops["weights"] + flops["attention"]
    products_at_peak = flops["weights"] / int8_per_ms + flops["attention"] / fp32_per_ms
    rest = (1.0 - gemm_share - product_share) * wall

    def rate(work: int, share: float, per_ms: float) -> float | None:
        return work / (share * wall) / per_ms if share > 0 else None  # no kernel of that kind ran

    return {
        "peak_fraction": total / wall / int8_per_ms,
        "gemm_fraction": rate(flops["weights"], gemm_share, int8_per_ms),
        "product_fraction": rate(flops["attention"], product_share, fp32_per_ms),
        "rest_ms": rest,
        "ceiling_fraction": total / (products_at_peak + rest) / int8_per_ms,
        "rest_budget_ms": total / (TARGET_PEAK_FRACTION * int8_per_ms) - products_at_peak,
    }


def ceiling_markdown(cells: list[dict[str, Any]], peak: dict[str, Any]) -> str:
    """One row per cell with a ``ceiling``: where the model stands against the GEMM peaks of the same run."""
    machine = (
        f"int8 GEMM peak {peak['int8_gops']:.0f} GOP/s, fp32 {peak['fp32_gops']:.0f} GOP/s "
        f"({' x '.join(str(d) for d in peak['shape'])}, {peak['threads']} thread(s))."
    )
    header = (
        "| batch | length | ms (p50) | model, % of int8 peak | int8 GEMMs, % of int8 peak "
        "| attention products, % of fp32 peak | rest ms | ceiling, % of int8 peak "
        f"| rest ms allowed for {TARGET_PEAK_FRACTION:.0%} |"
    )
    lines = [machine, "", header, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for cell in cells:
        c = cell.get("ceiling")
        if c is None:
            continue
        pct = {k: "-" if v is None else f"{v:.1%}" for k, v in c.items()}
        lines.append(
            f"| {cell['batch']} | {cell['seq_len']} | {cell['wall_ms']:.2f} | {pct['peak_fraction']} "
            f"| {pct['gemm_fraction']} | {pct['product_fraction']} | {c['rest_ms']:.2f} "
            f"| {pct['ceiling_fraction']} | {c['rest_budget_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


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
    model_path, hf_config = args.model, {}
    if args.model.is_dir():
        from edgesent.artifacts import KIND_ONNX, read_model_dir

        model = read_model_dir(args.model, kind=KIND_ONNX)
        model_path = model.model_path
        hf_config = json.loads((model.path / "config.json").read_text())
    vocab = int(hf_config.get("vocab_size", 30522))
    cells = [
        profile_cell(model_path, batch, seq_len, args.threads, args.runs, vocab, args.fusions)
        for batch in args.batch_sizes
        for seq_len in args.seq_lens
    ]
    from edgesent.bench.machine import machine_info, measure_gemm_peak
    from edgesent.flops import flops_by_kind

    splits = [flops_by_kind(hf_config, cell["batch"], cell["seq_len"]) for cell in cells]
    peak = measure_gemm_peak(args.threads) if any(splits) else None  # no config (a bare .onnx file): no ceiling
    for cell, flops in zip(cells, splits):
        if peak is not None and flops is not None:
            cell["wall_ms"] = wall_ms(
                model_path, cell["batch"], cell["seq_len"], args.threads, args.runs, vocab, args.fusions
            )
            cell["ceiling"] = ceiling(cell["op_share"], flops, cell["wall_ms"], peak)
    result = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": str(model_path),
        "onnxruntime": ort.__version__,
        "fusions": args.fusions,
        "machine": machine_info(),
        "gemm_peak": peak,
        "cells": cells,
    }
    table = markdown(cells) + ("\n" + ceiling_markdown(cells, peak) if peak is not None else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "profile.md").write_text(f"# Time by operator type: {model_path}\n\n{table}")
    print(table)
    return result


if __name__ == "__main__":
    main()
