"""``create_app``: the Starlette app that serves exported models over HTTP.

Routes (see :mod:`edgesent.serve.openapi` and the README's Serve section)::

    POST /v1/models/{name}/predict   {"texts": [...], "top_k": k} -> {"model": name, "results": [...]}
    GET  /v1/models                  names, task, labels (and a span model's tags), precision, runtime and
                                     device, manifest hash
    GET  /healthz  /readyz           liveness; readiness (models loaded and warmed up)
    GET  /metrics  /openapi.json     Prometheus text format; the OpenAPI document

A classifier's result is ``{label, score, scores, truncated, unknown_tokens}``; a span model's (task
``token-classification``) is ``{spans, truncated, unknown_tokens}`` with each span's ``{text, start, end, label,
score}`` in character offsets of the text sent: ``Prediction.to_dict()`` either way.

Models are loaded (and verified against their manifests) when the app is created, so a bad or tampered model
fails before the server listens; the warm-up prediction runs at ASGI startup, and ``/readyz`` turns 200 after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edgesent import __version__
from edgesent.errors import ConfigError
from edgesent.serve.auth import ApiKeyMiddleware
from edgesent.serve.batcher import BatcherClosedError, DynamicBatcher, QueueFullError
from edgesent.serve.config import ServeConfig, load_api_keys
from edgesent.serve.errors import error_response
from edgesent.serve.limits import RequestError, parse_predict, read_body
from edgesent.serve.metrics import CONTENT_TYPE, ServeMetrics
from edgesent.serve.openapi import openapi_schema


if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("edgesent.serve.access")

DEFAULT_TASK = "classify"
WARMUP_TEXT = "warm-up"
RETRY_AFTER_S = 1
_LOG_KEY = "edgesent.log"  # per-request facts the route hands to the access log, in the ASGI scope
_ROUTES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/models")
_METHODS = frozenset({"GET", "HEAD", "POST"})  # what the routes answer (Starlette adds HEAD to GET routes)
_NAME = re.compile(r"[A-Za-z0-9._-]+")  # a model name: safe as one URL path segment, unencoded


@dataclass
class ServedModel:
    """One model as served: its predictor, what ``GET /v1/models`` says about it, and its batcher."""

    name: str
    predictor: Any
    load_seconds: float
    manifest_sha256: str | None
    batcher: DynamicBatcher | None = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        """The model's entry in ``GET /v1/models``."""
        manifest = self.predictor.manifest or {}
        entry = {
            "name": self.name,
            "task": manifest.get("task", DEFAULT_TASK),
            "labels": list(self.predictor.labels),
            "precision": manifest.get("precision"),
            "runtime": getattr(self.predictor, "runtime", None),  # onnxruntime or openvino: what runs it here
            "provider": getattr(self.predictor, "provider", None),  # the device: cpu or cuda
            "max_length": self.predictor.max_length,
            "manifest_sha256": self.manifest_sha256,
        }
        tags = getattr(self.predictor, "tags", None)
        if tags is not None:  # a span model: what its outputs mean, index = output id
            entry["tags"] = list(tags)
        return entry


def load_models(models: Sequence[str | Path] | Mapping[str, Any], cfg: ServeConfig) -> list[ServedModel]:
    """Load and verify every model; names are directory names, or the keys of a mapping.

    Args:
        models: export directories (``NAME=DIR`` names one), or name -> directory or ready ``Predictor``.
        cfg: provider, threads and verify are used.

    Raises:
        ConfigError: no model, two models with one name, or a name that cannot be a URL path segment.
        ModelError: a directory is not an ONNX export, or a file does not match its manifest's sha256.
    """
    from edgesent.artifacts import manifest_sha256
    from edgesent.runtime import Predictor

    named = list(models.items()) if isinstance(models, Mapping) else [_split_name(item) for item in models]
    if not named:
        raise ConfigError("no model to serve; give at least one exported model directory")
    served: list[ServedModel] = []
    for name, source in named:
        _check_name(name)
        if any(model.name == name for model in served):
            raise ConfigError(f"two models are named {name!r}; name one with NAME=DIR")
        started = time.perf_counter()
        if isinstance(source, (str, Path)):
            predictor = Predictor.load(source, provider=cfg.provider, threads=cfg.threads, verify=cfg.verify)
            model_dir: Path | None = Path(source)
        else:
            predictor, model_dir = source, getattr(source, "model_dir", None)
        digest = manifest_sha256(model_dir) if model_dir is not None else None
        served.append(ServedModel(name, predictor, time.perf_counter() - started, digest))
    return served


