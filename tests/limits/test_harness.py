"""The subprocess server the limits suite measures: it serves, and its RSS can be read and its peak reset."""

from __future__ import annotations

from server_harness import ServerProcess  # type: ignore[import-not-found]


def test_server_serves_and_reports_memory(server: ServerProcess) -> None:
    measured = server.measure(lambda c: c.get("/healthz"))
    assert measured.response.status_code == 200
    assert measured.rss_before_mib > 50  # torch is imported: a real process, not a stub
    assert 0 <= measured.peak_increase_mib < 300
