"""The timed units of a benchmark: model variants, their runners, and the interleaved measuring loop.

A runner has two steps: ``prepare`` turns an input into what ``run`` consumes, outside the timing, and
``run`` is the timed call. Every ONNX session here, bare or inside the predictor, is built by
``edgesent.sessions.create_session`` with the same benchmark settings (:data:`SESSION_SETTINGS`), so
synthetic and real-text rows at any thread count are comparable.

Needs numpy and onnxruntime; torch and transformers are imported only when a PyTorch variant is loaded,
``edgesent.runtime`` only when real texts are timed end to end. Span models (task ``token-classification``) are
measured like classifiers: synthetic inputs are the same token ids, the PyTorch runner loads a token classifier,
and the end-to-end cells decode spans (the predictor's own ``predict``, and ``decode_spans`` for PyTorch).
"""

from __future__ import annotations

import gc
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from edgesent.artifacts import (
    KIND_ONNX,
    KIND_PYTORCH,
    RUNTIME_ONNXRUNTIME,
    TASK_CLASSIFY,
    TASK_SPANS,
    read_model_dir,
)
from edgesent.bench.config import MODE_E2E, MODE_SESSION, SOURCE_DATA, SOURCE_SYNTHETIC
from edgesent.errors import ConfigError
from edgesent.flops import count_flops
from edgesent.sessions import (
    available_providers,
    bind_to_device,
    create_session,
    resolve_providers,
    run_bound,
    session_device,
)
from edgesent.sessions import session_options as _session_options


MIN_BUDGET_ROUNDS = 5  # a time budget still yields enough runs for a p50
# Every benchmark session: all graph optimisations, and a thread pool that does not spin after a run. In the
# interleaved schedule a spinning pool would steal cores from the next variant's run (with two threads on a
# loaded 2-core machine, PyTorch went from ~1.5 ms to ~100 ms next to spinning pools).
SESSION_SETTINGS: dict[str, Any] = {"graph_optimization": "all", "spinning": False}


def session_options(threads: int) -> ort.SessionOptions:
    """ORT options of a benchmark session: ``threads`` intra-op threads, one inter-op, sequential, no spinning."""
    return _session_options(threads, **SESSION_SETTINGS)


def create_bench_session(model: str | Path | bytes, provider: str, threads: int) -> ort.InferenceSession:
    """A session with the benchmark settings (``SESSION_SETTINGS``) on ``provider`` ("cpu" or "cuda").

    Raises:
        ConfigError: ``cuda`` without a usable CUDA provider. ModelError: the model cannot be loaded.
    """
    return create_session(model, provider, threads, **SESSION_SETTINGS)


@dataclass
class Variant:
    """One model directory under test, as its manifest describes it."""

    name: str
    model_dir: Path
    kind: str
    precision: str
    pruned: bool
    model_path: Path
    max_length: int
    labels: tuple[str, ...]
    hf_config: dict[str, Any] = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)
    peak_rss_mb: float | None = None
    task: str = TASK_CLASSIFY
    tags: tuple[str, ...] | None = None  # a span model's BIO tags, index = output id
    runtime: str = RUNTIME_ONNXRUNTIME  # the runtime the export was built and verified for (its manifest's)

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
            "task": self.task,
            "precision": self.precision,
            "pruned": self.pruned,
            "backend": self.backend,
            "runtime": self.runtime,
            "peak_rss_mb": self.peak_rss_mb,
        }


def load_variant(model_dir: Path, name: str) -> Variant:
    """Read a model directory through ``read_model_dir``; ModelError if it is not usable.

    Args:
        model_dir: A PyTorch or ONNX edgesent directory.
        name: The name the variant goes by in tables and gate rules.

    Returns:
        The Variant, with kind, task (and a span model's tags) and precision from the manifest (precision
        defaults to fp32).

    Raises:
        ModelError: no manifest, an unknown kind, no config.json, or a file that does not match its hash.
    """
    model = read_model_dir(model_dir)
    hf_config = model.hf_config()
    pruned = bool(model.manifest.get("pruning") or hf_config.get("pruned_heads"))
    return Variant(
        name,
        model.path,
        model.kind,
        model.precision,
        pruned,
        model.model_path,
        model.max_length,
        model.labels,
        hf_config,
        model.manifest,
        task=model.task,
        tags=model.tags,
        runtime=model.runtime,
    )


