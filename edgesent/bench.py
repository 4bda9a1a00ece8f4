"""Latency benchmark for edgesent model directories, and the latency gates CI enforces.

All variants (PyTorch directories and exported ONNX directories: fp32, optimised, int8, pruned, fp16)
are measured side by side in one process, interleaved run by run, so that drift on a noisy machine
(another job, thermal throttling, a frequency change) hits every variant alike and the *ratios*
between them stay trustworthy even when the absolute figures do not. That is why gates are ratios
measured in the same run; absolute budgets are accepted only for named GPU hardware.

Layering: this module needs numpy and onnxruntime only. torch and transformers are imported when a
PyTorch variant is benchmarked, onnx when the GEMM peak is measured, matplotlib when a report is
written, and ``edgesent.runtime.Predictor`` when real texts are timed end to end.
"""

from __future__ import annotations

import gc
import importlib.util
import itertools
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from tqdm.auto import tqdm

from edgesent.artifacts import (
    KIND_ONNX,
    KIND_PYTORCH,
    ONNX_FILE_NAME,
    atomic_output_dir,
    library_versions,
    read_model_dir,
)
from edgesent.errors import BenchmarkGateError, ConfigError, DataError, MissingDependencyError
from edgesent.flops import count_flops


logger = logging.getLogger(__name__)

SCHEMA = "edgesent.bench/1"
CONFIG_NAME = "edgesent_config.json"
RESULTS_NAME = "results.json"
REPORT_NAME = "report.md"
PLOT_NAME = "latency_vs_length.png"
BENCH_EXTRA = "pip install 'edgesent[bench]'"
GPU_EXTRA = "pip install 'edgesent[gpu]'"

DEFAULT_BATCH_SIZES = (1,)
DEFAULT_SEQ_LENS = (16, 64, 128, 256)
DEFAULT_THREADS = (1,)
DEFAULT_PROVIDERS = ("cpu",)
DEFAULT_WARMUP = 10
DEFAULT_RUNS = 100
DEFAULT_TOLERANCE = 0.10
MIN_BUDGET_ROUNDS = 5  # a time budget still yields enough runs for a p50
MAX_DATA_BATCHES = 256  # distinct real-text batches per cell, encoded up front
PROVIDERS = ("cpu", "cuda")
_ORT_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
SOURCE_SYNTHETIC, SOURCE_DATA = "synthetic", "data"
MODE_SESSION, MODE_E2E = "session", "e2e"
# The FFN shape of MiniLM-H384 at batch 1, length 128: the GEMM that dominates the models we ship.
GEMM_SHAPE = (128, 384, 1536)
GEMM_RUNS = 30
# Instruction-set flags that decide int8/fp32/fp16 GEMM speed (x86 and ARM names).
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)
ROW_KEY = ("variant", "provider", "threads", "batch_size", "seq_len", "source", "mode")  # identifies a result row


# --------------------------------------------------------------------------------------------- config


@dataclass
class BenchConfig:
    """What to measure, how long, and which checks to apply.

    Grid fields left as None take the defaults (batch 1; lengths 16/64/128/256; one thread; cpu),
    except when a gate file is given and no grid field is set: then exactly the cells the gate
    rules need are measured. Cells the rules need are always added to a given grid.

    Args:
        model_dirs: PyTorch (``finetune``/``prune``) or ONNX (``export``) directories, at least one.
        names: One name per directory, in order (default: the directory names); gate rules use them.
        reference: The variant speedups are relative to (default: the first).
        batch_sizes: Batch sizes of the grid.
        seq_lens: Exact token counts of the synthetic inputs.
        threads: Intra-op thread counts (torch.set_num_threads for PyTorch variants).
        providers: "cpu", "cuda", or "auto" (cpu, plus cuda when onnxruntime has the CUDA provider).
        warmup: Untimed runs per variant and cell before measuring (default 10).
        runs: Measured runs per variant and cell (default 100 unless ``time_budget_s`` is given).
        time_budget_s: Seconds of measuring per cell instead of a fixed number of runs.
        data_path: CSV/TSV/JSONL of real texts, timed end to end (tokenization included) per batch size.
        text_column: Column of ``data_path`` holding the texts.
        gate_path: TOML gate file (see bench/README.md); failures are reported by ``raise_for_failures``.
        baseline_path: A saved ``--json`` result; any cell whose p50 is slower by more than ``tolerance`` fails.
        tolerance: Allowed relative p50 slow-down against the baseline (default 0.10).
        report_dir: Write report.md, latency_vs_length.png and results.json there.
        overwrite: Replace ``report_dir`` if it exists.
        measure_rss: Measure each variant's peak RSS in a subprocess (default True).
        measure_peak: Measure the machine's fp32 and int8 GEMM throughput to compare against (default True).
        seed: Seed of the synthetic token ids.
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
        self.model_dirs = tuple(Path(p) for p in self.model_dirs)
        self.names = tuple(self.names)
        for name in ("data_path", "gate_path", "baseline_path", "report_dir"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        if not self.model_dirs:
            raise ConfigError("model_dirs: got none; give at least one model directory")
        if self.names and len(self.names) != len(self.model_dirs):
            raise ConfigError(
                f"names: got {len(self.names)} names for {len(self.model_dirs)} model directories; "
                "give one --name per directory, in the same order"
            )
        names = self.variant_names
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ConfigError(f"names: {duplicate!r} is used twice; give each directory its own --name")
        if self.reference is not None and self.reference not in names:
            raise ConfigError(f"reference: {self.reference!r} is not one of the variants ({', '.join(names)})")
        for name, low in (("batch_sizes", 1), ("seq_lens", 2), ("threads", 1)):
            values = getattr(self, name)
            if values is None:
                continue
            values = tuple(values)
            setattr(self, name, values)
            if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < low for v in values):
                raise ConfigError(f"{name}: got {list(values)}; need integers >= {low}")
        if self.providers is not None:
            self.providers = tuple(self.providers)
            bad = [p for p in self.providers if p not in (*PROVIDERS, "auto")]
            if not self.providers or bad:
                raise ConfigError(f"providers: got {list(self.providers)}; use cpu, cuda or auto")
        if self.warmup < 0:
            raise ConfigError(f"warmup: got {self.warmup}; need >= 0")
        if self.runs is not None and self.runs < 1:
            raise ConfigError(f"runs: got {self.runs}; need >= 1")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"time_budget_s: got {self.time_budget_s}; need seconds > 0")
        if self.runs is not None and self.time_budget_s is not None:
            raise ConfigError("runs and time_budget_s: got both; give a number of runs or a time budget per cell")
        if self.runs is None and self.time_budget_s is None:
            self.runs = DEFAULT_RUNS
        if not 0 < self.tolerance < 10:
            raise ConfigError(f"tolerance: got {self.tolerance}; need a fraction such as 0.10")

    @property
    def variant_names(self) -> list[str]:
        """The names variants go by: ``names`` or, by default, the directory names."""
        return list(self.names) if self.names else [p.resolve().name for p in self.model_dirs]

    @property
    def has_grid(self) -> bool:
        """Whether any grid field was set (otherwise a gate run measures only the cells its rules need)."""
        return any(v is not None for v in (self.batch_sizes, self.seq_lens, self.threads, self.providers))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings, tuples as lists)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        """Inverse of ``to_dict``; unknown keys raise ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"BenchConfig: unknown field(s) {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# ------------------------------------------------------------------------------------------ statistics


