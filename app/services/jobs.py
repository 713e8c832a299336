"""Long work as jobs: run in worker threads, report progress, can be cancelled, never block the event loop."""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.errors import ConvScopeError, NotFound

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]


class JobCancelled(Exception):
    """Raised inside a job function by check_cancelled() once DELETE was called."""


@dataclass
class Job:
    """One unit of long work and everything a client may poll about it."""

    id: str
    kind: str
    status: JobStatus = "queued"
    progress: float = 0.0
    result: dict[str, Any] | None = None
    error: str | None = None
    partial: dict[str, Any] | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)
    cancel_event: threading.Event = field(default_factory=threading.Event)

    @property
    def ended(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": round(self.progress, 4),
            "result": self.result,
            "error": self.error,
            "partial": self.partial,
            "artifacts": sorted(self.artifacts),
        }


class JobContext:
    """What a job function sees: progress reports, cancellation, and a place for arrays."""

    def __init__(self, job: Job) -> None:
        self._job = job

    @property
    def job_id(self) -> str:
        return self._job.id

    @property
    def artifacts(self) -> dict[str, np.ndarray]:
        return self._job.artifacts

    @property
    def cancelled(self) -> bool:
        return self._job.cancel_event.is_set()

    def check_cancelled(self) -> None:
        if self._job.cancel_event.is_set():
            raise JobCancelled()

    def report(self, progress: float, partial: dict[str, Any] | None = None) -> None:
        """Record progress in [0, 1] (and optionally a partial result); also a cancellation point."""
        self._job.progress = float(min(max(progress, 0.0), 1.0))
        if partial is not None:
            self._job.partial = partial
        self.check_cancelled()


JobFunction = Callable[[JobContext], dict[str, Any]]


class JobManager:
    """A bounded pool of worker threads and the jobs it has run (forgotten after ttl seconds)."""

    def __init__(self, workers: int = 2, ttl_seconds: float = 3600.0) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="convscope-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ttl = ttl_seconds

    def submit(self, kind: str, fn: JobFunction) -> Job:
        job = Job(id=uuid.uuid4().hex, kind=kind)
        with self._lock:
            self._forget_old()
            self._jobs[job.id] = job
        self._pool.submit(self._run, job, fn)
        return job

    def _run(self, job: Job, fn: JobFunction) -> None:
        if job.cancel_event.is_set():
            job.status = "cancelled"
            job.finished = time.time()
            return
        job.status = "running"
        try:
            result = fn(JobContext(job))
        except JobCancelled:
            job.status = "cancelled"
        except ConvScopeError as exc:
            job.error = exc.message
            job.status = "failed"
        except Exception as exc:  # a job must never take a worker down; the error is shown to the client
            job.error = f"{type(exc).__name__}: {exc}"
            job.status = "failed"
            traceback.print_exc()
        else:
            job.result = result
            job.progress = 1.0
            job.status = "done"
        job.finished = time.time()

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(
                f"No job with id {job_id!r} (finished jobs are kept for a while, then forgotten).",
                field="job_id",
            )
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if not job.ended:
            job.cancel_event.set()
            if job.status == "queued":
                job.status = "cancelled"
                job.finished = time.time()
        return job

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job ends (for scripts, tests and the CLI; routes poll instead)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while not job.ended and time.monotonic() < deadline:
            time.sleep(0.02)
        return job

    def _forget_old(self) -> None:
        now = time.time()
        stale = [k for k, j in self._jobs.items() if j.finished is not None and now - j.finished > self._ttl]
        for key in stale:
            del self._jobs[key]

    def shutdown(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel_event.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
