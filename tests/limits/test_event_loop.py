"""Issue 9, defect 12: a slow request does not stall the others.

Heavy CPU work (decoding, big convolutions, building a model, preprocessing) runs in worker threads, never
on the event loop, so /healthz keeps answering while the heaviest allowed request of an endpoint runs.
Each test sends one heavy-but-allowed request from a thread and polls /healthz from another until it
returns, then checks that every poll was answered and that polls were answered *while* the heavy request
ran, also in the later half of its run (a blocked loop answers none there). No wall-clock thresholds: the
counts compare events of the same run. bench/bench_load.py measures the latencies themselves.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
from PIL import Image
from server_harness import ServerProcess  # type: ignore[import-not-found]


@dataclass
class Overlap:
    """What /healthz polls saw while one heavy request ran (times from time.monotonic()).

    `answered` is when the heavy response's *headers* arrived: a blocked loop answers a waiting poll only
    once the heavy route has finished, i.e. after that moment, even if the heavy body takes long to read.
    """

    response: httpx.Response
    sent: float
    answered: float
    # (status, sent at, answered at) of every poll
    polls: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def during(self) -> int:
        """Polls sent after the heavy request and answered before its response, not counting the first
        (which may reach the server before the heavy request does)."""
        return sum(1 for _, sent, at in self.polls[1:] if sent > self.sent and at < self.answered)

    @property
    def late(self) -> int:
        """Polls answered in the later half of the heavy request (after any start-up of it)."""
        middle = (self.sent + self.answered) / 2
        return sum(1 for _, _, at in self.polls if middle < at < self.answered)


def run_with_polls(server: ServerProcess, send: Callable[[httpx.Client], httpx.Response]) -> Overlap:
    """Send a heavy request in a thread and poll /healthz until its response arrives."""
    box: dict[str, object] = {}
    sending = threading.Event()

    def headers_arrived(response: httpx.Response) -> None:
        box.setdefault("answered", time.monotonic())

    def heavy() -> None:
        hooks = {"response": [headers_arrived]}
        with httpx.Client(base_url=server.base_url, timeout=600.0, event_hooks=hooks) as client:
            box["sent"] = time.monotonic()
            sending.set()
            try:
                box["response"] = send(client)
            except BaseException as exc:  # reported by the test thread below
                box["error"] = exc

    thread = threading.Thread(target=heavy, daemon=True)
    thread.start()
    sending.wait()
    polls: list[tuple[int, float, float]] = []
    with httpx.Client(base_url=server.base_url, timeout=600.0) as poller:
        while thread.is_alive():
            sent = time.monotonic()
            status = poller.get("/healthz").status_code
            polls.append((status, sent, time.monotonic()))
    thread.join()
    if "error" in box:
        raise AssertionError(f"the heavy request failed: {box['error']!r}")
    response = box["response"]
    assert isinstance(response, httpx.Response)
    return Overlap(response, float(box["sent"]), float(box["answered"]), polls)  # type: ignore[arg-type]


def assert_loop_stayed_free(overlap: Overlap) -> None:
    assert overlap.polls, "no poll was sent"
    assert all(status == 200 for status, _, _ in overlap.polls), overlap.polls
    assert overlap.during > 0, "no /healthz poll was answered while the heavy request ran"
    assert overlap.late > 0, (
        f"/healthz stalled for the later half of the heavy request ({overlap.during} polls early)"
    )


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big_image_id(server: ServerProcess) -> Iterator[str]:
    """A 4000 x 4000 colour image (16 MP: within every limit, far past the filter lab's display size)."""
    ramp = np.linspace(0, 255, 4000, dtype=np.float32)
    rgb = np.stack(
        [np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2, np.outer(ramp, ramp) / 255],
        axis=-1,
    ).astype(np.uint8)
    response = server.client.post("/api/v1/images", files={"file": ("big.png", _png(rgb), "image/png")})
    assert response.status_code == 201, response.text
    yield response.json()["id"]


def test_a_36_megapixel_upload(server: ServerProcess) -> None:
    # The largest upload allowed (max_image_pixels = 36 MP); a tiny PNG, a big decode.
    data = _png(np.tile(np.arange(6000, dtype=np.uint8)[None, :], (6000, 1)))
    overlap = run_with_polls(
        server, lambda c: c.post("/api/v1/images", files={"file": ("36mp.png", data, "image/png")})
    )
    assert overlap.response.status_code == 201, overlap.response.text
    assert_loop_stayed_free(overlap)


def test_the_same_upload_from_the_page(server: ServerProcess) -> None:
    data = _png(np.tile(np.arange(6000, dtype=np.uint8)[:, None], (1, 6000)))
    overlap = run_with_polls(
        server,
        lambda c: c.post(
            "/images", files={"file": ("36mp-page.png", data, "image/png")}, headers={"HX-Request": "true"}
        ),
    )
    assert overlap.response.status_code == 200, overlap.response.text[:300]
    assert_loop_stayed_free(overlap)


def test_the_filter_lab_page_on_a_big_image(server: ServerProcess, big_image_id: str) -> None:
    form = {
        "image_id": big_image_id,
        # library kernels as the page names them (kernels.N.name, the API's field; the drawn kernel is kernels.0)
        **{f"kernels.{i + 1}.name": k for i, k in enumerate(["sobel_x", "sobel_y", "laplacian", "box_blur"])},
        "mode": "per_channel",  # 3 channels x 4 kernels
        # The heaviest size the filter lab allows for 12 maps (1024 px would pass max_filter_working_bytes).
        "max_side": "768",
    }
    overlap = run_with_polls(server, lambda c: c.post("/filters/run", data=form))
    assert overlap.response.status_code == 200, overlap.response.text[:300]
    assert_loop_stayed_free(overlap)


def test_the_filter_api_on_a_big_image(server: ServerProcess, big_image_id: str) -> None:
    body = {
        "image_id": big_image_id,
        "kernels": [{"name": "sobel_x"}, {"name": "sobel_y"}, {"name": "laplacian"}, {"name": "box_blur"}],
        "format": "png",
    }
    overlap = run_with_polls(server, lambda c: c.post("/api/v1/filter", json=body))
    assert overlap.response.status_code in (200, 422), overlap.response.text[:300]
    assert_loop_stayed_free(overlap)


def test_a_first_vgg16_prediction(server: ServerProcess, big_image_id: str) -> None:
    # Untrained (no download): building VGG-16's 138 M parameters is the slow part, then one forward pass.
    body = {"image_id": big_image_id, "model": "vgg16", "weights": "untrained"}
    overlap = run_with_polls(server, lambda c: c.post("/api/v1/predict", json=body))
    assert overlap.response.status_code == 200, overlap.response.text[:300]
    assert_loop_stayed_free(overlap)


def test_starting_occlusion_from_the_page_builds_the_model_off_the_loop(
    server: ServerProcess, big_image_id: str
) -> None:
    form = {
        "image_id": big_image_id,
        "model": "alexnet",  # 61 M parameters to build: seconds of CPU
        "weights": "untrained",
        "window": "112",
        "stride": "112",
    }
    overlap = run_with_polls(server, lambda c: c.post("/occlusion/run", data=form))
    assert overlap.response.status_code in (200, 422), overlap.response.text[:300]
    for job_id in set(re.findall(r"/job/([0-9a-f]{8,})", overlap.response.text)):
        server.client.delete(f"/api/v1/jobs/{job_id}")  # the map itself is not this test's business
    assert_loop_stayed_free(overlap)


def test_a_json_body_just_under_the_limit_sent_slowly(server: ServerProcess) -> None:
    # ~1 MB of numbers, sent in 64 KiB pieces with pauses: reading and parsing must not hold the loop.
    side = 250
    body = json.dumps({"input": [[0.123] * side] * side, "kernel": [[1, 0, -1]] * 3, "steps": False}).encode()
    assert len(body) < 1024 * 1024

    def paced() -> Iterator[bytes]:
        for start in range(0, len(body), 65_536):
            time.sleep(0.05)
            yield body[start : start + 65_536]

    overlap = run_with_polls(
        server,
        lambda c: c.post("/api/v1/convolve", content=paced(), headers={"content-type": "application/json"}),
    )
    # The matrix is far past the playground's size: a clean 422 (the point is the loop stayed free).
    assert overlap.response.status_code == 422, overlap.response.text[:300]
    assert_loop_stayed_free(overlap)
