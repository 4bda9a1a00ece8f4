"""What a benchmark run measures: ``BenchConfig``, the grid's ``Cell`` and the plan of cells to measure.

Light: the stdlib and edgesent's own light modules only, so the CLI can validate every option (finite,
in range) before anything heavy is imported, and the gate module can name cells without onnxruntime.
The ``auto`` provider resolves against the machine facts ``edgesent.bench.machine`` gathered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesent.config import ConfigBase, check_bool, check_choice, check_number, optional_path
from edgesent.config.providers import AUTO, PROVIDERS
from edgesent.errors import ConfigError


if TYPE_CHECKING:
    from edgesent.bench.gates import GateRule

DEFAULT_BATCH_SIZES = (1,)
DEFAULT_SEQ_LENS = (16, 64, 128, 256)
DEFAULT_THREADS = (1,)
DEFAULT_PROVIDERS = ("cpu",)
DEFAULT_WARMUP = 10
DEFAULT_RUNS = 100
DEFAULT_TOLERANCE = 0.10
MAX_TIME_BUDGET_S = 86_400.0  # a day per cell: anything longer is a typo, and ``inf`` would never end
MAX_TOLERANCE = 10.0  # +1000%: a larger allowed slow-down checks nothing
# The providers of a cell (``auto`` in a config resolves to cpu and cuda); openvino: OpenVINO on the CPU (the
# ``openvino`` extra), asked for by name.
DEVICES = tuple(p for p in PROVIDERS if p != AUTO)
SOURCE_SYNTHETIC, SOURCE_DATA = "synthetic", "data"
MODE_SESSION, MODE_E2E = "session", "e2e"
ROW_KEY = ("variant", "provider", "threads", "batch_size", "seq_len", "source", "mode")  # identifies a result row


@dataclass
class BenchConfig(ConfigBase):
    """What to measure, how long, and which checks to apply.

    Grid fields left as None take the defaults (batch 1; lengths 16/64/128/256; one thread; cpu),
    except when a gate file is given and no grid field is set: then exactly the cells the gate
    rules need are measured. Cells the rules need are always added to a given grid.

    Args:
        model_dirs: PyTorch (``finetune``/``prune``) or ONNX (``export``) directories, at least one.
        names: One name per directory, in order (default: the directory names); gate rules use them.
        reference: The variant speedups are relative to (default: the first).
        batch_sizes: Batch sizes of the grid (integers >= 1).
        seq_lens: Exact token counts of the synthetic inputs (integers >= 2). The default lengths beyond the
            shortest max_position_embeddings of the variants are left out, with a note.
        threads: Intra-op thread counts (torch.set_num_threads for PyTorch variants; integers >= 1).
        providers: "cpu", "cuda", "openvino" (OpenVINO on the CPU, the ``openvino`` extra), or "auto" (cpu, plus
            cuda when onnxruntime has the CUDA provider).
        warmup: Untimed runs per variant and cell before measuring (default 10, >= 0).
        runs: Measured runs per variant and cell (default 100 unless ``time_budget_s`` is given; >= 1).
        time_budget_s: Seconds of measuring per cell instead of a fixed number of runs (finite, in (0, 86400]).
        data_path: CSV/TSV/JSONL of real texts, timed end to end (tokenization included) per batch size.
        text_column: Column of ``data_path`` holding the texts (default "text").
        gate_path: TOML gate file (see bench/README.md); failures are reported by ``raise_for_failures``.
        baseline_path: A saved ``--json`` result; any cell whose p50 is slower by more than ``tolerance`` fails.
        tolerance: Allowed relative p50 slow-down against the baseline (default 0.10, in (0, 10)).
        report_dir: Write report.md, latency_vs_length.png, results.json and a manifest there.
        overwrite: Replace ``report_dir`` if it exists and is an edgesent report (default False).
        measure_rss: Measure each variant's peak RSS in a subprocess (default True).
        measure_peak: Measure the machine's fp32 and int8 GEMM throughput to compare against (default True).
        seed: Seed of the synthetic token ids (default 0, >= 0).

    Raises:
        ConfigError: naming the field and the value, for any value out of range, NaN or infinite.
    """

    model_dirs: tuple[Path, ...]
    names: tuple[str, ...] = ()
    reference: str | None = None
    batch_sizes: tuple[int, ...] | None = None
    seq_lens: tuple[int, ...] | None = None
    threads: tuple[int, ...] | None = None
    providers: tuple[str, ...] | None = None
    warmup: int = DEFAULT_WARMUP
    runs: int | None = None
    time_budget_s: float | None = None
    data_path: Path | None = None
    text_column: str = "text"
    gate_path: Path | None = None
    baseline_path: Path | None = None
    tolerance: float = DEFAULT_TOLERANCE
    report_dir: Path | None = None
    overwrite: bool = False
    measure_rss: bool = True
    measure_peak: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.model_dirs, (str, Path)):
            raise ConfigError(f"model_dirs: got {str(self.model_dirs)!r}; give a list of directories")
        self.model_dirs = tuple(Path(p) for p in self.model_dirs)
        self.names = tuple(self.names)
        self.data_path = optional_path(self.data_path)
        self.gate_path = optional_path(self.gate_path)
        self.baseline_path = optional_path(self.baseline_path)
        self.report_dir = optional_path(self.report_dir)
        if not self.model_dirs:
            raise ConfigError("model_dirs: got none; give at least one model directory")
        if self.names and len(self.names) != len(self.model_dirs):
            raise ConfigError(
                f"names: got {len(self.names)} names for {len(self.model_dirs)} model directories; "
                "give one --name per directory, in the same order"
            )
        if not all(isinstance(n, str) and n for n in self.names):
            raise ConfigError(f"names: got {list(self.names)}; need non-empty strings")
        names = self.variant_names
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ConfigError(f"names: {duplicate!r} is used twice; give each directory its own --name")
        if self.reference is not None and self.reference not in names:
            raise ConfigError(f"reference: {self.reference!r} is not one of the variants ({', '.join(names)})")
        self.batch_sizes = self._int_tuple("batch_sizes", self.batch_sizes, 1)
        self.seq_lens = self._int_tuple("seq_lens", self.seq_lens, 2)
        self.threads = self._int_tuple("threads", self.threads, 1)
        if self.providers is not None:
            self.providers = tuple(self.providers)
            if not self.providers:
                raise ConfigError("providers: got []; use cpu, cuda or auto")
            for provider in self.providers:
                check_choice("providers", provider, PROVIDERS)
        check_number("warmup", self.warmup, low=0, integer=True)
        if self.runs is not None:
            check_number("runs", self.runs, low=1, integer=True)
        if self.time_budget_s is not None:
            check_number("time_budget_s", self.time_budget_s, low=0, high=MAX_TIME_BUDGET_S, low_open=True)
        if self.runs is not None and self.time_budget_s is not None:
            raise ConfigError("runs and time_budget_s: got both; give a number of runs or a time budget per cell")
        if self.runs is None and self.time_budget_s is None:
            self.runs = DEFAULT_RUNS
        check_number("tolerance", self.tolerance, low=0, high=MAX_TOLERANCE, low_open=True, high_open=True)
        if not isinstance(self.text_column, str) or not self.text_column:
            raise ConfigError(f"text_column: got {self.text_column!r}; need a column name")
        for flag in ("overwrite", "measure_rss", "measure_peak"):
            check_bool(flag, getattr(self, flag))
        check_number("seed", self.seed, low=0, integer=True)

    @staticmethod
    def _int_tuple(name: str, values: Sequence[int] | None, low: int) -> tuple[int, ...] | None:
        if values is None:
            return None
        values = tuple(values)
        if not values:
            raise ConfigError(f"{name}: got []; need integers >= {low}")
        for value in values:
            check_number(name, value, low=low, integer=True)
        return values

    @property
    def variant_names(self) -> list[str]:
        """The names variants go by: ``names`` or, by default, the directory names."""
        return list(self.names) if self.names else [p.resolve().name for p in self.model_dirs]

    @property
    def has_grid(self) -> bool:
        """Whether any grid field was set (otherwise a gate run measures only the cells its rules need)."""
        return any(v is not None for v in (self.batch_sizes, self.seq_lens, self.threads, self.providers))

    def input_paths(self) -> list[Path]:
        """Every path the run reads: a report directory may not replace any of them."""
        optional = (self.data_path, self.gate_path, self.baseline_path)
        return [*self.model_dirs, *(p for p in optional if p is not None)]


@dataclass(frozen=True)
class Cell:
    """One point of the grid: synthetic tokens of exact length, or real texts (seq_len None)."""

    provider: str
    threads: int
    batch_size: int
    seq_len: int | None
    source: str = SOURCE_SYNTHETIC

    def sort_key(self) -> tuple[str, int, str, int, int]:
        """Measuring order: cells sharing provider, threads and source are adjacent (one set of sessions)."""
        return (self.provider, self.threads, self.source, self.batch_size, self.seq_len or 0)

    def describe(self) -> str:
        """``cpu, threads=1, batch=1, seq_len=128`` (or ``real texts``), as messages show a cell."""
        length = f"seq_len={self.seq_len}" if self.seq_len is not None else "real texts"
        return f"{self.provider}, threads={self.threads}, batch={self.batch_size}, {length}"


def resolve_devices(requested: Sequence[str], usable: Sequence[str] = ("cpu",)) -> tuple[str, ...]:
    """``auto`` -> cpu, plus cuda when this machine can run CUDA cells.

    Args:
        requested: "cpu", "cuda" and "auto", in the user's order.
        usable: the devices this machine can run (``machine_info()["devices"]``; default cpu only).

    Returns:
        The concrete providers, without duplicates, in order.
    """
    out: list[str] = []
    for provider in requested:
        out.extend(["cpu", *(d for d in usable if d != "cpu")] if provider == "auto" else [provider])
    return tuple(dict.fromkeys(out))


def measures_grid(cfg: BenchConfig, rules: Sequence[GateRule]) -> bool:
    """Whether the grid is measured: a gate run without grid options measures only its rules' cells."""
    return cfg.has_grid or not rules


