"""Downloading pretrained weights as a job, so a dead network never blocks a request."""

from __future__ import annotations

from typing import Any

from app.services.jobs import Job, JobContext, JobManager
from app.services.models import ModelRegistry, download_weights


def start_download(
    registry: ModelRegistry, jobs: JobManager, name: str, timeout: float, client: str = "local"
) -> Job:
    """Queue the download. Its time is bounded by the network timeout (per read) and the job time limit
    (checked at each progress report), and it counts against the queue caps like any job (Busy, 503)."""
    spec = registry.spec(name)
    # A model this server will not run is not worth gigabytes of download either.
    registry.check_available(spec)

    def run(ctx: JobContext) -> dict[str, Any]:
        path = download_weights(spec, timeout=timeout, report=lambda f: ctx.report(0.99 * f))
        return {"model": spec.name, "path": str(path), "bytes": path.stat().st_size}

    return jobs.submit("weights-download", run, client=client)
