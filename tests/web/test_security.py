"""Web hardening (issue 9, defect 10): security headers, Host check, Origin check, the access token, the CLI."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.cli import main, serve_refusal
from app.config import Settings
from app.main import create_app
from app.middleware.security import CONTENT_SECURITY_POLICY, COOKIE_NAME, split_host

TOKEN = "s3cret-token-for-tests-0123456789"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 100).save(buffer, format="PNG")
    return buffer.getvalue()


def _assert_security_headers(response: object) -> None:
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "'unsafe-eval'" not in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"


# --- headers --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 200),
        ("/images", 200),
        ("/conv", 200),
        ("/api/v1/models", 200),
        ("/static/css/app.css", 200),
        ("/static/vendor/htmx.min.js", 200),
        ("/healthz", 200),
        ("/no-such-page", 404),
        ("/api/v1/no-such-endpoint", 404),
        ("/api/v1/images/" + "0" * 64, 404),
    ],
)
def test_every_response_carries_the_security_headers(client: TestClient, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    _assert_security_headers(response)


def test_validation_errors_and_uploads_carry_the_headers(client: TestClient) -> None:
    bad = client.post("/api/v1/convolve", json={"input": "nope"})
    assert bad.status_code == 422
    _assert_security_headers(bad)
    created = client.post("/api/v1/images", files={"file": ("g.png", _png(), "image/png")})
    assert created.status_code == 201
    _assert_security_headers(created)


def test_the_api_docs_work_offline_with_their_own_policy(client: TestClient) -> None:
    """/docs and /redoc load Swagger UI and ReDoc from this machine (QA: the CDN made /docs blank offline); only
    they may run their inline start-up script."""
    for path, asset in (
        ("/docs", "/docs-assets/swagger-ui-bundle.js"),
        ("/redoc", "/docs-assets/redoc.standalone.js"),
    ):
        page = client.get(path)
        assert page.status_code == 200, path
        assert asset in page.text and "cdn.jsdelivr.net" not in page.text and "googleapis" not in page.text
        policy = page.headers["content-security-policy"]
        assert "'unsafe-inline'" in policy and "https:" not in policy and "cdn" not in policy
        assert page.headers["x-frame-options"] == "DENY"
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 100_000
    assert "'unsafe-inline'" not in client.get("/").headers["content-security-policy"]


# --- Host -----------------------------------------------------------------------------------------------------


def test_dns_rebinding_host_is_refused(client: TestClient) -> None:
    response = client.get("/api/v1/models", headers={"Host": "attacker.example"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "host_not_allowed"
    assert "attacker.example" in error["message"] and "allowed_hosts" in error["message"]
    assert "localhost" in error["message"]
    _assert_security_headers(response)


def test_refused_host_on_a_page_gets_a_short_html_error(client: TestClient) -> None:
    response = client.get("/images", headers={"Host": "attacker.example:8000", "Accept": "text/html"})
    assert response.status_code == 400
    assert "text/html" in response.headers["content-type"]
    assert "allowed_hosts" in response.text and "topbar" not in response.text


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "127.0.0.1:8123", "[::1]:8000", "LOCALHOST"])
def test_loopback_hosts_are_allowed(client: TestClient, host: str) -> None:
    assert client.get("/api/v1/models", headers={"Host": host}).status_code == 200


def test_healthz_answers_any_host_for_probes(client: TestClient) -> None:
    assert client.get("/healthz", headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_configured_host_is_allowed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", allowed_hosts=["convscope.local"])
    with TestClient(create_app(settings), base_url="http://convscope.local") as c:
        assert c.get("/api/v1/models").status_code == 200
        assert c.get("/api/v1/models", headers={"Host": "localhost"}).status_code == 400


def test_any_host_needs_a_token(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", allowed_hosts=["*"])
    with pytest.raises(ValueError, match="CONVSCOPE_ACCESS_TOKEN"), TestClient(create_app(settings)):
        pass
    settings = Settings(data_dir=tmp_path / "d", allowed_hosts=["*"], access_token=TOKEN)
    with TestClient(create_app(settings)) as c:
        assert c.get("/", headers={"Host": "anything.example"}).status_code == 200


def test_split_host() -> None:
    assert split_host("Example.ORG:8000") == ("example.org", 8000)
    assert split_host("[::1]:80") == ("::1", 80)
    assert split_host("::1") == ("::1", None)
    assert split_host("localhost.") == ("localhost", None)


# --- Origin ---------------------------------------------------------------------------------------------------


def _upload(c: TestClient, headers: dict[str, str], path: str = "/api/v1/images") -> object:
    return c.post(path, files={"file": ("g.png", _png(), "image/png")}, headers=headers)


def test_foreign_origin_upload_is_refused(client: TestClient, image_store: object) -> None:
    before = len(image_store.list_images())  # type: ignore[attr-defined]
    response = _upload(client, {"Origin": "http://attacker.example"})
    assert response.status_code == 403  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "cross_origin" and "http://attacker.example" in error["message"]
    assert len(image_store.list_images()) == before  # type: ignore[attr-defined]
    _assert_security_headers(response)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://testserver.attacker.example"},
        {"Origin": "http://testserver:9999"},
        {"Origin": "null"},
        {"Referer": "http://attacker.example/page.html"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
def test_other_foreign_sources_are_refused(client: TestClient, headers: dict[str, str]) -> None:
    assert _upload(client, headers).status_code == 403  # type: ignore[attr-defined]


def test_foreign_origin_page_upload_is_refused_too(client: TestClient) -> None:
    response = _upload(client, {"Origin": "http://attacker.example", "HX-Request": "true"}, "/images")
    assert response.status_code == 403  # type: ignore[attr-defined]
    assert "error-box" in response.text  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://testserver"},
        {"Origin": "http://testserver:80"},
        {"Referer": "http://testserver/images"},
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver"},
        {},  # curl, scripts
    ],
)
def test_same_origin_and_no_origin_uploads_are_allowed(client: TestClient, headers: dict[str, str]) -> None:
    assert _upload(client, headers).status_code == 201  # type: ignore[attr-defined]


def test_foreign_origin_may_still_read(client: TestClient) -> None:
    assert client.get("/api/v1/models", headers={"Origin": "http://attacker.example"}).status_code == 200


# --- the access token -----------------------------------------------------------------------------------------


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path / "locked", access_token=TOKEN, model_cache_size=2)
    with TestClient(create_app(settings)) as c:
        yield c


def test_api_needs_the_token(locked: TestClient) -> None:
    response = locked.get("/api/v1/models")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"
    _assert_security_headers(response)
    assert _upload(locked, {}).status_code == 401  # type: ignore[attr-defined]


def test_bearer_token_opens_the_api(locked: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert locked.get("/api/v1/models", headers=auth).status_code == 200
    assert _upload(locked, auth).status_code == 201  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, "Bearer wrong"])
def test_wrong_tokens_are_refused(locked: TestClient, value: str) -> None:
    assert locked.get("/api/v1/models", headers={"Authorization": value}).status_code == 401


def test_page_uploads_and_pages_need_the_token(locked: TestClient) -> None:
    page_upload = _upload(locked, {"HX-Request": "true"}, "/images")
    assert page_upload.status_code == 401  # type: ignore[attr-defined]
    assert 'href="/login"' in page_upload.text  # type: ignore[attr-defined]
    model_upload = locked.post("/models/upload", files={"architecture": ("n.json", b"{}")})
    assert model_upload.status_code == 401
    # Pages run models and jobs and show everyone's uploads (QA: GET /explain?method=scorecam started a job):
    # a person opening one is sent to the login form, and back afterwards.
    for path in ("/images", "/conv", "/explain?method=scorecam&model=vgg19", "/occlusion"):
        visit = locked.get(path, follow_redirects=False)
        assert visit.status_code == 303, path
        assert visit.headers["location"].startswith("/login?next=%2F"), visit.headers["location"]
    partial = locked.get("/predict", headers={"HX-Request": "true"}, follow_redirects=False)
    assert partial.status_code == 401
    for path in ("/", "/login", "/healthz", "/static/css/app.css"):
        assert locked.get(path, follow_redirects=False).status_code == 200, path
    # After the login, the page itself.
    login = locked.get(f"/login?token={TOKEN}&next=/conv", follow_redirects=False)
    assert login.status_code == 303 and login.headers["location"] == "/conv"
    assert locked.get("/conv", follow_redirects=False).status_code == 200


def test_login_cookie_expires_and_is_bound_to_the_token() -> None:
    from app.middleware.security import session_cookie_valid, session_cookie_value

    now = 1_000_000
    value = session_cookie_value(TOKEN, expires=now + 60)
    assert session_cookie_valid(value, TOKEN, now=now)
    assert not session_cookie_valid(value, TOKEN, now=now + 61)  # a copied cookie stops working
    assert not session_cookie_valid(value, TOKEN + "x", now=now)  # a new token logs everyone out
    forged = f"{now + 10**9}.{value.partition('.')[2]}"  # pushing the expiry breaks the signature
    assert not session_cookie_valid(forged, TOKEN, now=now)
    assert not session_cookie_valid("garbage", TOKEN, now=now)


def test_login_sets_a_strict_httponly_cookie_that_works(locked: TestClient) -> None:
    response = locked.post("/login", data={"token": TOKEN, "next": "/images"}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/images"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert locked.get("/api/v1/models").status_code == 200  # the client keeps the cookie
    assert _upload(locked, {"HX-Request": "true"}, "/images").status_code == 200  # type: ignore[attr-defined]
    locked.post("/logout", follow_redirects=False)
    assert locked.get("/api/v1/models").status_code == 401


def test_login_link_with_the_token(locked: TestClient) -> None:
    response = locked.get(f"/login?token={TOKEN}&next=//attacker.example", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"  # no open redirect
    assert locked.get("/api/v1/models").status_code == 200


def test_wrong_login_and_forged_cookie_are_refused(locked: TestClient) -> None:
    response = locked.post("/login", data={"token": "guess"}, follow_redirects=False)
    assert response.status_code == 401 and "set-cookie" not in response.headers
    locked.cookies.set(COOKIE_NAME, TOKEN)  # the raw token is not the cookie value
    assert locked.get("/api/v1/models").status_code == 401


def test_blank_token_means_no_token(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path / "d", access_token="  "))) as c:
        assert c.get("/api/v1/models").status_code == 200


# --- the CLI --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "convscope.local"])
def test_serve_beyond_loopback_needs_a_token_or_allow_open(host: str, tmp_path: Path) -> None:
    assert "CONVSCOPE_ACCESS_TOKEN" in (serve_refusal(host, Settings(data_dir=tmp_path)) or "")
    assert serve_refusal(host, Settings(data_dir=tmp_path, access_token=TOKEN)) is None
    assert serve_refusal(host, Settings(data_dir=tmp_path, allow_open=True)) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_serve_on_loopback_needs_nothing(host: str, tmp_path: Path) -> None:
    assert serve_refusal(host, Settings(data_dir=tmp_path)) is None


def test_serve_command_refuses_with_a_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.cli

    monkeypatch.delenv("CONVSCOPE_ACCESS_TOKEN", raising=False)
    monkeypatch.delenv("CONVSCOPE_ALLOW_OPEN", raising=False)
    monkeypatch.setattr(app.cli, "get_settings", lambda: Settings())
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "CONVSCOPE_ACCESS_TOKEN" in err and "CONVSCOPE_ALLOW_OPEN=true" in err


def test_the_access_log_masks_the_token() -> None:
    """The login link a lecturer hands out carries the token: uvicorn's access line must not keep it (QA)."""
    import logging

    from uvicorn.config import Config

    from app.cli import TokenRedactingFilter

    access = logging.getLogger("uvicorn.access")
    redactor = TokenRedactingFilter()
    access.addFilter(redactor)
    try:
        Config(app=lambda *a: None, log_level="info")  # uvicorn's logging set-up keeps the filter
        assert redactor in access.filters
        record = logging.LogRecord(
            "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5000", "GET", f"/login?token={TOKEN}&next=/conv", "1.1", 303), None,
        )  # fmt: skip
        assert redactor.filter(record)
        line = record.getMessage()
        assert TOKEN not in line and "/login?token=***&next=/conv" in line
    finally:
        access.removeFilter(redactor)
