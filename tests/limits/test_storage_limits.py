"""Issue 9, defect 8: write failures are clear 507s or invisible cache misses, never 500s, on a real server.

Before: with a read-only data directory, an upload and the first request for display.png, thumb.png or
pixels?format=png answered a plain-text 500 (PermissionError). The tests run as root, where chmod stops
nothing, so the failures are made in ways root cannot bypass: the immutable attribute (chattr +i; skipped
where the filesystem lacks it) for a read-only directory, and RLIMIT_FSIZE = 0 on the server process
(every write into a regular file fails with EFBIG) for a full disk.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from server_harness import ServerProcess, assert_clean_refusal  # type: ignore[import-not-found]


def _png(seed: int, side: int = 48) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _chattr(flag: str, paths: list[Path]) -> bool:
    if shutil.which("chattr") is None or not paths:
        return False
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


@contextmanager
def immutable(paths: list[Path]) -> Iterator[None]:
    """chattr +i: not even root can create, rename or delete entries of these folders (or change these files)."""
    if not _chattr("+i", paths):
        pytest.skip("chattr +i (the immutable attribute) is not available on this filesystem")
    try:
        yield
    finally:
        _chattr("-i", paths)


@contextmanager
def disk_full(pid: int) -> Iterator[None]:
    """RLIMIT_FSIZE = 0 on the server: every write into a regular file fails (EFBIG), as on a full disk."""
    old = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, old[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, old)


def _folders(root: Path) -> list[Path]:
    return [root, *sorted(p for p in root.rglob("*") if p.is_dir())]


@pytest.fixture(scope="module")
def storage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    data = tmp_path_factory.mktemp("storage-data")
    proc = ServerProcess(data, tmp_path_factory.mktemp("storage-torch"))
    yield proc, data
    proc.stop()


def _upload(server: ServerProcess, data: bytes, name: str):  # type: ignore[no-untyped-def]
    return server.measure(lambda c: c.post("/api/v1/images", files={"file": (name, data, "image/png")}))


def _check_failed_writes(server: ServerProcess, fresh_id: str, words: str) -> None:
    """An upload is a clean 507; pictures never cached before are still served; the server keeps serving."""
    error = assert_clean_refusal(_upload(server, _png(99), "lost.png"), (507,))
    assert error["code"] == "storage_failed" and "Nothing was saved" in error["message"]
    assert words in error["message"]
    for url in (
        f"/images/{fresh_id}/display.png",
        f"/images/{fresh_id}/thumb.png",
        f"/api/v1/images/{fresh_id}/pixels?format=png",
    ):
        response = server.client.get(url)
        assert response.status_code == 200, (url, response.text[:300])
        assert response.headers["content-type"] == "image/png"
    assert server.client.get("/healthz").status_code == 200
    names = [image["name"] for image in server.client.get("/api/v1/images").json()["images"]]
    assert "lost.png" not in names


def test_a_read_only_data_dir_after_start_up(storage_server: tuple[ServerProcess, Path]) -> None:
    server, data = storage_server
    fresh = _upload(server, _png(1), "before.png").response
    assert fresh.status_code == 201
    with immutable(_folders(data)):
        _check_failed_writes(server, fresh.json()["id"], "read-only")
    # Writable again: the next upload just works (no restart needed).
    assert _upload(server, _png(2), "after.png").response.status_code == 201


def test_a_full_disk(storage_server: tuple[ServerProcess, Path]) -> None:
    server, _ = storage_server
    fresh = _upload(server, _png(3), "before-full.png").response
    assert fresh.status_code == 201
    with disk_full(server.pid):
        _check_failed_writes(server, fresh.json()["id"], "disk is full")
    assert _upload(server, _png(4), "after-full.png").response.status_code == 201


def test_starting_on_a_read_only_data_dir_serves_what_is_there(tmp_path: Path) -> None:
    data, torch_home = tmp_path / "data", tmp_path / "torch"
    first = ServerProcess(data, torch_home)
    try:
        stored = _upload(first, _png(5), "stored.png").response.json()["id"]
        samples = first.client.get("/api/v1/samples").json()["count"]
    finally:
        first.stop()
    shutil.rmtree(data / "derived", ignore_errors=True)  # no cached pictures: every one must be made anew
    locked = [*_folders(data), *(p for p in data.rglob("*") if p.is_file())]
    with immutable(locked):
        server = ServerProcess(data, torch_home)  # starts: no crash on the read-only directory
        try:
            assert server.client.get("/api/v1/samples").json()["count"] == samples
            assert server.client.get(f"/api/v1/images/{stored}").status_code == 200
            _check_failed_writes(server, stored, "read-only")
        finally:
            server.stop()


def test_an_unusable_data_dir_is_named_at_start(tmp_path: Path) -> None:
    data = tmp_path / "not-a-folder"
    data.write_text("a file where the data directory should be")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CONVSCOPE_DATA_DIR": str(data), "TORCH_HOME": str(tmp_path / "torch")}
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert f"The data directory {data} cannot be used" in done.stderr
    assert "CONVSCOPE_DATA_DIR" in done.stderr
