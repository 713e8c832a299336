"""A bound on request body bytes, enforced while the body streams in and before anything parses it.

Pure ASGI (not BaseHTTPMiddleware), so nothing is buffered here: the declared Content-Length is checked
first, then the bytes actually received are counted (chunked bodies declare no length), and reading stops
at the limit. The limit is `Settings.max_body_bytes` for every body except multipart uploads to the
routes that take files; their readers enforce the per-file limits (max_upload_bytes, max_model_bytes)
and this middleware only holds them to that limit plus the multipart envelope.

A refusal is a 413 with the usual error body: JSON under /api, the error page (or partial) elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.services.custom_models import MAX_ARCHITECTURE_BYTES

# Boundaries, part headers and a few small fields around the file(s) of an upload. Twice what the upload
# readers allow for it, so that their more precise refusal (naming the file's limit) comes first.
MULTIPART_OVERHEAD = 128 * 1024

# POST routes that take multipart file uploads -> (setting named in a refusal, bytes allowed for the files).
UPLOAD_ROUTES: dict[str, tuple[str, Callable[[Settings], int]]] = {
    "/api/v1/images": ("max_upload_bytes", lambda s: s.max_upload_bytes),
    "/images": ("max_upload_bytes", lambda s: s.max_upload_bytes),
    "/api/v1/models": ("max_model_bytes", lambda s: s.max_model_bytes + MAX_ARCHITECTURE_BYTES),
    "/models/upload": ("max_model_bytes", lambda s: s.max_model_bytes + MAX_ARCHITECTURE_BYTES),
}


class _BodyTooLarge(Exception):
    """Raised from receive() once the body passed the limit: the app must stop reading."""


def body_limit_for(scope: Scope, settings: Settings) -> tuple[int, str]:
    """(bytes allowed, setting that allows them) for this request's body."""
    headers = Headers(scope=scope)
    content_type = headers.get("content-type", "").lower()
    route = UPLOAD_ROUTES.get(scope.get("path", "").rstrip("/") or "/")
    if route is not None and scope.get("method") == "POST" and content_type.startswith("multipart/form-data"):
        setting, allowed = route
        return allowed(settings) + MULTIPART_OVERHEAD, setting
    return settings.max_body_bytes, "max_body_bytes"


def _error(limit: int, setting: str, declared: int | None) -> dict[str, Any]:
    field = None if setting == "max_body_bytes" else "file"
    size = f"is {declared:,} bytes, more than" if declared is not None else "is larger than"
    message = (
        f"The request body {size} the limit of {limit:,} bytes ({limit / 2**20:.1f} MiB, setting {setting}). "
        "Send less data (smaller matrices, fewer kernels, a smaller file)."
    )
    body: dict[str, Any] = {
        "code": "too_large",
        "message": message,
        "field": field,
        "limit": setting,
        "maximum": limit,
        "max_bytes": limit,
    }
    if declared is not None:
        body["estimate"] = declared
    return {"error": body}


async def _send_refusal(scope: Scope, send: Send, body: dict[str, Any]) -> None:
    """A 413 in the shape the global error handlers use: JSON for /api, an HTML page or partial otherwise."""
    path: str = scope.get("path", "")
    # The connection cannot be reused: the rest of the body was never read.
    headers = [(b"connection", b"close")]
    if path.startswith("/api/"):
        content = json.dumps(body).encode()
        headers.append((b"content-type", b"application/json"))
    else:
        content = _html(scope, body).encode()
        headers += [(b"content-type", b"text/html; charset=utf-8"), (b"vary", b"HX-Request")]
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _html(scope: Scope, body: dict[str, Any]) -> str:
    # Imported here: the template machinery is the web layer's, and only refusals of pages need it.
    from starlette.requests import Request

    from app.deps import is_htmx
    from app.web.templating import get_templates

    request = Request(scope)
    template = "partials/error.html" if is_htmx(request) else "pages/error.html"
    context = {
        "request": request,
        "error": body["error"],
        "status_code": 413,
        "active_path": scope.get("path"),
    }
    return get_templates().get_template(template).render(context)


class BodyLimitMiddleware:
    """Refuse (413) a request whose body is longer than its limit, before the app parses any of it."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = body_limit_for(scope, self.settings)
        declared_text = Headers(scope=scope).get("content-length")
        declared = int(declared_text) if declared_text and declared_text.isdigit() else None
        if declared is not None and declared > limit:
            await _send_refusal(scope, send, _error(limit, setting, declared))
            return

        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # Once the body was cut off, whatever the app answers (FastAPI turns the exception into a
            # 400 "error parsing the body") is replaced by the 413 below.
            if exceeded and not response_started:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or response_started:
                raise
        if exceeded and not response_started:
            await _send_refusal(scope, send, _error(limit, setting, declared))
