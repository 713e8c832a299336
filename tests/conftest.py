"""Shared fixtures: an app on a temporary data directory, a client, uploaded images, a live server, a browser.

Tests never use the network: a guard refuses every connection that does not go to this machine.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app

_real_connect = socket.socket.connect


def _local_only_connect(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and not (host.startswith("127.") or host in ("localhost", "::1", "0.0.0.0"))
        and self.family != socket.AF_UNIX
    ):
        raise OSError(f"tests must not use the network (tried to connect to {host!r})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_network_and_private_torch_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Refuse outside connections, and give torchvision an empty weights cache of its own."""
    socket.socket.connect = _local_only_connect  # type: ignore[assignment,method-assign]
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    yield
    socket.socket.connect = _real_connect  # type: ignore[assignment,method-assign]
    if old is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = old


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_cache_size=3, job_workers=2)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def image_store(client: TestClient) -> Any:
    return client.app.state.image_store  # type: ignore[attr-defined]


@pytest.fixture
def registry(client: TestClient) -> Any:
    return client.app.state.registry  # type: ignore[attr-defined]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(client: TestClient, data: bytes, name: str) -> str:
    response = client.post("/api/v1/images", files={"file": (name, data, "image/png")})
    assert response.status_code == 201, response.text
    image_id: str = response.json()["id"]
    return image_id


@pytest.fixture
def sample_image_id(client: TestClient) -> str:
    """A 64x64 RGB PNG with a bright square on a gradient (deterministic)."""
    yy, xx = np.mgrid[0:64, 0:64]
    rgb = np.stack([xx * 4, yy * 4, np.full_like(xx, 90)], axis=2).astype(np.uint8)
    rgb[20:40, 24:44] = 250
    return _upload(client, png_bytes(rgb), "square.png")


@pytest.fixture
def gray_image_id(client: TestClient) -> str:
    """A 64x64 greyscale PNG with a bright disc (deterministic)."""
    yy, xx = np.mgrid[0:64, 0:64]
    gray = np.where((yy - 30) ** 2 + (xx - 34) ** 2 < 100, 230, 40).astype(np.uint8)
    return _upload(client, png_bytes(gray), "disc.png")


HoldWorkers = Callable[..., tuple[threading.Event, list[Any]]]


@pytest.fixture
def hold_job_workers() -> Iterator[HoldWorkers]:
    """`hold(jobs)` occupies every job worker with another client's job that waits for an event, so that what a
    test starts next stays queued (no race with the worker); returns (release, the holding jobs). Released at
    teardown too, so a failing test never leaves a worker blocked."""
    events: list[threading.Event] = []

    def hold(jobs: Any, client: str = "someone-else") -> tuple[threading.Event, list[Any]]:
        release = threading.Event()
        events.append(release)

        def wait(_ctx: Any) -> dict[str, Any]:
            release.wait(120)
            return {}

        return release, [jobs.submit("hold", wait, client=client) for _ in range(jobs.workers)]

    yield hold
    for release in events:
        release.set()


# --- browser tests --------------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn server on a free loopback port, in a thread, for Playwright tests."""
    import uvicorn

    data_dir = tmp_path_factory.mktemp("live-data")
    application = create_app(Settings(data_dir=data_dir, model_cache_size=3))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # Playwright's wait_for_function evaluates its predicate with eval, which the app's Content-Security-Policy
    # forbids; tests/browser/test_csp.py checks the policy in a context of its own that does not bypass it.
    context = browser.new_context(viewport={"width": 1280, "height": 720}, bypass_csp=True)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    yield tab
    context.close()
