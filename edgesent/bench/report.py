"""What a benchmark run hands back and writes: ``BenchResult``, its JSON, the tables and the report directory.

Light apart from the plot: the result, its ``--json`` document and the text tables need the stdlib only;
matplotlib is imported when ``--report`` draws its PNG. The report directory is an artifact like a model
directory: written atomically, and carrying an ``edgesent.json`` manifest (kind ``bench-report``), so
``--overwrite`` may replace it later and nothing else.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesent.artifacts import atomic_output_dir, check_output_dir, write_manifest
from edgesent.bench.config import SOURCE_SYNTHETIC
from edgesent.bench.gates import SCHEMA, row_cell
from edgesent.errors import BenchmarkGateError, MissingDependencyError


if TYPE_CHECKING:
    from edgesent.bench.config import BenchConfig

REPORT_KIND = "bench-report"
CONFIG_NAME = "edgesent_config.json"
RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"
PLOT_NAME = "latency_vs_length.png"
BENCH_EXTRA = "pip install 'edgesent[bench]'"


@dataclass
class BenchResult:
    """Everything one run measured, with the outcome of its gates and baseline comparison."""

    config: dict[str, Any]
    machine: dict[str, Any]
    variants: list[dict[str, Any]]
    reference: str
    gemm_peak: dict[str, dict[str, Any]] | None
    rows: list[dict[str, Any]]
    gates: list[dict[str, Any]] = field(default_factory=list)
    regression: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def failures(self) -> list[str]:
        """One line per failed gate rule or regressed cell, with the measured figure and the bound."""
        lines = [f"gate {g['name']!r}: {g['message']}" for g in self.gates if g["status"] == "fail"]
        for r in self.regression:
            if r["status"] == "fail":
                lines.append(
                    f"regression {r['variant']} [{row_cell(r).describe()}, {r['mode']}]: p50 {r['p50_ms']:.3f} ms "
                    f"vs baseline {r['baseline_p50_ms']:.3f} ms ({r['change']:+.1%}, "
                    f"tolerance +{self.config['tolerance']:.1%})"
                )
        return lines

    @property
    def passed(self) -> bool:
        """True when no gate rule failed and no cell regressed (skipped rules do not count)."""
        return not self.failures()

    def raise_for_failures(self) -> None:
        """Raise BenchmarkGateError (exit code 1) listing every failed rule and regressed cell.

        Raises:
            BenchmarkGateError: when any gate rule failed or any cell regressed beyond the tolerance.
        """
        lines = self.failures()
        if lines:
            raise BenchmarkGateError(f"{len(lines)} latency check(s) failed:\n  " + "\n  ".join(lines))

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document (schema ``edgesent.bench/1``), also a valid ``--baseline``."""
        return {"schema": SCHEMA, "passed": self.passed, **asdict(self)}


