"""One bounded multipart reader for every upload (images, models): nothing past a field's limit is ever read.

Starlette's form parser spools each file part to a temporary file whatever its size, and a route can check the
size only afterwards (a 600 MB part reached the disk before the 413 for a 256 MiB limit). Here the body is
parsed while it streams in, each expected field is counted against its own byte limit as its bytes arrive, the
whole body against the sum of the limits plus a small envelope, and a part's name and file name are checked when
its headers end. Parts stay in memory (each at most its limit); nothing reaches the disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import python_multipart
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from app.errors import ConvScopeError, InvalidInput, PayloadTooLarge
from app.services.custom_models import MAX_ARCHITECTURE_BYTES
from app.services.images import ImageStore
from app.services.models import ModelRegistry

# Room for the multipart envelope (boundaries, part headers, a few small fields) around the files themselves.
MULTIPART_OVERHEAD = 64 * 1024
# File names longer than this are refused with a message about the name (most file systems stop at 255).
MAX_FILENAME_CHARS = 255
# One part header line (Content-Disposition with its file name); longer is refused before it is read further.
MAX_HEADER_BYTES = 16 * 1024
MAX_PARTS = 16


@dataclass
class Part:
    """One multipart part: its field name, the file name if it was sent as a file, and its bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)

    @property
    def is_file(self) -> bool:
        return self.filename is not None


def _default_too_large(name: str | None, limit: int) -> ConvScopeError:
    subject = name or "The upload"
    return PayloadTooLarge(
        f"{subject} is larger than the limit of {limit:,} bytes ({limit / 2**20:.1f} MiB).",
        field=name,
        max_bytes=limit,
    )


class _Collector:
    """python-multipart callbacks that keep the expected fields, each within its byte limit."""

    def __init__(
        self, limits: dict[str, int], too_large: Callable[[str | None, int], ConvScopeError], charset: str
    ) -> None:
        self.limits = limits
        self.too_large = too_large
        self.charset = charset
        self.parts: dict[str, Part] = {}
        self.count = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._current: Part | None = None

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.charset)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("latin-1")

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise InvalidInput(f"The form has more than {MAX_PARTS} parts.", field=None)
        self._headers = {}
        self._current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        raw_name = options.get(b"name")
        if raw_name is None:
            raise InvalidInput("A form part has no field name (Content-Disposition name=...).", field=None)
        name = self._decode(raw_name)
        raw_filename = options.get(b"filename")
        filename = None if raw_filename is None else self._decode(raw_filename)
        if filename is not None and len(filename) > MAX_FILENAME_CHARS:
            raise InvalidInput(
                f"The file name sent in “{name[:40]}” is {len(filename):,} characters long; at most "
                f"{MAX_FILENAME_CHARS} are accepted. Rename the file and upload it again.",
                field=name[:40],
            )
        if name in self.limits:
            if name in self.parts:
                raise InvalidInput(f"The field “{name}” was sent more than once.", field=name)
            content_type = self._headers.get(b"content-type")
            self._current = Part(name, filename, None if content_type is None else self._decode(content_type))
            self.parts[name] = self._current

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current
        if part is None:
            return  # a field nobody asked for: skipped (the body bound still counts it)
        part.data += data[start:end]
        if len(part.data) > self.limits[part.name]:
            raise self.too_large(part.name, self.limits[part.name])

    def on_part_end(self) -> None:
        self._current = None


