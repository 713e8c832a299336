"""HTMX is served from our own static folder and matches the hash the htmx project publishes."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from fastapi.testclient import TestClient

VENDOR = Path(__file__).resolve().parents[2] / "static" / "vendor"
# The SRI hash the htmx docs publish for htmx.org@2.0.8 dist/htmx.min.js.
PUBLISHED_SRI = "sha384-/TgkGk7p307TH7EXJDuUlgG3Ce1UVolAOFopFekQkkXihi5u/6OCvVKyz1W+idaz"


def test_vendored_htmx_matches_the_published_integrity_hash() -> None:
    digest = hashlib.sha384((VENDOR / "htmx.min.js").read_bytes()).digest()
    assert "sha384-" + base64.b64encode(digest).decode() == PUBLISHED_SRI


def test_vendored_htmx_has_its_version_and_licence_beside_it() -> None:
    readme = (VENDOR / "README.md").read_text()
    assert "2.0.8" in readme and PUBLISHED_SRI in readme
    assert "Zero-Clause BSD" in (VENDOR / "htmx.LICENSE").read_text()


def test_pages_load_htmx_locally(client: TestClient) -> None:
    html = client.get("/").text
    assert '<script src="/static/vendor/htmx.min.js"></script>' in html
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    assert client.get("/static/vendor/htmx.min.js").status_code == 200
