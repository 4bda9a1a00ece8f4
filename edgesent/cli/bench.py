"""``edgesent bench``: latency of model directories side by side, with gates and a baseline check."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgesent.cli._format import format_table
from edgesent.cli._options import json_option, overwrite_option, text_column_option


class _CommaList(click.ParamType):
    """``1,8,32`` -> (1, 8, 32); ``cpu,cuda`` -> ("cpu", "cuda")."""

    def __init__(self, item: type):
        self.item = item
        self.name = f"{item.__name__}[,...]"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(part.strip()) for part in str(value).split(",") if part.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of {self.item.__name__} values", param, ctx)


_file = click.Path(dir_okay=False, path_type=Path)


@click.command()
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--name",
    "names",
    multiple=True,
    help="Name of each MODEL_DIR, in order (default: the directory name). Gate rules refer to these.",
)
@click.option("--reference", help="Variant the speedups are relative to. Default: the first.")
@click.option("--batch-sizes", type=_CommaList(int), help="Batch sizes, e.g. 1,8,32. Default: 1.")
@click.option("--seq-lens", type=_CommaList(int), help="Exact token counts, e.g. 16,64,128,256 (the default).")
@click.option("--threads", type=_CommaList(int), help="Intra-op thread counts, e.g. 1,2. Default: 1.")
@click.option(
    "--provider",
    "providers",
    type=_CommaList(str),
    help="cpu, cuda, openvino (OpenVINO on the CPU; pip install 'edgesent[openvino]'), or auto (cpu, plus cuda when "
    "a GPU is usable). Default: cpu.",
)
@click.option("--warmup", type=int, help="Untimed runs per variant and cell. Default: 10.")
@click.option("--runs", type=int, help="Timed runs per variant and cell. Default: 100.")
@click.option("--time-budget", "time_budget_s", type=float, help="Seconds of timing per cell, instead of --runs.")
@click.option("--data", "data_path", type=_file, help="CSV/TSV/JSONL of real texts, timed end to end per batch size.")
@text_column_option
@click.option("--gate", "gate_path", type=_file, help="TOML gate file (bench/gates.toml); exit 1 if a rule fails.")
@click.option("--baseline", "baseline_path", type=_file, help="A saved --json result; exit 1 if a cell is slower.")
@click.option("--tolerance", type=float, help="Allowed p50 slow-down vs --baseline, 0.10 = 10% (the default).")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.md, latency_vs_length.png and results.json to this directory.",
)
@overwrite_option
@click.option(
    "--rss/--no-rss",
    "measure_rss",
    default=True,
    show_default=True,
    help="Measure each variant's peak RSS in a subprocess.",
)
@click.option(
    "--peak/--no-peak",
    "measure_peak",
    default=True,
    show_default=True,
    help="Measure the machine's fp32 and int8 GEMM throughput, to report each variant's fraction of it.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic token ids.")
@json_option
def bench(as_json: bool, **options: object) -> None:
    """Measure MODEL_DIRS (PyTorch and ONNX directories) side by side, interleaved run by run.

    Reports p50/p90/p99 latency, texts/s, speedup against the reference, GOP/s against the
    machine's GEMM peak and peak RSS per variant. With --gate, --baseline or both, exits 1 when a
    rule fails or a cell regressed, naming the rule, the measured figure and the bound.
    """
    from edgesent.bench import BenchConfig, run_benchmark, summary_lines, summary_table

    # Options left unset keep BenchConfig's defaults, which live in one place; BenchConfig validates every
    # value (finite, in range) and run_benchmark checks files and the report directory before measuring.
    result = run_benchmark(BenchConfig(**{k: v for k, v in options.items() if v is not None}))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_table(*summary_table(result)) + "\n\n" + "\n".join(summary_lines(result)))
    result.raise_for_failures()
