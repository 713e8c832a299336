"""Response models of the image endpoints (/api/v1/images, /api/v1/samples)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.services.images import ImageRecord


class ImageLinks(BaseModel):
    """Where to fetch the image in other forms."""

    self: str = Field(description="This record")
    pixels: str = Field(description="Decoded pixels; add ?format=png|npy|json")
    display: str = Field(description="8-bit PNG of the decoded image, full size")
    thumbnail: str = Field(description="Small PNG for galleries")


class ImageOut(BaseModel):
    """One stored image. `mode` is "L" (greyscale, 1 channel) or "RGB" (3 channels)."""

    id: str = Field(description="sha256 of the uploaded bytes; pass it as image_id elsewhere")
    name: str
    kind: str = Field(description="png | jpeg | tiff | bmp | webp | gif | dicom")
    width: int
    height: int
    mode: str
    channels: int
    conversion: str = Field(description="What was done to the pixels to bring them to [0, 1]")
    created: str = Field(description="ISO 8601, UTC")
    size_bytes: int
    source: str = Field(description="upload | sample")
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    links: ImageLinks

    @classmethod
    def from_record(cls, record: ImageRecord) -> ImageOut:
        base = f"/api/v1/images/{record.id}"
        return cls(
            id=record.id,
            name=record.name,
            kind=record.kind,
            width=record.width,
            height=record.height,
            mode=record.mode,
            channels=record.channels,
            conversion=record.conversion,
            created=record.created,
            size_bytes=record.size_bytes,
            source=record.source,
            description=record.description,
            metadata=record.metadata,
            links=ImageLinks(
                self=base,
                pixels=f"{base}/pixels",
                display=f"/images/{record.id}/display.png",
                thumbnail=f"/images/{record.id}/thumb.png",
            ),
        )


class ImageList(BaseModel):
    images: list[ImageOut]
    count: int

    @classmethod
    def from_records(cls, records: list[ImageRecord]) -> ImageList:
        return cls(images=[ImageOut.from_record(r) for r in records], count=len(records))


class PixelStats(BaseModel):
    """Summary of the decoded float32 pixels (format=json): not the pixels themselves."""

    id: str
    shape: list[int] = Field(description="(H, W) or (H, W, 3)")
    dtype: str
    mode: str
    min: float
    max: float
    mean: float
    std: float
    channel_means: list[float] | None = None
