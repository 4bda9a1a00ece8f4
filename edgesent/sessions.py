"""ONNX Runtime sessions: the one home of providers, session options, session creation, IO binding and CPU facts.

The predictor (``edgesent.runtime``), the benchmark (``edgesent.bench``) and ``bench/int8_sensitivity.py``
all build their sessions here, so a setting (threads, spinning, graph optimisation level, provider
fallback) means the same thing wherever a model runs, and a benchmark row measured through the predictor
is comparable with one measured on a bare session.

Needs onnxruntime and numpy only; torch, transformers and onnx are never imported.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from edgesent.errors import ConfigError, ModelError


logger = logging.getLogger(__name__)

PROVIDERS = ("auto", "cpu", "cuda")
DEVICES = ("cpu", "cuda")  # the providers a session actually runs on ("auto" resolves to one of them)
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
GPU_EXTRA = "pip install 'edgesent[gpu]'"
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
SPINNING_KEY = "session.intra_op.allow_spinning"
CPUINFO_PATH = Path("/proc/cpuinfo")


def available_providers() -> list[str]:
    """What the installed onnxruntime offers (``onnxruntime.get_available_providers()``)."""
    return list(ort.get_available_providers())


def resolve_providers(provider: str, available: Sequence[str]) -> list[str]:
    """The ONNX Runtime execution providers to ask for, best first.

    CPU always comes last so ONNX Runtime can place nodes the CUDA provider lacks. Kept separate from
    session creation so the choice is testable on a machine without onnxruntime-gpu.

    Args:
        provider: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        available: what ``onnxruntime.get_available_providers()`` reports.

    Returns:
        ``[CUDAExecutionProvider, CPUExecutionProvider]`` or ``[CPUExecutionProvider]``.

    Raises:
        ConfigError: ``"cuda"`` was asked for and the installed onnxruntime has no CUDA provider.
    """
    if provider == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if provider == "cuda":
        raise ConfigError(
            f"provider='cuda' but onnxruntime {ort.__version__} has no {CUDA_PROVIDER}; install the GPU build "
            f"with: {GPU_EXTRA}, or use provider 'cpu' (available: {', '.join(available)})"
        )
    return [CPU_PROVIDER]


def session_options(
    threads: int | None = None, graph_optimization: str = "all", spinning: bool = True
) -> ort.SessionOptions:
    """ONNX Runtime session options: intra-op threads, graph optimisation level and thread-pool spinning.

    Args:
        threads: intra-op threads, with one inter-op thread (default None: ONNX Runtime's choice, one per
            physical core).
        graph_optimization: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"`` (default).
        spinning: let idle pool threads spin for the next run (default True, ONNX Runtime's own default:
            lowest latency for one model alone). False when several models take turns on the same cores,
            as in the benchmark: a spinning pool steals cores from the next model's run. One thread has no
            pool, so no effect there.

    Returns:
        The options, sequential execution mode.

    Raises:
        ConfigError: an unknown graph optimisation level or a thread count that is not a positive integer.
    """
    if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
        raise ConfigError(
            f"graph_optimization={graph_optimization!r} is not one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}"
        )
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads={threads!r} must be a positive integer or None")
    options = ort.SessionOptions()
    options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[graph_optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry(SPINNING_KEY, "0")
    return options


def create_session(
    model: str | Path | bytes,
    provider: str = "auto",
    threads: int | None = None,
    graph_optimization: str = "all",
    spinning: bool = True,
) -> ort.InferenceSession:
    """An InferenceSession on the chosen provider, with the options of :func:`session_options`.

    With ``"auto"``, a CUDA provider that is installed but fails to start (no driver, CUDA or cuDNN libraries
    missing) falls back to the CPU with a warning; an explicit ``"cuda"`` fails instead of silently running
    on the CPU.

    Args:
        model: path of an ``.onnx`` file, or a serialized model.
        provider: ``"auto"`` (default), ``"cpu"`` or ``"cuda"``.
        threads: intra-op threads (default None: ONNX Runtime's choice).
        graph_optimization: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"`` (default).
        spinning: see :func:`session_options` (default True).

    Returns:
        The session; ``session.get_providers()[0]`` is the provider that runs it.

    Raises:
        ConfigError: a bad setting, or ``"cuda"`` without a usable CUDA provider.
        ModelError: the model file is missing or onnxruntime cannot load it.
    """
    if provider not in PROVIDERS:
        raise ConfigError(f"provider={provider!r} is not one of {', '.join(PROVIDERS)}")
    options = session_options(threads, graph_optimization, spinning)
    providers = resolve_providers(provider, available_providers())
    source: str | bytes = model if isinstance(model, bytes) else str(model)
    where = "serialized model" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ModelError(f"{model}: missing; re-export the model")
    try:
        session = ort.InferenceSession(source, options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types, all unrelated to ours
        if providers[0] == CUDA_PROVIDER and provider == "auto":
            logger.warning("CUDA provider failed to start (%s); running on CPU", str(err).splitlines()[0])
            return create_session(model, "cpu", threads, graph_optimization, spinning)
        raise ModelError(f"{where}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from err
    if provider == "cuda" and session.get_providers()[0] != CUDA_PROVIDER:
        raise ConfigError(
            f"provider='cuda' but {CUDA_PROVIDER} did not start (no GPU, or CUDA/cuDNN libraries missing); "
            "check nvidia-smi and the onnxruntime-gpu requirements, or use provider 'cpu'"
        )
    return session


def session_device(session: Any) -> str:
    """``"cuda"`` when the session runs on the CUDA provider, else ``"cpu"``."""
    return "cuda" if session.get_providers()[0] == CUDA_PROVIDER else "cpu"


class DeviceBinding(NamedTuple):
    """An IO binding with its inputs already on the GPU; ``inputs`` keeps the device buffers alive."""

    binding: Any  # onnxruntime.IOBinding
    inputs: list[Any]  # onnxruntime.OrtValue per input


def bind_to_device(
    session: Any, feeds: Mapping[str, np.ndarray], output_names: Sequence[str], device_id: int = 0
) -> DeviceBinding:
    """Copy the inputs to the GPU and bind them, with the outputs left on the device.

    One binding per call: IOBinding objects are not thread-safe, sessions are. Run it with
    :func:`run_bound`; read the outputs with ``binding.copy_outputs_to_cpu()``.

    Args:
        session: a session on the CUDA provider.
        feeds: input name -> host array (copied to the device here, once).
        output_names: outputs to bind on the device.
        device_id: the CUDA device (default 0).

    Returns:
        The binding and the device inputs it refers to.
    """
    binding = session.io_binding()
    values = [
        ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", device_id) for array in feeds.values()
    ]
    for name, value in zip(feeds, values):
        binding.bind_ortvalue_input(name, value)
    for name in output_names:
        binding.bind_output(name, "cuda", device_id)
    return DeviceBinding(binding, values)


def run_bound(session: Any, bound: DeviceBinding) -> None:
    """Run a session on a :func:`bind_to_device` binding; the outputs stay on the device."""
    session.run_with_iobinding(bound.binding)


def run_on_device(session: Any, feeds: Mapping[str, np.ndarray], output_names: Sequence[str]) -> list[np.ndarray]:
    """One CUDA run with IO binding: inputs copied to the GPU, outputs copied back, one copy each way.

    Args:
        session: a session on the CUDA provider.
        feeds: input name -> host array.
        output_names: the outputs wanted.

    Returns:
        The outputs as host arrays, in ``output_names`` order.
    """
    bound = bind_to_device(session, feeds, output_names)
    run_bound(session, bound)
    return list(bound.binding.copy_outputs_to_cpu())


@dataclass(frozen=True)
class CpuInfo:
    """What this machine's CPU is, as far as GEMM speed is concerned.

    Attributes:
        model: the CPU model name (``platform.processor()`` or the architecture when none is readable).
        flags: instruction-set flags (x86 ``flags`` or ARM ``Features``), lower case as the OS lists them.
        physical_cores: physical cores, or None where /proc/cpuinfo does not say.
    """

    model: str
    flags: tuple[str, ...]
    physical_cores: int | None


def cpu_info(path: Path = CPUINFO_PATH) -> CpuInfo:
    """Read the CPU model, ISA flags and physical cores: /proc/cpuinfo on Linux, py-cpuinfo elsewhere if installed.

    Args:
        path: the cpuinfo file (default /proc/cpuinfo; tests pass a fixture).

    Returns:
        The CpuInfo; empty flags and None cores where nothing can be read.
    """
    model, flags, cores = "", list[str](), set[tuple[str, str]]()
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
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
        model, flags = info.get("brand_raw", ""), info.get("flags", []) or flags
    return CpuInfo(model or platform.processor() or platform.machine(), tuple(flags), len(cores) or None)
