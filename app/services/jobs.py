"""Long work as jobs: run in worker threads, report progress, can be cancelled, never block the event loop.

Every job is bounded (issue 9): its cost is estimated before it is queued and refused past
``max_job_seconds`` (OverLimit, 422); a running job stops at its first progress/cancellation point after
``max_job_seconds`` (status "failed", partial results kept); and the queue holds at most
``max_queued_jobs`` jobs (queued + running) in all and ``max_queued_jobs_per_client`` per client, beyond
which a submission is refused with Busy (503 + Retry-After).

Starting a job is idempotent per client: a submission may carry a ``key`` (see :func:`job_key`, a digest of
the kind, the model, the input and every parameter); while the same client has a queued or running job
with that key, the submission returns that job instead of queueing another, so reloading a page or
resending a request neither repeats the work nor uses up the client's share of the queue. Ended jobs
(done, failed, cancelled) are not reused: asking again after the end starts a new job.

The queue is fair between clients: each client has its own FIFO, and a free worker takes the next job of the
client served least recently (round robin), so one student's three queued jobs, or a long training run, never
make the rest of the room wait behind them. FIFO order holds within one client.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.config import Settings
from app.core.models.work_cost import batch_for
from app.errors import Busy, ConvScopeError, NotFound, OverLimit

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]

# One batch of a job is sized to about this many seconds of estimated work (Settings.job_batch_seconds):
# cancellation and the time limit are checked between batches, so this is how long they may take to act.
BATCH_SECONDS = 1.0


class JobCancelled(Exception):
    """Raised inside a job function by check_cancelled() once DELETE was called."""


class JobTimedOut(Exception):
    """Raised inside a job function by check_cancelled() once the job has run past its time limit."""


# How the kinds of job are named to people (a Busy message); unknown kinds are shown as they are.
KIND_NAMES: dict[str, str] = {
    "cam": "a slow CAM (/explain)",
    "occlusion": "an occlusion map (/occlusion)",
    "compare": "a method comparison (/compare)",
    "weights-download": "a weights download (/models)",
    "train": "a training run (/train)",
}


def job_key(kind: str, **parts: Any) -> str:
    """A digest naming one piece of work: ``kind`` and ``parts`` (model, weights, an image id or an array
    digest, every parameter), which must be JSON-serialisable (tuples become lists, key order is ignored)."""
    text = json.dumps({"kind": kind, **parts}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def array_digest(*arrays: Any) -> str:
    """A digest of the contents, shapes and dtypes of numpy arrays (or CPU tensors), for :func:`job_key`."""
    h = hashlib.blake2b(digest_size=16)
    for arr in arrays:
        a = np.ascontiguousarray(arr.numpy() if hasattr(arr, "numpy") else np.asarray(arr))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _giga(value: float) -> str:
    """MACs in words: 19.6 G, 246 T."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} "


@dataclass(frozen=True)
class JobEstimate:
    """What a job will cost, estimated from its input before it is queued.

    ``seconds`` is ``forward_passes * forward_macs / macs_per_second`` (None when the work is not made of
    forward passes, e.g. a download bounded by its network timeout). ``what`` describes the work in
    words, ``hint`` says how to make it cheaper, ``field_name`` is the request field to change, ``detail``
    holds numbers specific to the kind of job (e.g. ``windows``).
    """

    kind: str
    forward_passes: int = 0
    forward_macs: int = 0
    macs_per_second: float = 1.0
    batch_size: int = 1
    seconds: float | None = None
    what: str = ""
    hint: str = ""
    field_name: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.forward_passes * self.forward_macs

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimated_seconds": None if self.seconds is None else round(self.seconds, 3),
            "forward_passes": self.forward_passes,
            "forward_macs": self.forward_macs,
            "macs": self.macs,
            "batch_size": self.batch_size,
            **self.detail,
        }


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
    client: str = "local"
    estimate: JobEstimate | None = None
    # Seconds the job may run (from its start, not its queueing); None: no limit.
    time_limit: float | None = None
    started: float | None = None  # time.monotonic() when it started running
    key: str | None = None  # job_key() of its work: a second submission with it gets this job while it runs

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
            "estimate": self.estimate.to_dict() if self.estimate is not None else None,
            "time_limit_seconds": self.time_limit,
        }

    def remaining_seconds(self, now: float) -> float | None:
        """Estimated seconds until this job ends (queued: its whole estimate), None when unknown."""
        if self.estimate is None or self.estimate.seconds is None:
            return None
        spent = now - self.started if self.started is not None else 0.0
        left = self.estimate.seconds - spent
        if self.time_limit is not None and self.started is not None:
            left = min(left, self.time_limit - spent)
        return max(0.0, left)


