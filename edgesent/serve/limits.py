"""What a caller may send: body size, JSON shape, texts per request, characters per text.

Every violation is a :class:`RequestError` carrying its HTTP status and a message that names the offending field
and the limit, e.g. ``413 texts[3] has 25000 characters; the limit is 20000``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect

from edgesent.data import repair_text


if TYPE_CHECKING:
    from starlette.requests import Request

_KEYS = frozenset({"texts", "top_k"})
CLIENT_CLOSED = 499  # nginx's "client closed request": the caller left before the server could answer


class RequestError(Exception):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PredictRequest:
    """A checked ``POST /v1/models/{name}/predict`` body: the texts (valid Unicode) and top_k."""

    texts: list[str]
    top_k: int | None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``max_bytes`` (Content-Length or streamed).

    A client that hangs up mid-body is a :data:`CLIENT_CLOSED` error: the answer goes nowhere (the server drops it),
    but the metrics and the access log show the status, apart from the server's own 5xx errors.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"request body of {int(declared)} bytes is over the limit of {max_bytes} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise RequestError(413, f"request body is over the limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect as err:  # the caller's doing, not a server error: no traceback, not a 5xx
        raise RequestError(CLIENT_CLOSED, "client closed the connection before sending its whole body") from err
    return b"".join(chunks)


def parse_predict(body: bytes, max_texts: int, max_chars: int) -> PredictRequest:
    """Check a predict body: ``{"texts": [str, ...], "top_k": int | null}``.

    Raises:
        RequestError: 400 malformed JSON; 422 wrong shape or types; 413 too many texts or a text too long.
    """
    try:
        obj: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(400, f"malformed JSON: {err}") from err
    except RecursionError as err:  # a body of ``[[[[...`` nests past the parser's depth: bad input, not a 500
        raise RequestError(400, "malformed JSON: nested too deeply") from err
    if not isinstance(obj, dict):
        raise RequestError(422, f'expected a JSON object {{"texts": [...]}}, got {type(obj).__name__}')
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; known: texts, top_k")
    texts = obj.get("texts")
    if not isinstance(texts, list):
        raise RequestError(422, f"'texts' must be a list of strings, got {type(texts).__name__}")
    if len(texts) > max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is {max_texts}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise RequestError(422, f"texts[{index}] must be a string, got {type(text).__name__}")
        if len(text) > max_chars:
            raise RequestError(413, f"texts[{index}] has {len(text)} characters; the limit is {max_chars}")
    top_k = obj.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise RequestError(422, f"'top_k' must be a positive integer or null, got {top_k!r}")
    return PredictRequest([repair_text(text) or text for text in texts], top_k)
