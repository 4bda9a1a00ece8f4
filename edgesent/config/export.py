"""``ExportConfig``: precision, graph optimisation, int8 settings and the parity gate of ``edgesent export``.

Stdlib only. The int8 settings are a nested ``QuantizeConfig`` and the gate's a nested ``ParityConfig``;
the CLI hands over its flat options nested the same way (see ``edgesent.cli.export``), so there is one
constructor. The opset's upper bound depends on the installed ``onnx`` and is checked by the export itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesent.config._base import (
    ConfigBase,
    check_bool,
    check_choice,
    check_number,
    check_optional_number,
    optional_path,
)
from edgesent.config.parity import PRECISIONS, ParityConfig
from edgesent.config.providers import RUNTIME_CHOICES, RUNTIME_ONNXRUNTIME, RUNTIME_OPENVINO
from edgesent.config.quantize import QuantizeConfig
from edgesent.errors import ConfigError


OPTIMIZE_LEVELS = ("O1", "O2", "O3")
DEFAULT_OPSET = 18  # Optimum's recommended minimum for BERT; the torch.onnx fallback uses it too
MIN_OPSET = 14  # scaled_dot_product_attention and Trilu need opset 14
DEFAULT_CALIBRATION_SAMPLES = 128
# NNCF's static int8 (the openvino runtime): the MIXED preset (symmetric weights, asymmetric activations) with the
# transformer model type (LayerNorm, Softmax and the residual Adds stay in float), as bench/peers.py measured it.
NNCF_PRESETS = ("mixed", "performance")
NNCF_DEFAULT_PRESET = "mixed"


@dataclass
class ExportConfig(ConfigBase):
    """Everything an export depends on; validated on creation and recorded in the manifest.

    Args:
        precision: ``fp32`` (default), ``int8`` (CPU) or ``fp16`` (GPU targets).
        opset: ONNX opset, >= 14; None: the exporter's recommendation (18 for BERT).
        optimize: ``O1``/``O2``/``O3`` graph optimisation (see ``quantize.optimize_graph``); None (default):
            off, because pre-fused graphs measured no faster than ONNX Runtime's load-time optimisation.
        simplify: Fold the exported graph's shape arithmetic and attention scale and merge the query, key and
            value projections before anything else (``edgesent.simplify``; default True: same outputs, int8 5% faster
            on SST-2 texts, 13% on a 50%-pruned model). Not applied to an ``optimize``d graph.
        quantize: int8 settings: a QuantizeConfig, a preset name (``"avx2"``, ``"auto"``) or a dict whose
            ``target`` (default ``auto``) picks the preset and whose other keys override it; None with
            ``precision="int8"``: the preset of this machine's CPU. Only for int8 with the ``onnxruntime`` or
            ``auto`` runtime (``openvino`` takes none: NNCF has its own settings).
        parity: The gate's data and bounds, a ParityConfig or its dict (default: the model's parity sample, else
            the probe texts; the precision's default bounds).
        max_length: Tokens per text recorded for the predictor and used by parity; None: the source's.
        runtime: The runtime the int8 model is built and verified for: ``onnxruntime`` (default: ONNX Runtime's
            int8 with ``quantize``'s settings), ``openvino`` (NNCF static int8, MIXED preset, run by OpenVINO;
            needs the ``openvino`` extra) or ``auto`` (build both, gate both, keep the faster one that passes;
            without the extra: onnxruntime). Recorded in the manifest; ``Predictor.load`` follows it. int8 only.
        calibration_data: Texts for static int8 quantization (``quantize.static``), activation smoothing
            (``quantize.smooth_alpha``) or NNCF (the ``openvino`` runtime), read with ``parity.text_column``; the
            first ``calibration_samples`` (default 128) rows are used. Smoothing and NNCF without it calibrate on
            the parity texts (at most 300).
        fp32_matmuls: Keep this many of the MatMuls that int8 hurts most in fp32 from the start (default 0:
            none), ranked as the targeted remedy ranks them (leave-one-out logit error against PyTorch on the
            gate's texts; only those whose fp32 copy helps): a measured trade of latency for fidelity, 4-6% per
            MatMul on the 3-epoch pruned SST-2 MiniLM (``bench/results/keep-fp32-sst2-pruned``). Classifiers on
            the ``onnxruntime`` runtime, dynamic int8 only.
        remedies: When int8 parity fails, retry with the known remedies (default True).
        keep_unverified: Keep a model that failed parity, marked ``verified: false`` (still exits 1).
        verify: Check the source directory's file hashes before exporting (default True).
        overwrite: Replace an existing output directory.

    Raises:
        ConfigError: a bad value or a contradictory combination, naming the field.
    """

    precision: str = "fp32"
    opset: int | None = None
    optimize: str | None = None
    simplify: bool = True
    quantize: QuantizeConfig | None = None
    parity: ParityConfig = field(default_factory=ParityConfig)
    max_length: int | None = None
    runtime: str = RUNTIME_ONNXRUNTIME
    calibration_data: Path | None = None
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    fp32_matmuls: int = 0
    remedies: bool = True
    keep_unverified: bool = False
    verify: bool = True
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("runtime", self.runtime, RUNTIME_CHOICES)
        quantize: Any = self.quantize
        if self.runtime != RUNTIME_ONNXRUNTIME and self.precision != "int8":
            raise ConfigError(
                f"runtime={self.runtime!r} chooses how an int8 model is built and run; add --int8 "
                f"(precision='int8'), or leave --runtime at {RUNTIME_ONNXRUNTIME}"
            )
        if self.runtime == RUNTIME_OPENVINO and quantize is not None:
            given = ", ".join(quantize) if isinstance(quantize, Mapping) else "quantize"
            raise ConfigError(
                f"{given}: ONNX Runtime int8 settings, unused by --runtime openvino (NNCF's static int8); "
                "drop them, or use --runtime onnxruntime or auto"
            )
        if self.precision != "int8" and quantize is not None:
            if isinstance(quantize, Mapping):  # settings given one by one (the CLI's --target, --static, ...)
                raise ConfigError(f"{', '.join(quantize)}: only used by int8 exports; add --int8 (precision='int8')")
            raise ConfigError(
                f"quantize is only used with precision='int8' (--int8), got precision={self.precision!r}"
            )
        if self.precision == "int8" and self.runtime != RUNTIME_OPENVINO:
            self.quantize = QuantizeConfig.resolve("auto" if quantize is None else quantize)
        if isinstance(self.parity, Mapping):
            self.parity = ParityConfig.from_dict(self.parity)
        if not isinstance(self.parity, ParityConfig):
            raise ConfigError(f"parity must be a ParityConfig or a dict of its settings, got {self.parity!r}")
        self.calibration_data = optional_path(self.calibration_data)
        check_optional_number("opset", self.opset, low=MIN_OPSET, integer=True)
        if self.optimize is not None:
            check_choice("optimize", self.optimize, OPTIMIZE_LEVELS)
        static = self.quantize is not None and self.quantize.static
        if static and self.calibration_data is None:
            raise ConfigError("calibration_data: static quantization needs calibration texts; pass --calibration-data")
        smoothed = self.quantize is not None and bool(self.quantize.smooth_alpha)
        if self.calibration_data is not None and not (static or smoothed) and self.runtime == RUNTIME_ONNXRUNTIME:
            raise ConfigError(
                f"calibration_data={str(self.calibration_data)!r} is only used with --int8 and --static, smoothing "
                "(--smooth-alpha above 0) or --runtime openvino/auto"
            )
        check_number("calibration_samples", self.calibration_samples, low=1, integer=True)
        check_number("fp32_matmuls", self.fp32_matmuls, low=0, integer=True)
        if self.fp32_matmuls and (self.precision != "int8" or self.runtime != RUNTIME_ONNXRUNTIME or static):
            raise ConfigError(
                f"fp32_matmuls={self.fp32_matmuls}: ranks the MatMuls of ONNX Runtime's dynamic int8; needs --int8 "
                "with --runtime onnxruntime and no --static"
            )
        check_optional_number("max_length", self.max_length, low=8, integer=True)
        for name in ("simplify", "remedies", "keep_unverified", "verify", "overwrite"):
            check_bool(name, getattr(self, name))