def skipped_default_lengths(cfg: BenchConfig, max_seq_len: int | None) -> tuple[int, ...]:
    """The default lengths beyond ``max_seq_len``, left out of the grid so a short model runs with the defaults.

    Lengths the user gave are never skipped: the run refuses those that do not fit, as it was asked for them.
    """
    if cfg.seq_lens is not None or max_seq_len is None:
        return ()
    return tuple(s for s in DEFAULT_SEQ_LENS if s > max_seq_len)


def plan_cells(
    cfg: BenchConfig,
    rules: Sequence[GateRule],
    machine: Mapping[str, Any] | None = None,
    max_seq_len: int | None = None,
) -> list[Cell]:
    """The cells to measure: the grid (unless only gates were given), real-text cells, and the rules' cells.

    On CUDA the thread grid is not crossed: CPU threads only matter for host work there, so CUDA
    cells use the first thread count.

    Args:
        cfg: the run's config.
        rules: the gate rules that apply on this machine.
        machine: ``machine_info()``, whose ``devices`` the ``auto`` provider resolves to (default None:
            cpu only).
        max_seq_len: the shortest position limit of the variants; default lengths beyond it are left out
            (see ``skipped_default_lengths``). Default None: no limit.

    Returns:
        The cells, in measuring order (see ``Cell.sort_key``).

    Raises:
        ConfigError: a rule times real texts and no ``data_path`` was given, or every default length
            exceeds ``max_seq_len``.
    """
    skipped = skipped_default_lengths(cfg, max_seq_len)
    seq_lens = cfg.seq_lens or tuple(s for s in DEFAULT_SEQ_LENS if s not in skipped)
    if not seq_lens and measures_grid(cfg, rules):
        raise ConfigError(
            f"seq_lens: every default length ({', '.join(map(str, DEFAULT_SEQ_LENS))}) exceeds the "
            f"{max_seq_len} positions a model allows; give --seq-lens"
        )
    batch_sizes = cfg.batch_sizes or DEFAULT_BATCH_SIZES
    threads = cfg.threads or DEFAULT_THREADS
    providers = resolve_devices(cfg.providers or DEFAULT_PROVIDERS, (machine or {}).get("devices", ("cpu",)))
    cells: set[Cell] = set()
    for provider in providers:
        for n_threads in threads if provider != "cuda" else threads[:1]:
            for batch in batch_sizes:
                if measures_grid(cfg, rules):
                    cells.update(Cell(provider, n_threads, batch, s) for s in seq_lens)
                if cfg.data_path is not None:
                    cells.add(Cell(provider, n_threads, batch, None, SOURCE_DATA))
    for rule in rules:
        cell = rule.cell
        if cell.source == SOURCE_DATA and cfg.data_path is None:
            raise ConfigError(f"gate rule {rule.name!r} ({rule.kind}) times real texts; pass --data FILE")
        cells.add(cell)
    return sorted(cells, key=Cell.sort_key)
