"""``QuantizeConfig`` and its hardware presets, stdlib only.

The presets and why they are what they are: ``bench/EXPORT_DEFAULTS.md``. The CPU detection behind
``target="auto"`` lives in ``edgesent.quantize`` (it reads the CPU's flags) and is imported only when
``auto`` has to be resolved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgesent.config._base import ConfigBase, check_bool, check_choice, check_number
from edgesent.errors import ConfigError


TARGETS = ("avx512_vnni", "avx2", "arm64", "portable")
AUTO_TARGET = "auto"
TARGET_CHOICES = (AUTO_TARGET, *TARGETS)  # what --target accepts: a preset, or auto for this machine's
WEIGHT_TYPE_NAMES = ("int8", "uint8")
KEEP_FP32_GROUPS = ("embeddings", "head")
# SmoothQuant's migration strength in the per-channel presets: on the SST-2 MiniLM (dense and pruned) 0.75-0.9 gave
# the lowest int8 logit error, 0.5 (the paper's choice for LLMs) a higher one than no smoothing at all.
SMOOTH_ALPHA = 0.8


@dataclass
class QuantizeConfig(ConfigBase):
    """How to quantize a model to int8. Build it from a target preset rather than by hand.

    ``QuantizeConfig.avx2()`` (or ``for_target("avx2")``, or the string ``"avx2"`` wherever a config is
    expected) gives the preset; ``for_target(name, per_channel=False)`` a preset with overrides.

    Args:
        target: The CPU family the weight format is chosen for: ``avx512_vnni``, ``avx2``, ``arm64`` or
            ``portable`` (default). Recorded in the manifest; the other fields hold the actual choice.
        weight_type: ``int8`` (signed, MLAS's fast path; default) or ``uint8``.
        activation_type: Activation type for static quantization (default ``uint8``; dynamic always uses uint8).
        per_channel: One scale per output channel instead of one per tensor (default True): about half the
            logit error, within 2% of per-tensor's latency on avx512_vnni (bench/EXPORT_DEFAULTS.md).
        reduce_range: 7-bit weights (default True). Needed where u8 x s8 products go through VPMADDUBSW (AVX2
            and AVX512 without VNNI), which can saturate; useless (and less precise) with VNNI.
        static: Static QDQ quantization with calibration data instead of dynamic quantization (default False).
        keep_fp32: Node groups left in fp32: ``embeddings`` (embedding lookups) and/or ``head``
            (pooler and classifier), the parts most sensitive to rounding (default none).
        fp32_nodes: Graph nodes (by name) left in fp32 besides those groups: the most sensitive MatMuls, as
            measured by ``edgesent.sensitivity`` (the export's targeted remedy; default none).
        smooth_alpha: SmoothQuant's migration strength (0 < a <= 1), or 0 for none (default): before quantizing,
            ``edgesent export`` moves the outlier channels of each outlier-heavy MatMul input into the weights
            (``edgesent.quantize.smooth_activations``, calibrated on texts); ``quantize_model`` quantizes the graph
            it is given. Needs per-channel weights. The per-channel presets use 0.8.

    Raises:
        ConfigError: an unknown target, type or group, or smoothing with per-tensor weights.
    """

    target: str = "portable"
    weight_type: str = "int8"
    activation_type: str = "uint8"
    per_channel: bool = True
    reduce_range: bool = True
    static: bool = False
    keep_fp32: tuple[str, ...] = ()
    fp32_nodes: tuple[str, ...] = ()
    smooth_alpha: float = 0.0

    def __post_init__(self) -> None:
        check_choice("target", self.target, TARGETS)
        check_choice("weight_type", self.weight_type, WEIGHT_TYPE_NAMES)
        check_choice("activation_type", self.activation_type, WEIGHT_TYPE_NAMES)
        for name in ("per_channel", "reduce_range", "static"):
            check_bool(name, getattr(self, name))
        if isinstance(self.keep_fp32, str) or not isinstance(self.keep_fp32, (list, tuple)):
            raise ConfigError(
                f"keep_fp32 must be a list of groups ({', '.join(KEEP_FP32_GROUPS)}), got {self.keep_fp32!r}"
            )
        groups = tuple(dict.fromkeys(self.keep_fp32))
        unknown = [g for g in groups if g not in KEEP_FP32_GROUPS]
        if unknown:
            raise ConfigError(f"keep_fp32 groups must be among {', '.join(KEEP_FP32_GROUPS)}, got {unknown!r}")
        self.keep_fp32 = groups
        if isinstance(self.fp32_nodes, str) or not all(isinstance(n, str) for n in self.fp32_nodes):
            raise ConfigError(f"fp32_nodes must be a list of node names, got {self.fp32_nodes!r}")
        self.fp32_nodes = tuple(dict.fromkeys(self.fp32_nodes))
        check_number("smooth_alpha", self.smooth_alpha, low=0.0, high=1.0)
        if self.smooth_alpha and not self.per_channel:
            raise ConfigError(
                f"smooth_alpha={self.smooth_alpha}: smoothing moves activation outliers into the weight rows, which "
                "needs per-channel weight scales; set smooth_alpha=0 (--smooth-alpha 0) or per_channel=True"
            )

    # Presets (Optimum's AutoQuantizationConfig pattern), one per target; see bench/EXPORT_DEFAULTS.md.
    @classmethod
    def avx512_vnni(cls) -> QuantizeConfig:
        """Signed per-channel weights, full range: within 2% of per-tensor's speed, and more accurate.

        Measured on the fine-tuned SST-2 MiniLM (bench/EXPORT_DEFAULTS.md, second measurement): per-channel
        13.97 ms vs per-tensor 13.73 ms (batch 1, length 128, one thread), dev agreement with fp32 98.39% vs
        96.79%. VNNI's u8 x s8 dot product does not saturate, so ``reduce_range`` would only cost precision.
        Smoothing (``smooth_alpha``) cut the int8 logit error by a further 27-37% at about 1% of latency (tenth
        measurement).
        """
        return cls(
            target="avx512_vnni", weight_type="int8", per_channel=True, reduce_range=False, smooth_alpha=SMOOTH_ALPHA
        )

    @classmethod
    def avx2(cls) -> QuantizeConfig:
        """Signed per-tensor weights with reduce_range, ORT's advice against VPMADDUBSW saturation without VNNI.

        Not measured on an AVX2-only CPU; unsigned weights (Optimum's avx2 choice) were 1.6x slower
        than signed ones on the avx512_vnni CPU, so signed + 7-bit is the better-founded choice.
        """
        return cls(target="avx2", weight_type="int8", per_channel=False, reduce_range=True)

    @classmethod
    def arm64(cls) -> QuantizeConfig:
        """Signed per-tensor weights, full range: ARM's dot-product kernels do not saturate. Not measured."""
        return cls(target="arm64", weight_type="int8", per_channel=False, reduce_range=False)

    @classmethod
    def portable(cls) -> QuantizeConfig:
        """Correct on any CPU: 7-bit weights cannot saturate; per-channel scales and smoothing win back precision."""
        return cls(
            target="portable", weight_type="int8", per_channel=True, reduce_range=True, smooth_alpha=SMOOTH_ALPHA
        )

    @classmethod
    def for_target(cls, target: str = AUTO_TARGET, **overrides: Any) -> QuantizeConfig:
        """The preset for ``target`` (``auto``: this machine's CPU, see ``edgesent.quantize.detect_target``).

        Args:
            target: A preset name or ``auto`` (default).
            **overrides: Fields to change from the preset; None values are ignored, so unset CLI options
                change nothing.

        Raises:
            ConfigError: an unknown target or field, or a bad value.
        """
        if target == AUTO_TARGET:
            from edgesent.quantize import detect_target  # reads the CPU flags; loads ONNX Runtime's quantizer

            target = detect_target()
        check_choice("target", target, TARGET_CHOICES)
        known = [f.name for f in dataclasses.fields(cls) if f.name != "target"]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ConfigError(
                f"QuantizeConfig: unknown setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        settings = {k: v for k, v in overrides.items() if v is not None}
        if settings.get("per_channel") is False:
            settings.setdefault("smooth_alpha", 0.0)  # smoothing belongs to the per-channel presets
        return dataclasses.replace(getattr(cls, target)(), **settings)

    @classmethod
    def resolve(cls, value: QuantizeConfig | str | Mapping[str, Any]) -> QuantizeConfig:
        """A QuantizeConfig from a config, a preset name (``"avx2"``, ``"auto"``) or a mapping of settings.

        A mapping is a preset plus overrides: its ``target`` (default ``auto``) picks the preset and the other
        keys change it, so ``{"target": "avx2", "per_channel": True}`` is the avx2 preset made per-channel and
        ``to_dict()`` output (every field given) comes back unchanged.
        """
        if isinstance(value, QuantizeConfig):
            return value
        if isinstance(value, str):
            return cls.for_target(value)
        if isinstance(value, Mapping):
            settings = dict(value)
            return cls.for_target(settings.pop("target", AUTO_TARGET), **settings)
        raise ConfigError(f"quantize must be a QuantizeConfig, a preset name or a dict of settings, got {value!r}")