def create_app(
    models: Sequence[str | Path] | Mapping[str, Any],
    config: ServeConfig | None = None,
    api_keys: Sequence[str] | None = None,
) -> Starlette:
    """The ASGI app serving ``models``; mount it, serve it with uvicorn, or test it in process.

    Args:
        models: export directories (named by their directory name, or ``NAME=DIR``), or a mapping of name to
            directory or loaded ``Predictor``.
        config: server settings (default ``ServeConfig()``); host, port and workers are not used here.
        api_keys: accepted bearer keys (default None: read by ``load_api_keys(config)``); empty: no authentication.

    Returns:
        A Starlette app; ``app.state.models`` maps names to :class:`ServedModel`, ``app.state.metrics`` is the
        app's :class:`~edgesent.serve.metrics.ServeMetrics`.

    Raises:
        ConfigError: a bad setting, no model, a duplicate name, or an unreadable API key file.
        ModelError: a model cannot be loaded or fails its manifest check.
    """
    cfg = config or ServeConfig()
    keys = list(load_api_keys(cfg) if api_keys is None else api_keys)
    metrics = ServeMetrics()
    served = {model.name: model for model in load_models(models, cfg)}
    for model in served.values():
        metrics.add_model(model.name, model.predictor.labels, model.load_seconds)
        model.batcher = _make_batcher(model, cfg, metrics)
    routes = _Routes(served, cfg, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for model in served.values():
            assert model.batcher is not None
            model.batcher.start()
            await model.batcher.run_direct([WARMUP_TEXT])
        routes.ready = True
        metrics.ready.set(1)
        logger.info("ready: %s", ", ".join(served))
        try:
            yield
        finally:
            routes.ready = False
            metrics.ready.set(0)
            for model in served.values():  # requests still queued are answered before the threads stop
                assert model.batcher is not None
                await model.batcher.stop()

    app = Starlette(
        routes=[
            Route("/healthz", routes.healthz, methods=["GET"]),
            Route("/readyz", routes.readyz, methods=["GET"]),
            Route("/metrics", routes.metrics, methods=["GET"]),
            Route("/openapi.json", routes.openapi, methods=["GET"]),
            Route("/v1/models", routes.list_models, methods=["GET"]),
            Route("/v1/models/{name}/predict", routes.predict, methods=["POST"]),
        ],
        middleware=[
            Middleware(_ObserveMiddleware, metrics=metrics),
            Middleware(ApiKeyMiddleware, keys=keys),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.models = served
    app.state.metrics = metrics
    app.state.config = cfg
    return app


def _split_name(item: str | Path) -> tuple[str, str | Path]:
    """``NAME=DIR`` -> (NAME, DIR); a plain directory is named after itself."""
    text = str(item)
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        if name:
            return name, path
    return Path(text).resolve().name, item


def _check_name(name: object) -> None:
    """Refuse a name that cannot be one URL path segment: ``/v1/models/{name}/predict`` would never reach it."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in {".", ".."}:
        raise ConfigError(
            f"model name {name!r} cannot be a URL path segment; use letters, digits, '.', '_' and '-' "
            "(name it with NAME=DIR)"
        )


def _make_batcher(model: ServedModel, cfg: ServeConfig, metrics: ServeMetrics) -> DynamicBatcher:
    predictor, name = model.predictor, model.name

    def predict(texts: list[str]) -> list[dict[str, Any]]:
        # predict_stream: the runtime's per-item rule (empty text -> an error row) serves HTTP as it serves files
        return [prediction.to_dict() for prediction in predictor.predict_stream(texts, batch_size=cfg.max_batch)]

    return DynamicBatcher(
        name,
        predict,
        max_batch=cfg.max_batch,
        max_wait_ms=cfg.max_wait_ms,
        max_queue=cfg.max_queue,
        merge=cfg.batching,
        observe=lambda size, seconds, rows: metrics.observe_batch(name, size, seconds, rows),
        on_queue=metrics.queue_depth.labels(name).set,
    )


class _Routes:
    """The route handlers, sharing the models, config and metrics of one app."""

    def __init__(self, models: dict[str, ServedModel], cfg: ServeConfig, metrics: ServeMetrics) -> None:
        self.models = models
        self.cfg = cfg
        self.metrics_ = metrics
        self.ready = False

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.ready:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "models": list(self.models)})

    async def metrics(self, request: Request) -> Response:
        return Response(self.metrics_.render(), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_schema(__version__))

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"models": [model.describe() for model in self.models.values()]})

    async def predict(self, request: Request) -> Response:
        name = request.path_params["name"]
        facts = request.scope.setdefault(_LOG_KEY, {})
        facts["model"] = name
        model = self.models.get(name)
        if model is None or model.batcher is None:
            return error_response(404, f"unknown model {name!r}; served: {', '.join(self.models)}")
        try:
            req = parse_predict(
                await read_body(request, self.cfg.max_body_bytes), self.cfg.max_texts, self.cfg.max_chars
            )
        except RequestError as err:
            return error_response(err.status, err.message)
        if req.top_k is not None and getattr(model.predictor, "tags", None) is not None:
            return error_response(422, f"top_k: model {name!r} returns spans, not label scores; leave top_k out")
        facts["n_texts"] = len(req.texts)
        if self.cfg.log_texts:
            facts["texts"] = req.texts
        try:
            future = model.batcher.submit(req.texts)
        except QueueFullError as err:
            self.metrics_.rejected.labels(name, "queue_full").inc()
            return error_response(429, f"{err}; retry later", {"Retry-After": str(RETRY_AFTER_S)})
        except BatcherClosedError as err:
            return error_response(503, str(err))
        try:
            rows = await asyncio.wait_for(future, self.cfg.timeout_s)
        except asyncio.TimeoutError:
            self.metrics_.rejected.labels(name, "timeout").inc()
            return error_response(503, f"no result within {self.cfg.timeout_s:g} s; the server is overloaded")
        except Exception as err:  # noqa: BLE001 - the model failed on the batch; the batcher logged it
            return error_response(500, f"prediction failed: {type(err).__name__}: {err}")
        k = None if req.top_k is None else min(req.top_k, len(model.predictor.labels))
        results = [_top_k(row, k) for row in rows]
        return JSONResponse({"model": name, "results": results})


def _top_k(row: dict[str, Any], k: int | None) -> dict[str, Any]:
    """A result with only its k most probable labels, most probable first (as ``Predictor.predict(top_k=k)``)."""
    if k is None:
        return row
    best = sorted(row["scores"].items(), key=lambda item: -item[1])[:k]  # stable: ties keep class-id order
    return {**row, "scores": dict(best)}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "no such route" if exc.status_code == 404 else str(exc.detail)
    return error_response(exc.status_code, message, dict(exc.headers or {}))


def _route_of(path: str) -> str:
    """The route template of a path, so metrics have one series per route, not per URL a caller made up."""
    if path in _ROUTES:
        return path
    if path.startswith("/v1/models/") and path.endswith("/predict"):
        return "/v1/models/{name}/predict"
    return "other"


def _method_of(method: str) -> str:
    """The method as a metric label: one the app serves, else ``OTHER``, so callers cannot create series."""
    return method if method in _METHODS else "OTHER"


class _ObserveMiddleware:
    """Counts, times and logs every HTTP request: Prometheus metrics plus one JSON access-log line."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        facts: dict[str, Any] = scope.setdefault(_LOG_KEY, {})

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        route = _route_of(scope["path"])
        self._metrics.in_flight.labels(route).inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self._metrics.in_flight.labels(route).dec()
            seconds = time.perf_counter() - started
            self._metrics.requests.labels(route, _method_of(scope["method"]), str(status)).inc()
            self._metrics.latency.labels(route).observe(seconds)
            if access_logger.isEnabledFor(logging.INFO):
                client = scope.get("client")
                line = {
                    "ts": round(time.time(), 3),
                    "method": scope["method"],
                    "path": scope["path"][:200],
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "client": client[0] if client else None,
                    **facts,
                }
                access_logger.info(json.dumps(line, ensure_ascii=False))
