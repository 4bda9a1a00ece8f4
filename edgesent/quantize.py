"""Graph transforms of an exported ONNX model: int8 quantization, transformer fusions and fp16.

The defaults are the ones measured fastest on the target CPU, not the habitual ones; the figures
are in ``bench/EXPORT_DEFAULTS.md``. In short, on an avx512_vnni CPU with MiniLM-L6 (batch 1,
128 tokens, one thread): the plain export + ``quantize_dynamic`` with signed QInt8 per-tensor
weights ran in 7.8 ms, per-channel in 8.3 ms (with half the logit error), unsigned QUInt8 weights
(Optimum's ``avx2`` preset) in 12.6 ms, and pre-fused graphs were no faster than what ONNX Runtime
does itself when it loads the model. So fusions are opt-in and int8 quantizes the plain graph.

Every function here reads one ONNX file and writes another; ``edgesent.export`` chains them and
the parity gate decides whether the result may be shipped.
"""

from __future__ import annotations

import contextlib
import logging
import platform
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgesent.artifacts import scratch_dir
from edgesent.errors import ConfigError, ExportError
from edgesent.sessions import cpu_info


logger = logging.getLogger(__name__)

TARGETS = ("avx512_vnni", "avx2", "arm64", "portable")
WEIGHT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
KEEP_FP32_GROUPS = ("embeddings", "head")
OPTIMIZE_LEVELS = ("O1", "O2", "O3")
# Static (QDQ) quantization touches only the weight-bearing ops: quantizing LayerNorm, Softmax and the
# residual Adds of a transformer costs accuracy for little speed, which is why ORT's transformer
# examples restrict static quantization the same way.
STATIC_OP_TYPES = ("MatMul", "Gemm", "Gather")
QUANTIZED_OP_TYPES = (
    "MatMulInteger",
    "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QAttention",
    "QEmbedLayerNormalization",
    "QGemm",
    "QuantizeLinear",
    "DequantizeLinear",
)
_NORM_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "EmbedLayerNormalization")
_CONTRIB_DOMAIN = "com.microsoft"


@dataclass
class QuantizeConfig:
    """How to quantize a model to int8. Build it from a target preset rather than by hand.

    Args:
        target: The CPU family the weight format is chosen for: ``avx512_vnni``, ``avx2``, ``arm64`` or
            ``portable``. Recorded in the manifest; the other fields hold the actual choice.
        weight_type: ``int8`` (signed, MLAS's fast path) or ``uint8``.
        activation_type: Activation type for static quantization (dynamic always uses uint8).
        per_channel: One scale per output channel instead of one per tensor: about half the logit
            error, about 6% slower on avx512_vnni.
        reduce_range: 7-bit weights. Needed where u8 x s8 products go through VPMADDUBSW (AVX2 and
            AVX512 without VNNI), which can saturate; useless (and less precise) with VNNI.
        static: Static QDQ quantization with calibration data instead of dynamic quantization.
        keep_fp32: Node groups left in fp32: ``embeddings`` (embedding lookups) and/or ``head``
            (pooler and classifier), the parts most sensitive to rounding.

    Raises:
        ConfigError: an unknown target, type or group.
    """

    target: str = "portable"
    weight_type: str = "int8"
    activation_type: str = "uint8"
    per_channel: bool = True
    reduce_range: bool = True
    static: bool = False
    keep_fp32: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        for name in ("weight_type", "activation_type"):
            if getattr(self, name) not in WEIGHT_TYPES:
                raise ConfigError(f"{name} must be 'int8' or 'uint8', got {getattr(self, name)!r}")
        self.keep_fp32 = tuple(dict.fromkeys(self.keep_fp32))
        unknown = [g for g in self.keep_fp32 if g not in KEEP_FP32_GROUPS]
        if unknown:
            raise ConfigError(f"keep_fp32 groups must be among {', '.join(KEEP_FP32_GROUPS)}, got {unknown!r}")

    # Presets (Optimum's AutoQuantizationConfig pattern), one per target; see bench/EXPORT_DEFAULTS.md.
    @classmethod
    def avx512_vnni(cls) -> QuantizeConfig:
        """Signed per-channel weights, full range: as fast as per-tensor here, and more accurate.

        Measured on the SST-2 MiniLM (bench/EXPORT_DEFAULTS.md): per-channel 14.57 ms vs per-tensor
        14.66 ms (batch 1, length 128, one thread), dev agreement with fp32 98.4% vs 96.8%.
        """
        return cls(target="avx512_vnni", weight_type="int8", per_channel=True, reduce_range=False)

    @classmethod
    def avx2(cls) -> QuantizeConfig:
        """Signed weights with reduce_range, ORT's advice against VPMADDUBSW saturation without VNNI.

        Not measured on an AVX2-only CPU; unsigned weights (Optimum's avx2 choice) were 1.6x slower
        than signed ones on the avx512_vnni CPU, so signed + 7-bit is the better-founded choice.
        """
        return cls(target="avx2", weight_type="int8", per_channel=False, reduce_range=True)

    @classmethod
    def arm64(cls) -> QuantizeConfig:
        """Signed per-tensor weights, full range: ARM's dot-product kernels do not saturate."""
        return cls(target="arm64", weight_type="int8", per_channel=False, reduce_range=False)

    @classmethod
    def portable(cls) -> QuantizeConfig:
        """Correct on any CPU: 7-bit weights cannot saturate, per-channel scales win back the precision."""
        return cls(target="portable", weight_type="int8", per_channel=True, reduce_range=True)

    @classmethod
    def for_target(
        cls,
        target: str = "auto",
        *,
        per_channel: bool | None = None,
        reduce_range: bool | None = None,
        static: bool | None = None,
        keep_fp32: tuple[str, ...] | None = None,
    ) -> QuantizeConfig:
        """The preset for ``target`` (``auto``: this machine's, see ``detect_target``) with overrides.

        Overrides left at None keep the preset's choice, so unset CLI options change nothing.

        Raises:
            ConfigError: an unknown target.
        """
        name = detect_target() if target == "auto" else target
        if name not in TARGETS:
            raise ConfigError(f"target must be auto or one of {', '.join(TARGETS)}, got {target!r}")
        overrides = {
            "per_channel": per_channel,
            "reduce_range": reduce_range,
            "static": static,
            "keep_fp32": keep_fp32,
        }
        return replace(getattr(cls, name)(), **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QuantizeConfig:
        return cls(**{**values, "keep_fp32": tuple(values.get("keep_fp32", ()))})


def detect_target() -> str:
    """The quantization target of this machine: ``arm64`` by architecture, else from the CPU flags.

    ``avx_vnni`` (the VEX-encoded VNNI of recent Intel and AMD client CPUs) counts as ``avx512_vnni``:
    what matters for the weight format is that VNNI's u8 x s8 dot product does not saturate.
    """
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = set(cpu_info().flags)
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "avx512_vnni"
    if "avx2" in flags:
        return "avx2"
    return "portable"


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Number of nodes of each op type, e.g. to confirm that MatMuls became MatMulInteger."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def sensitive_nodes(model: onnx.ModelProto, groups: Sequence[str]) -> list[str]:
    """Names of the nodes in ``groups`` ("embeddings", "head") so quantization can leave them in fp32.

    Embeddings are the Gathers that look up a float initializer (word, position and token-type
    tables) or a fused EmbedLayerNormalization. The head is every MatMul/Gemm with a weight
    initializer between the model output and the encoder's last normalization (pooler + classifier).
    """
    initializers = {init.name for init in model.graph.initializer}
    names: list[str] = []
    if "embeddings" in groups:
        names += [
            node.name
            for node in model.graph.node
            if node.op_type == "EmbedLayerNormalization"
            or (node.op_type == "Gather" and node.input[0] in initializers)
        ]
    if "head" in groups:
        producer = {out: node for node in model.graph.node for out in node.output}
        stack, seen = [o.name for o in model.graph.output], set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen or node.op_type in _NORM_OPS:
                continue
            seen.add(node.name)
            if node.op_type in ("MatMul", "Gemm") and any(i in initializers for i in node.input):
                names.append(node.name)
            stack.extend(node.input)
    return names


class _BatchReader(CalibrationDataReader):
    """Feeds pre-tokenized calibration batches to ``quantize_static``."""

    def __init__(self, batches: Sequence[dict[str, np.ndarray]]) -> None:
        self._batches = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


class _DropOrtChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """Silence the quantizer's root-logger chatter (per-tensor INFO lines, a pre-processing hint that
    does not apply to the plain graph) unless edgesent itself logs at DEBUG."""
    root = logging.getLogger()
    chatter = None if logger.isEnabledFor(logging.DEBUG) else _DropOrtChatter()
    if chatter:
        root.addFilter(chatter)
    try:
        yield
    finally:
        if chatter:
            root.removeFilter(chatter)


def _has_contrib_ops(model: onnx.ModelProto) -> bool:
    return any(node.domain == _CONTRIB_DOMAIN for node in model.graph.node)


def quantize_model(
    onnx_path: Path,
    out_path: Path,
    cfg: QuantizeConfig,
    calibration: Sequence[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Quantize an fp32 ONNX model to int8 (dynamic, or static QDQ with calibration batches).

    Fused graphs (com.microsoft ops such as Attention) get symbolic shape inference first: without
    it the quantizer cannot type their outputs and fails with "Unable to find data type for
    weight_name". Plain graphs are quantized as they are: the path measured fastest, and symbolic
    shape inference gives up on the plain export's shape arithmetic ("Incomplete symbolic shape
    inference"), where ONNX's own shape inference, which the quantizer runs, is enough.

    Args:
        onnx_path: The fp32 model.
        out_path: Where to write the int8 model.
        cfg: Weight format, granularity and the node groups to keep in fp32.
        calibration: ONNX input batches (name -> (B, T) int64) for ``cfg.static``; a few hundred
            representative texts are enough for MinMax calibration.

    Returns:
        ``{"excluded_nodes": [...], "op_counts": {...}}`` of the written model.

    Raises:
        ConfigError: static quantization without calibration batches.
        ExportError: ONNX Runtime's quantizer failed (the message says why).
    """
    if cfg.static and not calibration:
        raise ConfigError("static quantization needs calibration data; pass --calibration-data FILE")
    with scratch_dir("quantize") as work:
        model_path = Path(onnx_path)
        if _has_contrib_ops(onnx.load(str(model_path), load_external_data=False)):
            inferred = Path(work) / "inferred.onnx"
            try:
                quant_pre_process(str(model_path), str(inferred), skip_optimization=True)
            except Exception as err:
                raise ExportError(f"{onnx_path}: symbolic shape inference before quantization failed: {err}") from err
            model_path = inferred
        excluded = sensitive_nodes(onnx.load(str(model_path)), cfg.keep_fp32)
        common = {
            "per_channel": cfg.per_channel,
            "reduce_range": cfg.reduce_range,
            "weight_type": WEIGHT_TYPES[cfg.weight_type],
            "nodes_to_exclude": excluded,
        }
        try:
            with _quiet_ort_logging():
                if cfg.static:
                    quantize_static(
                        str(model_path),
                        str(out_path),
                        _BatchReader(calibration or []),
                        quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(STATIC_OP_TYPES),
                        activation_type=WEIGHT_TYPES[cfg.activation_type],
                        **common,
                    )
                else:
                    quantize_dynamic(str(model_path), str(out_path), **common)
        except Exception as err:
            raise ExportError(f"{onnx_path}: int8 quantization failed ({type(err).__name__}: {err})") from err
    counts = op_counts(onnx.load(str(out_path)))
    logger.info("quantized %s (%s): %s", out_path.name, cfg.to_dict(), counts)
    return {"excluded_nodes": excluded, "op_counts": {k: v for k, v in counts.items() if k in QUANTIZED_OP_TYPES}}


def optimize_graph(onnx_path: Path, out_path: Path, level: str, num_heads: int = 0, hidden_size: int = 0) -> dict:
    """Rewrite the graph with ONNX Runtime's transformer optimizer, at Optimum's O1-O3 levels.

    O1: ORT's basic, hardware-independent rewrites (constant folding, redundant node removal).
    O2: O1 + transformer fusions: Attention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu.
    O3: O2 + the tanh approximation of Gelu (FastGelu): faster kernels, logits no longer bit-close,
    so an fp32 export at O3 usually needs a looser ``max_abs_diff``.

    The measured gain of pre-fusing over ORT's own load-time optimisation was nil on CPU; this is
    for runtimes that load with optimisations off, and for GPU graphs before fp16 conversion.

    Args:
        num_heads, hidden_size: Attention geometry; 0 lets the optimizer read it from the graph.

    Returns:
        Counts of the fused operators in the written graph.

    Raises:
        ConfigError: unknown level. ExportError: the optimizer failed.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    if level not in OPTIMIZE_LEVELS:
        raise ConfigError(f"optimize level must be one of {', '.join(OPTIMIZE_LEVELS)}, got {level!r}")
    options = FusionOptions("bert")
    options.enable_gelu_approximation = level == "O3"
    try:
        optimizer = optimize_model(
            str(onnx_path),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            optimization_options=options,
            opt_level=1,
            only_onnxruntime=level == "O1",
        )
        optimizer.save_model_to_file(str(out_path))
    except Exception as err:
        raise ExportError(f"{onnx_path}: graph optimisation {level} failed ({type(err).__name__}: {err})") from err
    fused = {k: v for k, v in optimizer.get_fused_operator_statistics().items() if v}
    logger.info("optimised %s at %s: %s", out_path.name, level, fused)
    return fused


def convert_fp16(onnx_path: Path, out_path: Path) -> dict[str, int]:
    """Convert weights and compute to float16, keeping float32 inputs/outputs (for GPU targets).

    ``keep_io_types`` leaves the int64 inputs and the float32 ``logits`` as they were, so a
    predictor feeds and reads an fp16 model exactly like an fp32 one.

    Returns:
        Counts of initializers by element type name (e.g. ``{"FLOAT16": 40}``).

    Raises:
        ExportError: the conversion failed.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
        onnx.save(model, str(out_path))
    except Exception as err:
        raise ExportError(f"{onnx_path}: fp16 conversion failed ({type(err).__name__}: {err})") from err
    kinds = Counter(onnx.TensorProto.DataType.Name(init.data_type) for init in model.graph.initializer)
    return dict(sorted(kinds.items()))
