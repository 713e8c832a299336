"""The access-token login: a browser trades the token for an HttpOnly cookie once (form or a shared link).

Only meaningful when Settings.access_token is set; the checks themselves live in app/middleware/security.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.deps import SettingsDep
from app.middleware.security import (
    COOKIE_MAX_AGE,
    COOKIE_NAME,
    configured_token,
    session_cookie_value,
    token_matches,
)
from app.web.templating import render

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path on this server: '//evil.example' or 'https://...' would make the login an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login(request: Request, token: str | None, given: str | None, target: str | None) -> Response:
    if token is None:
        return render(request, "pages/login.html", {"configured": False, "next": _safe_next(target)})
    if given is None:
        return render(request, "pages/login.html", {"configured": True, "next": _safe_next(target)})
    if not token_matches(given.strip(), token):
        context = {"configured": True, "next": _safe_next(target), "wrong": True}
        response = render(request, "pages/login.html", context, status_code=401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="convscope"'
        return response
    redirect = RedirectResponse(_safe_next(target), status_code=303)
    redirect.set_cookie(
        COOKIE_NAME,
        session_cookie_value(token),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return redirect


@router.get("/login", response_class=HTMLResponse, response_model=None)
def login_page(
    request: Request, settings: SettingsDep, token: str | None = None, next: str | None = None
) -> Response:
    """The login form; `/login?token=...` logs in directly (a link or QR code a lecturer hands out)."""
    return _login(request, configured_token(settings), token, next)


@router.post("/login", response_class=HTMLResponse, response_model=None)
def login_form(
    request: Request,
    settings: SettingsDep,
    token: Annotated[str, Form(max_length=1000)],
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    return _login(request, configured_token(settings), token, next)


@router.post("/logout", response_class=HTMLResponse, response_model=None)
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response
