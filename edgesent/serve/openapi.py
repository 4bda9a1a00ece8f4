"""The OpenAPI 3.1 document the server publishes at ``GET /openapi.json`` (written by hand: no pydantic)."""

from __future__ import annotations

from typing import Any


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "PredictRequest": {
        "type": "object",
        "required": ["texts"],
        "additionalProperties": False,
        "properties": {
            "texts": {"type": "array", "items": {"type": "string"}, "description": "Texts to classify, in order."},
            "top_k": {
                "type": ["integer", "null"],
                "minimum": 1,
                "description": "Keep the k most probable labels (classifiers; a span model answers 422).",
            },
        },
    },
    "Span": {
        "type": "object",
        "required": ["text", "start", "end", "label", "score"],
        "properties": {
            "text": {"type": "string", "description": "The span's text: the request text's [start, end)."},
            "start": {"type": "integer", "description": "First character (Unicode code point), 0-based."},
            "end": {"type": "integer", "description": "One past the last character."},
            "label": {"type": "string"},
            "score": {"type": "number", "description": "Mean probability of the span's word tags."},
        },
    },
    "Result": {
        "type": "object",
        "description": "A classifier's result has label, score and scores; a span model's (token-classification) "
        "has spans instead.",
        "required": ["truncated", "unknown_tokens"],
        "properties": {
            "label": {"type": ["string", "null"], "description": "Most probable label; null with an error."},
            "score": {"type": ["number", "null"]},
            "scores": {"type": "object", "additionalProperties": {"type": "number"}},
            "spans": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Span"},
                "description": "A span model's spans in text order; empty with an error.",
            },
            "truncated": {"type": "boolean", "description": "The text was cut to the model's max_length tokens."},
            "unknown_tokens": {"type": "integer", "description": "Tokens the vocabulary does not know."},
            "error": {"type": "string", "description": "Only for a text that was not predicted (e.g. 'empty text')."},
        },
    },
    "PredictResponse": {
        "type": "object",
        "required": ["model", "results"],
        "properties": {
            "model": {"type": "string"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
        },
    },
    "Model": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "task": {"type": "string"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "tags": {"type": "array", "items": {"type": "string"}, "description": "A span model's BIO tags."},
            "precision": {"type": ["string", "null"]},
            "max_length": {"type": "integer"},
            "manifest_sha256": {"type": ["string", "null"]},
        },
    },
    "Models": {
        "type": "object",
        "properties": {"models": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}},
    },
}


def openapi_schema(version: str) -> dict[str, Any]:
    """The OpenAPI document for this server version."""
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgesent serve", "version": version},
        "components": {"schemas": _SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/models/{name}/predict": {
                "post": {
                    "summary": "Classify texts, or find a span model's spans: one result per text, in order.",
                    "security": secured,
                    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
                    },
                    "responses": {
                        "200": _ok("One result per text.", "PredictResponse"),
                        "400": _error("Malformed JSON."),
                        "401": _error("Missing or wrong API key."),
                        "404": _error("Unknown model."),
                        "413": _error("Body, number of texts or a text over its limit."),
                        "422": _error("Wrong shape or types; top_k for a span model."),
                        "429": _error("Queue full; retry after the Retry-After header's seconds."),
                        "503": _error("Timed out, or shutting down."),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The served models.",
                    "security": secured,
                    "responses": {"200": _ok("Models.", "Models")},
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness: the process answers.", "responses": {"200": {"description": "Alive."}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: every model loaded and warmed up.",
                    "responses": {"200": {"description": "Ready."}, "503": {"description": "Not ready yet."}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics.",
                    "security": secured,
                    "responses": {"200": {"description": "Text format."}},
                }
            },
        },
    }
