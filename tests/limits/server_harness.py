"""A real server in a subprocess, so that a test can measure what one request costs it (RSS, time).

The server runs `uvicorn app.main:create_app --factory` on a free loopback port with a temporary data
directory and an empty TORCH_HOME. `measure()` resets the kernel's peak-RSS counter (/proc/PID/clear_refs),
sends the request, and reports the peak resident memory reached during it above the RSS before it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# The bound every reproduction of issue 9 is held to: one refused or bounded request may raise the server's
# peak RSS by less than this.
RSS_BOUND_MIB = 300.0


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@dataclass
class Measured:
    response: httpx.Response
    rss_before_mib: float
    peak_increase_mib: float
    seconds: float


class ServerProcess:
    """A uvicorn subprocess and the numbers to watch it by."""

    def __init__(self, data_dir: Path, torch_home: Path, env: dict[str, str] | None = None) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "CONVSCOPE_DATA_DIR": str(data_dir),
            "TORCH_HOME": str(torch_home),
            "CONVSCOPE_JOB_WORKERS": "2",
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=full_env,
        )
        self.client = httpx.Client(base_url=self.base_url, timeout=120.0)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in 120 s")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mib(self) -> float:
        return _status_kib(self.pid, "VmRSS") / 1024

    def peak_mib(self) -> float:
        return _status_kib(self.pid, "VmHWM") / 1024

    def reset_peak(self) -> None:
        # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def measure(self, send: Callable[[httpx.Client], httpx.Response]) -> Measured:
        """Send one request and report the server's peak RSS increase and the wall time it took."""
        self.reset_peak()
        before = self.rss_mib()
        start = time.perf_counter()
        response = send(self.client)
        seconds = time.perf_counter() - start
        # RSS can shrink a little between the reset and the first reading: an increase is never below zero.
        return Measured(response, before, max(0.0, self.peak_mib() - before), seconds)

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def assert_clean_refusal(measured: Measured, statuses: tuple[int, ...] = (413, 422, 503)) -> dict[str, Any]:
    """A clean 4xx/503 with a JSON error body, within the RSS bound; returns the error object."""
    response = measured.response
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] and error["message"]
    assert measured.peak_increase_mib < RSS_BOUND_MIB, measured
    return error
