"""Reading an uploaded file part with a byte bound (for form uploads other than images)."""

from __future__ import annotations

from fastapi import UploadFile

from app.errors import InvalidInput, PayloadTooLarge

CHUNK = 1 << 20


async def read_bounded(upload: UploadFile, limit: int, field: str) -> bytes:
    """All bytes of `upload`, refusing more than `limit` and an empty part, naming `field` either way."""
    parts: list[bytes] = []
    size = 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"{field} is larger than the limit of {limit:,} bytes.", field=field)
        parts.append(chunk)
    if size == 0:
        raise InvalidInput(f"{field} is empty.", field=field)
    return b"".join(parts)
