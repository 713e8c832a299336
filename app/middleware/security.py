"""Web hardening as one pure ASGI middleware: security headers, Host check, Origin check, access token.

Pure ASGI (not BaseHTTPMiddleware) so that it neither buffers bodies nor breaks streaming responses, and so
that a refused request is answered before anything reads its body. The order of the checks matters:
1. Host (DNS rebinding): a page on attacker.example that re-resolves its name to 127.0.0.1 reaches a
   loopback server with `Host: attacker.example`; only the names in Settings.allowed_hosts are served.
2. Origin (CSRF): a state-changing request sent by a page of another site is refused. Requests without
   Origin/Referer (curl, scripts, notebooks) are not browsers acting for someone else, and stay allowed.
3. Access token (Settings.access_token, when set): /api/ and every state-changing request need
   `Authorization: Bearer <token>` or the cookie that /login sets. Pages (GET) stay readable.
Every response, refusals included, carries the security headers.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import time
from collections.abc import Iterable
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings

# The cookie /login sets. Its value is derived from the token (not the token itself): changing the token
# logs every browser out, and the cookie never shows the token.
COOKIE_NAME = "convscope_token"
# A teaching day and then some; the lecturer logs in again the next day.
COOKIE_MAX_AGE = 12 * 3600

# No inline script or style anywhere (static/js/styles.js applies computed colours and widths from data-style).
# img-src allows data: and blob: because some views still inline small pictures and the favicon is `data:,`.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# Swagger UI and ReDoc (served from this machine, app/web/api_docs.py) start with an inline script and set inline
# styles. They show the static OpenAPI schema, nothing a user sent, so they get a looser policy of their own (and
# only they do); nothing is loaded from another host.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'"
)
STATIC_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # Same-origin requests keep their Referer (the Origin check falls back on it); other sites see nothing.
    ("Referrer-Policy", "same-origin"),
)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Open even with an access token: health probes, the stylesheet and scripts the login page needs, the login, and
# the home page (the lecture map: it computes nothing and shows no upload). Every other page needs the token too:
# pages run models and jobs and show everyone's uploads (QA found GET /explain?method=scorecam starting jobs).
OPEN_PATHS = frozenset({"/", "/healthz", "/login", "/logout", "/favicon.ico"})
OPEN_PREFIXES = ("/static/", "/docs-assets/")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def session_cookie_value(token: str, expires: int | None = None) -> str:
    """The login cookie: "<expiry, unix seconds>.<HMAC of the expiry under the token>".

    The expiry is signed, so a copied cookie stops working after COOKIE_MAX_AGE whatever the browser keeps, and
    changing the token logs everyone out.
    """
    expires = int(time.time()) + COOKIE_MAX_AGE if expires is None else expires
    mac = hmac.new(token.encode(), f"convscope-login-cookie:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def session_cookie_valid(value: str, token: str, now: float | None = None) -> bool:
    """Whether a login cookie was signed with `token` and has not expired."""
    expires_text, _, _ = value.partition(".")
    if not expires_text.isdigit():
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return token_matches(value, session_cookie_value(token, expires))


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison, so response times do not reveal how much of a guess was right."""
    return hmac.compare_digest(given.encode(), token.encode())


def configured_token(settings: Settings) -> str | None:
    """The access token, or None when unset or blank (an empty env var must not mean 'the empty token')."""
    token = (settings.access_token or "").strip()
    return token or None


