"""edgesent: fine-tune a small encoder, export verified int8 ONNX, predict on the edge.

Heavy stages (torch, transformers, optimum) are imported only when their names are first used,
so ``import edgesent`` and ``edgesent.runtime`` stay light; the configs come from the light ``edgesent.config``.
"""

from __future__ import annotations

import importlib
from typing import Any


__version__ = "0.1.0"

_LAZY = {
    "TrainConfig": "edgesent.config",
    "train": "edgesent.train",
    "evaluate_model": "edgesent.evaluate",
    "ExportConfig": "edgesent.config",
    "export_model": "edgesent.export",
    "QuantizeConfig": "edgesent.config",
    "ParityConfig": "edgesent.config",
    "check_parity": "edgesent.parity",
    "PruneConfig": "edgesent.config",
    "prune_model": "edgesent.prune",
    "BenchConfig": "edgesent.bench",
    "run_benchmark": "edgesent.bench",
    "Predictor": "edgesent.runtime",
    "EdgesentError": "edgesent.errors",
}

__all__ = [
    "BenchConfig",
    "EdgesentError",
    "ExportConfig",
    "ParityConfig",
    "Predictor",
    "PruneConfig",
    "QuantizeConfig",
    "TrainConfig",
    "__version__",
    "check_parity",
    "evaluate_model",
    "export_model",
    "prune_model",
    "run_benchmark",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgesent' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