class Runner(Protocol):
    """One timed thing: ``prepare`` turns an input into what ``run`` consumes, outside the timing."""

    def prepare(self, item: Any) -> Any: ...

    def run(self, prepared: Any) -> None: ...


def check_cuda(variants: Sequence[Variant]) -> None:
    """Fail before any timing, not after the CPU cells, when CUDA cells cannot run.

    Raises:
        ConfigError: onnxruntime has no CUDA provider (ONNX variants) or torch sees no GPU (PyTorch variants).
    """
    if any(v.kind == KIND_ONNX for v in variants):
        resolve_providers("cuda", available_providers())
    if any(v.kind == KIND_PYTORCH for v in variants):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("provider: cuda requested, but torch sees no CUDA device; use --provider cpu")


class CallRunner:
    """A plain callable as a timed unit: ``prepare`` passes the input through, ``run`` calls it on it."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def prepare(self, item: Any) -> Any:
        """The input itself."""
        return item

    def run(self, prepared: Any) -> None:
        """One call; its result is discarded."""
        self.fn(prepared)


class OrtRunner:
    """A bare ``InferenceSession.run``; on CUDA with IO binding, inputs and outputs stay on the GPU.

    With IO binding the host-to-device copy of the token ids happens in ``prepare``, outside the
    timing, and the logits are left on the device: the figure is the model's, not PCIe's.
    """

    def __init__(self, session: Any, io_binding: bool, encode: Callable[[Any], dict[str, Any]] | None = None):
        self.session = session
        self.io_binding = io_binding
        self.encode = encode
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def prepare(self, item: Any) -> Any:
        """Feeds for ``run``: encoded (real texts), contiguous, and bound on the device with IO binding."""
        feeds = self.encode(item) if self.encode is not None else item
        feeds = {name: np.ascontiguousarray(feeds[name]) for name in self.input_names}
        return bind_to_device(self.session, feeds, self.output_names) if self.io_binding else feeds

    def run(self, prepared: Any) -> None:
        """One session run; the outputs are discarded."""
        if self.io_binding:
            run_bound(self.session, prepared)
        else:
            self.session.run(self.output_names, prepared)


class PredictorE2E:
    """``Predictor.predict`` on raw texts: tokenization, session, softmax and labels."""

    def __init__(self, predictor: Any):
        self.predictor = predictor

    def prepare(self, item: list[str]) -> list[str]:
        """Texts are timed as they come."""
        return item

    def run(self, prepared: list[str]) -> None:
        """One ``predict`` call on the whole batch."""
        self.predictor.predict(prepared, batch_size=len(prepared))


def load_predictor(variant: Variant, provider: str, threads: int) -> Any:
    """A ``Predictor`` on a benchmark session (:data:`SESSION_SETTINGS`), not the predictor's defaults.

    Real-text cells must run with the synthetic cells' settings for their rows to be comparable. The
    variant's files were verified when it was loaded.
    """
    from edgesent.runtime import Predictor

    return Predictor.load(variant.model_dir, provider, threads, verify=False, **SESSION_SETTINGS)


class TorchModel:
    """A PyTorch classifier or span model (token classifier) on one device (fp16 on CUDA), timed bare or end to
    end on texts."""

    def __init__(self, variant: Variant, provider: str):
        import inspect

        # OpenMP threads wait passively, for the reason SESSION_SETTINGS gives; libgomp reads this once,
        # when torch first starts its pool, so a user's own setting (or an earlier start) wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

        _limit_torch_interop(torch)
        auto = AutoModelForTokenClassification if variant.task == TASK_SPANS else AutoModelForSequenceClassification
        model = auto.from_pretrained(variant.model_dir)
        if provider == "cuda":
            model = model.half().to("cuda")  # the GPU reference is PyTorch fp16
        self.torch = torch
        self.model = model.eval()
        self.device = "cuda" if provider == "cuda" else "cpu"
        self.accepts = set(inspect.signature(model.forward).parameters)
        self.tokenizer = AutoTokenizer.from_pretrained(variant.model_dir)
        self.max_length = variant.max_length
        self.labels = list(variant.labels)
        self.tags = list(variant.tags) if variant.task == TASK_SPANS and variant.tags else None

    def tensors(self, item: Any) -> dict[str, Any]:
        """Device tensors from synthetic feeds or, for a list of texts, from the tokenizer."""
        if isinstance(item, list):  # texts
            item = self.tokenizer(item, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        return {k: self.torch.from_numpy(np.asarray(v)).to(self.device) for k, v in item.items() if k in self.accepts}

    def forward(self, tensors: dict[str, Any]) -> Any:
        """(B, C) logits, (B, T, K) for a span model, synchronised on CUDA so the timing covers the work, not the launch."""
        with self.torch.inference_mode():
            logits = self.model(**tensors).logits
        if self.device == "cuda":
            self.torch.cuda.synchronize()
        return logits


class TorchForward:
    """The bare forward pass of a PyTorch model on prepared tensors."""

    def __init__(self, model: TorchModel):
        self.model = model

    def prepare(self, item: Any) -> dict[str, Any]:
        """Tensors on the model's device, outside the timing."""
        return self.model.tensors(item)

    def run(self, prepared: dict[str, Any]) -> None:
        """One forward pass."""
        self.model.forward(prepared)