def summarize_latencies(samples_ns: Sequence[int], batch_size: int) -> dict[str, float | int]:
    """Percentiles (linear interpolation, as numpy), mean, extremes and throughput of timed runs.

    Args:
        samples_ns: Duration of each run in nanoseconds (``time.perf_counter_ns`` differences).
        batch_size: Texts per run, for throughput.

    Returns:
        ``runs``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``mean_ms``, ``min_ms``, ``max_ms`` and
        ``throughput`` in texts per second (total texts over total time, i.e. from the mean).
    """
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if ms.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return {
        "runs": int(ms.size),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "throughput": batch_size * 1000.0 / mean if mean > 0 else math.inf,
    }


# ------------------------------------------------------------------------------------------- variants


@dataclass
class Variant:
    """One model directory under test, as its manifest describes it."""

    name: str
    model_dir: Path
    kind: str
    precision: str
    pruned: bool
    hf_config: dict[str, Any] = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)
    peak_rss_mb: float | None = None

    @property
    def backend(self) -> str:
        """``torch`` for PyTorch directories, ``onnxruntime`` for ONNX exports."""
        return "torch" if self.kind == KIND_PYTORCH else "onnxruntime"

    def flops(self, batch_size: int, seq_len: int) -> int | None:
        """Analytic FLOPs of one forward pass at this shape (see ``count_flops``)."""
        return count_flops(self.hf_config, batch_size, seq_len)

    def to_dict(self) -> dict[str, Any]:
        """The ``variants`` entry of the JSON result."""
        return {
            "name": self.name,
            "model_dir": str(self.model_dir),
            "kind": self.kind,
            "precision": self.precision,
            "pruned": self.pruned,
            "backend": self.backend,
            "peak_rss_mb": self.peak_rss_mb,
        }


def load_variant(model_dir: Path, name: str) -> Variant:
    """Read a model directory's manifest and config.json; ModelError if it is not usable.

    Args:
        model_dir: A PyTorch or ONNX edgesent directory.
        name: The name the variant goes by in tables and gate rules.

    Returns:
        The Variant, with kind and precision from the manifest (precision defaults to fp32).

    Raises:
        ModelError: no manifest, an unknown kind, no config.json, or an ONNX file that does not match its hash.
    """
    model = read_model_dir(model_dir)
    hf_config = model.hf_config()
    pruned = bool(model.manifest.get("pruning") or hf_config.get("pruned_heads"))
    return Variant(name, model.path, model.kind, model.precision, pruned, hf_config, model.manifest)


# -------------------------------------------------------------------------------------------- runners


class _Runner(Protocol):
    """One timed thing: ``prepare`` turns an input into what ``run`` consumes, outside the timing."""

    def prepare(self, item: Any) -> Any: ...

    def run(self, prepared: Any) -> None: ...


