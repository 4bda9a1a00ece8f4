"""Latency benchmark for edgesent model directories, and the latency gates CI enforces.

All variants (PyTorch directories and exported ONNX directories: fp32, optimised, int8, pruned, fp16)
are measured side by side in one process, interleaved run by run, so that drift on a noisy machine
(another job, thermal throttling, a frequency change) hits every variant alike and the *ratios*
between them stay trustworthy even when the absolute figures do not. That is why gates are ratios
measured in the same run; absolute budgets are accepted only for named GPU hardware.

One concern per module:

- ``config``: ``BenchConfig`` (validated, to/from dict), the grid's ``Cell`` and ``plan_cells``. Light.
- ``gates``: gate files (``GateRule``), result-row lookup and the baseline comparison. Light: no numpy,
  no onnxruntime, so gates can be parsed and evaluated anywhere.
- ``runners``: model variants, the timed units (bare ORT session, predictor end to end, PyTorch) and the
  interleaved measuring loop. Every ORT session comes from ``edgesent.sessions`` with one set of settings.
- ``machine``: CPU and GPU facts, the achieved GEMM peak, peak RSS in a child process.
- ``report``: ``BenchResult``, its JSON, the text tables and the report directory.
- ``run``: ``run_benchmark``, which checks everything up front, then measures.

This package's namespace resolves names lazily, so ``import edgesent.bench.gates`` (or ``.config``)
imports neither numpy nor onnxruntime; torch and transformers are imported only when a PyTorch variant is
benchmarked, onnx when the GEMM peak is measured, matplotlib when a report is written.
"""

from __future__ import annotations

import importlib
from typing import Any


_LAZY = {
    "BenchConfig": "config",
    "Cell": "config",
    "plan_cells": "config",
    "GateRule": "gates",
    "compare_to_baseline": "gates",
    "load_gate_file": "gates",
    "parse_gate_rules": "gates",
    "BenchResult": "report",
    "summary_lines": "report",
    "summary_table": "report",
    "write_report": "report",
    "MIN_BUDGET_ROUNDS": "runners",
    "session_options": "runners",
    "summarize_latencies": "runners",
    "synthetic_inputs": "runners",
    "machine_info": "machine",
    "measure_gemm_peak": "machine",
    "run_benchmark": "run",
}

__all__ = list(_LAZY)  # the lazily resolved names are the public API


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgesent.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgesent.bench.{module}"), name)
