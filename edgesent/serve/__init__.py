"""``edgesent serve``: exported models behind an HTTP API with dynamic batching, metrics and access control.

Needs the ``serve`` extra (``pip install 'edgesent[serve]'``: starlette, uvicorn, prometheus-client). Importing
this package is light: ``create_app`` and ``serve_models`` import the stack on first use, and a missing extra is
one :class:`~edgesent.errors.MissingDependencyError` line naming the pip command. Nothing here imports torch or
transformers: models run on :class:`edgesent.runtime.Predictor`.

Typical use::

    from edgesent.serve import ServeConfig, create_app

    app = create_app(["models/sst2-int8"], ServeConfig(max_batch=32))   # an ASGI app: mount it or run it
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from edgesent._imports import require_extra
from edgesent.serve.config import ServeConfig, load_api_keys


SERVE_EXTRA = "pip install 'edgesent[serve]'"
_SERVE_MODULES = ("starlette", "uvicorn", "prometheus_client")
_LAZY = {"create_app": "edgesent.serve.app", "serve_models": "edgesent.serve.server"}

__all__ = ["SERVE_EXTRA", "ServeConfig", "create_app", "load_api_keys", "require_serve_extra", "serve_models"]


def require_serve_extra(command: str = "serve") -> None:
    """Raise MissingDependencyError unless starlette, uvicorn and prometheus_client are importable."""
    require_extra(f"'{command}'", "serve", _SERVE_MODULES, SERVE_EXTRA)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgesent.serve' has no attribute {name!r}")
    require_serve_extra(name)
    return getattr(importlib.import_module(module), name)
