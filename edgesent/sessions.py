"""Inference sessions: the one home of providers, session options, session creation, IO binding and CPU facts.

The predictor (``edgesent.runtime``), the benchmark (``edgesent.bench``) and ``bench/int8_sensitivity.py``
all build their sessions here, so a setting (threads, spinning, graph optimisation level, provider
fallback) means the same thing wherever a model runs, and a benchmark row measured through the predictor
is comparable with one measured on a bare session.

Needs onnxruntime and numpy only; torch, transformers and onnx are never imported. OpenVINO (the ``openvino``
extra) is a second CPU runtime behind the same session interface (:class:`OpenVINOSession`); it is imported
only when a session is created on it, so nothing here pays for it otherwise.
"""

from __future__ import annotations

import importlib.util
import logging
import platform
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import numpy as np
import onnxruntime as ort

from edgesent._imports import missing_modules, require_extra
from edgesent.config.predictor import GRAPH_OPTIMIZATIONS
from edgesent.config.providers import (
    OPENVINO_EXTRA,
    PROVIDERS,
    RUNTIME_ONNXRUNTIME,
    RUNTIME_OPENVINO,
)
from edgesent.errors import ConfigError, ModelError


logger = logging.getLogger(__name__)

OPENVINO_MODULES = ("openvino",)  # running a model on OpenVINO
OPENVINO_EXPORT_MODULES = ("openvino", "nncf")  # building one for it: NNCF's int8, gated on OpenVINO
OPENVINO_DEVICE = "CPU"
# ONNX Runtime's names of the element types a session reports (``NodeArg.type``), by numpy dtype name.
_ORT_TYPE_NAMES = {"float32": "float", "float64": "double"}
DEVICES = ("cpu", "cuda")  # the providers a session actually runs on ("auto" resolves to one of them)
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
GPU_EXTRA = "pip install 'edgesent[gpu]'"
GRAPH_OPTIMIZATION_LEVELS = dict(
    zip(
        GRAPH_OPTIMIZATIONS,
        (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        ),
        strict=True,
    )
)
SPINNING_KEY = "session.intra_op.allow_spinning"
DISABLED_OPTIMIZERS_KEY = "optimization.disable_specified_optimizers"
# Which of ONNX Runtime's load-time fusions a session gets: "edgesent" (default) turns off those in CPU_UNFUSED
# when the session runs on the CPU provider alone; "onnxruntime" keeps them all, as a bare InferenceSession does
# (how bench/peers.py runs the peers, as their users would).
FUSIONS = ("edgesent", "onnxruntime")
# SkipLayerNormFusion: onnxruntime 1.32's fused SkipLayerNormalization CPU kernel took ~54 us a call on 24 tokens x
# 384 where the Add and LayerNormalization it replaces took ~6 and ~12; without it the SST-2 MiniLM int8 ran
# 3.5-9% faster and its pruned form 15-26%, with the same labels one text at a time (bench/ort_fusions.py,
# bench/EXPORT_DEFAULTS.md, sixth measurement). The CUDA kernel is left alone.
CPU_UNFUSED = ("SkipLayerNormFusion",)
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


def disabled_fusions(fusions: str, providers: Sequence[str]) -> tuple[str, ...]:
    """The ONNX Runtime optimisers to turn off: :data:`CPU_UNFUSED` for ``"edgesent"`` on the CPU provider alone.

    Raises:
        ConfigError: ``fusions`` is not one of :data:`FUSIONS`.
    """
    if fusions not in FUSIONS:
        raise ConfigError(f"fusions={fusions!r} is not one of {', '.join(FUSIONS)}")
    return CPU_UNFUSED if fusions == "edgesent" and list(providers) == [CPU_PROVIDER] else ()


