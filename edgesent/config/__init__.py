"""Every stage's config, importable without torch, transformers or onnxruntime.

``_base`` holds the shared machinery (``ConfigBase`` with one ``to_dict``/``from_dict`` that rejects unknown
keys, and the ``check_*`` helpers that refuse NaN, infinity and bools); one module per stage holds its config
dataclass and its choice lists (``train``, ``prune``, ``quantize``, ``parity``, ``export``, ``predictor``). The CLI
builds a config from the options that were given and lets it validate, and ``click.Choice`` takes the same
constants, so defaults and choices live in one place. The heavy stage modules import their config from here and
re-export it (``from edgesent.train import TrainConfig`` keeps working).
"""

from __future__ import annotations

from edgesent.config._base import (
    ConfigBase,
    check_bool,
    check_choice,
    check_number,
    check_optional_number,
    check_text,
    field_default,
    optional_path,
)
from edgesent.config.export import DEFAULT_CALIBRATION_SAMPLES, MIN_OPSET, OPTIMIZE_LEVELS, ExportConfig
from edgesent.config.parity import DEFAULT_THRESHOLDS, PRECISIONS, ParityConfig
from edgesent.config.predictor import GRAPH_OPTIMIZATIONS, PredictorConfig
from edgesent.config.prune import PruneConfig
from edgesent.config.quantize import KEEP_FP32_GROUPS, TARGET_CHOICES, TARGETS, QuantizeConfig
from edgesent.config.train import CLASS_WEIGHTS, DEFAULT_BASE, DEVICES, TrainConfig


__all__ = [
    "CLASS_WEIGHTS",
    "DEFAULT_BASE",
    "DEFAULT_CALIBRATION_SAMPLES",
    "DEFAULT_THRESHOLDS",
    "DEVICES",
    "GRAPH_OPTIMIZATIONS",
    "KEEP_FP32_GROUPS",
    "MIN_OPSET",
    "OPTIMIZE_LEVELS",
    "PRECISIONS",
    "TARGETS",
    "TARGET_CHOICES",
    "ConfigBase",
    "ExportConfig",
    "ParityConfig",
    "PredictorConfig",
    "PruneConfig",
    "QuantizeConfig",
    "TrainConfig",
    "check_bool",
    "check_choice",
    "check_number",
    "check_optional_number",
    "check_text",
    "field_default",
    "optional_path",
]
