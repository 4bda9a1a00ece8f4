"""Guards for optional extras, so a missing one is one clear line, not an ImportError traceback."""

from __future__ import annotations

import importlib.util

from edgesent.errors import MissingDependencyError


TRAIN_EXTRA = "pip install torch==2.13.0 && pip install 'edgesent[train]'"
SEARCH_EXTRA = "pip install 'edgesent[search]'"
_TRAIN_MODULES = ("torch", "transformers", "optimum.exporters.onnx", "onnx", "accelerate")


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The top-level packages of ``modules`` that cannot be imported (without importing anything)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ModuleNotFoundError, ValueError):  # parent package absent, or a stubbed module without a spec
            found = False
        if not found:
            out.append(name.split(".")[0])
    return sorted(set(out))


def require_extra(what: str, extra: str, modules: tuple[str, ...], install: str | None = None) -> None:
    """Raise MissingDependencyError, naming the pip command, unless every module of an extra is importable.

    Args:
        what: who needs it, for the message (``"'serve'"``, ``"the ray engine"``).
        extra: the extra's name (``"serve"``).
        modules: the modules to look for (dotted names allowed).
        install: the install command (default: ``pip install 'edgesent[<extra>]'``).
    """
    missing = missing_modules(modules)
    if missing:
        command = install or f"pip install 'edgesent[{extra}]'"
        raise MissingDependencyError(
            f"{what} needs the '{extra}' extra (missing: {', '.join(missing)}); install it with: {command}"
        )


def require_train_extra(command: str) -> None:
    """Raise MissingDependencyError unless torch, transformers, optimum and onnx are importable."""
    require_extra(f"'{command}'", "train", _TRAIN_MODULES, TRAIN_EXTRA)


def require_search_extra(command: str) -> None:
    """Raise MissingDependencyError unless optuna (the ``search`` extra) is importable."""
    require_extra(f"'{command}'", "search", ("optuna",), SEARCH_EXTRA)
