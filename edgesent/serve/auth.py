"""Bearer-token access control: every route but the health probes needs ``Authorization: Bearer <key>``."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgesent.serve.errors import error_response


if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/readyz"})


class ApiKeyMiddleware:
    """ASGI middleware: 401 unless the request carries one of ``keys`` as a bearer token.

    Keys are compared with ``hmac.compare_digest`` against every configured key (no early exit), so the time taken
    says nothing about how much of a key was right.

    Args:
        app: the wrapped ASGI app.
        keys: the accepted keys; empty turns authentication off.
    """

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self._keys = [key.encode("utf-8") for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._keys or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.allowed(dict(scope["headers"]).get(b"authorization", b"")):
            await self.app(scope, receive, send)
            return
        response = error_response(401, "missing or wrong API key; send 'Authorization: Bearer <key>'")
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)

    def allowed(self, header: bytes) -> bool:
        """Whether an Authorization header value holds an accepted key."""
        scheme, _, token = header.partition(b" ")
        token = token.strip()
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(token, key)
        return ok and scheme.lower() == b"bearer"
