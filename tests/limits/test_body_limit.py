"""Issue 9, defect 9 (body part): request bodies are bounded in bytes before anything parses them.

Before: a 75 MB JSON body to /api/v1/convolve was parsed whole (+1.1 GB, 27 s, the event loop stalled for
2.8 s) before a 422 (the issue's figures). Now the body-limit middleware answers 413 from Content-Length, or
after max_body_bytes of a chunked body, for JSON, forms and multipart alike; only the upload routes take
multipart bodies up to their own limits (their readers refuse more with a message naming the file).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server_harness import ServerProcess, assert_clean_refusal  # type: ignore[import-not-found]

from app.config import Settings
from app.main import create_app

LIMIT = 20_000


@pytest.fixture(scope="module")
def small_body_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("body-limit"), max_body_bytes=LIMIT)
    with TestClient(create_app(settings)) as client:
        yield client


def _convolve_body(side: int) -> bytes:
    return json.dumps({"input": [[1.0] * side] * side, "kernel": [[1, 0, -1]] * 3, "steps": False}).encode()


def _chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _assert_413_json(response) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    error: dict = response.json()["error"]
    assert error["code"] == "too_large" and error["limit"] == "max_body_bytes"
    assert error["maximum"] == LIMIT and "max_body_bytes" in error["message"]
    return error


def test_a_json_body_under_the_limit_is_served(small_body_client: TestClient) -> None:
    body = _convolve_body(6)
    assert len(body) < LIMIT
    response = small_body_client.post(
        "/api/v1/convolve", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


def test_a_declared_large_json_body_is_refused_before_reading(small_body_client: TestClient) -> None:
    body = _convolve_body(200)
    response = small_body_client.post(
        "/api/v1/convolve", content=body, headers={"content-type": "application/json"}
    )
    assert _assert_413_json(response)["estimate"] == len(body)


def test_a_chunked_body_is_counted_as_it_streams(small_body_client: TestClient) -> None:
    # No Content-Length: the middleware counts what arrives and stops at the limit.
    response = small_body_client.post(
        "/api/v1/convolve", content=_chunks(_convolve_body(200)), headers={"content-type": "application/json"}
    )
    assert "estimate" not in _assert_413_json(response)


def test_a_page_form_gets_the_error_page_or_partial(small_body_client: TestClient) -> None:
    form = {"in_rows": "6", "in_cols": "6", "junk": "x" * (2 * LIMIT)}
    page = small_body_client.post("/conv/result", data=form)
    assert page.status_code == 413
    assert page.headers["content-type"].startswith("text/html")
    assert "max_body_bytes" in page.text and "<html" in page.text.lower()
    partial = small_body_client.post("/conv/result", data=form, headers={"HX-Request": "true"})
    assert partial.status_code == 413 and "error-box" in partial.text and "<html" not in partial.text.lower()


def test_multipart_to_a_route_without_uploads_is_bounded(small_body_client: TestClient) -> None:
    files = {"file": ("big.bin", b"0" * (3 * LIMIT), "application/octet-stream")}
    _assert_413_json(small_body_client.post("/api/v1/convolve", files=files))
    assert small_body_client.post("/conv/result", files=files).status_code == 413


def test_uploads_keep_their_own_larger_limit(small_body_client: TestClient) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    assert len(buffer.getvalue()) > LIMIT  # past max_body_bytes, far under max_upload_bytes
    response = small_body_client.post(
        "/api/v1/images", files={"file": ("photo.png", buffer.getvalue(), "image/png")}
    )
    assert response.status_code == 201, response.text


def test_the_server_keeps_serving_after_a_refusal(small_body_client: TestClient) -> None:
    small_body_client.post("/api/v1/convolve", content=_chunks(b"[" * 100_000))
    assert small_body_client.get("/healthz").json() == {"status": "ok"}


# ------------------------------------------------------------------------------ on a real server


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_big_json_body_costs_the_server_nothing(server: ServerProcess, chunked: bool) -> None:
    """The issue's reproduction, scaled to 1000 x 1000 (~6 MB; the 5000 x 5000 one was 75 MB)."""
    body = _convolve_body(1000)
    content = _chunks(body, 65_536) if chunked else body
    measured = server.measure(
        lambda c: c.post("/api/v1/convolve", content=content, headers={"content-type": "application/json"})
    )
    error = assert_clean_refusal(measured, (413,))
    assert error["limit"] == "max_body_bytes"
    assert server.client.get("/healthz").status_code == 200


def test_big_body_refusal_is_independent_of_the_route(server: ServerProcess) -> None:
    """Every body-taking route is covered, not only /convolve (one request each, far over the limit)."""
    body = b'{"x": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    headers = {"content-type": "application/json"}
    for path in ("/api/v1/filter", "/api/v1/predict", "/api/v1/features", "/api/v1/explain/cam"):

        def send(client: httpx.Client, path: str = path) -> httpx.Response:
            return client.post(path, content=body, headers=headers)

        assert_clean_refusal(server.measure(send), (413,))