async def read_multipart(
    request: Request,
    limits: dict[str, int],
    *,
    not_multipart: str,
    too_large: Callable[[str | None, int], ConvScopeError] = _default_too_large,
) -> dict[str, Part]:
    """The parts of a multipart/form-data body whose names are in `limits` (field -> max bytes), by name.

    Reads at most sum(limits) + MULTIPART_OVERHEAD bytes of body (whatever Content-Length says) and at most
    `limits[name]` bytes of each field, refusing with `too_large(name, limit)` (name None for the whole body).
    A non-multipart request is an InvalidInput with the message `not_multipart`.
    """
    first_field = next(iter(limits))
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidInput(not_multipart, field=first_field)
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInput("The multipart/form-data request has no boundary.", field=first_field)
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    body_limit = sum(limits.values()) + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise too_large(None, body_limit)

    collector = _Collector(limits, too_large, charset)
    try:
        parser = python_multipart.MultipartParser(
            boundary,
            {
                "on_part_begin": collector.on_part_begin,
                "on_part_data": collector.on_part_data,
                "on_part_end": collector.on_part_end,
                "on_header_field": collector.on_header_field,
                "on_header_value": collector.on_header_value,
                "on_header_end": collector.on_header_end,
                "on_headers_finished": collector.on_headers_finished,
            },
            max_header_size=MAX_HEADER_BYTES,
        )
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise too_large(None, body_limit)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        message = str(exc)
        if "header size" in message.lower():
            message = (
                f"a part header is longer than {MAX_HEADER_BYTES:,} bytes; the file name is probably too long "
                f"(at most {MAX_FILENAME_CHARS} characters)"
            )
        raise InvalidInput(f"The upload could not be read as a form: {message}", field=first_field) from exc
    return collector.parts


# Content-addressed, so a given URL always has the same bytes.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"


def _image_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The upload is larger than the limit of {limit:,} bytes ({limit / 2**20:.1f} MiB).",
        field="file",
        max_bytes=limit,
    )


async def read_upload(request: Request, store: ImageStore) -> tuple[bytes, str | None]:
    """The bytes and filename of the multipart field `file`, reading at most the size limit.

    The body is counted while it streams in (app/http/uploads.py), so a client that lies about (or omits)
    Content-Length still cannot make the server read more than max_upload_bytes plus the multipart envelope.
    """
    limit = store.settings.max_upload_bytes
    parts = await read_multipart(
        request,
        {"file": limit},
        not_multipart="Send the image as multipart/form-data with the file in a field named “file”.",
        too_large=lambda _name, _limit: _image_too_large(limit),
    )
    upload = parts.get("file")
    if upload is None or not upload.is_file:
        raise InvalidInput("No file was sent: choose an image in the field named “file”.", field="file")
    if not upload.data and not upload.filename:
        # What a browser sends when the form is submitted before a file was chosen.
        raise InvalidInput("No file was chosen: pick an image file first, then upload it.", field="file")
    return bytes(upload.data), upload.filename


async def read_model_upload(request: Request, registry: ModelRegistry) -> tuple[bytes, bytes | None]:
    """The architecture bytes and the optional weights bytes of a model upload, each read only up to its limit."""
    parts = await read_multipart(
        request,
        {"architecture": MAX_ARCHITECTURE_BYTES, "weights": registry.max_model_bytes},
        not_multipart="Send the model as multipart/form-data: the JSON in a field named “architecture”, "
        "optional .safetensors in “weights”.",
        too_large=_model_too_large,
    )
    architecture = parts.get("architecture")
    if architecture is None or not architecture.data:
        raise InvalidInput(
            "No architecture was sent: choose a .json file for “architecture”.", field="architecture"
        )
    weights = parts.get("weights")
    # A browser form sends an empty, nameless weights part when no file was chosen: that means no weights.
    if weights is not None and not weights.data:
        if weights.filename:
            raise InvalidInput("weights is empty.", field="weights")
        weights = None
    return bytes(architecture.data), None if weights is None else bytes(weights.data)


def _model_too_large(name: str | None, limit: int) -> PayloadTooLarge:
    if name is None:
        return PayloadTooLarge(
            f"The upload is larger than {limit:,} bytes, the architecture limit (256 KiB) plus the weights limit "
            "(setting max_model_bytes) plus the form envelope.",
            field="weights",
            max_bytes=limit,
        )
    setting = "" if name == "architecture" else " (setting max_model_bytes)"
    return PayloadTooLarge(
        f"{name} is larger than the limit of {limit:,} bytes ({limit / 2**20:.1f} MiB){setting}.",
        field=name,
        max_bytes=limit,
    )
