"""Guards for optional extras, so a missing one is one clear line, not an ImportError traceback."""

from __future__ import annotations

import importlib.util

from edgesent.errors import MissingDependencyError


TRAIN_EXTRA = "pip install torch==2.13.0 && pip install 'edgesent[train]'"
SEARCH_EXTRA = "pip install 'edgesent[search]'"
_TRAIN_MODULES = ("torch", "transformers", "optimum.exporters.onnx", "onnx", "accelerate")


def _missing(modules: tuple[str, ...]) -> list[str]:
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # parent package absent
            found = False
        if not found:
            out.append(name.split(".")[0])
    return out


def require_train_extra(command: str) -> None:
    """Raise MissingDependencyError unless torch, transformers, optimum and onnx are importable."""
    missing = _missing(_TRAIN_MODULES)
    if missing:
        raise MissingDependencyError(
            f"'{command}' needs the training/export extra (missing: {', '.join(sorted(set(missing)))}); "
            f"install it with: {TRAIN_EXTRA}"
        )


def require_search_extra(command: str) -> None:
    """Raise MissingDependencyError unless optuna (the ``search`` extra) is importable."""
    if _missing(("optuna",)):
        raise MissingDependencyError(
            f"'{command}' needs optuna, which is not installed; install it with: {SEARCH_EXTRA}"
        )
