"""Fixtures of the limits suite: one subprocess server to measure (see server_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_harness import ServerProcess  # type: ignore[import-not-found]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One subprocess server for the limits suite (session-scoped: start-up costs a few seconds)."""
    proc = ServerProcess(tmp_path_factory.mktemp("limits-data"), tmp_path_factory.mktemp("limits-torch"))
    yield proc
    proc.stop()
