"""``run_benchmark``: the one entry point that checks everything, measures every cell, and evaluates the result.

Everything that can fail is checked before the first timed run (the config, the model directories, the gate
file and its variant names, the baseline, CUDA, the real-text file, the report directory), so a mistake costs
seconds, not a whole measurement. Then the cells are measured group by group, one set of sessions per
(provider, threads, source), and speedups, GOP/s and the fraction of the GEMM peak are filled in.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from edgesent.artifacts import KIND_PYTORCH, RUNTIME_OPENVINO
from edgesent.bench.config import (
    SOURCE_DATA,
    SOURCE_SYNTHETIC,
    BenchConfig,
    Cell,
    measures_grid,
    plan_cells,
    skipped_default_lengths,
)
from edgesent.bench.gates import (
    GateRule,
    check_rule_names,
    compare_to_baseline,
    load_baseline,
    load_gate_file,
    ratio,
    row_key,
)
from edgesent.bench.machine import machine_info, measure_gemm_peak, measure_peak_rss
from edgesent.bench.report import BenchResult, check_report_dir, write_report
from edgesent.bench.runners import (
    RunnerPool,
    UnitRunError,
    Variant,
    check_cuda,
    load_variant,
    measure_units,
    summarize_latencies,
    synthetic_inputs,
)
from edgesent.errors import ConfigError, DataError
from edgesent.flops import position_limit


logger = logging.getLogger(__name__)

MAX_DATA_BATCHES = 256  # distinct real-text batches per cell, encoded up front


def _load_texts(cfg: BenchConfig) -> list[str]:
    from edgesent.data import load_dataset

    assert cfg.data_path is not None
    texts = load_dataset(cfg.data_path, text_column=cfg.text_column, label_column=None, skip_empty=True).texts
    if not texts:
        raise DataError(f"{cfg.data_path}: no non-empty texts to time")
    return texts


def _cell_inputs(cell: Cell, texts: list[str], vocab_size: int, seed: int) -> list[Any]:
    if cell.source == SOURCE_SYNTHETIC:
        assert cell.seq_len is not None
        return [synthetic_inputs(cell.batch_size, cell.seq_len, vocab_size, seed)]
    n_batches = min(math.ceil(len(texts) / cell.batch_size), MAX_DATA_BATCHES)
    cycle = itertools.cycle(texts)
    return [[next(cycle) for _ in range(cell.batch_size)] for _ in range(n_batches)]


def _position_limit(variants: Sequence[Variant]) -> tuple[int, str] | None:
    """(the fewest tokens the variants' positions allow, whose it is); None when none declares a limit."""
    limits = [(position_limit(v.hf_config), v.name) for v in variants]
    return min(((n, name) for n, name in limits if isinstance(n, int)), key=lambda t: t[0], default=None)


def _check_lengths(limit: tuple[int, str] | None, cells: Sequence[Cell]) -> None:
    """Refuse lengths the user or a gate rule asked for that the model cannot take (default ones were left out)."""
    longest = max((c.seq_len for c in cells if c.seq_len is not None), default=0)
    if limit is not None and longest > limit[0]:
        raise ConfigError(f"seq_lens: {longest} exceeds the {limit[0]} positions of {limit[1]}; use shorter lengths")


def _skipped_lengths_notes(cfg: BenchConfig, rules: Sequence[GateRule], limit: tuple[int, str] | None) -> list[str]:
    """A note naming the default lengths left out of the grid, so a reader knows why they have no rows."""
    if limit is None or not measures_grid(cfg, rules):
        return []
    skipped = skipped_default_lengths(cfg, limit[0])
    if not skipped:
        return []
    lengths = ", ".join(map(str, skipped))
    return [f"default seq_lens {lengths} skipped: beyond the {limit[0]} positions of {limit[1]}"]


def _runtime_notes(variants: Sequence[Variant], cells: Sequence[Cell]) -> list[str]:
    """A note for each OpenVINO export measured without an ``openvino`` cell: ONNX Runtime runs its QDQ graph,
    slower than the runtime it ships for, so its figures would mislead without one."""
    if any(c.provider == RUNTIME_OPENVINO for c in cells):
        return []
    return [
        f"{v.name} was exported for OpenVINO: these cells run it on ONNX Runtime, slower than it ships; "
        "add --provider openvino to time it on OpenVINO"
        for v in variants
        if v.runtime == RUNTIME_OPENVINO
    ]


def _add_ratios(
    rows: list[dict[str, Any]], reference: str, variants: dict[str, Variant], peaks: dict[str, dict[str, Any]] | None
) -> None:
    """Fill speedup (p50 of the reference / p50 of the row, same cell and mode), GOP/s and fraction of peak."""
    by_key = {row_key(r): r for r in rows}
    for row in rows:
        ref = by_key.get((reference, *row_key(row)[1:]))
        row["speedup"] = ratio(ref["p50_ms"], row["p50_ms"]) if ref is not None else None
        row["gops"] = row["peak_fraction"] = None
        if row["source"] != SOURCE_SYNTHETIC or row["p50_ms"] <= 0:
            continue  # real texts vary in padded length: no exact operation count
        flops = variants[row["variant"]].flops(row["batch_size"], row["seq_len"])
        if flops is None:
            continue
        row["gops"] = flops / (row["p50_ms"] / 1e3) / 1e9
        peak = (peaks or {}).get(str(row["threads"])) if row["provider"] == "cpu" else None
        precision = variants[row["variant"]].precision
        if peak is not None and precision in ("fp32", "int8"):
            row["peak_fraction"] = row["gops"] / peak[f"{precision}_gops"]


def _measure_cells(
    cfg: BenchConfig, variants: list[Variant], cells: list[Cell], texts: list[str]
) -> list[dict[str, Any]]:
    """One row per variant, cell and mode; cells grouped so each group's sessions are built once, up front."""
    vocab_size = min(int(v.hf_config.get("vocab_size", 2)) for v in variants)
    pool = RunnerPool(variants)
    rows: list[dict[str, Any]] = []
    progress = tqdm(total=len(cells), desc="bench cells", unit="cell", disable=None, leave=False)
    for (provider, threads, source), group in itertools.groupby(
        cells, key=lambda c: (c.provider, c.threads, c.source)
    ):
        units = pool.units(provider, threads, source)
        for cell in group:
            logger.info("measuring %s", cell.describe())
            inputs = _cell_inputs(cell, texts, vocab_size, cfg.seed)
            try:
                samples = measure_units([u[2] for u in units], inputs, cfg.warmup, cfg.runs, cfg.time_budget_s)
            except UnitRunError as err:
                name, mode = units[err.index][:2]
                raise ConfigError(
                    f"{name} ({mode}) failed to run the cell {cell.describe()}: {err.brief()}; "
                    "try smaller --batch-sizes or --seq-lens"
                ) from err
            for (name, mode, _), timings in zip(units, samples):
                row = {
                    "variant": name,
                    "provider": provider,
                    "threads": threads,
                    "batch_size": cell.batch_size,
                    "seq_len": cell.seq_len,
                    "source": source,
                    "mode": mode,
                }
                rows.append({**row, **summarize_latencies(timings, cell.batch_size)})
            progress.update()
        del units  # free this group's sessions before the next group's are created
    progress.close()
    return rows


def run_benchmark(cfg: BenchConfig) -> BenchResult:
    """Measure every variant in every cell, then evaluate gates and the baseline, and write the report.

    Gate and baseline failures do not raise here, so callers can print or save the full result
    first; call ``BenchResult.raise_for_failures()`` to turn them into an exit status.

    Args:
        cfg: What to measure; see BenchConfig.

    Returns:
        BenchResult with rows (one per variant, cell and mode), machine info, GEMM peak and outcomes.

    Raises:
        ModelError: a directory is not an edgesent model. ConfigError: bad gate file, unknown
        variant names in rules, unavailable provider, lengths given beyond the model, a report directory
        that exists (without ``overwrite``) or may not be replaced (not a bench report). DataError: bad
        ``--data`` or baseline file. MissingDependencyError: torch for PyTorch variants, matplotlib for
        ``--report``. All of them before anything is measured; only a cell the runtime cannot run (out of
        memory, a shape it refuses) raises ConfigError while measuring, naming the variant and the cell.
    """
    check_report_dir(cfg)
    names = cfg.variant_names
    variants = [load_variant(path, name) for path, name in zip(cfg.model_dirs, names)]
    reference = cfg.reference or names[0]
    if any(v.kind == KIND_PYTORCH for v in variants):
        from edgesent._imports import require_train_extra

        require_train_extra("bench (PyTorch variants)")
    baseline = load_baseline(cfg.baseline_path) if cfg.baseline_path is not None else None
    rules = load_gate_file(cfg.gate_path) if cfg.gate_path is not None else []
    check_rule_names(rules, names, cfg.gate_path)
    machine = machine_info()
    applicable = [rule for rule in rules if rule.applies_to(machine)]
    limit = _position_limit(variants)
    cells = plan_cells(cfg, applicable, machine, max_seq_len=limit[0] if limit is not None else None)
    _check_lengths(limit, cells)
    if any(c.provider == "cuda" for c in cells):
        check_cuda(variants)
    texts = _load_texts(cfg) if any(c.source == SOURCE_DATA for c in cells) else []
    notes = _runtime_notes(variants, cells) + _skipped_lengths_notes(cfg, applicable, limit)
    if any(c.threads > (machine["usable_cores"] or 1) for c in cells):
        notes.append(f"thread counts above the {machine['usable_cores']} usable cores oversubscribe the CPU")

    peaks = None
    cpu_threads = sorted({c.threads for c in cells if c.provider == "cpu"})
    if cfg.measure_peak and cpu_threads:
        if importlib.util.find_spec("onnx") is None:
            notes.append("GEMM peak not measured: the onnx package is missing (pip install onnx)")
        else:
            peaks = {str(t): measure_gemm_peak(t) for t in cpu_threads}
    rows = _measure_cells(cfg, variants, cells, texts)
    _add_ratios(rows, reference, {v.name: v for v in variants}, peaks)
    if cfg.measure_rss:  # at the largest synthetic shape (else the largest real-text batch, at max_length)
        cell = max(cells, key=lambda c: (c.source == SOURCE_SYNTHETIC, c.batch_size * (c.seq_len or 1)))
        for v in variants:
            seq_len = cell.seq_len or v.max_length
            v.peak_rss_mb = measure_peak_rss(v, cell.provider, cell.threads, cell.batch_size, seq_len)
    machine["torch"] = machine["versions"].get("torch") if "torch" in sys.modules else None

    result = BenchResult(cfg.to_dict(), machine, [v.to_dict() for v in variants], reference, peaks, rows, notes=notes)
    result.gates = [rule.evaluate(rows, machine) for rule in rules]
    if baseline is not None:
        result.regression = compare_to_baseline(rows, baseline["rows"], cfg.tolerance)
        baseline_cpu = baseline.get("machine", {}).get("cpu_model")
        if baseline_cpu != machine["cpu_model"]:
            notes.append(f"baseline was measured on {baseline_cpu!r}, not on this {machine['cpu_model']!r}")
        if not result.regression:
            notes.append("baseline has no cell in common with this run (same variant names and cells needed)")
    if cfg.report_dir is not None:
        write_report(result, cfg)
    return result