class JobContext:
    """What a job function sees: progress reports, cancellation, the time limit, and a place for arrays."""

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

    @property
    def batch_size(self) -> int | None:
        """Images per batch chosen from the estimate (about BATCH_SECONDS of work), if there is one."""
        return self._job.estimate.batch_size if self._job.estimate is not None else None

    def check_cancelled(self) -> None:
        """A cancellation point: raises JobCancelled after DELETE, JobTimedOut past the time limit."""
        job = self._job
        if job.cancel_event.is_set():
            raise JobCancelled()
        if (
            job.time_limit is not None
            and job.started is not None
            and time.monotonic() - job.started > job.time_limit
        ):
            raise JobTimedOut()

    def report(self, progress: float, partial: dict[str, Any] | None = None) -> None:
        """Record progress in [0, 1] (and optionally a partial result); also a cancellation point."""
        self._job.progress = float(min(max(progress, 0.0), 1.0))
        if partial is not None:
            self._job.partial = partial
        self.check_cancelled()


JobFunction = Callable[[JobContext], dict[str, Any]]


def _next_client(waiting: OrderedDict[str, deque[Any]], served: dict[str, int]) -> str:
    """The waiting client served least recently (never served first; ties: the one waiting longest)."""
    return min(waiting, key=lambda c: served.get(c, 0))


