"""``serve_models``: load, verify and serve models with uvicorn until SIGTERM or Ctrl-C.

Shutdown is graceful: on SIGTERM uvicorn stops accepting connections, waits (up to ``shutdown_timeout_s``) for the
requests in flight, and the app's shutdown then answers whatever is still queued before the model threads stop.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgesent.errors import ConfigError
from edgesent.serve.config import ServeConfig


logger = logging.getLogger(__name__)

SPEC_ENV = "EDGESENT_SERVE_SPEC"  # how the parent hands models and config to --workers processes


def serve_models(models: Sequence[str | Path], cfg: ServeConfig) -> None:
    """Serve exported model directories over HTTP until SIGTERM/SIGINT; returns after a graceful shutdown.

    Every model is loaded and verified first, so a missing, foreign or tampered model fails before the port opens.

    Args:
        models: export directories; ``NAME=DIR`` names one (default name: the directory's name).
        cfg: the server settings.

    Raises:
        ConfigError: a bad setting, the address cannot be bound, or the API key file is unusable.
        ModelError: a model cannot be loaded or does not match its manifest.
    """
    import uvicorn

    from edgesent.serve.app import create_app

    _setup_access_log()
    app = create_app(models, cfg)  # loads and verifies in this process, workers or not
    common: dict[str, Any] = {
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": cfg.shutdown_timeout_s,
        "lifespan": "on",
    }
    sock = _bind(cfg.host, cfg.port)
    if cfg.workers > 1:
        # Each worker process builds its own app (and metrics) from the spec; the check above already passed.
        from uvicorn.supervisors import Multiprocess

        os.environ[SPEC_ENV] = json.dumps({"models": [str(m) for m in models], "config": cfg.to_dict()})
        del app
        worker_cfg = uvicorn.Config("edgesent.serve.server:app_from_env", factory=True, workers=cfg.workers, **common)
        try:
            Multiprocess(worker_cfg, sockets=[sock]).run()
        finally:
            sock.close()
        return
    server = uvicorn.Server(uvicorn.Config(app, **common))
    host, port = sock.getsockname()[:2]
    _event("start", models=list(app.state.models), url=f"http://{host}:{port}", pid=os.getpid())
    # uvicorn re-raises the signal it caught once it has shut down, to let the previous handler act on it. With
    # the default handlers that kills the process (SIGTERM: exit -15) or raises KeyboardInterrupt (SIGINT) after a
    # clean shutdown; a no-op handler in their place lets serve_models return, and the process exit 0.
    previous = {sig: signal.signal(sig, _ignore_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    _event("stop", pid=os.getpid())


def app_from_env() -> Any:
    """The app of one ``--workers`` process, built from the spec the parent put in ``EDGESENT_SERVE_SPEC``."""
    from edgesent.serve.app import create_app

    spec = json.loads(os.environ[SPEC_ENV])
    _setup_access_log()
    return create_app(spec["models"], ServeConfig.from_dict(spec["config"]))


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so a busy port is one ConfigError line, not a uvicorn traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it Nagle's algorithm and delayed ACKs add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}; pick another --port") from err
    sock.set_inheritable(True)
    return sock


def _ignore_signal(signum: int, frame: object) -> None:
    """Stands in for the default SIGTERM handler while uvicorn runs (see serve_models)."""


def _setup_access_log() -> None:
    """Access-log lines (JSON, one per request) go to stderr whatever the root logger's level."""
    access = logging.getLogger("edgesent.serve.access")
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False


def _event(name: str, **fields: Any) -> None:
    logging.getLogger("edgesent.serve.access").info(json.dumps({"event": name, **fields}))
