"""The one shape of every error response: ``{"error": message, "status": code}``."""

from __future__ import annotations

from starlette.responses import JSONResponse


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON error response, e.g. ``{"error": "unknown model 'x'", "status": 404}``."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)
