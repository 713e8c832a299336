"""Jinja2 templates shared by every HTML route, with the navigation and helpers every page needs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2_fragments.fastapi import Jinja2Blocks

from app.config import get_settings
from app.core.imaging.rendering import cmap_css_gradient
from app.deps import is_htmx

# (path, label, one-line purpose): the order of the lecture. The brand in the top bar links home.
NAV: tuple[tuple[str, str, str], ...] = (
    ("/images", "Images", "Upload an image or pick a sample"),
    ("/predict", "Predict", "Top-k classes and the tensor the network sees"),
    ("/models", "Models", "The model zoo and its weights"),
    ("/cost", "FC vs conv", "Why fully-connected layers fail on images"),
    ("/conv", "Convolution", "Multiply-and-sum, step by step"),
    ("/filters", "Filters", "Kernels on real images"),
    ("/network", "Inside", "Layers, feature maps, learned filters"),
    ("/receptive-fields", "Receptive fields", "What a unit can see"),
    ("/milestones", "Milestones", "AlexNet to EfficientNet"),
    ("/explain", "Grad-CAM", "Where the network looked"),
    ("/occlusion", "Occlusion", "Hide a patch, watch the score"),
    ("/compare", "Compare", "Methods side by side, with faithfulness"),
)


def _format_count(value: float | int | None) -> str:
    if value is None:
        return "—"
    value = float(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:g}"


def _format_number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


@lru_cache(maxsize=4)
def _templates(directory: Path) -> Jinja2Blocks:
    templates = Jinja2Blocks(directory=str(directory))
    templates.env.globals["nav"] = NAV
    templates.env.globals["cmap_css_gradient"] = cmap_css_gradient
    templates.env.filters["count"] = _format_count
    templates.env.filters["num"] = _format_number
    return templates


def get_templates() -> Jinja2Blocks:
    return _templates(get_settings().templates_dir)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
    block: str | None = None,
) -> HTMLResponse:
    """Render a page, or one named block of it (an HTMX partial: one template per page, its regions as blocks).

    Adds the current path for the navigation; varies on HX-Request since one URL answers both ways.
    """
    ctx: dict[str, Any] = {"active_path": request.url.path}
    ctx.update(context or {})
    templates = get_templates()
    # Both are Starlette's _TemplateResponse (an HTMLResponse); jinja2-fragments types them as Response.
    if block is None:
        response = templates.TemplateResponse(request, template, ctx, status_code=status_code)
    else:
        response = templates.TemplateResponse(
            request, template, ctx, status_code=status_code, block_name=block
        )
    assert isinstance(response, HTMLResponse)
    response.headers["Vary"] = "HX-Request"
    return response


def wants_block(request: Request) -> bool:
    """True when a region (a named block) should answer, False when the whole page must.

    Any URL that can land in the address bar renders a full page (reload, bookmark, Back): a plain request, a
    boosted link, and HTMX restoring a history entry it has no snapshot of (HX-History-Restore-Request).
    """

    def flag(name: str) -> bool:
        return request.headers.get(name, "").lower() == "true"

    return is_htmx(request) and not flag("HX-Boosted") and not flag("HX-History-Restore-Request")


def render_error(request: Request, error: dict[str, Any], status_code: int) -> HTMLResponse:
    """The error page, or the error box alone for HTMX (the app's handlers and the security middleware)."""
    template = "partials/error.html" if is_htmx(request) else "pages/error.html"
    return render(request, template, {"error": error, "status_code": status_code}, status_code)


def render_page_or_block(
    request: Request,
    template: str,
    block: str,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """The whole page, or only `block` for an HTMX request that targets that region (see wants_block)."""
    return render(request, template, context, status_code, block=block if wants_block(request) else None)