def session_options(threads: int) -> ort.SessionOptions:
    """ORT options of a benchmark session: ``threads`` intra-op threads, one inter-op, sequential.

    The thread pool does not spin after a run: in the interleaved schedule a spinning pool would
    steal cores from the next variant's run (with two threads on a loaded 2-core machine, PyTorch
    went from ~1.5 ms to ~100 ms next to spinning pools). One thread has no pool, so no effect there.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _check_cuda(variants: list[Variant]) -> None:
    """Fail before any timing, not after the CPU cells, when CUDA cells cannot run."""
    if any(v.kind == KIND_ONNX for v in variants) and _ORT_PROVIDER["cuda"] not in ort.get_available_providers():
        raise ConfigError(
            f"provider: cuda requested, but onnxruntime {ort.__version__} has no CUDAExecutionProvider; "
            f"install the GPU build ({GPU_EXTRA}) or use --provider cpu"
        )
    if any(v.kind == KIND_PYTORCH for v in variants):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("provider: cuda requested, but torch sees no CUDA device; use --provider cpu")


def _create_session(variant: Variant, provider: str, threads: int) -> ort.InferenceSession:
    providers: list[Any] = [_ORT_PROVIDER["cpu"]]
    if provider == "cuda":
        providers = [(_ORT_PROVIDER["cuda"], {"device_id": 0}), _ORT_PROVIDER["cpu"]]
    path = variant.model_dir / variant.manifest.get("onnx_file", ONNX_FILE_NAME)
    session = ort.InferenceSession(str(path), session_options(threads), providers=providers)
    if session.get_providers()[0] != _ORT_PROVIDER[provider]:
        raise ConfigError(f"{path}: onnxruntime fell back to {session.get_providers()[0]} for provider {provider}")
    return session


class _OrtSession:
    """A bare ``InferenceSession.run``; on CUDA with IO binding, inputs and outputs stay on the GPU.

    With IO binding the host-to-device copy of the token ids happens in ``prepare``, outside the
    timing, and the logits are left on the device: the figure is the model's, not PCIe's.
    """

    def __init__(self, session: ort.InferenceSession, io_binding: bool, encode: Callable[[Any], dict] | None = None):
        self.session = session
        self.io_binding = io_binding
        self.encode = encode
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def prepare(self, item: Any) -> Any:
        feeds = self.encode(item) if self.encode is not None else item
        feeds = {name: np.ascontiguousarray(feeds[name]) for name in self.input_names}
        if not self.io_binding:
            return feeds
        binding = self.session.io_binding()
        values = [ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0) for array in feeds.values()]
        for name, value in zip(feeds, values):
            binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            binding.bind_output(name, "cuda", 0)
        return binding, values  # keep the device buffers alive with the binding

    def run(self, prepared: Any) -> None:
        if self.io_binding:
            self.session.run_with_iobinding(prepared[0])
        else:
            self.session.run(self.output_names, prepared)


class _PredictorE2E:
    """``Predictor.predict`` on raw texts: tokenization, session, softmax and labels."""

    def __init__(self, predictor: Any):
        self.predictor = predictor

    def prepare(self, item: list[str]) -> list[str]:
        return item

    def run(self, prepared: list[str]) -> None:
        self.predictor.predict(prepared, batch_size=len(prepared))


class _TorchModel:
    """A PyTorch classifier on one device (fp16 on CUDA), timed bare or end to end on texts."""

    def __init__(self, variant: Variant, provider: str):
        import inspect

        # OpenMP threads wait passively, for the reason ``session_options`` gives; libgomp reads this once,
        # when torch first starts its pool, so a user's own setting (or an earlier start) wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        _limit_torch_interop(torch)
        model = AutoModelForSequenceClassification.from_pretrained(variant.model_dir)
        if provider == "cuda":
            model = model.half().to("cuda")  # the GPU reference is PyTorch fp16
        self.torch = torch
        self.model = model.eval()
        self.device = "cuda" if provider == "cuda" else "cpu"
        self.accepts = set(inspect.signature(model.forward).parameters)
        self.tokenizer = AutoTokenizer.from_pretrained(variant.model_dir)
        self.max_length = variant.manifest.get("max_length", 128)
        self.labels = variant.manifest.get("labels") or []

    def tensors(self, item: Any) -> dict[str, Any]:
        if isinstance(item, list):  # texts
            item = self.tokenizer(item, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {k: self.torch.from_numpy(np.asarray(v)).to(self.device) for k, v in item.items() if k in self.accepts}

    def forward(self, tensors: dict[str, Any]) -> Any:
        with self.torch.inference_mode():
            logits = self.model(**tensors).logits
        if self.device == "cuda":
            self.torch.cuda.synchronize()  # CUDA launches are asynchronous; time the work, not the launch
        return logits


class _TorchForward:
    def __init__(self, model: _TorchModel):
        self.model = model

    def prepare(self, item: Any) -> dict[str, Any]:
        return self.model.tensors(item)

    def run(self, prepared: dict[str, Any]) -> None:
        self.model.forward(prepared)


class _TorchE2E:
    """Tokenizer, forward, softmax and labels: the PyTorch counterpart of ``Predictor.predict``."""

    def __init__(self, model: _TorchModel):
        self.model = model

    def prepare(self, item: list[str]) -> list[str]:
        return item

    def run(self, prepared: list[str]) -> list[str]:
        probs = self.model.forward(self.model.tensors(prepared)).float().softmax(-1)  # (B, C)
        return [self.model.labels[i] for i in probs.argmax(-1).tolist()]


def _limit_torch_interop(torch: Any) -> None:
    """One inter-op thread, like the ORT sessions; torch only allows it before its pool starts."""
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # set already, by an earlier model of this run
        pass


class _RunnerPool:
    """Builds the timed units of every variant; PyTorch models are loaded once per provider and reused."""

    def __init__(self, variants: list[Variant]):
        self.variants = variants
        self._torch: dict[tuple[str, str], _TorchModel] = {}  # (variant, provider): loaded once per run

    def torch_model(self, variant: Variant, provider: str) -> _TorchModel:
        key = (variant.name, provider)
        if key not in self._torch:
            self._torch[key] = _TorchModel(variant, provider)
        return self._torch[key]

    def units(self, provider: str, threads: int, source: str) -> list[tuple[str, str, _Runner]]:
        """(variant name, mode, runner) for every variant; one ORT session per (variant, provider, threads)."""
        units: list[tuple[str, str, _Runner]] = []
        for variant in self.variants:
            if variant.kind == KIND_PYTORCH:
                model = self.torch_model(variant, provider)
                if provider == "cpu":
                    model.torch.set_num_threads(threads)
                units.append((variant.name, MODE_SESSION, _TorchForward(model)))
                if source == SOURCE_DATA:
                    units.append((variant.name, MODE_E2E, _TorchE2E(model)))
            elif source == SOURCE_SYNTHETIC:
                session = _create_session(variant, provider, threads)
                units.append((variant.name, MODE_SESSION, _OrtSession(session, io_binding=provider == "cuda")))
            else:
                from edgesent.runtime import Predictor

                predictor = Predictor.load(variant.model_dir, provider=provider, threads=threads)
                # Same session, same encodings: the ratio isolates what the predictor adds.
                units.append(
                    (variant.name, MODE_SESSION, _OrtSession(predictor.session, provider == "cuda", predictor.encode))
                )
                units.append((variant.name, MODE_E2E, _PredictorE2E(predictor)))
        return units


def synthetic_inputs(batch_size: int, seq_len: int, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids of exactly ``seq_len`` per row, all attended; the content does not change a dense encoder's cost.

    Returns:
        ``input_ids`` (B, S) random ids in [1, vocab_size), ``attention_mask`` (B, S) ones,
        ``token_type_ids`` (B, S) zeros; all int64, as the ONNX contract says.
    """
    rng = np.random.default_rng(seed)
    shape = (batch_size, seq_len)
    return {
        "input_ids": rng.integers(1, max(vocab_size, 2), size=shape, dtype=np.int64),
        "attention_mask": np.ones(shape, dtype=np.int64),
        "token_type_ids": np.zeros(shape, dtype=np.int64),
    }