def session_options(
    threads: int | None = None,
    graph_optimization: str = "all",
    spinning: bool = True,
    disabled_optimizers: Sequence[str] = (),
) -> ort.SessionOptions:
    """ONNX Runtime session options: intra-op threads, graph optimisation level, thread-pool spinning and the
    optimisers turned off.

    Args:
        threads: intra-op threads, with one inter-op thread (default None: ONNX Runtime's choice, one per
            physical core).
        graph_optimization: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"`` (default).
        spinning: let idle pool threads spin for the next run (default True, ONNX Runtime's own default:
            lowest latency for one model alone). False when several models take turns on the same cores,
            as in the benchmark: a spinning pool steals cores from the next model's run. One thread has no
            pool, so no effect there.
        disabled_optimizers: ONNX Runtime optimiser names to skip at load time (:func:`disabled_fusions`).

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
    if disabled_optimizers:
        options.add_session_config_entry(DISABLED_OPTIMIZERS_KEY, ",".join(disabled_optimizers))
    return options


def create_session(
    model: str | Path | bytes,
    provider: str = "auto",
    threads: int | None = None,
    graph_optimization: str = "all",
    spinning: bool = True,
    fusions: str = "edgesent",
) -> Session:
    """An InferenceSession on the chosen provider, with the options of :func:`session_options`, or an
    :class:`OpenVINOSession` for ``"openvino"``.

    With ``"auto"``, a CUDA provider that is installed but fails to start (no driver, CUDA or cuDNN libraries
    missing) falls back to the CPU with a warning; an explicit ``"cuda"`` fails instead of silently running
    on the CPU.

    Args:
        model: path of an ``.onnx`` file, or a serialized model.
        provider: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"openvino"`` (the ``openvino`` extra: OpenVINO
            on the CPU; ``graph_optimization`` and ``spinning`` are ONNX Runtime's and do not apply to it).
        threads: intra-op threads (default None: the runtime's choice).
        graph_optimization: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"`` (default).
        spinning: see :func:`session_options` (default True).
        fusions: ``"edgesent"`` (default: ONNX Runtime's fusions less :data:`CPU_UNFUSED` on the CPU) or
            ``"onnxruntime"`` (all of them, as a bare ONNX Runtime session).

    Returns:
        The session; :func:`session_device` and :func:`session_runtime` say where and on what it runs.

    Raises:
        ConfigError: a bad setting, or ``"cuda"`` without a usable CUDA provider.
        MissingDependencyError: ``"openvino"`` without the ``openvino`` extra (one line naming the install command).
        ModelError: the model file is missing or the runtime cannot load it.
    """
    if provider not in PROVIDERS:
        raise ConfigError(f"provider={provider!r} is not one of {', '.join(PROVIDERS)}")
    providers = [] if provider == RUNTIME_OPENVINO else resolve_providers(provider, available_providers())
    options = session_options(threads, graph_optimization, spinning, disabled_fusions(fusions, providers))
    if provider == RUNTIME_OPENVINO:
        return OpenVINOSession(model, threads)
    source: str | bytes = model if isinstance(model, bytes) else str(model)
    where = "serialized model" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ModelError(f"{model}: missing; re-export the model")
    try:
        session = ort.InferenceSession(source, options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types, all unrelated to ours
        if providers[0] == CUDA_PROVIDER and provider == "auto":
            logger.warning("CUDA provider failed to start (%s); running on CPU", str(err).splitlines()[0])
            return create_session(model, "cpu", threads, graph_optimization, spinning, fusions)
        raise ModelError(f"{where}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from err
    if provider == "cuda" and session.get_providers()[0] != CUDA_PROVIDER:
        raise ConfigError(
            f"provider='cuda' but {CUDA_PROVIDER} did not start (no GPU, or CUDA/cuDNN libraries missing); "
            "check nvidia-smi and the onnxruntime-gpu requirements, or use provider 'cpu'"
        )
    return session


def session_device(session: Any) -> str:
    """``"cuda"`` when the session runs on the CUDA provider, else ``"cpu"`` (an OpenVINO session runs on the CPU)."""
    if isinstance(session, OpenVINOSession):
        return "cpu"
    return "cuda" if session.get_providers()[0] == CUDA_PROVIDER else "cpu"


def session_runtime(session: Any) -> str:
    """``"openvino"`` for an :class:`OpenVINOSession`, else ``"onnxruntime"``."""
    return RUNTIME_OPENVINO if isinstance(session, OpenVINOSession) else RUNTIME_ONNXRUNTIME


def openvino_available() -> bool:
    """Whether the ``openvino`` extra is importable (nothing is imported to find out)."""
    return not missing_modules(OPENVINO_MODULES)


def require_openvino(what: str, modules: tuple[str, ...] = OPENVINO_MODULES) -> None:
    """Raise MissingDependencyError (one line, naming ``pip install 'edgesent[openvino]'``) unless importable.

    Args:
        what: who needs it, for the message (``"provider='openvino'"``).
        modules: the modules to look for (default: openvino; an int8 export for OpenVINO needs nncf too).
    """
    require_extra(what, RUNTIME_OPENVINO, modules, OPENVINO_EXTRA)


def choose_provider(provider: str, runtime: str) -> str:
    """The provider a predictor opens a model on, given the one asked for and the runtime its export records.

    ``"auto"`` follows the manifest: a model exported (and verified) for OpenVINO runs on OpenVINO when the
    ``openvino`` extra is installed; without it, it runs on ONNX Runtime (its int8 graph is standard ONNX, so
    the results are right, only slower) with one warning. Any other provider is taken as asked.

    Args:
        provider: one of :data:`PROVIDERS`.
        runtime: the export's runtime, one of :data:`RUNTIMES` (``ModelDir.runtime``).

    Returns:
        The provider for :func:`create_session`.
    """
    if provider != "auto" or runtime != RUNTIME_OPENVINO:
        return provider
    if openvino_available():
        return RUNTIME_OPENVINO
    logger.warning(
        "the model was exported for OpenVINO, which is not installed; running it on ONNX Runtime (correct, but "
        "slower); install it with: %s",
        OPENVINO_EXTRA,
    )
    return provider


def openvino_config(threads: int | None = None) -> dict[str, Any]:
    """OpenVINO's compile settings for one model: the latency hint, and ``threads`` inference threads if given."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


class SessionNode(NamedTuple):
    """An input or output as ``onnxruntime.NodeArg`` describes it: name, type (``tensor(int64)``), shape."""

    name: str
    type: str
    shape: list[int | None]


def _ov_node(port: Any) -> SessionNode:
    """An OpenVINO model's port as an ONNX Runtime NodeArg: dynamic dimensions are None."""
    dtype = np.dtype(port.get_element_type().to_dtype()).name
    shape = port.get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
    return SessionNode(port.get_any_name(), f"tensor({_ORT_TYPE_NAMES.get(dtype, dtype)})", dims)


class OpenVINOSession:
    """An ONNX model compiled by OpenVINO for the CPU, with the part of ``InferenceSession``'s interface that the
    predictor, the parity gate and the benchmark use: ``get_inputs``, ``get_outputs`` and ``run``.

    Safe to call from several threads at once: each thread runs its own infer request on the one compiled model
    (an infer request is not thread-safe; a compiled model is).

    Attributes:
        compiled: the ``openvino.CompiledModel``.
    """

    def __init__(self, model: str | Path | bytes | Any, threads: int | None = None) -> None:
        """Read and compile a model on the CPU with :func:`openvino_config`.

        Args:
            model: path of an ``.onnx`` file (or OpenVINO IR ``.xml``), a serialized ONNX model, or an
                ``openvino.Model`` (as ``nncf.quantize`` returns one).
            threads: inference threads (default None: OpenVINO's choice).

        Raises:
            ConfigError: a thread count that is not a positive integer.
            MissingDependencyError: the ``openvino`` extra is not installed.
            ModelError: the file is missing or OpenVINO cannot read or compile it.
        """
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads={threads!r} must be a positive integer or None")
        require_openvino("provider='openvino'")
        import openvino as ov

        core = ov.Core()
        where = "serialized model" if isinstance(model, bytes) else str(model)
        if isinstance(model, (str, Path)) and not Path(model).is_file():
            raise ModelError(f"{model}: missing; re-export the model")
        try:
            if isinstance(model, bytes):
                source = core.read_model(model, ov.Tensor(np.empty(0, dtype=np.uint8)))
            elif isinstance(model, (str, Path)):
                source = core.read_model(str(model))
            else:
                source = model
            self.compiled = core.compile_model(source, OPENVINO_DEVICE, openvino_config(threads))
        except Exception as err:  # openvino raises RuntimeError and its own types for any unreadable model
            raise ModelError(f"{where}: OpenVINO cannot load it ({str(err).splitlines()[0]})") from err
        # Names from the model as read: a compiled model's output port also carries its producer's tensor name
        # (``/classifier/MatMul_output_0`` beside ``logits``), and any one of them may come first.
        self._inputs = [_ov_node(port) for port in source.inputs]
        self._outputs = [_ov_node(port) for port in source.outputs]
        self._index = {node.name: i for i, node in enumerate(self._outputs)}
        self._local = threading.local()
        self.version = ov.__version__

    def get_inputs(self) -> list[SessionNode]:
        """The model's inputs, as ``InferenceSession.get_inputs()`` lists them."""
        return list(self._inputs)

    def get_outputs(self) -> list[SessionNode]:
        """The model's outputs, as ``InferenceSession.get_outputs()`` lists them."""
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """One inference, as ``InferenceSession.run``: the outputs named (None: all), as numpy arrays.

        Raises:
            ModelError: an output name the model does not have.
        """
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        names = list(output_names) if output_names else list(self._index)
        unknown = [name for name in names if name not in self._index]
        if unknown:
            raise ModelError(f"no output named {', '.join(map(repr, unknown))} (outputs: {', '.join(self._index)})")
        results = request.infer(dict(feed)).to_tuple()  # copies of the outputs, in the model's output order
        return [np.asarray(results[self._index[name]]) for name in names]


# What create_session returns; both answer get_inputs(), get_outputs() and run(output_names, feed).
Session: TypeAlias = "ort.InferenceSession | OpenVINOSession"


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
