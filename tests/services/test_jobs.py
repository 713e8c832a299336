from __future__ import annotations

import threading
from typing import Any

import numpy as np

from app.errors import InvalidInput
from app.services.jobs import JobContext, JobManager


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