def split_host(host: str) -> tuple[str, int | None]:
    """'Example.org:8000' -> ('example.org', 8000); '[::1]:80' -> ('::1', 80); a bad port -> None."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port_text = host.partition(":")
    else:  # a bare IPv6 address or no port at all
        name, port_text = host, ""
    port = int(port_text) if port_text.isdigit() else None
    return name.rstrip("."), port


def _normalised_hosts(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(split_host(h)[0] for h in hosts if h.strip() and h.strip() != "*")


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().strip("[]").lower()
    if ":" in name and name.count(":") == 1:  # 'localhost:8000'; IPv6 addresses have more colons
        name = name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_configuration(settings: Settings) -> None:
    """Refuse settings that would silently open the server. Raises ValueError with the fix in the message."""
    if "*" in [h.strip() for h in settings.allowed_hosts] and configured_token(settings) is None:
        raise ValueError(
            "allowed_hosts contains '*' (any Host header), which lets any web page reach this server by DNS "
            "rebinding. That is only allowed together with an access token: set CONVSCOPE_ACCESS_TOKEN, or list "
            'the server\'s names instead, e.g. CONVSCOPE_ALLOWED_HOSTS=\'["convscope.local", "localhost"]\'.'
        )


class SecurityMiddleware:
    """See the module docstring. Install with `app.add_middleware(SecurityMiddleware, settings=settings)`."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        check_configuration(settings)
        self.app = app
        self.token = configured_token(settings)
        self.any_host = "*" in [h.strip() for h in settings.allowed_hosts]
        self.allowed_hosts = _normalised_hosts(settings.allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send_with_headers = self._with_security_headers(scope, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            status, code, message, headers = refusal
            if code == "unauthorized" and self._is_page_visit(scope):
                # A person opening a page: the login form, then back to where they were going.
                target = scope["path"] + (
                    ("?" + scope["query_string"].decode("latin-1")) if scope["query_string"] else ""
                )
                await RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)(
                    scope, receive, send_with_headers
                )
                return
            await self._refuse(scope, receive, send_with_headers, status, code, message, headers)
            return
        await self.app(scope, receive, send_with_headers)

    # --- the checks ------------------------------------------------------------------------------------------

    def _refusal(self, scope: Scope) -> tuple[int, str, str, dict[str, str]] | None:
        headers = Headers(scope=scope)
        path: str = scope["path"]
        method: str = scope["method"]
        host = headers.get("host", "")
        # /healthz answers any Host: container and cluster probes use the pod's address, and "ok" tells nothing.
        if path != "/healthz" and not self._host_allowed(host):
            return (
                400,
                "host_not_allowed",
                f"This server does not answer to the host name {split_host(host)[0] or '(none)'!r}. "
                f"It answers to: {', '.join(sorted(self.allowed_hosts))}. To reach it under another name, add "
                "that name to the allowed_hosts setting, e.g. "
                'CONVSCOPE_ALLOWED_HOSTS=\'["convscope.local", "localhost"]\' (a JSON list).',
                {},
            )
        if method in UNSAFE_METHODS:
            foreign = self._foreign_origin(headers, host)
            if foreign is not None:
                return (
                    403,
                    "cross_origin",
                    f"Refused a {method} sent from another site ({foreign}): pages of other sites may not "
                    "change anything here. Use ConvScope's own pages, or send the request without a browser.",
                    {},
                )
        if self.token is not None and self._needs_token(path) and not self._authorized(headers):
            return (
                401,
                "unauthorized",
                "This server needs its access token: send 'Authorization: Bearer <token>', or log in once "
                "at /login in this browser.",
                {"WWW-Authenticate": 'Bearer realm="convscope"'},
            )
        return None

    def _host_allowed(self, host: str) -> bool:
        if self.any_host:  # only possible with a token (check_configuration)
            return True
        name, _ = split_host(host)
        return bool(name) and name in self.allowed_hosts

    @staticmethod
    def _foreign_origin(headers: Headers, host: str) -> str | None:
        """The origin of a cross-site request, or None when it is same-origin or names no origin at all."""
        # Browsers mark every request with Sec-Fetch-Site; "cross-site" needs no further parsing.
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return headers.get("origin") or "another site"
        source = headers.get("origin")
        if source is None:
            referer = headers.get("referer")
            if not referer:
                return None  # curl, scripts: not a browser acting for a visitor of another site
            source = referer
        if source == "null":  # sandboxed frames, file:// pages
            return "an opaque origin ('null')"
        parts = urlsplit(source)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            return source
        try:
            origin_port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            return source
        host_name, host_port = split_host(host)
        if parts.hostname.lower().rstrip(".") != host_name:
            return f"{scheme}://{parts.netloc}"
        # Behind a TLS proxy the Host may carry no port while the scheme differs: compare with the origin's own
        # default port then.
        if (host_port or DEFAULT_PORTS[scheme]) != origin_port:
            return f"{scheme}://{parts.netloc}"
        return None

    @staticmethod
    def _is_page_visit(scope: Scope) -> bool:
        headers = Headers(scope=scope)
        return (
            scope["method"] == "GET"
            and not scope["path"].startswith("/api/")
            and headers.get("hx-request", "").lower() != "true"
        )

    @staticmethod
    def _needs_token(path: str) -> bool:
        return not (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES))

    def _authorized(self, headers: Headers) -> bool:
        assert self.token is not None
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip() and token_matches(value.strip(), self.token):
            return True
        cookie_header = headers.get("cookie")
        if not cookie_header:
            return False
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(cookie_header)
        except Exception:  # a malformed Cookie header is simply no login
            return False
        morsel = cookies.get(COOKIE_NAME)
        return morsel is not None and session_cookie_valid(morsel.value, self.token)

    # --- responses -------------------------------------------------------------------------------------------

    def _with_security_headers(self, scope: Scope, send: Send) -> Send:
        policy = DOCS_CONTENT_SECURITY_POLICY if scope["path"] in DOCS_PATHS else CONTENT_SECURITY_POLICY

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = policy
                for name, value in STATIC_HEADERS:
                    if name.lower() not in headers:
                        headers[name] = value
            await send(message)

        return send_wrapper

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str],
    ) -> None:
        body = {"error": {"code": code, "message": message, "field": None}}
        path: str = scope["path"]
        request = Request(scope, receive)
        accept = request.headers.get("accept", "")
        wants_html = not path.startswith("/api/") and (
            "text/html" in accept or request.headers.get("HX-Request") == "true"
        )
        if wants_html and status != 400:
            response = _html_error(request, body, status)
        elif wants_html:
            # A refused Host gets no page at all: the page would hand the rebinding site our navigation.
            response = _plain_html_error(body, status)
        else:
            response = JSONResponse(body, status_code=status)
        response.headers.update(headers)
        await response(scope, receive, send)


def _html_error(request: Request, body: dict[str, dict[str, str | None]], status: int) -> Response:
    """The app's own error page (or the error partial for HTMX), so the refusal looks like any other error."""
    from app.web.templating import render_error

    return render_error(request, body["error"], status)


def _plain_html_error(body: dict[str, dict[str, str | None]], status: int) -> Response:
    error = body["error"]
    text = (
        f"<!doctype html><title>Error {status}</title><h1>{status} · {html.escape(str(error['code']))}</h1>"
        f"<p>{html.escape(str(error['message']))}</p>"
    )
    return HTMLResponse(text, status_code=status)