class TorchE2E:
    """Tokenizer, forward, softmax and labels (or decoded spans): the PyTorch counterpart of ``Predictor.predict``."""

    def __init__(self, model: TorchModel):
        self.model = model

    def prepare(self, item: list[str]) -> list[str]:
        """Texts are timed as they come."""
        return item

    def run(self, prepared: list[str]) -> None:
        """Tokenize, forward, softmax and pick the labels or decode the spans (kept, as a caller would, then
        dropped)."""
        tags = getattr(self.model, "tags", None)
        if tags is None:
            probs = self.model.forward(self.model.tensors(prepared)).float().softmax(-1)  # (B, C)
            _ = [self.model.labels[i] for i in probs.argmax(-1).tolist()]
            return
        from edgesent.tasks.spans import decode_spans

        encoded = self.model.tokenizer(
            prepared,
            padding=True,
            truncation=True,
            max_length=self.model.max_length,
            return_offsets_mapping=True,
            return_tensors="np",
        )
        offsets = encoded.pop("offset_mapping")  # (B, T, 2)
        probs = self.model.forward(self.model.tensors(dict(encoded))).float().softmax(-1).cpu().numpy()  # (B, T, K)
        _ = [decode_spans(text, probs[i], offsets[i], encoded.word_ids(i), tags) for i, text in enumerate(prepared)]


def _limit_torch_interop(torch: Any) -> None:
    """One inter-op thread, like the ORT sessions; torch only allows it before its pool starts."""
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # set already, by an earlier model of this run
        pass


class RunnerPool:
    """Builds the timed units of every variant; PyTorch models are loaded once per provider and reused."""

    def __init__(self, variants: Sequence[Variant]):
        self.variants = list(variants)
        self._torch: dict[tuple[str, str], TorchModel] = {}  # (variant, provider): loaded once per run

    def torch_model(self, variant: Variant, provider: str) -> TorchModel:
        """The variant's PyTorch model on ``provider``, loaded on first use."""
        key = (variant.name, provider)
        if key not in self._torch:
            self._torch[key] = TorchModel(variant, provider)
        return self._torch[key]

    def units(self, provider: str, threads: int, source: str) -> list[tuple[str, str, Runner]]:
        """(variant name, mode, runner) for every variant; one ORT session per (variant, provider, threads)."""
        units: list[tuple[str, str, Runner]] = []
        for variant in self.variants:
            if variant.kind == KIND_PYTORCH:
                model = self.torch_model(variant, provider)
                if provider != "cuda":  # an openvino cell's PyTorch rows run on the CPU too
                    model.torch.set_num_threads(threads)
                units.append((variant.name, MODE_SESSION, TorchForward(model)))
                if source == SOURCE_DATA:
                    units.append((variant.name, MODE_E2E, TorchE2E(model)))
            elif source == SOURCE_SYNTHETIC:
                session = create_bench_session(variant.model_path, provider, threads)
                units.append((variant.name, MODE_SESSION, OrtRunner(session, io_binding=provider == "cuda")))
            else:
                predictor = load_predictor(variant, provider, threads)
                # Same session, same encodings: the ratio isolates what the predictor adds.
                on_gpu = session_device(predictor.session) == "cuda"
                units.append((variant.name, MODE_SESSION, OrtRunner(predictor.session, on_gpu, predictor.encode)))
                units.append((variant.name, MODE_E2E, PredictorE2E(predictor)))
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
        "throughput": batch_size * 1000.0 / mean if mean > 0 else float("inf"),
    }