def _measure_units(
    units: Sequence[_Runner], inputs: Sequence[Any], warmup: int, runs: int | None, budget_s: float | None
) -> list[list[int]]:
    """Warm every unit up, then time them round-robin, rotating the order each round.

    Round r runs every unit once on input ``r % len(inputs)`` (all units see the same input in a
    round), starting with unit ``r % n``, so no variant always runs first or right after another.
    The garbage collector is paused while timing, as ``timeit`` does, so its pauses do not land on
    whichever variant happens to allocate the last object.
    """
    prepared = [[unit.prepare(item) for item in inputs] for unit in units]
    for unit, items in zip(units, prepared):
        for i in range(warmup):
            unit.run(items[i % len(items)])
    samples: list[list[int]] = [[] for _ in units]
    n = len(units)
    start = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        r = 0
        while (r < runs) if budget_s is None else (r < MIN_BUDGET_ROUNDS or time.perf_counter() - start < budget_s):
            for j in range(n):
                k = (r + j) % n
                item = prepared[k][r % len(inputs)]
                t0 = time.perf_counter_ns()
                units[k].run(item)
                samples[k].append(time.perf_counter_ns() - t0)
            r += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


# ----------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Cell:
    """One point of the grid: synthetic tokens of exact length, or real texts (seq_len None)."""

    provider: str
    threads: int
    batch_size: int
    seq_len: int | None
    source: str = SOURCE_SYNTHETIC

    def sort_key(self) -> tuple:
        """Measuring order: cells sharing provider, threads and source are adjacent (one set of sessions)."""
        return (self.provider, self.threads, self.source, self.batch_size, self.seq_len or 0)

    def describe(self) -> str:
        """``cpu, threads=1, batch=1, seq_len=128`` (or ``real texts``), as messages show a cell."""
        length = f"seq_len={self.seq_len}" if self.seq_len is not None else "real texts"
        return f"{self.provider}, threads={self.threads}, batch={self.batch_size}, {length}"


