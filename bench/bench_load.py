"""/healthz latency while the heaviest allowed request of each endpoint runs, as a ratio to idle latency.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_load.py [--only NAME ...] [--idle 200]

Starts a real server (uvicorn subprocess, temporary data directory, empty TORCH_HOME, as the limits suite
does), measures /healthz latency at rest, then, for each scenario, sends one heavy-but-allowed request from
a thread while another thread polls /healthz back to back until it answers. Prints, per scenario: the
heavy request's status and seconds, how many polls were answered while it ran, and the polls' median, p95
and max latency with the ratio of each to the idle median. A blocked event loop shows as a max near the
heavy request's own duration and few polls; a free one as a max of a few idle latencies (the two cores are
shared with the heavy work, so some slowdown is expected; a stall is not).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "limits"))
from server_harness import ServerProcess

Send = Callable[[httpx.Client], httpx.Response]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _ramp_rgb(side: int) -> np.ndarray:
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    channels = [np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2, np.outer(ramp, ramp) / 255]
    return np.stack(channels, axis=-1).astype(np.uint8)


def _stats(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]


@dataclass
class Row:
    name: str
    status: int
    seconds: float
    polls: int
    median_ms: float
    p95_ms: float
    max_ms: float


def idle_latencies(server: ServerProcess, count: int) -> list[float]:
    out = []
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        client.get("/healthz")
        for _ in range(count):
            t0 = time.perf_counter()
            client.get("/healthz")
            out.append((time.perf_counter() - t0) * 1000)
    return out


def under_load(server: ServerProcess, name: str, send: Send) -> Row:
    status: list[int] = []
    seconds: list[float] = []
    started = threading.Event()

    def heavy() -> None:
        with httpx.Client(base_url=server.base_url, timeout=900) as client:
            started.set()
            t0 = time.perf_counter()
            try:
                status.append(send(client).status_code)
            except httpx.HTTPError as exc:
                status.append(0)
                print(f"  {name}: {exc!r}", file=sys.stderr)
            seconds.append(time.perf_counter() - t0)

    thread = threading.Thread(target=heavy, daemon=True)
    thread.start()
    started.wait()
    latencies: list[float] = []
    with httpx.Client(base_url=server.base_url, timeout=900) as poller:
        while thread.is_alive():
            t0 = time.perf_counter()
            poller.get("/healthz")
            latencies.append((time.perf_counter() - t0) * 1000)
    thread.join()
    median, p95, worst = _stats(latencies)
    return Row(name, status[0], seconds[0], len(latencies), median, p95, worst)


def scenarios(server: ServerProcess) -> list[tuple[str, Send]]:
    """(name, request) for the heaviest allowed request of each endpoint family."""
    client = server.client
    big = client.post("/api/v1/images", files={"file": ("big.png", _png(_ramp_rgb(4000)), "image/png")})
    big_id = big.json()["id"]
    mp36 = _png(np.tile(np.arange(6000, dtype=np.uint8)[None, :], (6000, 1)))
    mp36_page = _png(np.tile(np.arange(6000, dtype=np.uint8)[:, None], (1, 6000)))
    kernels = [
        "sobel_x",
        "sobel_y",
        "laplacian",
        "box_blur",
        "gaussian_5",
        "sharpen",
        "emboss",
        "prewitt_x",
    ]
    side = 250  # ~1 MB of JSON numbers: just under max_body_bytes
    big_json = json.dumps({"input": [[0.123] * side] * side, "kernel": [[1, 0, -1]] * 3}).encode()
    fresh = {"image_id": big_id, "weights": "untrained"}

    def occlusion_page(c: httpx.Client) -> httpx.Response:
        form = {**fresh, "model": "vgg11", "window": "112", "stride": "112"}
        response = c.post("/occlusion/run", data=form)
        for job_id in set(re.findall(r"/job/([0-9a-f]{8,})", response.text)):
            c.delete(f"/api/v1/jobs/{job_id}")
        return response

    return [
        (
            "upload 36 MP (API)",
            lambda c: c.post("/api/v1/images", files={"file": ("a.png", mp36, "image/png")}),
        ),
        (
            "upload 36 MP (page, HTMX)",
            lambda c: c.post(
                "/images", files={"file": ("b.png", mp36_page, "image/png")}, headers={"HX-Request": "true"}
            ),
        ),
        ("pixels png 16 MP (first)", lambda c: c.get(f"/api/v1/images/{big_id}/pixels?format=png")),
        ("pixels npy 16 MP", lambda c: c.get(f"/api/v1/images/{big_id}/pixels?format=npy")),
        ("display.png 16 MP (first)", lambda c: c.get(f"/images/{big_id}/display.png")),
        (
            "filter API 8 kernels png",
            lambda c: c.post(
                "/api/v1/filter",
                json={"image_id": big_id, "kernels": [{"name": k} for k in kernels], "format": "png"},
            ),
        ),
        (
            "filter API 8 kernels json",
            lambda c: c.post(
                "/api/v1/filter",
                json={
                    "image_id": big_id,
                    "kernels": [{"name": k} for k in kernels],
                    "format": "json",
                    "max_side": 512,
                },
            ),
        ),
        (
            "filter page 8 kernels x 3 ch",
            lambda c: c.post(
                "/filters/run",
                # the page's field names are the API's: kernels.N.name (kernels.0 is the drawn kernel)
                data={
                    "image_id": big_id,
                    **{f"kernels.{i + 1}.name": k for i, k in enumerate(kernels)},
                    "mode": "per_channel",
                    "max_side": "1024",
                },
            ),
        ),
        (
            "convolve, 1 MB JSON body",
            lambda c: c.post(
                "/api/v1/convolve", content=big_json, headers={"content-type": "application/json"}
            ),
        ),
        (
            "predict vgg16 (first build)",
            lambda c: c.post("/api/v1/predict", json={**fresh, "model": "vgg16"}),
        ),
        (
            "features vgg16 block 1",
            lambda c: c.post("/api/v1/features", json={**fresh, "model": "vgg16", "format": "json"}),
        ),
        (
            "grad-cam vgg19 (first build)",
            lambda c: c.post("/api/v1/explain/cam", json={**fresh, "model": "vgg19"}),
        ),
        ("occlusion page vgg11 (build)", occlusion_page),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle", type=int, default=200, help="idle /healthz polls")
    parser.add_argument("--only", nargs="*", help="run only scenarios whose name contains one of these")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", Path(tmp) / "torch")
        try:
            idle = idle_latencies(server, args.idle)
            idle_median, idle_p95, idle_max = _stats(idle)
            rows = []
            for name, send in scenarios(server):
                if args.only and not any(part in name for part in args.only):
                    continue
                rows.append(under_load(server, name, send))
                print(f"  done: {name}", file=sys.stderr)
        finally:
            server.stop()
    print(f"idle /healthz: median {idle_median:.2f} ms, p95 {idle_p95:.2f} ms, max {idle_max:.2f} ms")
    print(
        f"{'heavy request':32} {'status':>6} {'s':>6} {'polls':>6} {'median':>8} {'p95':>8} {'max':>9}   ratios to idle median"
    )
    for r in rows:
        ratios = f"x{r.median_ms / idle_median:.1f} / x{r.p95_ms / idle_median:.1f} / x{r.max_ms / idle_median:.0f}"
        print(
            f"{r.name:32} {r.status:>6} {r.seconds:>6.2f} {r.polls:>6} {r.median_ms:>6.1f}ms {r.p95_ms:>6.1f}ms"
            f" {r.max_ms:>7.1f}ms   {ratios}"
        )


if __name__ == "__main__":
    main()
