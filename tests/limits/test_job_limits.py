"""Issue 9, defect 4: jobs are estimated before they are queued, and the queue is capped.

Before: `POST /api/v1/explain/occlusion` with vgg19, window 2, stride 2 queued a ~5 h job (12,544 windows of a
19.6 GMAC forward), and two of them held both workers. Now it is refused at once with the estimate, without
building the model (torchvision architectures are traced on the meta device); a full queue answers 503 with
Retry-After.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from server_harness import ServerProcess, assert_clean_refusal  # type: ignore[import-not-found]


def _upload(client: httpx.Client, size: int = 224) -> str:
    yy, xx = np.mgrid[0:size, 0:size]
    rgb = np.stack([xx % 256, yy % 256, np.full_like(xx, 90)], axis=2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    r = client.post("/api/v1/images", files={"file": ("grid.png", buffer.getvalue(), "image/png")})
    assert r.status_code == 201, r.text
    image_id: str = r.json()["id"]
    return image_id


def _wait_ended(client: httpx.Client, url: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_vgg19_occlusion_window_2_stride_2_is_refused_with_the_estimate(server: ServerProcess) -> None:
    image_id = _upload(server.client)
    body = {"image_id": image_id, "model": "vgg19", "weights": "untrained", "window": 2, "stride": 2}
    measured = server.measure(lambda c: c.post("/api/v1/explain/occlusion", json=body))
    error = assert_clean_refusal(measured, (422,))
    assert (
        error["code"] == "over_limit" and error["limit"] == "max_job_seconds" and error["field"] == "stride"
    )
    assert error["windows"] == 112 * 112 and error["forward_passes"] == 112 * 112 + 2
    assert error["forward_macs"] == pytest.approx(19.6e9, rel=0.01)  # VGG-19 at 224 x 224
    assert error["estimate"] > error["maximum"] == 600.0
    # The message has the numbers, the setting, and a window/stride that fits.
    message = error["message"]
    assert "12,544 windows" in message and "max_job_seconds" in message and "would take about" in message
    assert "window 2 px with stride 2 px" not in message and "A larger stride or window" in message
    # Nothing was queued: the same request sent again is refused the same way (no worker is held).
    again = server.client.post("/api/v1/explain/occlusion", json=body)
    assert again.status_code == 422 and again.json()["error"]["windows"] == 112 * 112


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose queue holds one job per client, with a single worker."""
    proc = ServerProcess(
        tmp_path_factory.mktemp("jobs-data"),
        tmp_path_factory.mktemp("jobs-torch"),
        env={"CONVSCOPE_MAX_QUEUED_JOBS_PER_CLIENT": "1", "CONVSCOPE_JOB_WORKERS": "1"},
    )
    yield proc
    proc.stop()


def test_a_full_queue_is_a_503_with_retry_after(capped: ServerProcess) -> None:
    image_id = _upload(capped.client, 128)
    # An allowed job that runs for a while: 16,129 windows of the small built-in nodule CNN.
    body = {"image_id": image_id, "model": "nodule-cnn", "window": 2, "stride": 1, "progressive": False}
    started: list[str] = []
    try:
        first = capped.client.post("/api/v1/explain/occlusion", json=body)
        assert first.status_code == 202, first.text
        started.append(first.json()["status_url"])
        assert 0 < first.json()["estimated_seconds"] <= first.json()["time_limit_seconds"]
        # The same request again is the same job (idempotent: no second slot); other work is refused.
        again = capped.client.post("/api/v1/explain/occlusion", json=body)
        assert again.status_code == 202 and again.json()["job_id"] == first.json()["job_id"], again.text
        other = {**body, "window": 3}
        measured = capped.measure(lambda c: c.post("/api/v1/explain/occlusion", json=other))
        error = assert_clean_refusal(measured, (503,))
        assert error["code"] == "busy" and error["limit"] == "max_queued_jobs_per_client"
        retry = int(measured.response.headers["Retry-After"])
        assert retry >= 1 and error["retry_after"] == retry
        # Downloads count against the same caps.
        download = capped.client.post("/api/v1/models/resnet18/weights/download")
        assert download.status_code == 503 and "Retry-After" in download.headers
        # Cancelling the job makes room again.
        assert capped.client.delete(started[0]).status_code == 200
        assert _wait_ended(capped.client, started[0])["status"] == "cancelled"
        second = capped.client.post("/api/v1/explain/occlusion", json=body)
        assert second.status_code == 202, second.text
        started.append(second.json()["status_url"])
    finally:
        for url in started:
            capped.client.delete(url)
            _wait_ended(capped.client, url)
