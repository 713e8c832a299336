"""Domain exceptions, turned once into JSON for /api and an error partial or page for HTML."""

from __future__ import annotations

from typing import Any


class ConvScopeError(Exception):
    """Base of every error a client can cause; never a 500."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self, message: str, field: str | None = None, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra
        # HTTP headers to send with the error (e.g. Retry-After on a 503).
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        # "field" is always present (null when the error is about the request as a whole), so clients can rely on it.
        body: dict[str, Any] = {"code": self.code, "message": self.message, "field": self.field}
        body.update(self.extra)
        return {"error": body}


class NotFound(ConvScopeError):
    status_code = 404
    code = "not_found"


class InvalidInput(ConvScopeError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(ConvScopeError):
    status_code = 413
    code = "too_large"


class UnsupportedMedia(ConvScopeError):
    status_code = 415
    code = "unsupported_media"


class WeightsUnavailable(ConvScopeError):
    """Pretrained weights were asked for but are neither cached nor downloadable."""

    status_code = 409
    code = "weights_unavailable"


class Conflict(ConvScopeError):
    status_code = 409
    code = "conflict"


class OverLimit(ConvScopeError):
    """The work a request would cause is past a limit in Settings; the message names the limit and the estimate.

    Raised before the work starts. `extra` carries `limit` (the setting's name), `estimate` and `maximum`.
    """

    status_code = 422
    code = "over_limit"


class Busy(ConvScopeError):
    """The server is at a capacity limit (e.g. the job queue is full); try again after `Retry-After` seconds."""

    status_code = 503
    code = "busy"

    def __init__(self, message: str, retry_after: int = 30, field: str | None = None, **extra: Any) -> None:
        super().__init__(
            message, field, headers={"Retry-After": str(retry_after)}, retry_after=retry_after, **extra
        )


class StorageFailed(ConvScopeError):
    """Saving to the data directory failed (read-only, full disk): nothing was saved, the server keeps serving."""

    status_code = 507
    code = "storage_failed"


class Unauthorized(ConvScopeError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ConvScopeError):
    status_code = 403
    code = "forbidden"