def _resolve_providers(requested: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for provider in requested:
        if provider == "auto":
            out.append("cpu")
            if _ORT_PROVIDER["cuda"] in ort.get_available_providers() and gpu_names():
                out.append("cuda")
        else:
            out.append(provider)
    return tuple(dict.fromkeys(out))


def plan_cells(cfg: BenchConfig, rules: Sequence[GateRule]) -> list[Cell]:
    """The cells to measure: the grid (unless only gates were given), real-text cells, and the rules' cells.

    On CUDA the thread grid is not crossed: CPU threads only matter for host work there, so CUDA
    cells use the first thread count.
    """
    batch_sizes = cfg.batch_sizes or DEFAULT_BATCH_SIZES
    threads = cfg.threads or DEFAULT_THREADS
    providers = _resolve_providers(cfg.providers or DEFAULT_PROVIDERS)
    cells: set[Cell] = set()
    for provider in providers:
        for n_threads in threads if provider == "cpu" else threads[:1]:
            for batch in batch_sizes:
                if cfg.has_grid or not rules:
                    cells.update(Cell(provider, n_threads, batch, s) for s in cfg.seq_lens or DEFAULT_SEQ_LENS)
                if cfg.data_path is not None:
                    cells.add(Cell(provider, n_threads, batch, None, SOURCE_DATA))
    for rule in rules:
        cell = rule.cell
        if cell.source == SOURCE_DATA and cfg.data_path is None:
            raise ConfigError(f"gate rule {rule.name!r} ({rule.kind}) times real texts; pass --data FILE")
        cells.add(cell)
    return sorted(cells, key=Cell.sort_key)


# ---------------------------------------------------------------------------------------------- gates


GATE_KINDS = ("speedup", "p99_over_p50", "e2e_over_session", "absolute_ms")
_RULE_KEYS = {
    "name",
    "kind",
    "variant",
    "reference",
    "provider",
    "threads",
    "batch_size",
    "seq_len",
    "min",
    "max",
    "stat",
    "hardware",
}
_STATS = ("p50", "p90", "p99")


@dataclass(frozen=True)
class GateRule:
    """One rule of a gate file; see bench/README.md for the format.

    Kinds: ``speedup`` (p50 of ``reference`` / p50 of ``variant``, needs ``min``), ``p99_over_p50``
    (needs ``max``), ``e2e_over_session`` (predictor end to end / bare session on the same real
    texts, needs ``max`` and ``--data``) and ``absolute_ms`` (``stat`` in ms, needs ``max`` and
    ``hardware``: a GPU model name; skipped on any other machine).
    """

    name: str
    kind: str
    variant: str
    reference: str | None = None
    provider: str = "cpu"
    threads: int = 1
    batch_size: int = 1
    seq_len: int | None = None
    min: float | None = None
    max: float | None = None
    stat: str = "p50"
    hardware: str | None = None

    @property
    def cell(self) -> Cell:
        """The cell the rule reads (a real-text cell for ``e2e_over_session``)."""
        if self.kind == "e2e_over_session":
            return Cell(self.provider, self.threads, self.batch_size, None, SOURCE_DATA)
        return Cell(self.provider, self.threads, self.batch_size, self.seq_len)

    def applies_to(self, machine: dict[str, Any]) -> bool:
        """Absolute budgets hold only on the named hardware; ratio rules hold everywhere."""
        if self.hardware is None:
            return True
        return any(self.hardware.lower() in gpu.lower() for gpu in machine.get("gpus", []))

    def bound_text(self) -> str:
        """``>= 2.5x``, ``<= 1.15x`` or ``<= 2 ms``, as messages show the bound."""
        unit = " ms" if self.kind == "absolute_ms" else "x"
        parts = [
            f">= {self.min:g}{unit}" if self.min is not None else "",
            f"<= {self.max:g}{unit}" if self.max is not None else "",
        ]
        return " and ".join(p for p in parts if p)

    def measure(self, rows: Sequence[dict[str, Any]]) -> float:
        """The rule's figure from result rows; KeyError naming the row that is missing."""
        cell = self.cell
        if self.kind == "speedup":
            return find_row(rows, self.reference, cell)["p50_ms"] / find_row(rows, self.variant, cell)["p50_ms"]
        if self.kind == "p99_over_p50":
            row = find_row(rows, self.variant, cell)
            return row["p99_ms"] / row["p50_ms"]
        if self.kind == "e2e_over_session":
            e2e = find_row(rows, self.variant, cell, MODE_E2E)["p50_ms"]
            return e2e / find_row(rows, self.variant, cell, MODE_SESSION)["p50_ms"]
        return find_row(rows, self.variant, cell)[f"{self.stat}_ms"]

    def evaluate(self, rows: Sequence[dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
        """Outcome dict: name, kind, status (pass|fail|skip), measured, bound, message."""
        outcome = {
            "name": self.name,
            "kind": self.kind,
            "variant": self.variant,
            "cell": self.cell.describe(),
            "status": "pass",
            "measured": None,
            "bound": self.bound_text(),
        }
        if not self.applies_to(machine):
            gpus = ", ".join(machine.get("gpus", [])) or "no GPU"
            return {
                **outcome,
                "status": "skip",
                "message": f"needs hardware {self.hardware!r}; this machine has {gpus}",
            }
        try:
            measured = self.measure(rows)
        except KeyError as err:
            return {**outcome, "status": "fail", "message": f"not measured: {err.args[0]}"}
        failed = (self.min is not None and measured < self.min) or (self.max is not None and measured > self.max)
        what = {
            "speedup": f"speedup of {self.variant} over {self.reference}",
            "p99_over_p50": f"p99/p50 of {self.variant}",
            "e2e_over_session": f"end-to-end/session of {self.variant}",
            "absolute_ms": f"{self.stat} of {self.variant}",
        }[self.kind]
        figure = f"{measured:.2f} ms" if self.kind == "absolute_ms" else f"{measured:.2f}x"
        message = f"{what} = {figure}, bound {self.bound_text()} [{self.cell.describe()}]"
        return {**outcome, "status": "fail" if failed else "pass", "measured": measured, "message": message}


def _rule_error(path: Path, index: int, problem: str) -> ConfigError:
    return ConfigError(f"{path}: rule {index}: {problem}")


def parse_gate_rules(data: dict[str, Any], path: Path) -> list[GateRule]:
    """Rules from a parsed gate file: ``[defaults]`` merged into every ``[[rule]]``, each validated.

    Raises:
        ConfigError: naming the file, the rule (1-based) and the bad key or value.
    """
    unknown_top = sorted(set(data) - {"rule", "defaults"})
    if unknown_top:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown_top)}; use [defaults] and [[rule]]")
    defaults = data.get("defaults", {})
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"{path}: no [[rule]] tables; a gate file needs at least one rule")
    rules = []
    for index, raw in enumerate(raw_rules, start=1):
        merged = {**defaults, **raw}
        unknown = sorted(set(merged) - _RULE_KEYS)
        if unknown:
            raise _rule_error(
                path, index, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_RULE_KEYS))}"
            )
        kind = merged.get("kind")
        if kind not in GATE_KINDS:
            raise _rule_error(path, index, f"kind {kind!r}; use one of {', '.join(GATE_KINDS)}")
        if not isinstance(merged.get("name", ""), str):
            raise _rule_error(path, index, f"name = {merged['name']!r}; need a string")
        if not isinstance(merged.get("variant"), str):
            raise _rule_error(path, index, 'needs variant = "<name given with --name>"')
        for key in ("threads", "batch_size", "seq_len"):
            value = merged.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise _rule_error(path, index, f"{key} = {value!r}; need a positive integer")
        for key in ("min", "max"):
            value = merged.get(key)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
                raise _rule_error(path, index, f"{key} = {value!r}; need a positive number")
        if merged.get("provider", "cpu") not in PROVIDERS:
            raise _rule_error(path, index, f"provider = {merged['provider']!r}; use cpu or cuda")
        if merged.get("stat", "p50") not in _STATS:
            raise _rule_error(path, index, f"stat = {merged['stat']!r}; use one of {', '.join(_STATS)}")
        needs = {
            "speedup": ("reference", "min"),
            "p99_over_p50": ("max",),
            "e2e_over_session": ("max",),
            "absolute_ms": ("max", "hardware"),
        }[kind]
        if kind != "e2e_over_session":
            needs = (*needs, "seq_len")
        missing = [key for key in needs if merged.get(key) is None]
        if missing:
            hint = " (absolute budgets are only for named GPU hardware)" if "hardware" in missing else ""
            raise _rule_error(path, index, f"{kind} needs {', '.join(missing)}{hint}")
        if kind != "absolute_ms" and merged.get("hardware") is not None:
            raise _rule_error(path, index, "hardware only applies to absolute_ms rules")
        merged.setdefault("name", _default_rule_name(merged))
        rules.append(GateRule(**{**merged, "min": _float(merged.get("min")), "max": _float(merged.get("max"))}))
    return rules


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _default_rule_name(rule: dict[str, Any]) -> str:
    against = f" vs {rule['reference']}" if rule.get("reference") else ""
    length = f" s{rule['seq_len']}" if rule.get("seq_len") else ""
    return (
        f"{rule['kind']} {rule['variant']}{against} b{rule.get('batch_size', 1)}{length} "
        f"t{rule.get('threads', 1)} {rule.get('provider', 'cpu')}"
    )


