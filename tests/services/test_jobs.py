from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from app.config import Settings
from app.errors import Busy, InvalidInput, OverLimit
from app.services.jobs import JobContext, JobFunction, JobManager


def test_job_reports_progress_and_result() -> None:
    manager = JobManager(workers=1)

    def work(ctx: JobContext) -> dict[str, Any]:
        for i in range(4):
            ctx.report((i + 1) / 4, partial={"step": i})
        ctx.artifacts["map"] = np.ones((2, 2))
        return {"answer": 42}

    job = manager.wait(manager.submit("test", work).id, timeout=10)
    assert job.status == "done" and job.progress == 1.0
    assert job.result == {"answer": 42}
    assert job.partial == {"step": 3}
    assert job.to_dict()["artifacts"] == ["map"]
    manager.shutdown()


def test_cancel_stops_a_running_job() -> None:
    manager = JobManager(workers=1)
    started = threading.Event()

    def work(ctx: JobContext) -> dict[str, Any]:
        started.set()
        while True:
            ctx.report(0.5)
            threading.Event().wait(0.01)

    job = manager.submit("loop", work)
    assert started.wait(10)
    manager.cancel(job.id)
    assert manager.wait(job.id, timeout=10).status == "cancelled"
    manager.shutdown()


def test_failures_are_reported_not_raised() -> None:
    manager = JobManager(workers=1)

    def bad(ctx: JobContext) -> dict[str, Any]:
        raise InvalidInput("window larger than the image", field="window")

    job = manager.wait(manager.submit("bad", bad).id, timeout=10)
    assert job.status == "failed" and job.error == "window larger than the image"
    manager.shutdown()


# --- Bounds (issue 9): estimate refused past the limit, queue caps, time limit ----------------------------------


def _blocked(release: threading.Event) -> JobFunction:
    def work(ctx: JobContext) -> dict[str, Any]:
        while not release.is_set():
            ctx.report(0.5)
            threading.Event().wait(0.01)
        return {}

    return work


def test_an_estimate_past_the_limit_is_refused_with_the_numbers() -> None:
    manager = JobManager(workers=1, max_seconds=10.0, macs_per_second=1e6)
    estimate = manager.estimate(
        "occlusion",
        100,
        1_000_000,
        what="Occlusion of a model",
        hint="Use a larger stride.",
        field="stride",
        windows=98,
    )
    assert estimate.seconds == pytest.approx(100.0) and estimate.macs == 100_000_000
    with pytest.raises(OverLimit) as err:
        manager.submit("occlusion", lambda ctx: {}, estimate=estimate)
    exc = err.value
    assert exc.field == "stride" and exc.status_code == 422
    assert "max_job_seconds" in exc.message and "100 forward passes" in exc.message
    assert "about 100 s" in exc.message and "Use a larger stride." in exc.message
    assert exc.extra["limit"] == "max_job_seconds" and exc.extra["maximum"] == 10.0
    assert exc.extra["estimate"] == pytest.approx(100.0)
    assert exc.extra["forward_passes"] == 100 and exc.extra["windows"] == 98
    assert manager.active() == []
    # Within the limit it is queued, and the job carries its estimate.
    small = manager.estimate("occlusion", 5, 1_000_000)
    job = manager.wait(manager.submit("occlusion", lambda ctx: {}, estimate=small).id, timeout=10)
    assert job.status == "done" and job.to_dict()["estimate"]["forward_passes"] == 5
    assert job.to_dict()["time_limit_seconds"] == 10.0
    manager.shutdown()


