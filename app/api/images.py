"""JSON routes for image intake: upload, list, metadata, decoded pixels, and the sample gallery."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.api.responses import COMMON, NPY, PNG, content, errors, multipart_upload
from app.core.imaging.imageio import npy_chunks, npy_size
from app.deps import ImageStoreDep
from app.http.uploads import IMMUTABLE_CACHE, read_upload
from app.schemas.images import ImageList, ImageOut, PixelStats

router = APIRouter(prefix="/api/v1", tags=["images"], responses=COMMON)

UPLOAD_OPENAPI = multipart_upload(
    {"file": "PNG, JPEG, TIFF, BMP, WebP, GIF or a single-slice DICOM"}, required=("file",)
)


@router.post(
    "/images",
    status_code=201,
    response_model=ImageOut,
    openapi_extra=UPLOAD_OPENAPI,
    summary="Upload an image (multipart field `file`)",
    responses=errors(413, 415, 422, 507),
)
async def upload_image(request: Request, store: ImageStoreDep) -> ImageOut:
    data, filename = await read_upload(request, store)
    # Decoding is CPU work: keep it off the event loop.
    record = await run_in_threadpool(store.put, data, filename)
    return ImageOut.from_record(record)


@router.get(
    "/images",
    response_model=ImageList,
    summary="List stored images (samples first)",
    responses=errors(422),
)
def list_images(store: ImageStoreDep, source: Literal["sample", "upload"] | None = None) -> ImageList:
    return ImageList.from_records(store.list_images(source))


@router.get("/samples", response_model=ImageList, summary="The offline sample gallery")
def list_samples(store: ImageStoreDep) -> ImageList:
    return ImageList.from_records(store.list_images("sample"))


@router.get(
    "/images/{image_id}", response_model=ImageOut, summary="Metadata of one image", responses=errors(404, 422)
)
def get_image(image_id: str, store: ImageStoreDep) -> ImageOut:
    return ImageOut.from_record(store.get(image_id))


@router.get(
    "/images/{image_id}/pixels",
    summary="Decoded pixels: png (8-bit working copy), npy (float32 in [0, 1]) or json (full-resolution statistics)",
    response_model=PixelStats,
    responses=errors(
        404, 413, 422, also={200: content(PNG, NPY, description="PNG (default), .npy, or JSON statistics")}
    ),
)
def get_pixels(
    image_id: str,
    store: ImageStoreDep,
    format: Literal["png", "npy", "json"] = "png",
    max_side: int | None = Query(
        default=None,
        ge=1,
        le=100_000,
        description="npy only: area-average the image so its longer side is at most this (default: every pixel, "
        "up to the max_npy_values setting)",
    ),
) -> Response | PixelStats:
    if format == "json":
        return PixelStats(**store.pixel_stats(image_id))
    if format == "npy":
        pixels = store.npy_pixels(image_id, max_side)
        # Streamed a strip at a time: the answer is never a second copy of the array in memory.
        return StreamingResponse(
            npy_chunks(pixels),
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{image_id[:12]}.npy"',
                "Content-Length": str(npy_size(pixels)),
                "Cache-Control": IMMUTABLE_CACHE,
            },
        )
    return Response(
        store.display_png(image_id), media_type="image/png", headers={"Cache-Control": IMMUTABLE_CACHE}
    )
