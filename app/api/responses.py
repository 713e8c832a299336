"""Shared OpenAPI `responses=` entries: the error body for every documented 4xx/5xx, and binary content types.

Routes list the statuses they can really return, e.g.
`@router.get("/x", responses=errors(404, 409, 422, also={200: content(PNG, NPY)}))`. The statuses any route can
answer whatever it does (400 bad Host, 401/403 from the access token and Origin checks) are on each
/api/v1 router through `COMMON`, so they cannot be forgotten on a new route.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from app.schemas.common import ErrorResponse, JobAccepted
from app.services.jobs import Job

Responses = dict[int | str, dict[str, Any]]

PNG = "image/png"
NPY = "application/octet-stream"

_BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad request (e.g. a Host header that is not allowed)",
    401: "An access token is configured and the request did not carry it (or carried a wrong one)",
    403: "Forbidden (e.g. a state-changing request from a foreign Origin)",
    404: "Not found: no such image, model, job, layer or artifact",
    409: "Conflict: pretrained weights are not available offline, or a stored model no longer loads",
    413: "The request body or upload is larger than its limit",
    415: "The uploaded file is not a supported format",
    422: "Invalid input (`invalid_input`, naming the field) or over a limit (`over_limit`, naming the setting)",
    503: "Busy: a capacity limit is reached (e.g. the job queue is full); retry after `Retry-After` seconds",
    507: "Saving to the data directory failed (read-only or full disk); nothing was saved",
}

_RETRY_AFTER: dict[str, Any] = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
}


def errors(*statuses: int, also: Responses | None = None) -> Responses:
    """Error responses with the ErrorResponse body for the given status codes, plus `also` (e.g. a 200
    with PNG and .npy content next to its JSON model, or a 202)."""
    out: Responses = dict(also or {})
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
        if status == 503:
            entry["headers"] = _RETRY_AFTER
        out[status] = entry
    return out


# On every /api/v1 router: the security checks (bad Host 400, token 401, Origin 403) run before any route.
# Routes with parameters list 422 themselves (FastAPI would otherwise document its HTTPValidationError body,
# which is not what the app's validation handler sends).
COMMON: Responses = errors(400, 401, 403)


def content(*media_types: str, description: str | None = None) -> dict[str, Any]:
    """A 200 entry whose body is one of the given binary media types (added next to any JSON model)."""
    entry: dict[str, Any] = {"content": {m: _BINARY for m in media_types}}
    if description:
        entry["description"] = description
    return entry


def binary_200(*media_types: str, description: str | None = None) -> Responses:
    return {200: content(*media_types, description=description)}


def multipart_upload(files: dict[str, str], required: tuple[str, ...]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its multipart body itself (bounded, see app/http/uploads.py):
    one binary part per entry of `files` (name -> description)."""
    properties = {
        name: {"type": "string", "format": "binary", "description": text} for name, text in files.items()
    }
    schema = {"type": "object", "required": list(required), "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def job_accepted(request: Request, job: Job) -> JSONResponse:
    """202 with the job's id, where to poll it, and what it was estimated to cost (every route that starts a job)."""
    est = job.estimate
    body = JobAccepted(
        job_id=job.id,
        status_url=str(request.url_for("job_status", job_id=job.id)),
        estimated_seconds=None if est is None or est.seconds is None else round(est.seconds, 3),
        forward_passes=est.forward_passes if est is not None else 0,
        macs=est.macs if est is not None else 0,
        batch_size=est.batch_size if est is not None else 1,
        time_limit_seconds=job.time_limit,
    )
    return JSONResponse(body.model_dump(), status_code=202)