def load_gate_file(path: Path) -> list[GateRule]:
    """Parse a TOML gate file into rules.

    Raises:
        ConfigError: missing file, invalid TOML, or an invalid rule (named by file and index).
    """
    path = Path(path)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as err:
            raise MissingDependencyError("gate files need tomllib (Python 3.11+) or: pip install tomli") from err
    if not path.is_file():
        raise ConfigError(f"{path}: gate file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from err
    return parse_gate_rules(data, path)


def _row_key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(k) for k in ROW_KEY)


def _row_cell(row: dict[str, Any]) -> Cell:
    return Cell(row["provider"], row["threads"], row["batch_size"], row["seq_len"], row["source"])


def find_row(
    rows: Sequence[dict[str, Any]], variant: str | None, cell: Cell, mode: str = MODE_SESSION
) -> dict[str, Any]:
    """The result row of ``variant`` in ``cell``; KeyError with a readable description if absent."""
    key = (variant, cell.provider, cell.threads, cell.batch_size, cell.seq_len, cell.source, mode)
    row = next((r for r in rows if _row_key(r) == key), None)
    if row is None:
        raise KeyError(f"{variant} ({mode}) at {cell.describe()}")
    return row


def compare_to_baseline(
    rows: Sequence[dict[str, Any]], baseline_rows: Sequence[dict[str, Any]], tolerance: float
) -> list[dict[str, Any]]:
    """p50 of each row against the baseline row with the same key (variant, cell, mode).

    Returns:
        One dict per matched row: the key fields, ``baseline_p50_ms``, ``p50_ms``, ``change``
        (relative, +0.12 = 12% slower) and ``status`` ("fail" beyond ``tolerance``, else "pass").
    """
    baseline = {_row_key(row): row for row in baseline_rows}
    out = []
    for row in rows:
        base = baseline.get(_row_key(row))
        if base is None:
            continue
        change = row["p50_ms"] / base["p50_ms"] - 1.0
        out.append(
            {
                **{k: row[k] for k in ROW_KEY},
                "baseline_p50_ms": base["p50_ms"],
                "p50_ms": row["p50_ms"],
                "change": change,
                "status": "fail" if change > tolerance else "pass",
            }
        )
    return out


def _load_baseline(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataError(
            f"{path}: cannot read baseline ({err}); pass a file written by 'edgesent bench --json'"
        ) from err
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("rows"), list):
        raise DataError(
            f"{path}: not an edgesent bench result (schema {SCHEMA}); save one with 'edgesent bench --json'"
        )
    return doc


# -------------------------------------------------------------------------------------------- machine