def test_queue_caps_per_client_and_in_all_answer_busy_with_retry_after() -> None:
    manager = JobManager(workers=1, max_queued=3, max_per_client=2, max_seconds=600.0, macs_per_second=1.0)
    release = threading.Event()
    estimate = manager.estimate("test", 40, 1)  # 40 s each
    try:
        first = manager.submit("test", _blocked(release), client="alice", estimate=estimate)
        manager.submit("test", _blocked(release), client="alice", estimate=estimate)
        with pytest.raises(Busy) as per_client:
            manager.submit("test", _blocked(release), client="alice", estimate=estimate)
        assert per_client.value.status_code == 503
        assert per_client.value.extra["limit"] == "max_queued_jobs_per_client"
        assert "max_queued_jobs_per_client = 2" in per_client.value.message
        retry = int(per_client.value.headers["Retry-After"])
        assert 1 <= retry <= 40 and per_client.value.extra["retry_after"] == retry
        manager.submit("test", _blocked(release), client="bob", estimate=estimate)
        with pytest.raises(Busy) as in_all:
            manager.submit("test", _blocked(release), client="carol")
        assert in_all.value.extra["limit"] == "max_queued_jobs" and "Retry-After" in in_all.value.headers
        # admit() says the same without queueing anything.
        with pytest.raises(Busy):
            manager.admit("carol")
        assert len(manager.active()) == 3 and len(manager.active("alice")) == 2
        # A job that ends (here: cancelled) makes room again.
        manager.cancel(first.id)
        assert manager.wait(first.id, timeout=10).status == "cancelled"
        manager.submit("test", _blocked(release), client="carol")
    finally:
        release.set()
        manager.shutdown()


def test_time_limit_fails_the_job_names_the_limit_and_keeps_the_partial_result() -> None:
    manager = JobManager(workers=1, max_seconds=0.05)

    def endless(ctx: JobContext) -> dict[str, Any]:
        ctx.artifacts["partial"] = np.zeros((2, 2))
        ctx.report(0.25, partial={"step": 4})
        while True:  # only the time limit ends this
            ctx.report(0.5)
            threading.Event().wait(0.01)

    job = manager.wait(manager.submit("endless", endless).id, timeout=30)
    assert job.status == "failed"
    assert job.error is not None and "max_job_seconds = 0.05 s" in job.error and "partial" in job.error
    assert job.partial == {"step": 4} and "partial" in job.artifacts
    manager.shutdown()


def test_a_job_without_a_limit_is_not_stopped() -> None:
    manager = JobManager(workers=1)
    job = manager.wait(manager.submit("t", lambda ctx: (ctx.check_cancelled(), {"ok": 1})[1]).id, timeout=10)
    assert job.status == "done" and job.time_limit is None
    manager.shutdown()


def test_from_settings_takes_every_limit() -> None:
    settings = Settings(
        max_job_seconds=12.0,
        max_queued_jobs=5,
        max_queued_jobs_per_client=2,
        assumed_macs_per_second=7e9,
        job_batch_seconds=2.0,
    )
    manager = JobManager.from_settings(settings)
    assert (manager.max_seconds, manager.max_queued, manager.max_per_client) == (12.0, 5, 2)
    assert manager.macs_per_second == 7e9 and manager.batch_seconds == 2.0
    assert manager.estimate("t", 1, 7_000_000_000).batch_size == 2  # two seconds of work per batch
    manager.shutdown()


# --- Idempotent starts (issue 9 follow-up): the same work while it runs is the same job -------------------------


def test_job_key_names_the_work() -> None:
    from app.services.jobs import array_digest, job_key

    a = np.zeros((2, 3), dtype=np.float32)
    assert job_key("cam", model="m", k=5, layer="x") == job_key("cam", layer="x", k=5, model="m")
    assert job_key("cam", model="m", k=5) != job_key("cam", model="m", k=6)
    assert job_key("cam", model="m") != job_key("compare", model="m")
    assert array_digest(a) == array_digest(a.copy())
    assert array_digest(a) != array_digest(a + 1) and array_digest(a) != array_digest(a.reshape(3, 2))


