"""Every non-2xx answer of the server in OpenAI's shape: ``{"error": {message, type, param, code}}``.

``type`` and ``code`` are strings as OpenAI sends them (its SDKs read ``code`` as a string).
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

KINDS = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}
#: ``error.code`` per HTTP status (OpenAI's names where it has one)
CODES = {
    400: "invalid_json",
    401: "invalid_api_key",
    404: "not_found",
    408: "request_timeout",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "invalid_value",
    429: "rate_limit_exceeded",
    500: "internal_error",
    503: "service_unavailable",
    504: "timeout",
}


def error_kind(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status."""
    return KINDS.get(status, "invalid_request_error" if status < 500 else "server_error")


def error_payload(status: int, message: str, param: str | None = None) -> dict:
    """``{"error": {message, type, param, code}}`` for an HTTP status."""
    code = CODES.get(status, "invalid_request" if status < 500 else "server_error")
    return {"error": {"message": message, "type": error_kind(status), "param": param, "code": code}}


def error_body(status: int, message: str) -> bytes:
    """The JSON bytes of an error answer (for raw ASGI senders)."""
    return json.dumps(error_payload(status, message)).encode()


def error(
    status: int, message: str, headers: dict | None = None, param: str | None = None
) -> JSONResponse:
    """An OpenAI-style error response (``param``: the request field at fault)."""
    return JSONResponse(error_payload(status, message, param), status_code=status, headers=headers)


def invalid(errs: list[dict]) -> JSONResponse:
    """400 for a body that is not JSON, else 422 naming the first fields at fault."""
    if any(e.get("type") == "json_invalid" for e in errs):
        return error(400, "malformed JSON body")
    parts = []
    for e in errs[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {e.get('msg')}")
    return error(422, "invalid request: " + "; ".join(parts))


def install_error_handlers(app: FastAPI) -> None:
    """Validation errors become 400 (bad JSON) / 422 naming the fields; HTTP errors keep status."""

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(exc.errors())

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))
