"""JSON routes for long-running jobs: poll, cancel, fetch artifacts."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.api.responses import COMMON, NPY, PNG, content, errors
from app.core.imaging.rendering import colorize, encode_npy, encode_png, to_uint8_image, value_limits
from app.deps import JobsDep
from app.errors import NotFound
from app.schemas.common import ArtifactStats, JobOut

router = APIRouter(prefix="/api/v1", tags=["jobs"], responses=COMMON)


@router.get("/jobs/{job_id}", response_model=JobOut, name="job_status", responses=errors(404, 422))
def job_status(job_id: str, jobs: JobsDep) -> JobOut:
    return JobOut(**jobs.get(job_id).to_dict())


@router.delete("/jobs/{job_id}", response_model=JobOut, responses=errors(404, 422))
def cancel_job(job_id: str, jobs: JobsDep) -> JobOut:
    return JobOut(**jobs.cancel(job_id).to_dict())


@router.get(
    "/jobs/{job_id}/artifacts/{name}",
    response_model=ArtifactStats,
    responses=errors(
        404, 422, also={200: content(NPY, PNG, description=".npy (default), a PNG, or JSON statistics")}
    ),
)
def job_artifact(
    job_id: str, name: str, jobs: JobsDep, format: Literal["png", "npy", "json"] = "npy"
) -> Response:
    """An array a job produced: raw .npy, JSON statistics, or a PNG (colour-mapped when 2-D)."""
    job = jobs.get(job_id)
    if name not in job.artifacts:
        raise NotFound(f"Job {job_id} has no artifact {name!r}.", field="name", choices=sorted(job.artifacts))
    arr = job.artifacts[name]
    if format == "npy":
        return Response(encode_npy(arr), media_type="application/octet-stream")
    if format == "json":
        lo, hi = value_limits(arr.astype(float))
        return JSONResponse(
            {"name": name, "shape": list(arr.shape), "dtype": str(arr.dtype), "min": lo, "max": hi}
        )
    if arr.ndim == 2:
        picture = colorize(arr.astype(float), "viridis")
    else:
        picture = to_uint8_image(arr)
    return Response(encode_png(picture), media_type="image/png")
