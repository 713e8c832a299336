"""HTML routes for image intake: the gallery page, the upload form, and the served PNGs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from app.deps import ImageStoreDep, IsHtmx
from app.errors import ConvScopeError
from app.http.uploads import IMMUTABLE_CACHE, read_upload
from app.services.images import ImageStore
from app.web.templating import render, render_page_or_block

router = APIRouter()

TEMPLATE = "pages/images.html"
# Largest side of the picture shown on a page (the browser scales it down further).
DISPLAY_MAX_SIDE = 1024


def _page_context(store: ImageStore, **extra: Any) -> dict[str, Any]:
    images = store.list_images()
    return {
        "samples": [r for r in images if r.source == "sample"],
        "uploads": [r for r in images if r.source != "sample"],
        "max_upload_mib": store.settings.max_upload_bytes / 2**20,
        "max_megapixels": store.settings.max_image_pixels / 1e6,
        "selected": None,
        "upload_error": None,
        **extra,
    }


@router.get("/images", response_class=HTMLResponse)
def images_page(
    request: Request, store: ImageStoreDep, htmx: IsHtmx, image_id: str | None = None
) -> HTMLResponse:
    """The gallery and upload form; with image_id, that image's card on top (HTMX: the card's region alone,
    or the gallery when no image is named)."""
    selected = store.get(image_id) if image_id else None
    context = _page_context(store, selected=selected)
    return render_page_or_block(request, TEMPLATE, "upload_result" if selected else "gallery", context)


@router.post("/images", response_class=HTMLResponse, response_model=None)
async def upload_from_form(request: Request, store: ImageStoreDep, htmx: IsHtmx) -> Response:
    """Upload from the page. HTMX gets the new card (and a fresh gallery out of band); a plain form
    post is redirected to the card, or re-shown with the error next to the form."""
    try:
        data, filename = await read_upload(request, store)
    except ConvScopeError as exc:
        return await run_in_threadpool(_upload_failed, request, store, htmx, exc)
    # Decoding, saving and rendering the gallery are CPU and disk work: off the event loop.
    return await run_in_threadpool(_store_upload, request, store, htmx, data, filename)


def _store_upload(
    request: Request, store: ImageStore, htmx: bool, data: bytes, filename: str | None
) -> Response:
    try:
        record = store.put(data, filename)
    except ConvScopeError as exc:
        return _upload_failed(request, store, htmx, exc)
    if htmx:
        context = _page_context(store, selected=record, oob_gallery=True)
        return render(request, TEMPLATE, context, block="upload_result")
    return RedirectResponse(f"/images?image_id={record.id}", status_code=303)


def _upload_failed(request: Request, store: ImageStore, htmx: bool, exc: ConvScopeError) -> Response:
    """The error in the upload form's result region (HTMX: that region alone), with the error's status."""
    context = _page_context(store, upload_error=exc.to_dict()["error"], upload_status=exc.status_code)
    response = render(
        request, TEMPLATE, context, status_code=exc.status_code, block="upload_result" if htmx else None
    )
    response.headers.update(exc.headers or {})
    return response


def _png_response(png: bytes, etag: str) -> Response:
    # Content-addressed: the bytes behind a URL never change, so browsers may keep them for good.
    return Response(
        png, media_type="image/png", headers={"Cache-Control": IMMUTABLE_CACHE, "ETag": f'"{etag}"'}
    )


@router.get("/images/{image_id}/thumb.png", response_class=Response)
def thumbnail(image_id: str, store: ImageStoreDep) -> Response:
    return _png_response(store.thumbnail_png(image_id), f"{image_id}-thumb")


@router.get("/images/{image_id}/display.png", response_class=Response)
def display(image_id: str, store: ImageStoreDep) -> Response:
    # Capped for the page; every pixel (as float32 .npy) is at /api/v1/images/{id}/pixels?format=npy.
    return _png_response(store.thumbnail_png(image_id, DISPLAY_MAX_SIDE), f"{image_id}-display")