class JobManager:
    """A bounded pool of worker threads and the jobs it has run (forgotten after ttl seconds).

    ``max_seconds`` bounds both a job's estimate (checked at submit) and its running time; ``max_queued``
    and ``max_per_client`` bound the jobs not yet ended (queued + running), in all and per client.
    ``macs_per_second`` turns forward MACs into estimated seconds (see :meth:`estimate`).
    """

    def __init__(
        self,
        workers: int = 2,
        ttl_seconds: float = 3600.0,
        *,
        max_seconds: float | None = None,
        max_queued: int | None = None,
        max_per_client: int | None = None,
        macs_per_second: float = 25e9,
        batch_seconds: float = BATCH_SECONDS,
        request_seconds: float | None = None,
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="convscope-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        # The fair queue (module doc): waiting jobs per client, clients in the order they were last served
        # (least recently first), and how many jobs the pool runs now (never more than its workers, so the
        # pool's own FIFO stays empty and the choice of the next job is made here).
        self._waiting: OrderedDict[str, deque[tuple[Job, JobFunction]]] = OrderedDict()
        self._served: dict[str, int] = {}  # client -> the tick its last job started (forgotten with its jobs)
        self._tick = 0
        self._dispatched = 0
        self._ttl = ttl_seconds
        self.max_seconds = max_seconds
        self.max_queued = max_queued
        self.max_per_client = max_per_client
        self.macs_per_second = float(macs_per_second)
        self.batch_seconds = float(batch_seconds)
        # Inline work estimated past this runs as a job (None: never moved).
        self.request_seconds = request_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> JobManager:
        return cls(
            settings.job_workers,
            settings.job_ttl_seconds,
            max_seconds=settings.max_job_seconds,
            max_queued=settings.max_queued_jobs,
            max_per_client=settings.max_queued_jobs_per_client,
            macs_per_second=settings.assumed_macs_per_second,
            batch_seconds=settings.job_batch_seconds,
            request_seconds=settings.max_request_seconds,
        )

    # --- estimates and admission ---------------------------------------------------------------------------

    def estimate(
        self,
        kind: str,
        forward_passes: int,
        forward_macs: int,
        *,
        what: str = "",
        hint: str = "",
        field: str | None = None,
        largest_batch: int = 64,
        **detail: Any,
    ) -> JobEstimate:
        """A job of ``forward_passes`` forwards of ``forward_macs`` each, at this manager's assumed speed.

        The batch size makes one batch about ``batch_seconds`` of estimated work (1..largest_batch).
        """
        return JobEstimate(
            kind=kind,
            forward_passes=int(forward_passes),
            forward_macs=int(forward_macs),
            macs_per_second=self.macs_per_second,
            batch_size=batch_for(forward_macs, self.macs_per_second, self.batch_seconds, largest_batch),
            seconds=forward_passes * forward_macs / self.macs_per_second,
            what=what,
            hint=hint,
            field_name=field,
            detail=detail,
        )

    def check_cost(self, estimate: JobEstimate) -> None:
        """OverLimit (422) when the estimate is past ``max_job_seconds``; the message gives the numbers."""
        if self.max_seconds is None or estimate.seconds is None or estimate.seconds <= self.max_seconds:
            return
        what = f"{estimate.what}: " if estimate.what else ""
        raise OverLimit(
            f"{what}{estimate.forward_passes:,} forward passes of {_giga(estimate.forward_macs)}MAC each "
            f"({_giga(estimate.macs)}MAC) would take about {estimate.seconds:,.0f} s at the assumed "
            f"{_giga(estimate.macs_per_second)}MAC/s, past the limit max_job_seconds = {self.max_seconds:g} s."
            + (f" {estimate.hint}" if estimate.hint else ""),
            field=estimate.field_name,
            limit="max_job_seconds",
            estimate=round(estimate.seconds, 1),
            maximum=self.max_seconds,
            **estimate.to_dict(),
        )

    def _check_room(self, client: str) -> None:
        """Busy (503 + Retry-After) when the queue is full, in all or for this client. Hold self._lock."""
        active = [j for j in self._jobs.values() if not j.ended]
        mine = [j for j in active if j.client == client]
        if self.max_per_client is not None and len(mine) >= self.max_per_client:
            retry = self._retry_after(mine)
            kinds = ", ".join(KIND_NAMES.get(j.kind, j.kind) + f" ({j.status})" for j in mine)
            raise Busy(
                f"You already have {len(mine)} job{'s' if len(mine) != 1 else ''} queued or running: {kinds}; "
                f"that is the most one client may have (max_queued_jobs_per_client = {self.max_per_client}). "
                f"Wait about {retry} s (Retry-After) for one to finish, or cancel one: with its Cancel button "
                "(listed with this message on a page; the page that started a job shows it again when opened "
                "with the same settings), or DELETE /api/v1/jobs/{id} with an id listed in `jobs`.",
                retry_after=retry,
                limit="max_queued_jobs_per_client",
                estimate=len(mine) + 1,
                maximum=self.max_per_client,
                jobs=[
                    {
                        "id": j.id,
                        "kind": j.kind,
                        "name": KIND_NAMES.get(j.kind, j.kind),
                        "status": j.status,
                        "progress": round(j.progress, 4),
                    }
                    for j in mine
                ],
            )
        if self.max_queued is not None and len(active) >= self.max_queued:
            raise Busy(
                f"The server already has {len(active)} jobs queued or running, its limit "
                f"(max_queued_jobs = {self.max_queued}). Try again in a little while.",
                retry_after=self._retry_after(active),
                limit="max_queued_jobs",
                estimate=len(active) + 1,
                maximum=self.max_queued,
            )

    def _retry_after(self, jobs: list[Job]) -> int:
        """Seconds until the first of ``jobs`` is expected to end (from the estimates), 1..max_seconds."""
        now = time.monotonic()
        remaining = [r for r in (j.remaining_seconds(now) for j in jobs) if r is not None]
        guess = min(remaining) if remaining else 30.0
        ceiling = self.max_seconds if self.max_seconds is not None else 3600.0
        return int(min(max(1.0, math.ceil(guess)), max(1.0, ceiling)))

    def admit(self, client: str, estimate: JobEstimate | None = None, key: str | None = None) -> None:
        """Raise what :meth:`submit` would (OverLimit, then Busy) without queueing anything.

        Lets a route refuse before it loads a model or an image; submit checks again atomically. With a
        ``key`` the client already has running, nothing is refused (submit will return that job).
        """
        if estimate is not None:
            self.check_cost(estimate)
        with self._lock:
            if self._running_with(client, key) is None:
                self._check_room(client)

    def _running_with(self, client: str, key: str | None) -> Job | None:
        """The client's queued or running job with this key, if any. Hold self._lock."""
        if key is None:
            return None
        return next(
            (
                j
                for j in self._jobs.values()
                # A job being cancelled is not handed out again: asking anew after Cancel starts afresh.
                if j.key == key and j.client == client and not j.ended and not j.cancel_event.is_set()
            ),
            None,
        )

    # --- running -------------------------------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        fn: JobFunction,
        *,
        client: str = "local",
        estimate: JobEstimate | None = None,
        key: str | None = None,
    ) -> Job:
        """Queue ``fn``; OverLimit past max_job_seconds, Busy when the queue (or the client's share) is full.

        With a ``key`` (:func:`job_key`) the client already has queued or running, that job is returned and
        nothing is queued (no share of the queue used): a reload or a resent request follows the same job.
        """
        if estimate is not None:
            self.check_cost(estimate)
        job = Job(
            id=uuid.uuid4().hex,
            kind=kind,
            client=client,
            estimate=estimate,
            time_limit=self.max_seconds,
            key=key,
        )
        with self._lock:
            self._forget_old()
            same = self._running_with(client, key)
            if same is not None:
                return same
            self._check_room(client)
            self._jobs[job.id] = job
            self._waiting.setdefault(client, deque()).append((job, fn))
            self._dispatch()
        return job

    def _dispatch(self) -> None:
        """Hand waiting jobs to free workers, one client at a time in turn. Hold self._lock."""
        while self._waiting and self._dispatched < self.workers:
            client = _next_client(self._waiting, self._served)
            queue = self._waiting[client]
            job, fn = queue.popleft()
            if not queue:
                del self._waiting[client]
            if job.cancel_event.is_set():  # cancelled while waiting: cancel() has already ended it
                continue
            self._tick += 1
            self._served[client] = self._tick
            self._dispatched += 1
            self._pool.submit(self._run_and_dispatch, job, fn)

    def _run_and_dispatch(self, job: Job, fn: JobFunction) -> None:
        try:
            self._run(job, fn)
        finally:
            with self._lock:
                self._dispatched -= 1
                self._dispatch()

    def queued_order(self) -> list[str]:
        """Ids of the jobs waiting for a worker, in the order they will start (for tests and the status)."""
        with self._lock:
            waiting = OrderedDict((c, deque(q)) for c, q in self._waiting.items())
            served = dict(self._served)
            tick = self._tick
        order: list[str] = []
        while waiting:
            client = _next_client(waiting, served)
            job, _ = waiting[client].popleft()
            if not waiting[client]:
                del waiting[client]
            if not job.cancel_event.is_set():
                tick += 1
                served[client] = tick
                order.append(job.id)
        return order

    def _run(self, job: Job, fn: JobFunction) -> None:
        if job.cancel_event.is_set():
            job.status = "cancelled"
            job.finished = time.time()
            return
        job.started = time.monotonic()
        job.status = "running"
        try:
            result = fn(JobContext(job))
        except JobCancelled:
            job.status = "cancelled"
        except JobTimedOut:
            spent = time.monotonic() - job.started
            kept = " The partial result so far is kept." if job.partial is not None else ""
            job.error = (
                f"Stopped after {spent:.0f} s: every job may run at most max_job_seconds = "
                f"{job.time_limit:g} s.{kept} Ask for less work (e.g. a larger stride) and run it again."
            )
            job.status = "failed"
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

    def active(self, client: str | None = None) -> list[Job]:
        """Jobs queued or running (those the caps count), optionally of one client."""
        with self._lock:
            return [j for j in self._jobs.values() if not j.ended and (client is None or j.client == client)]

    def _forget_old(self) -> None:
        now = time.time()
        stale = [k for k, j in self._jobs.items() if j.finished is not None and now - j.finished > self._ttl]
        for key in stale:
            del self._jobs[key]
        # The turn order only needs clients that still have jobs: it stays as small as the job table.
        clients = {j.client for j in self._jobs.values()}
        for client in [c for c in self._served if c not in clients]:
            del self._served[client]

    @property
    def workers(self) -> int:
        """How many jobs run at once (the rest wait in the queue)."""
        return self._pool._max_workers

    def shutdown(self) -> None:
        with self._lock:
            self._waiting.clear()
        for job in list(self._jobs.values()):
            job.cancel_event.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
