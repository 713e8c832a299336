"""HTML route: the start page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.deps import ImageStoreDep
from app.web.templating import render

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def home(request: Request, store: ImageStoreDep) -> HTMLResponse:
    samples = [r for r in store.list_images() if r.source == "sample"]
    return render(request, "pages/home.html", {"samples": samples[:8]})


@router.get("/healthz")
def health() -> dict[str, str]:
    return {"status": "ok"}
