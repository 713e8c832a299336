"""GET /pictures/<key>.png: the pictures pages show, by URL with immutable caching (see app/services/pictures.py)."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import PicturesDep
from app.errors import NotFound
from app.http.uploads import IMMUTABLE_CACHE
from app.services.pictures import KEY_CHARS

router = APIRouter()

_KEY = re.compile(rf"[0-9a-f]{{{KEY_CHARS}}}")


@router.get("/pictures/{key}.png", response_class=Response, name="picture")
def picture(key: str, request: Request, pictures: PicturesDep) -> Response:
    # A plain def: rendering a pending picture is CPU work, so FastAPI runs this in a worker thread.
    if not _KEY.fullmatch(key):
        raise NotFound("No such picture.")
    etag = f'"{key}"'
    if request.headers.get("If-None-Match") == etag:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE_CACHE})
    return Response(
        pictures.get(key), media_type="image/png", headers={"Cache-Control": IMMUTABLE_CACHE, "ETag": etag}
    )