def gpu_names() -> list[str]:
    """GPU model names from nvidia-smi (empty without an NVIDIA driver)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=15, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _cpu_model_and_flags() -> tuple[str, list[str], int | None]:
    model, flags, cores = "", [], set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    physical = ""
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key in ("model name", "Model", "Hardware") and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = value.split()
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    if not model and importlib.util.find_spec("cpuinfo") is not None:  # py-cpuinfo: macOS, Windows
        import cpuinfo

        info = cpuinfo.get_cpu_info()
        model, flags = info.get("brand_raw", ""), info.get("flags", [])
    return model or platform.processor() or platform.machine(), flags, len(cores) or None


def machine_info() -> dict[str, Any]:
    """CPU model and GEMM-relevant ISA flags, cores, OS, library versions, ORT providers and GPUs.

    ``versions`` lists what is installed; whether torch was actually loaded is recorded by
    ``run_benchmark`` as ``machine["torch"]`` once the variants have run.
    """
    model, flags, physical = _cpu_model_and_flags()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": model,
        "cpu_flags": [f for f in ISA_FLAGS if f in flags],
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "gpus": gpu_names(),
        "versions": library_versions(),
    }


def measure_gemm_peak(threads: int, shape: tuple[int, int, int] = GEMM_SHAPE, runs: int = GEMM_RUNS) -> dict[str, Any]:
    """The machine's achieved fp32 (MatMul) and int8 (MatMulInteger, u8 x s8) GEMM throughput in ORT.

    Both graphs are built with onnx.helper and run in the same kind of session as the models, with
    the weight as an initializer (pre-packed, as in a real model), interleaved run by run. The p50
    is used, as for the models, so ``peak_fraction`` compares like with like.

    Args:
        threads: intra-op threads.
        shape: (M, K, N) of (M, K) @ (K, N).
        runs: Timed runs per GEMM.

    Returns:
        ``shape``, ``threads``, ``fp32_gops`` and ``int8_gops`` (1 GOP = 1e9 multiply or add operations).
    """
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = shape
    rng = np.random.default_rng(0)

    def model(op: str, a_name: str, a_type: int, b: np.ndarray, y_type: int) -> bytes:
        graph = helper.make_graph(
            [helper.make_node(op, [a_name, "B"], ["Y"])],
            f"gemm_{op}",
            [helper.make_tensor_value_info(a_name, a_type, [m, k])],
            [helper.make_tensor_value_info("Y", y_type, [m, n])],
            initializer=[numpy_helper.from_array(b, "B")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()

    graphs = [
        model("MatMul", "A", TensorProto.FLOAT, rng.standard_normal((k, n), dtype=np.float32), TensorProto.FLOAT),
        model(
            "MatMulInteger",
            "A_u8",
            TensorProto.UINT8,
            rng.integers(-128, 128, (k, n), dtype=np.int8),
            TensorProto.INT32,
        ),
    ]
    units = [
        _OrtSession(ort.InferenceSession(g, session_options(threads), providers=[_ORT_PROVIDER["cpu"]]), False)
        for g in graphs
    ]
    # One feed dict for both: each session picks its own input by name.
    feeds = {"A": rng.standard_normal((m, k), dtype=np.float32), "A_u8": rng.integers(0, 256, (m, k), dtype=np.uint8)}
    samples = _measure_units(units, [feeds], warmup=3, runs=runs, budget_s=None)
    ops = 2 * m * k * n
    fp32_s, int8_s = (float(np.percentile(s, 50)) / 1e9 for s in samples)
    return {"shape": list(shape), "threads": threads, "fp32_gops": ops / fp32_s / 1e9, "int8_gops": ops / int8_s / 1e9}


# ------------------------------------------------------------------------------------------- peak RSS


def measure_peak_rss(variant: Variant, provider: str, threads: int, batch_size: int, seq_len: int) -> float | None:
    """Peak resident memory (MB) of a fresh process that loads ``variant`` and runs one batch.

    A subprocess per variant, because a process's high-water mark cannot be reset: measured in the
    benchmark process it would report the largest variant for all of them. The figure includes the
    interpreter and the libraries the variant needs (torch for PyTorch, only onnxruntime for ONNX),
    which is what a deployment pays. None where the child fails (the reason is logged) or the
    platform reports no peak (Windows).
    """
    with tempfile.TemporaryDirectory(prefix="edgesent-rss-") as tmp:
        out_path = Path(tmp) / "rss.json"
        spec = {
            "model_dir": str(variant.model_dir),
            "name": variant.name,
            "provider": provider,
            "threads": threads,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "out": str(out_path),
        }
        code = "import sys, edgesent.bench as b; b._rss_probe(sys.argv[1])"
        try:
            proc = subprocess.run(
                [sys.executable, "-c", code, json.dumps(spec)],
                check=False,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            logger.warning("peak RSS of %s not measured: the probe ran past 600 s", variant.name)
            return None
        if proc.returncode != 0 or not out_path.is_file():
            logger.warning("peak RSS of %s not measured: %s", variant.name, proc.stderr.strip()[-500:])
            return None
        return json.loads(out_path.read_text())["peak_rss_mb"]


def _peak_rss_mb() -> float | None:
    """This process's peak RSS in MB.

    Linux: VmHWM of /proc/self/status, not ``ru_maxrss``, which the kernel carries over from the
    parent across fork+exec and so would report the benchmark process's own (torch-sized) peak.
    """
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10  # bytes on macOS, KiB elsewhere


def _rss_probe(spec_json: str) -> None:
    """Child-process side of ``measure_peak_rss``: load, run one batch, write the peak RSS."""
    spec = json.loads(spec_json)
    variant = load_variant(Path(spec["model_dir"]), spec["name"])
    units = _RunnerPool([variant]).units(spec["provider"], spec["threads"], SOURCE_SYNTHETIC)
    feeds = synthetic_inputs(spec["batch_size"], spec["seq_len"], variant.hf_config.get("vocab_size", 2), 0)
    runner = units[0][2]
    runner.run(runner.prepare(feeds))
    Path(spec["out"]).write_text(json.dumps({"peak_rss_mb": _peak_rss_mb()}))


# --------------------------------------------------------------------------------------------- result


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
                    f"regression {r['variant']} [{_row_cell(r).describe()}, {r['mode']}]: p50 {r['p50_ms']:.3f} ms "
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
                f"{r['speedup']:.2f}x" if r["speedup"] is not None else "",
                f"{r['gops']:.1f}" if r["gops"] is not None else "",
                f"{r['peak_fraction']:.0%}" if r["peak_fraction"] is not None else "",
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


# --------------------------------------------------------------------------------------------- report


def _require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingDependencyError(f"--report draws a PNG with matplotlib; install it with: {BENCH_EXTRA}")


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
    fig, axes = plt.subplots(
        math.ceil(len(panels) / cols), cols, figsize=(5 * cols, 3.8 * math.ceil(len(panels) / cols)), squeeze=False
    )
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
    """Write report.md, latency_vs_length.png, results.json and edgesent_config.json to ``cfg.report_dir``.

    Written atomically: a failed plot leaves no half-written report behind.
    """
    with atomic_output_dir(cfg.report_dir, overwrite=cfg.overwrite) as tmp:
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
    return Path(cfg.report_dir)


# ------------------------------------------------------------------------------------------------ run


def _load_texts(cfg: BenchConfig) -> list[str]:
    from edgesent.data import load_dataset

    texts = load_dataset(cfg.data_path, text_column=cfg.text_column, label_column=None, skip_empty=True).texts
    if not texts:
        raise DataError(f"{cfg.data_path}: no non-empty texts to time")
    return texts


def _cell_inputs(cell: Cell, texts: list[str], vocab_size: int, seed: int) -> list[Any]:
    if cell.source == SOURCE_SYNTHETIC:
        return [synthetic_inputs(cell.batch_size, cell.seq_len, vocab_size, seed)]
    n_batches = min(math.ceil(len(texts) / cell.batch_size), MAX_DATA_BATCHES)
    cycle = itertools.cycle(texts)
    return [[next(cycle) for _ in range(cell.batch_size)] for _ in range(n_batches)]


def _check_lengths(variants: list[Variant], cells: list[Cell]) -> None:
    longest = max((c.seq_len for c in cells if c.seq_len is not None), default=0)
    for v in variants:
        limit = v.hf_config.get("max_position_embeddings")
        if isinstance(limit, int) and longest > limit:
            raise ConfigError(
                f"seq_lens: {longest} exceeds {v.name}'s max_position_embeddings ({limit}); use shorter lengths"
            )


def _add_ratios(
    rows: list[dict[str, Any]], reference: str, variants: dict[str, Variant], peaks: dict[str, dict[str, Any]] | None
) -> None:
    """Fill speedup (p50 of the reference / p50 of the row, same cell and mode), GOP/s and fraction of peak."""
    by_key = {_row_key(r): r for r in rows}
    for row in rows:
        ref = by_key.get((reference, *_row_key(row)[1:]))
        row["speedup"] = ref["p50_ms"] / row["p50_ms"] if ref is not None else None
        row["gops"] = row["peak_fraction"] = None
        if row["source"] != SOURCE_SYNTHETIC:
            continue  # real texts vary in padded length: no exact operation count
        flops = variants[row["variant"]].flops(row["batch_size"], row["seq_len"])
        if flops is None:
            continue
        row["gops"] = flops / (row["p50_ms"] / 1e3) / 1e9
        peak = (peaks or {}).get(str(row["threads"])) if row["provider"] == "cpu" else None
        precision = variants[row["variant"]].precision
        if peak is not None and precision in ("fp32", "int8"):
            row["peak_fraction"] = row["gops"] / peak[f"{precision}_gops"]


def _check_rule_names(rules: list[GateRule], names: list[str], gate_path: Path | None) -> None:
    for rule in rules:
        for role in filter(None, (rule.variant, rule.reference)):
            if role not in names:
                raise ConfigError(
                    f"{gate_path}: rule {rule.name!r} names variant {role!r}, but this run has "
                    f"{', '.join(names)}; map directories to names with --name"
                )


def _measure_cells(cfg: BenchConfig, variants: list[Variant], cells: list[Cell], texts: list[str]) -> list[dict]:
    """One row per variant, cell and mode; cells grouped so each group's sessions are built once, up front."""
    vocab_size = min(int(v.hf_config.get("vocab_size", 2)) for v in variants)
    pool = _RunnerPool(variants)
    rows: list[dict[str, Any]] = []
    progress = tqdm(total=len(cells), desc="bench cells", unit="cell", disable=None, leave=False)
    for (provider, threads, source), group in itertools.groupby(
        cells, key=lambda c: (c.provider, c.threads, c.source)
    ):
        units = pool.units(provider, threads, source)
        for cell in group:
            logger.info("measuring %s", cell.describe())
            inputs = _cell_inputs(cell, texts, vocab_size, cfg.seed)
            samples = _measure_units([u[2] for u in units], inputs, cfg.warmup, cfg.runs, cfg.time_budget_s)
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
        variant names in rules, unavailable provider, lengths beyond the model. DataError: bad
        ``--data`` or baseline file. MissingDependencyError: torch for PyTorch variants, matplotlib
        for ``--report``.
    """
    names = cfg.variant_names
    variants = [load_variant(path, name) for path, name in zip(cfg.model_dirs, names)]
    reference = cfg.reference or names[0]
    if any(v.kind == KIND_PYTORCH for v in variants):
        from edgesent._imports import require_train_extra

        require_train_extra("bench (PyTorch variants)")
    if cfg.report_dir is not None:
        _require_matplotlib()
    baseline = _load_baseline(cfg.baseline_path) if cfg.baseline_path is not None else None
    rules = load_gate_file(cfg.gate_path) if cfg.gate_path is not None else []
    _check_rule_names(rules, names, cfg.gate_path)
    machine = machine_info()
    cells = plan_cells(cfg, [rule for rule in rules if rule.applies_to(machine)])
    _check_lengths(variants, cells)
    if any(c.provider == "cuda" for c in cells):
        _check_cuda(variants)
    texts = _load_texts(cfg) if any(c.source == SOURCE_DATA for c in cells) else []
    notes = []
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
            seq_len = cell.seq_len or v.manifest.get("max_length", 128)
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
