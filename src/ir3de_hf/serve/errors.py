# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""OpenAI-style errors: every refusal of the server is a `ServeError` that becomes ``{"error": {...}}``."""

from __future__ import annotations

from typing import Any

__all__ = ["ServeError", "error_body"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    503: "service_unavailable",
}


class ServeError(Exception):
    """A request the server refuses or cannot answer: the HTTP status and a message saying what to do."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The body OpenAI clients parse: ``{"error": {"message", "type", "param", "code"}}``."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
