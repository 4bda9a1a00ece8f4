"""``ServeConfig``: every setting of ``edgesent serve``, validated before a model is loaded.

Stdlib only (no starlette, no onnxruntime), so the CLI can check its options and fail on a typo in one line
before paying for any import. API keys are never part of the config: they are read from ``--api-key-file`` or
``EDGESENT_API_KEYS`` by :func:`load_api_keys`, so ``to_dict()`` can be logged or saved without leaking them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgesent.config import ConfigBase, check_bool, check_choice, check_number, optional_path
from edgesent.config.predictor import MAX_BATCH_SIZE, MAX_THREADS
from edgesent.config.providers import PROVIDERS
from edgesent.errors import ConfigError


API_KEYS_ENV = "EDGESENT_API_KEYS"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Upper bounds of the numeric settings: far above any useful value, low enough that a typo (an extra digit, a
# pasted number) is one ConfigError line instead of a crash at startup (islice refuses sizes over sys.maxsize)
# or a server whose limits protect nothing.
MAX_WORKERS = 256
MAX_QUEUE = 1_000_000  # texts waiting per model; max_texts too, which must fit in the queue anyway
MAX_BODY_BYTES = 1_000_000_000  # decimal, so the error message states it exactly
MAX_CHARS = 10_000_000
MAX_SECONDS = 86_400.0  # timeout_s, shutdown_timeout_s: a day


@dataclass
class ServeConfig(ConfigBase):
    """How the server runs: network, model runtime, batching, limits and logging.

    Args:
        host: interface to listen on (default 127.0.0.1: loopback only).
        port: TCP port (default 8000; 0 picks a free one).
        workers: server processes (default 1); each loads every model and keeps its own metrics.
        provider: ``auto``, ``cpu``, ``cuda`` or ``openvino``, as in ``Predictor.load`` (default auto).
        threads: ONNX Runtime intra-op threads per model (default None: one per core).
        verify: check every model file against its manifest's sha256 at start (default True).
        batching: merge concurrent requests into one model call (default True); off, each request is one call.
        max_batch: most texts in one model call (default 64).
        max_wait_ms: how long the first waiting text waits for others to join its batch (default 5 ms).
        max_queue: most texts waiting per model; beyond it a request gets 429 with Retry-After (default 2048).
        timeout_s: a request that has no result after this many seconds gets 503 (default 30).
        max_body_bytes: largest request body (default 1 MiB); larger is 413.
        max_texts: most texts in one request (default 256); more is 413.
        max_chars: most characters in one text (default 20,000); more is 413.
        api_key_file: file of API keys, one per line (default None: ``EDGESENT_API_KEYS``, comma-separated, or
            no authentication when neither is set).
        log_texts: put the request's texts in the access log (default False: counts only).
        shutdown_timeout_s: on SIGTERM, how long in-flight requests may take to finish (default 30).

    Every numeric setting also has a ceiling (the ``MAX_*`` constants), so a typo fails here, not at startup.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    provider: str = "auto"
    threads: int | None = None
    verify: bool = True
    batching: bool = True
    max_batch: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 2048
    timeout_s: float = 30.0
    max_body_bytes: int = 1 << 20
    max_texts: int = 256
    max_chars: int = 20_000
    api_key_file: Path | None = None
    log_texts: bool = False
    shutdown_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be a non-empty string, got {self.host!r}")
        check_number("port", self.port, low=0, high=65535, integer=True)
        check_number("workers", self.workers, low=1, high=MAX_WORKERS, integer=True)
        check_choice("provider", self.provider, PROVIDERS)
        if self.threads is not None:
            check_number("threads", self.threads, low=1, high=MAX_THREADS, integer=True)  # the predictor's
        check_bool("verify", self.verify)
        check_bool("batching", self.batching)
        check_number("max_batch", self.max_batch, low=1, high=MAX_BATCH_SIZE, integer=True)  # one model call
        check_number("max_wait_ms", self.max_wait_ms, low=0, high=10_000)
        check_number("max_queue", self.max_queue, low=1, high=MAX_QUEUE, integer=True)
        check_number("timeout_s", self.timeout_s, low=0, low_open=True, high=MAX_SECONDS)
        check_number("max_body_bytes", self.max_body_bytes, low=64, high=MAX_BODY_BYTES, integer=True)
        check_number("max_texts", self.max_texts, low=1, high=MAX_QUEUE, integer=True)
        check_number("max_chars", self.max_chars, low=1, high=MAX_CHARS, integer=True)
        check_bool("log_texts", self.log_texts)
        check_number("shutdown_timeout_s", self.shutdown_timeout_s, low=0, high=MAX_SECONDS)
        self.api_key_file = optional_path(self.api_key_file)
        if self.max_queue < self.max_texts:
            raise ConfigError(
                f"max_queue={self.max_queue} is below max_texts={self.max_texts}: one allowed request could never fit"
            )


def load_api_keys(cfg: ServeConfig) -> list[str]:
    """The API keys: one per non-empty line of ``cfg.api_key_file``, else ``EDGESENT_API_KEYS`` (comma-separated).

    Returns:
        The keys; an empty list (no key file, ``EDGESENT_API_KEYS`` unset) means no authentication.

    Raises:
        ConfigError: the key file cannot be read or is not UTF-8, or the key file or the variable holds no key.
    """
    if cfg.api_key_file is not None:
        try:
            lines = cfg.api_key_file.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise ConfigError(f"cannot read --api-key-file {cfg.api_key_file}: {err.strerror or err}") from err
        except UnicodeDecodeError as err:
            where = f"{err.reason} at byte {err.start}"
            raise ConfigError(f"cannot read --api-key-file {cfg.api_key_file}: not UTF-8 text ({where})") from err
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise ConfigError(f"--api-key-file {cfg.api_key_file} holds no key (one key per line)")
        return keys
    value = os.environ.get(API_KEYS_ENV)
    if value is None:
        return []
    keys = [key.strip() for key in value.split(",") if key.strip()]
    if not keys:  # set but blank (e.g. an unset deployment variable expanded to ""): never silently run open
        raise ConfigError(
            f"{API_KEYS_ENV} is set but holds no key (comma-separated keys); unset it to serve without authentication"
        )
    return keys