def _optional(value: Any, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def summary_table(result: BenchResult) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the per-cell table, as strings, shared by the terminal and the Markdown report."""
    headers = [
        "variant",
        "provider",
        "threads",
        "batch",
        "seq_len",
        "mode",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "texts/s",
        "speedup",
        "GOP/s",
        "% peak",
    ]
    rows = []
    for r in result.rows:
        rows.append(
            [
                r["variant"],
                r["provider"],
                str(r["threads"]),
                str(r["batch_size"]),
                "data" if r["seq_len"] is None else str(r["seq_len"]),
                r["mode"],
                f"{r['p50_ms']:.3f}",
                f"{r['p90_ms']:.3f}",
                f"{r['p99_ms']:.3f}",
                f"{r['throughput']:.1f}",
                _optional(r["speedup"], ".2f", "x"),
                _optional(r["gops"], ".1f"),
                _optional(r["peak_fraction"], ".0%"),
            ]
        )
    return headers, rows


def summary_lines(result: BenchResult) -> list[str]:
    """Machine, GEMM peak, memory, gates, regression and notes, one line each, for people."""
    m = result.machine
    lines = [
        f"machine: {m['cpu_model']} ({m['usable_cores']} usable / {m['logical_cores']} logical cores; "
        f"{' '.join(m['cpu_flags']) or 'no ISA flags read'}); onnxruntime {m['onnxruntime']}"
        + (f"; torch {m['torch']}" if m["torch"] else "")
        + (f"; GPU {', '.join(m['gpus'])}" if m["gpus"] else ""),
        f"reference: {result.reference}",
    ]
    for peak in (result.gemm_peak or {}).values():
        lines.append(
            f"GEMM peak {'x'.join(map(str, peak['shape']))}, {peak['threads']} thread(s): "
            f"fp32 {peak['fp32_gops']:.1f} GOP/s, int8 {peak['int8_gops']:.1f} GOP/s"
        )
    for v in result.variants:
        rss = f"{v['peak_rss_mb']:.0f} MB peak RSS" if v["peak_rss_mb"] is not None else "peak RSS not measured"
        lines.append(f"{v['name']}: {v['kind']} {v['precision']}{' pruned' if v['pruned'] else ''}, {rss}")
    for g in result.gates:
        lines.append(f"gate {g['status'].upper()} {g['name']!r}: {g['message']}")
    regressed = sum(r["status"] == "fail" for r in result.regression)
    if result.config.get("baseline_path"):
        lines.append(f"baseline: {len(result.regression)} cell(s) compared, {regressed} slower than tolerance")
    lines.extend(f"note: {note}" for note in result.notes)
    return lines


def require_matplotlib() -> None:
    """MissingDependencyError naming the extra when ``--report`` cannot draw its plot."""
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingDependencyError(f"--report draws a PNG with matplotlib; install it with: {BENCH_EXTRA}")


def check_report_dir(cfg: BenchConfig) -> None:
    """Fail before measuring where ``write_report`` would fail after it.

    The checks are ``artifacts.check_output_dir``'s, the ones the final ``atomic_output_dir`` makes (exists
    without ``--overwrite``, not an edgesent artifact, one of the run's inputs), and the manifest's kind: an
    edgesent directory other than a bench report (a model, an export) is never replaced.

    Raises:
        ConfigError: the report directory could not be written at the end of the run.
        MissingDependencyError: matplotlib is not installed.
    """
    if cfg.report_dir is None:
        return
    require_matplotlib()
    check_output_dir(cfg.report_dir, cfg.overwrite, cfg.input_paths(), kind=REPORT_KIND)


def _plot_latency(result: BenchResult, path: Path) -> bool:
    """p50 against sequence length, one panel per (provider, threads, batch), one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    synthetic = [r for r in result.rows if r["source"] == SOURCE_SYNTHETIC]
    panels = sorted({(r["provider"], r["threads"], r["batch_size"]) for r in synthetic})
    if not panels:
        return False
    cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(5 * cols, 3.8 * n_rows), squeeze=False)
    for ax, (provider, threads, batch) in zip(axes.flat, panels):
        for variant in [v["name"] for v in result.variants]:
            points = sorted(
                (r["seq_len"], r["p50_ms"])
                for r in synthetic
                if (r["variant"], r["provider"], r["threads"], r["batch_size"]) == (variant, provider, threads, batch)
            )
            ax.plot(*zip(*points), marker="o", label=variant)
        ax.set(
            title=f"{provider}, {threads} thread(s), batch {batch}",
            xlabel="sequence length (tokens)",
            ylabel="p50 latency (ms)",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def write_report(result: BenchResult, cfg: BenchConfig) -> Path:
    """Write report.md, latency_vs_length.png, results.json, edgesent_config.json and the manifest.

    Written atomically into ``cfg.report_dir``: a failed plot leaves no half-written report behind. The
    manifest (kind ``bench-report``) is written last, over the other files.

    Args:
        result: the run's result.
        cfg: the run's config (``report_dir``, ``overwrite``).

    Returns:
        The report directory.

    Raises:
        ConfigError: the directory exists and may not be replaced (see ``check_report_dir``).
    """
    assert cfg.report_dir is not None
    with atomic_output_dir(
        cfg.report_dir, overwrite=cfg.overwrite, sources=cfg.input_paths(), kind=REPORT_KIND
    ) as tmp:
        (tmp / RESULTS_NAME).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        plotted = _plot_latency(result, tmp / PLOT_NAME)
        status = "passed" if result.passed else "FAILED"
        checks = bool(result.gates or result.regression)
        text = [
            "# edgesent latency benchmark",
            "",
            f"{result.created}. Variants measured side by side in one run, interleaved run by run; "
            f"speedups are p50 of `{result.reference}` over p50 of the variant, in the same cell."
            + (f" Gates and baseline: **{status}**." if checks else ""),
            "",
            "## Results",
            "",
            _markdown_table(*summary_table(result)),
            "",
        ]
        if plotted:
            text += [f"![p50 latency against sequence length]({PLOT_NAME})", ""]
        text += ["## Machine, memory and checks", "", *(f"- {line}" for line in summary_lines(result)), ""]
        (tmp / REPORT_NAME).write_text("\n".join(text))
        summary = {
            "passed": result.passed,
            "reference": result.reference,
            "variants": [v["name"] for v in result.variants],
            "rows": len(result.rows),
            "failures": result.failures(),
        }
        write_manifest(tmp, REPORT_KIND, {"schema": SCHEMA, "config": cfg.to_dict(), "summary": summary})
    return Path(cfg.report_dir)