def test_the_same_key_while_running_returns_that_job_without_using_the_cap() -> None:
    manager = JobManager(workers=1, max_per_client=1, max_seconds=600.0, macs_per_second=1.0)
    release = threading.Event()
    estimate = manager.estimate("occlusion", 40, 1)
    try:
        first = manager.submit("occlusion", _blocked(release), client="alice", estimate=estimate, key="k1")
        again = manager.submit("occlusion", _blocked(release), client="alice", estimate=estimate, key="k1")
        assert again is first and len(manager.active("alice")) == 1
        manager.admit("alice", estimate, key="k1")  # not refused: submit would return the running job
        # Other work is a new job: here past alice's share of one, so Busy, naming her job and how to end it.
        with pytest.raises(Busy) as busy:
            manager.submit("occlusion", _blocked(release), client="alice", estimate=estimate, key="k2")
        message = busy.value.message
        assert "an occlusion map (/occlusion) (" in message  # the kind, in words
        assert "Retry-After" in message and "Cancel button" in message
        assert busy.value.extra["jobs"] == [
            {
                "id": first.id,
                "kind": "occlusion",
                "name": "an occlusion map (/occlusion)",
                "status": first.status,
                "progress": first.to_dict()["progress"],
            }
        ]
        with pytest.raises(Busy):
            manager.admit("alice", estimate, key="k2")
        # Keys are per client: bob asking for the same work gets his own job.
        bobs = manager.submit("occlusion", _blocked(release), client="bob", estimate=estimate, key="k1")
        assert bobs.id != first.id
    finally:
        release.set()
    assert manager.wait(first.id, timeout=10).status == "done"
    # An ended job is not reused: asking again starts anew.
    later = manager.submit("occlusion", lambda ctx: {}, client="alice", estimate=estimate, key="k1")
    assert later.id != first.id
    manager.shutdown()


def test_a_cancelled_job_is_not_handed_out_again() -> None:
    manager = JobManager(workers=1, max_per_client=2)
    release = threading.Event()
    started = threading.Event()

    def work(ctx: JobContext) -> dict[str, Any]:
        started.set()
        release.wait(10)  # no cancellation point until released: the job stays "running" after Cancel
        ctx.check_cancelled()
        return {}

    try:
        first = manager.submit("cam", work, key="k")
        assert started.wait(10)
        manager.cancel(first.id)
        assert first.status == "running"
        second = manager.submit("cam", lambda ctx: {}, key="k")
        assert second.id != first.id
    finally:
        release.set()
    assert manager.wait(first.id, timeout=10).status == "cancelled"
    manager.shutdown()


# --- The fair queue: a free worker takes the next job of the client served least recently -------------------------


def _blocking(started: list[str], gate: threading.Event, name: str) -> JobFunction:
    def work(ctx: JobContext) -> dict[str, Any]:
        started.append(name)
        assert gate.wait(10)
        return {"name": name}

    return work


def test_one_clients_queue_does_not_make_another_wait_behind_it() -> None:
    manager = JobManager(workers=1, max_per_client=10)
    started: list[str] = []
    gates = {n: threading.Event() for n in ("a1", "a2", "a3", "b1", "c1")}
    jobs = {}
    for name in ("a1", "a2", "a3"):
        jobs[name] = manager.submit("t", _blocking(started, gates[name], name), client="alice")
    for name, who in (("b1", "bob"), ("c1", "carol")):
        jobs[name] = manager.submit("t", _blocking(started, gates[name], name), client=who)
    # a1 runs; the others wait in turn order: bob and carol before alice's second and third.
    assert manager.queued_order() == [jobs[n].id for n in ("b1", "c1", "a2", "a3")]
    for name in ("a1", "b1", "c1", "a2", "a3"):
        gates[name].set()
        assert manager.wait(jobs[name].id, timeout=10).status == "done"
    assert started == ["a1", "b1", "c1", "a2", "a3"]
    manager.shutdown()


def test_a_cancelled_waiting_job_never_runs_and_frees_its_turn() -> None:
    manager = JobManager(workers=1, max_per_client=10)
    started: list[str] = []
    first, second, third = threading.Event(), threading.Event(), threading.Event()
    a = manager.submit("t", _blocking(started, first, "a"), client="alice")
    b = manager.submit("t", _blocking(started, second, "b"), client="bob")
    c = manager.submit("t", _blocking(started, third, "c"), client="carol")
    manager.cancel(b.id)
    first.set()
    third.set()
    assert manager.wait(c.id, timeout=10).status == "done"
    assert manager.get(b.id).status == "cancelled"
    assert manager.wait(a.id).status == "done" and started == ["a", "c"]
    assert manager.queued_order() == []
    manager.shutdown()