# ONNX Runtime's errors for a run that cannot go through: memory exhausted (a BFCArena allocation: Fail), a shape
# or value the graph refuses (InvalidArgument), a kernel or provider failure. Load-time errors are ModelError.
ORT_RUN_ERRORS = ("Fail", "InvalidArgument", "RuntimeException", "EPFail", "EngineError")
_ORT_SOURCE = re.compile(r"^\S+\.(?:cc|cpp|h):\d+ [^()]*\([^()]*\)\s*")  # "/src/bfc_arena.cc:360 void* f(size_t) "


class UnitRunError(Exception):
    """A unit could not run a cell's input: ``index`` says which unit, ``error`` is the runtime's error."""

    def __init__(self, index: int, error: BaseException):
        super().__init__(str(error))
        self.index = index
        self.error = error

    def brief(self) -> str:
        """The runtime's message on one line, without ONNX Runtime's status prefix and C++ source location."""
        lines = str(self.error).strip().splitlines()
        text = lines[0].split("Status Message: ", 1)[-1] if lines else ""
        return _ORT_SOURCE.sub("", text) or type(self.error).__name__


def run_errors() -> tuple[type[BaseException], ...]:
    """What a runtime raises when a run cannot go through, so a cell too large fails with one line.

    ONNX Runtime's run errors, MemoryError, and torch's OutOfMemoryError once torch is loaded. Anything
    else (a TypeError, a KeyError) is a bug and propagates as it is.
    """
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    errors: list[type[BaseException]] = [MemoryError]
    errors.extend(getattr(ort_state, name) for name in ORT_RUN_ERRORS if hasattr(ort_state, name))
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if isinstance(oom, type):
        errors.append(oom)
    return tuple(errors)


def measure_units(
    units: Sequence[Runner],
    inputs: Sequence[Any],
    warmup: int,
    runs: int | None,
    budget_s: float | None,
    block: int = 1,
) -> list[list[int]]:
    """Warm every unit up, then time them round-robin, rotating the order each round.

    Round r runs every unit once on input ``r % len(inputs)`` (all units see the same input in a
    round), starting with unit ``r % n``, so no variant always runs first or right after another.
    With ``block`` > 1 each unit runs the ``block`` consecutive inputs from ``r * block`` in its turn: a
    model serving a stream, its weights still in cache from its previous run.
    The garbage collector is paused while timing, as ``timeit`` does, so its pauses do not land on
    whichever variant happens to allocate the last object.

    Args:
        units: the runners.
        inputs: what ``prepare`` takes, cycled through round by round.
        warmup: untimed runs per unit first.
        runs: timed rounds (None: use ``budget_s``).
        budget_s: seconds of timing; at least ``MIN_BUDGET_ROUNDS`` rounds run.
        block: runs per unit and round (default 1).

    Returns:
        Per unit, the duration of each timed run in nanoseconds.

    Raises:
        UnitRunError: a unit failed with one of ``run_errors()`` (out of memory, a shape the runtime refuses).
    """
    k = 0  # the unit at work: UnitRunError names it when it fails
    samples: list[list[int]] = [[] for _ in units]
    n = len(units)
    gc_was_enabled = gc.isenabled()
    try:
        prepared: list[list[Any]] = []
        for k, unit in enumerate(units):
            prepared.append([unit.prepare(item) for item in inputs])
        for k, (unit, items) in enumerate(zip(units, prepared)):
            for i in range(warmup):
                unit.run(items[i % len(items)])
        start = time.perf_counter()
        gc.disable()
        r = 0
        while (
            (r < (runs or 0))
            if budget_s is None
            else (r < MIN_BUDGET_ROUNDS or time.perf_counter() - start < budget_s)
        ):
            for j in range(n):
                k = (r + j) % n
                for b in range(block):
                    item = prepared[k][(r * block + b) % len(inputs)]
                    t0 = time.perf_counter_ns()
                    units[k].run(item)
                    samples[k].append(time.perf_counter_ns() - t0)
            r += 1
    except run_errors() as err:
        raise UnitRunError(k, err) from err
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples
