"""Graph transforms of an exported ONNX model: int8 quantization, transformer fusions and fp16.

The defaults follow the measurements in ``bench/EXPORT_DEFAULTS.md``, not habit. On an avx512_vnni CPU
(batch 1, 128 tokens, one thread), signed QInt8 weights with ``quantize_dynamic`` on the plain export were
the fastest int8 path; unsigned QUInt8 weights (Optimum's ``avx2`` preset) were 1.6x slower; pre-fused graphs
were no faster than what ONNX Runtime does itself when it loads the model. On the fine-tuned SST-2 MiniLM,
per-channel scales came within 2% of per-tensor's latency and halved the label flips against fp32 (98.39%
vs 96.79% dev agreement), so the ``avx512_vnni`` preset is per-channel; per-tensor is a remedy (after turning
activation smoothing off). Fusions are opt-in and int8 quantizes the simplified, unfused graph. The config
and its presets are ``edgesent.config.quantize.QuantizeConfig``; this module holds the transforms and the CPU
detection.

Every function here reads one ONNX file and writes another; ``edgesent.export`` chains them and
the parity gate decides whether the result may be shipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edgesent.artifacts import scratch_dir
from edgesent.config.export import NNCF_DEFAULT_PRESET, NNCF_PRESETS, OPTIMIZE_LEVELS
from edgesent.config.quantize import KEEP_FP32_GROUPS, TARGETS, QuantizeConfig
from edgesent.errors import ConfigError, ExportError
from edgesent.sessions import cpu_info


logger = logging.getLogger(__name__)

# The config and its choice lists live in edgesent.config.quantize; re-exported here for existing imports.
__all__ = [
    "KEEP_FP32_GROUPS",
    "OPTIMIZE_LEVELS",
    "TARGETS",
    "QuantizeConfig",
    "convert_fp16",
    "detect_target",
    "op_counts",
    "optimize_graph",
    "quantize_model",
    "quantize_nncf",
    "sensitive_nodes",
    "smooth_activations",
    "unsigned_fc_activations",
]

WEIGHT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
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
# Texts NNCF (and activation smoothing) calibrates on at most: NNCF's own default subset size.
NNCF_CALIBRATION_TEXTS = 300
# Activation smoothing divides a MatMul input only where its largest channel range is at least this many times its
# median channel's: BERT's few outlier dimensions (14-30 against a median of about 2 before each FFN of the SST-2
# MiniLM). On SST-2 the 8 inputs above it gave most of the gain of all 24 (int8 logit error -27% against -34%
# pruned, -37% against -38% dense) at a third of the Mul nodes (bench/results/smooth-quant-sst2/).
SMOOTH_MIN_OUTLIER_RATIO = 8.0
# A channel quieter than this share of its input's median range in calibration is smoothed as if it reached it:
# otherwise a channel that never fired (a dead GELU unit, ~0) would be multiplied by thousands, and the first text
# that makes it fire would set the whole tensor's int8 range (seen on a hand-built graph: error 0.018 -> 1.01).
SMOOTH_QUIET_FLOOR = 0.1
# The metadata key a smoothed graph carries (its settings, JSON): quantize_model checks it against the config.
SMOOTHED_METADATA_KEY = "edgesent.smoothing"
_NORM_OPS = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "EmbedLayerNormalization")
_CONTRIB_DOMAIN = "com.microsoft"


def detect_target() -> str:
    """The quantization target of this machine: ``arm64`` by architecture, else from the CPU flags.

    ``avx_vnni`` (the VEX-encoded VNNI of recent Intel and AMD client CPUs) counts as ``avx512_vnni``:
    what matters for the weight format is that VNNI's u8 x s8 dot product does not saturate.
    """
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    # one spelling for /proc/cpuinfo's "avx512_vnni" and py-cpuinfo's CPUID "avx512vnni" (macOS, Windows)
    flags = {flag.lower().replace("_", "") for flag in cpu_info().flags}
    if flags & {"avx512vnni", "avxvnni"}:
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


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """Run a block in ``path``: ONNX Runtime's symbolic shape inference saves its partial model
    (``sym_shape_infer_temp.onnx`` and a weights file as large as the model) to the working directory when it
    gives up, which must be the scratch directory, not the user's."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _has_contrib_ops(model: onnx.ModelProto) -> bool:
    return any(node.domain == _CONTRIB_DOMAIN for node in model.graph.node)


def _rewritten_gemm_names(model: onnx.ModelProto, names: Sequence[str]) -> list[str]:
    """The names ``quantize_dynamic`` gives the Gemm nodes among ``names`` before it reads ``nodes_to_exclude``.

    ONNX Runtime's dynamic quantizer first rewrites every Gemm as a MatMul named ``<gemm>_MatMul`` (plus an
    ``Add`` for the bias), so a Gemm excluded by its own name (the classifier head of an Optimum export) would
    be quantized anyway; it has to be excluded under the new name as well.
    """
    gemms = {node.name for node in model.graph.node if node.op_type == "Gemm"}
    return [f"{name}_MatMul" for name in names if name in gemms]


def activation_ranges(
    model_path: Path, feeds: Sequence[dict[str, np.ndarray]], tensors: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-channel (last axis) largest ``|x|`` of each named fp32 tensor over all ``feeds``, read by making those
    tensors outputs of a scratch copy of the model."""
    from edgesent.sessions import create_session

    model = onnx.load(str(model_path))
    outputs = {output.name for output in model.graph.output}
    for name in tensors:
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    ranges: dict[str, np.ndarray] = {}
    with scratch_dir("ranges") as work:
        probe = Path(work) / "probe.onnx"
        onnx.save(model, str(probe))
        session = create_session(probe, "cpu")
        inputs = [i.name for i in session.get_inputs()]
        for feed in feeds:
            for name, value in zip(tensors, session.run(list(tensors), {n: feed[n] for n in inputs})):
                top = np.abs(value).reshape(-1, value.shape[-1]).max(0)
                ranges[name] = np.maximum(ranges[name], top) if name in ranges else top
    return ranges


def smooth_activations(
    onnx_path: Path,
    out_path: Path,
    calibration: Sequence[dict[str, np.ndarray]],
    alpha: float,
    min_ratio: float = SMOOTH_MIN_OUTLIER_RATIO,
) -> dict[str, Any]:
    """SmoothQuant (Xiao et al. 2023) on an fp32 graph: the same outputs, activations that int8 can hold.

    Dynamic int8 takes one range per activation tensor, so BERT's few outlier dimensions set the step for every
    other channel. For each input X of weight MatMuls whose channel ranges are outlier-heavy (largest at least
    ``min_ratio`` times the median), channel j is divided by ``s_j = max|X_j|**alpha / max|W_j|**(1 - alpha)``
    (a ``Mul`` before the MatMuls) and row j of each weight multiplied by it: the product is unchanged, the
    activation range shrinks and the weights take the difference, which per-channel weight scales absorb (with
    one weight scale per tensor it cost far more than it saved: ``bench/EXPORT_DEFAULTS.md``). Ranges come from
    running the fp32 model on ``calibration``. A weight shared with other nodes is left alone.

    Args:
        onnx_path: The fp32 model.
        out_path: Where to write the smoothed fp32 model.
        calibration: ONNX input batches (name -> (B, T) int64), padded as the model will run them (the export
            uses ``TorchReference.batch_feeds``): ranges from unpadded texts miss the channels padding fills.
        alpha: Migration strength in (0, 1]: the share of each outlier moved into the weights.
        min_ratio: Smooth only inputs whose largest channel range is at least this many times their median.

    Returns:
        ``{"alpha", "min_outlier_ratio", "calibration_samples", "matmuls"}``: the settings and the MatMuls
        whose input was smoothed.

    Raises:
        ConfigError: alpha outside (0, 1], or no calibration batches.
    """
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"smoothing alpha must be in (0, 1], got {alpha!r}")
    if not calibration:
        raise ConfigError("activation smoothing needs calibration texts; none were given")
    model = onnx.load(str(onnx_path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and uses[weight.name] == 1 and weight.data_type == 1:
            groups.setdefault(node.input[0], []).append(node)
    ranges = activation_ranges(Path(onnx_path), calibration, list(groups))
    smoothed: list[str] = []
    for activation, matmuls in groups.items():
        quiet = max(SMOOTH_QUIET_FLOOR * float(np.median(ranges[activation])), 1e-5)
        x_max = np.maximum(ranges[activation], quiet)
        if x_max.max() < min_ratio * float(np.median(x_max)):
            continue
        weights = [numpy_helper.to_array(initializers[node.input[1]]) for node in matmuls]
        w_max = np.maximum(np.max([np.abs(w).max(1) for w in weights], axis=0), 1e-5)
        scale = (x_max**alpha / w_max ** (1.0 - alpha)).astype(np.float32)
        for node, weight in zip(matmuls, weights):
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
        inverse = f"{activation}_smooth_inverse_scale"
        graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inverse))
        mul = onnx.helper.make_node("Mul", [activation, inverse], [f"{activation}_smoothed"], name=f"{inverse}_Mul")
        for node in matmuls:
            node.input[0] = mul.output[0]
        graph.node.insert(list(graph.node).index(matmuls[0]), mul)
        smoothed += [node.name for node in matmuls]
    info = {
        "alpha": alpha,
        "min_outlier_ratio": min_ratio,
        "calibration_samples": len(calibration),
        "matmuls": smoothed,
    }
    onnx.helper.set_model_props(model, {SMOOTHED_METADATA_KEY: json.dumps(info)})
    onnx.save(model, str(out_path))
    logger.info("smoothed the inputs of %d MatMuls (alpha %s)", len(smoothed), alpha)
    return info


def _check_smoothing(model: onnx.ModelProto, path: Path, cfg: QuantizeConfig) -> None:
    """Refuse a graph whose smoothing does not match ``cfg.smooth_alpha``: smoothing needs calibration texts, so
    it runs before, in :func:`smooth_activations`, and a smoothed graph must not get per-tensor weight scales."""
    props = {prop.key: prop.value for prop in model.metadata_props}
    alpha = json.loads(props[SMOOTHED_METADATA_KEY])["alpha"] if SMOOTHED_METADATA_KEY in props else 0.0
    if alpha != cfg.smooth_alpha:
        raise ConfigError(
            f"{path}: smoothed with alpha {alpha}, but the config asks for smooth_alpha={cfg.smooth_alpha}; run "
            "smooth_activations on the fp32 graph first (edgesent export does), or set smooth_alpha to match"
        )


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
        cfg: Weight format, granularity, and the node groups and nodes to keep in fp32. Its ``smooth_alpha`` must
            match the graph's (0 for a graph :func:`smooth_activations` did not write).
        calibration: ONNX input batches (name -> (B, T) int64) for ``cfg.static``; a few hundred
            representative texts are enough for MinMax calibration.

    Returns:
        ``{"excluded_nodes": [...], "op_counts": {...}}`` of the written model.

    Raises:
        ConfigError: static quantization without calibration batches, or smoothing that does not match.
        ExportError: ONNX Runtime's quantizer failed (the message says why).
    """
    if cfg.static and not calibration:
        raise ConfigError("static quantization needs calibration data; pass --calibration-data FILE")
    with scratch_dir("quantize") as work:
        model_path = Path(onnx_path)
        header = onnx.load(str(model_path), load_external_data=False)
        _check_smoothing(header, model_path, cfg)
        if _has_contrib_ops(header):
            inferred = Path(work) / "inferred.onnx"
            try:
                with _working_directory(Path(work)):
                    quant_pre_process(str(model_path.resolve()), str(inferred), skip_optimization=True)
            except Exception as err:
                raise ExportError(f"{onnx_path}: symbolic shape inference before quantization failed: {err}") from err
            model_path = inferred
        graph = onnx.load(str(model_path))
        excluded = list(dict.fromkeys([*sensitive_nodes(graph, cfg.keep_fp32), *cfg.fp32_nodes]))
        common = {
            "per_channel": cfg.per_channel,
            "reduce_range": cfg.reduce_range,
            "weight_type": WEIGHT_TYPES[cfg.weight_type],
            "nodes_to_exclude": excluded + ([] if cfg.static else _rewritten_gemm_names(graph, excluded)),
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


def quantize_nncf(
    model: Any, calibration: Sequence[dict[str, np.ndarray]], preset: str = NNCF_DEFAULT_PRESET
) -> tuple[Any, dict[str, Any]]:
    """Static int8 with NNCF (post-training, transformer model type): the one home of the NNCF settings.

    NNCF picks its backend from the model's type: an ``onnx.ModelProto`` comes back as a QDQ ``ModelProto``
    (standard ONNX, so ONNX Runtime can run it too, slower; ``edgesent export --runtime openvino`` ships it after
    :func:`unsigned_fc_activations`),
    an ``openvino.Model`` as a quantized ``openvino.Model`` (``bench/peers.py``'s OpenVINO row). Its progress
    bars go to stderr, so stdout stays the command's result.

    Args:
        model: the fp32 model, ``onnx.ModelProto`` or ``openvino.Model``.
        calibration: ONNX input batches (name -> (1, T) int64), one per text; all are used.
        preset: ``"mixed"`` (default: symmetric weights, asymmetric activations) or ``"performance"``.

    Returns:
        (the quantized model, of the input's type; its settings for the manifest: tool, versions, preset,
        model type, calibration samples).

    Raises:
        ConfigError: an unknown preset or no calibration batches.
        MissingDependencyError: nncf is not installed (the ``openvino`` extra).
        ExportError: NNCF failed (the message says why).
    """
    from edgesent.sessions import OPENVINO_EXPORT_MODULES, require_openvino

    if preset not in NNCF_PRESETS:
        raise ConfigError(f"preset={preset!r} is not one of {', '.join(NNCF_PRESETS)}")
    if not calibration:
        raise ConfigError("NNCF quantization needs calibration texts; none were given")
    require_openvino("NNCF int8 quantization", OPENVINO_EXPORT_MODULES)
    import nncf

    try:
        with contextlib.redirect_stdout(sys.stderr):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(list(calibration)),
                preset=getattr(nncf.QuantizationPreset, preset.upper()),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(calibration),
            )
    except Exception as err:
        raise ExportError(f"NNCF int8 quantization failed ({type(err).__name__}: {err})") from err
    info = {
        "tool": "nncf",
        "nncf": nncf.__version__,
        "backend": "onnx" if isinstance(model, onnx.ModelProto) else "openvino",
        "preset": preset,
        "model_type": "transformer",
        "calibration_samples": len(calibration),
    }
    return quantized, info


def unsigned_fc_activations(model: onnx.ModelProto) -> int:
    """Make each signed activation quantizer that feeds only weight MatMuls unsigned, in place: the same arithmetic.

    NNCF's ONNX backend writes an asymmetric activation quantizer as int8 whenever its range dips below zero.
    Shifted by 128 (zero point and levels both), a QuantizeLinear/DequantizeLinear pair dequantizes to exactly the
    same values, and ONNX Runtime then runs those MatMuls on its u8 x s8 integer kernels: the file ran 1.5-1.6x
    faster there (the fallback when the ``openvino`` extra is missing, or ``provider="cpu"``), while OpenVINO ran
    both forms alike (``bench/EXPORT_DEFAULTS.md``, seventh measurement). Attention's quantizers (both MatMul
    inputs are activations) stay signed: unsigned, they moved OpenVINO's attention from int8 to bf16.

    Returns:
        how many quantizers were rewritten.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def weight_matmul(node: onnx.NodeProto, activation: str) -> bool:
        weight = producers.get(node.input[1]) if len(node.input) > 1 else None
        return (
            node.op_type in ("MatMul", "Gemm")
            and node.input[0] == activation
            and weight is not None
            and weight.op_type == "DequantizeLinear"
            and weight.input[0] in initializers
        )

    value_info = {info.name: info for info in graph.value_info}
    replaced: set[str] = set()  # the signed zero points, removed once nothing reads them
    rewritten = 0
    for quant in [node for node in graph.node if node.op_type == "QuantizeLinear" and len(node.input) == 3]:
        zero_point = initializers.get(quant.input[2])
        if quant.input[0] in initializers or zero_point is None or zero_point.data_type != onnx.TensorProto.INT8:
            continue
        dequants = readers.get(quant.output[0], [])
        if not dequants or any(
            dq.op_type != "DequantizeLinear"
            or not readers.get(dq.output[0])
            or not all(weight_matmul(user, dq.output[0]) for user in readers[dq.output[0]])
            for dq in dequants
        ):
            continue
        shifted = numpy_helper.to_array(zero_point).astype(np.int16) + 128
        name = f"{quant.output[0]}_zero_point_u8"
        graph.initializer.append(numpy_helper.from_array(shifted.astype(np.uint8), name))
        for node in (quant, *dequants):
            node.input[2] = name
        if quant.output[0] in value_info:
            value_info[quant.output[0]].type.tensor_type.elem_type = onnx.TensorProto.UINT8
        replaced.add(zero_point.name)
        rewritten += 1
    used = {name for node in graph.node for name in node.input}
    orphans = [init for init in graph.initializer if init.name in replaced - used]
    for init in orphans:
        graph.initializer.remove(init)
    return rewritten


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
