"""Decode uploaded bytes into a float image, saying exactly how the pixels were converted.

Supported: PNG, JPEG, TIFF (8/16/32-bit), BMP, WebP, GIF (first frame) and single-slice DICOM.
`decode_image(data, filename, max_pixels)` returns a `DecodedImage` whose `pixels` are float32 in
[0, 1], shaped (H, W) for greyscale or (H, W, 3) for colour. Greyscale stays greyscale: a model that
needs three channels repeats the plane itself, so a CT slice is never silently turned into "RGB".

Every failure is a domain exception from app.errors with a sentence a student can act on; nothing a
client sends may surface as an unhandled exception.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, UnidentifiedImageError

from app.core.imaging.rendering import encode_png
from app.errors import ConvScopeError, InvalidInput, PayloadTooLarge, UnsupportedMedia

FloatImage = NDArray[np.float32]

SUPPORTED_FORMATS = "PNG, JPEG, TIFF (8 or 16 bit), BMP, WebP, GIF (first frame) and single-slice DICOM"
# Only these PIL decoders are ever tried: fewer parsers exposed to untrusted bytes.
PIL_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF")
FORMAT_NAMES = {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF", "bmp": "BMP", "webp": "WebP", "gif": "GIF"}
DICOM_EXTENSIONS = (".dcm", ".dicom", ".dic")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# EXIF orientation tag values -> what exif_transpose does to put the picture upright.
EXIF_ORIENTATION_TAG = 0x0112
EXIF_ORIENTATIONS: dict[int, str] = {
    2: "mirrored left-right",
    3: "rotated 180°",
    4: "mirrored top-bottom",
    5: "mirrored left-right and rotated 90° counter-clockwise",
    6: "rotated 90° clockwise",
    7: "mirrored left-right and rotated 90° clockwise",
    8: "rotated 90° counter-clockwise",
}

# The same, on (H, W) or (H, W, C) arrays (checked against PIL's transposes in the tests).
EXIF_UPRIGHT: dict[int, Callable[[NDArray[Any]], NDArray[Any]]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),
}

# Never accept partially decoded files: a truncated upload must be an error, not a grey stripe.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class DecodedImage:
    """A decoded picture plus the story of how it got to [0, 1].

    pixels: float32 (H, W) or (H, W, 3) in [0, 1].
    kind: "png" | "jpeg" | "tiff" | "bmp" | "webp" | "gif" | "dicom".
    source_mode: the PIL mode of the file (e.g. "I;16", "P", "CMYK") or the DICOM photometric
        interpretation (e.g. "MONOCHROME2").
    bit_depth: bits per sample in the file.
    conversion: one human sentence saying exactly what was done to the pixels.
    metadata: extra facts (frames, EXIF orientation, DICOM modality/window/spacing...).
    """

    pixels: FloatImage
    kind: str
    source_mode: str
    bit_depth: int
    conversion: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # (width, height) of the image itself when pixels were area-reduced while decoding (max_side).
    size: tuple[int, int] | None = None
    # Statistics of the full-resolution float pixels (with_stats=True), as pixel_statistics gives them.
    stats: dict[str, Any] | None = None

    @property
    def height(self) -> int:
        return int(self.size[1]) if self.size is not None else int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.size[0]) if self.size is not None else int(self.pixels.shape[1])

    @property
    def reduced(self) -> bool:
        """True when pixels are smaller than the image (decoded with max_side)."""
        return (int(self.pixels.shape[1]), int(self.pixels.shape[0])) != (self.width, self.height)

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])

    @property
    def mode(self) -> str:
        """ "L" for greyscale, "RGB" for colour (the ImageRecord's mode)."""
        return "L" if self.pixels.ndim == 2 else "RGB"


def decode_image(
    data: bytes,
    filename: str | None,
    max_pixels: int,
    max_side: int | None = None,
    *,
    with_stats: bool = False,
) -> DecodedImage:
    """Decode uploaded bytes into a `DecodedImage`.

    bytes -> pixels float32 (H, W) or (H, W, 3) in [0, 1].
    max_side: when the longer side is larger, pixels are area-averaged by the smallest whole factor that
    brings it within max_side, strip by strip while converting (PIL formats), so the full-resolution float
    image never exists; width/height/conversion still describe the whole image.
    with_stats: also fill `stats` with the full-resolution statistics (see pixel_statistics).
    Raises InvalidInput (empty, truncated, no pixel data), UnsupportedMedia (not an image, volumes,
    undecodable DICOM compression) or PayloadTooLarge (more than max_pixels), all with field="file".
    """
    label = display_name(filename)
    if not data:
        raise InvalidInput(f"{label} is empty (0 bytes); choose an image file.", field="file")
    try:
        if _looks_like_dicom(data, filename):
            decoded = _decode_dicom(data, label, max_pixels)
        else:
            decoded = _decode_pil(data, label, max_pixels, max_side, with_stats)
        return _finish(decoded, max_side, with_stats)
    except ConvScopeError:
        raise
    except ImportError as exc:
        # A decoder this server lacks is not the client's broken file: name the package instead.
        package = (exc.name or str(exc)).split(".")[0]
        raise UnsupportedMedia(
            f"{label} cannot be decoded here: this server is missing the Python package “{package}” "
            f"({type(exc).__name__}: {exc}).",
            field="file",
            missing_package=package,
        ) from exc
    except Exception as exc:
        # Decoders raise a zoo of exception types on hostile bytes (TypeError, NotImplementedError,
        # pydicom's BytesLengthException...); whatever they are, the client sent a broken file.
        detail = f"{type(exc).__name__}: {exc}"[:200]
        raise InvalidInput(f"{label} is damaged and cannot be decoded ({detail}).", field="file") from exc


def _finish(decoded: DecodedImage, max_side: int | None, with_stats: bool) -> DecodedImage:
    """Statistics and reduction for decoders that make the full float image anyway (DICOM, tifffile)."""
    if decoded.size is not None:
        return decoded  # the PIL path reduced (and counted) while converting
    if with_stats and decoded.stats is None:
        decoded.stats = pixel_statistics(decoded.pixels)
    factor = reduction_factor(decoded.width, decoded.height, max_side)
    decoded.size = (decoded.width, decoded.height)
    if factor > 1:
        decoded.pixels = reduce_float_image(decoded.pixels, factor)
    return decoded


def pixels_to_uint8(pixels: NDArray[np.floating]) -> NDArray[np.uint8]:
    """float [0, 1] (H, W) or (H, W, 3) -> uint8 of the same shape (greyscale stays one plane)."""
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected (H, W) or (H, W, 3) pixels, got shape {arr.shape}")
    # One float temporary, worked on in place (same steps and results as clip(nan_to_num) * 255, rounded):
    # for a 2048 px colour working copy each extra temporary would cost 48 MB.
    work = np.nan_to_num(arr)  # a copy: the caller's array is never modified
    np.clip(work, 0.0, 1.0, out=work)
    work *= 255.0
    np.round(work, out=work)
    return work.astype(np.uint8)


def pixels_to_png(pixels: NDArray[np.floating]) -> bytes:
    """float [0, 1] (H, W) or (H, W, 3) -> 8-bit PNG bytes (mode L or RGB)."""
    return encode_png(pixels_to_uint8(pixels))


def _npy_header(arr: NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    # Always C order: npy_chunks writes the rows in that order whatever the array's layout.
    header = {"descr": np.lib.format.dtype_to_descr(arr.dtype), "fortran_order": False, "shape": arr.shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def npy_size(arr: NDArray[Any]) -> int:
    """Bytes of the .npy file npy_chunks(arr) yields."""
    return len(_npy_header(arr)) + int(arr.nbytes)


def npy_chunks(arr: NDArray[Any], chunk_bytes: int = 4 * 2**20) -> Iterator[bytes]:
    """A C-ordered array as .npy bytes (numpy.load reads them, no pickle), a few MiB at a time."""
    arr = np.ascontiguousarray(arr)
    yield _npy_header(arr)
    if arr.ndim == 0 or arr.shape[0] == 0:
        yield arr.tobytes()
        return
    rows = max(1, chunk_bytes // max(1, arr[0].nbytes))
    for top in range(0, arr.shape[0], rows):
        yield arr[top : top + rows].tobytes()


# --------------------------------------------------------------------------------------------- helpers


def clean_filename(filename: str | None) -> str:
    """A client-supplied filename made safe to show: no path, no control characters, bounded length."""
    if not filename:
        return ""
    base = re.split(r"[\\/]", str(filename))[-1]
    base = "".join(ch for ch in base if ch.isprintable())
    return " ".join(base.split())[:120]


def display_name(filename: str | None) -> str:
    """How error messages name a file: “scan.png”, or "The uploaded file" when it has no name."""
    clean = clean_filename(filename)
    return f"“{clean}”" if clean else "The uploaded file"


def _not_an_image(label: str) -> UnsupportedMedia:
    return UnsupportedMedia(
        f"{label} is not an image ConvScope can read; supported: {SUPPORTED_FORMATS}.", field="file"
    )


def _too_many_pixels(label: str, width: int, height: int, max_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{label} is {width} × {height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels. "
        "Downscale it and upload again.",
        field="file",
        width=width,
        height=height,
        max_pixels=max_pixels,
    )


def _looks_like_dicom(data: bytes, filename: str | None) -> bool:
    # Part-10 files carry "DICM" after a 128-byte preamble; bare datasets only by their extension.
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    return bool(filename) and str(filename).lower().endswith(DICOM_EXTENSIONS)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def _range_text(lo: float, hi: float) -> str:
    return f"[{_num(lo)}, {_num(hi)}]"


def _stretch(values: NDArray[Any]) -> tuple[FloatImage, float, float]:
    """Linearly map the finite value range onto [0, 1]; returns (pixels, lo, hi)."""
    arr = values.astype(np.float64)
    finite = arr[np.isfinite(arr)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    span = hi - lo
    out = (arr - lo) / span if span > 0 else np.zeros_like(arr)
    return np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32), lo, hi


def _composite_on_white(rgba: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(H, W, C+1) uint8 with alpha last -> (H, W, C) float32 in [0, 1] over a white background."""
    colour = rgba[..., :-1].astype(np.float32) / 255.0
    alpha = rgba[..., -1:].astype(np.float32) / 255.0
    return (colour * alpha + (1.0 - alpha)).astype(np.float32)


# ------------------------------------------------------------------------------------------------- PIL


def _decode_pil(
    data: bytes, label: str, max_pixels: int, max_side: int | None = None, with_stats: bool = False
) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            # PIL warns (rather than raises) between MAX_IMAGE_PIXELS and twice that; our own bound
            # below is the one that counts, so the warning is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(PIL_FORMATS))
    except Image.DecompressionBombError as exc:
        # PIL's own message quotes PIL's limit, not ours: say the number that applies here.
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)):,} pixels" if declared else "more pixels than that"
        raise PayloadTooLarge(
            f"{label} declares {size}; the limit is {max_pixels:,} pixels. Downscale it and upload again.",
            field="file",
            max_pixels=max_pixels,
        ) from exc
    except UnidentifiedImageError as exc:
        if data[:4] in TIFF_MAGIC:
            # Float colour and other TIFF layouts PIL does not know: tifffile reads them exactly.
            return _decode_tifffile(data, label, max_pixels)
        raise _not_an_image(label) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # A recognised header that is itself broken (e.g. a PNG cut inside its first chunk).
        raise InvalidInput(
            f"{label} is damaged or truncated and cannot be read ({exc}).", field="file"
        ) from exc

    with im:
        kind = (im.format or "").lower()
        fmt_name = FORMAT_NAMES.get(kind, kind.upper())
        width, height = im.size
        # Bound pixels from the header, before a single pixel is decoded.
        if width * height > max_pixels:
            raise _too_many_pixels(label, width, height, max_pixels)
        if width < 1 or height < 1:
            raise InvalidInput(f"{label} has no pixels ({width} × {height}).", field="file")
        if kind == "tiff" and _pil_would_lose_bits(im):
            return _decode_tifffile(data, label, max_pixels)
        frames = int(getattr(im, "n_frames", 1) or 1)
        try:
            im.seek(0)
            im.load()
        except Image.DecompressionBombError as exc:
            raise PayloadTooLarge(f"{label} is too large to decode ({exc}).", field="file") from exc
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
            raise InvalidInput(
                f"{label} looks like a {fmt_name} file but is truncated or corrupt ({exc}).", field="file"
            ) from exc
        return _pil_to_decoded(im, kind, fmt_name, frames, label, max_side, with_stats)


def _pil_would_lose_bits(im: Image.Image) -> bool:
    """True for TIFFs PIL would quietly squeeze (16-bit colour to 8 bits, signed 16-bit into "I")."""
    tags = getattr(im, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if bits is None:
        return False
    widest = max(bits) if isinstance(bits, (tuple, list)) else int(bits)
    return widest > 8 and im.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "F")


def _decode_tifffile(data: bytes, label: str, max_pixels: int) -> DecodedImage:
    """TIFF variants beyond PIL (16-bit RGB, float RGB, signed 16-bit) -> float32 in [0, 1]."""
    try:
        import tifffile
    except ImportError as exc:
        raise UnsupportedMedia(
            f"{label} is a TIFF variant that needs the tifffile package.", field="file"
        ) from exc
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            pages = len(tif.pages)
            page = tif.pages.first
            height, width = int(page.imagelength), int(page.imagewidth)
            if height * width > max_pixels:
                raise _too_many_pixels(label, width, height, max_pixels)
            samples = int(page.samplesperpixel)
            bits = int(page.bitspersample)
            photometric = getattr(page.photometric, "name", str(page.photometric))
            arr = np.asarray(page.asarray())
    except (PayloadTooLarge, UnsupportedMedia):
        raise
    except Exception as exc:
        # tifffile raises many types (TiffFileError, ValueError, struct.error...) on damaged files.
        message = f"{label} looks like a TIFF file but is truncated or corrupt ({exc})."
        raise InvalidInput(message, field="file") from exc
    if arr.ndim == 3 and arr.shape[0] == samples and arr.shape[-1] != samples:
        arr = np.moveaxis(arr, 0, -1)  # planar (S, H, W) -> interleaved (H, W, S)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise UnsupportedMedia(
            f"{label} is a TIFF with {samples} samples per pixel ({photometric}); "
            "ConvScope reads greyscale and RGB(A) TIFFs.",
            field="file",
        )
    kind_text = "float " if arr.dtype.kind == "f" else ("signed " if arr.dtype.kind == "i" else "")
    colour = "greyscale" if arr.ndim == 2 else "RGB"
    steps: list[str] = []
    colour_arr = arr[..., :3] if arr.ndim == 3 else arr
    pixels, lo, hi = _stretch(colour_arr)
    # One range for all channels, so the colour balance is kept.
    steps.append(f"{bits}-bit {kind_text}{colour} TIFF scaled from {_range_text(lo, hi)} to [0, 1]")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        # Alpha is a fraction of the type's full scale (not of its own range): 65535 means opaque.
        alpha_raw = arr[..., 3].astype(np.float64)
        full = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else 1.0
        alpha = np.clip(alpha_raw / full, 0.0, 1.0)
        pixels = (pixels * alpha[..., None] + (1.0 - alpha[..., None])).astype(np.float32)
        steps.append("alpha composited on white and dropped")
    if pages > 1:
        steps.append(f"first of {pages} pages used")
    sentence = "; ".join(steps) + " (read with tifffile)."
    sentence = sentence[0].upper() + sentence[1:]
    metadata: dict[str, Any] = {
        "format": "TIFF",
        "file_width": width,
        "file_height": height,
        "reader": "tifffile",
    }
    if pages > 1:
        metadata["frames"] = pages
    return DecodedImage(
        np.ascontiguousarray(pixels, dtype=np.float32), "tiff", photometric, bits, sentence, metadata
    )


def _bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _pil_to_decoded(
    im: Image.Image,
    kind: str,
    fmt_name: str,
    frames: int,
    label: str,
    max_side: int | None = None,
    with_stats: bool = False,
) -> DecodedImage:
    source_mode = im.mode
    steps: list[str] = []
    metadata: dict[str, Any] = {"format": fmt_name, "file_width": im.size[0], "file_height": im.size[1]}
    if frames > 1:
        noun = "frame" if kind in ("gif", "webp") else "page"
        steps.append(f"first of {frames} {noun}s used")
        metadata["frames"] = frames

    orientation = 1
    try:
        orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:
        # A broken EXIF block is not worth rejecting the picture for; it is simply not applied.
        orientation = 1
    if orientation in EXIF_ORIENTATIONS:
        # Applied to the converted (and possibly reduced) float pixels rather than with exif_transpose:
        # the result is the same pixel for pixel, without a second full-resolution copy of the picture.
        steps.append(f"EXIF orientation {orientation} applied ({EXIF_ORIENTATIONS[orientation]})")
        metadata["exif_orientation"] = orientation
    if "icc_profile" in im.info:
        metadata["icc_profile"] = True

    width, height = im.size
    factor = reduction_factor(width, height, max_side)
    pixels, how, stats = _convert(im, fmt_name, label, factor, with_stats=with_stats)
    if orientation in EXIF_ORIENTATIONS:
        pixels = EXIF_UPRIGHT[orientation](pixels)
        if orientation >= 5:  # a quarter turn: the upright picture is height x width
            width, height = height, width
            if stats is not None:
                stats["shape"] = [height, width, *stats["shape"][2:]]
    steps.insert(0, how)
    sentence = "; ".join(steps)
    sentence = sentence[0].upper() + sentence[1:] + "."
    return DecodedImage(
        pixels=np.ascontiguousarray(pixels, dtype=np.float32),
        kind=kind,
        source_mode=source_mode,
        bit_depth=_bit_depth(source_mode),
        conversion=sentence,
        metadata=metadata,
        size=(int(width), int(height)),
        stats=stats,
    )


def _convert_mode(im: Image.Image, fmt_name: str, label: str) -> tuple[FloatImage, str]:
    """One PIL image -> (float pixels, what was done)."""
    pixels, how, _ = _convert(im, fmt_name, label, 1, with_stats=False)
    return pixels, how


# ------------------------------------------------------------------------------- strip-wise conversion
#
# A 36 MP upload is ~100 MB as PIL decodes it (uint8) but 432 MB as float32, and converting it whole cost
# 2-3 times that in temporaries. So pixels are converted a strip of rows at a time, each strip straight into
# the (possibly area-reduced) float output; the facts a conversion needs about the whole image (the value
# range of 16-bit data, whether an alpha channel is all opaque, whether a palette is all grey) are gathered
# by a first pass over the same strips. Every step is per pixel, so the result equals converting the whole
# image at once, bit for bit.

# Pixels per strip: one strip's float64 temporaries stay around 2-6 MB (measured: +140 MiB for a 36 MP
# colour upload, most of it PIL's own decoded image; 1 M pixels per strip cost +290 MiB).
STRIP_PIXELS = 262_144


@dataclass
class _ModePlan:
    """How one PIL mode becomes float [0, 1]: a PIL conversion per strip, then a numpy one."""

    how: str
    prepare: Callable[[Image.Image], Image.Image]
    convert: Callable[[NDArray[Any]], FloatImage]


def _same(picture: Image.Image) -> Image.Image:
    return picture


def _to(mode: str) -> Callable[[Image.Image], Image.Image]:
    def convert(picture: Image.Image) -> Image.Image:
        return picture.convert(mode)

    return convert


def _over_255(arr: NDArray[Any]) -> FloatImage:
    return arr.astype(np.float32) / 255.0


def _native_strips(
    im: Image.Image, prepare: Callable[[Image.Image], Image.Image], rows: int
) -> Iterator[tuple[int, NDArray[Any]]]:
    """(first row, native pixels of rows [first, first + rows)) over the whole image."""
    width, height = im.size
    for top in range(0, height, rows):
        strip = im.crop((0, top, width, min(height, top + rows)))
        yield top, np.asarray(prepare(strip))


def _strip_rows(width: int, factor: int) -> int:
    rows = max(1, STRIP_PIXELS // max(1, width))
    return max(factor, rows // factor * factor)


def _finite_range(im: Image.Image, prepare: Callable[[Image.Image], Image.Image]) -> tuple[float, float]:
    """The finite (min, max) of the whole image, as _stretch would find it."""
    lo, hi = np.inf, -np.inf
    for _, arr in _native_strips(im, prepare, _strip_rows(im.size[0], 1)):
        if arr.dtype.kind == "f":
            arr = arr[np.isfinite(arr)]
        if arr.size:
            lo = min(lo, float(arr.min()))
            hi = max(hi, float(arr.max()))
    return (0.0, 0.0) if lo > hi else (lo, hi)


def _scaler(lo: float, hi: float) -> Callable[[NDArray[Any]], FloatImage]:
    """Per-pixel part of _stretch with a range known beforehand (same float64 arithmetic)."""

    def scale(values: NDArray[Any]) -> FloatImage:
        arr = values.astype(np.float64)
        span = hi - lo
        out = (arr - lo) / span if span > 0 else np.zeros_like(arr)
        return np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32)

    return scale


def _plan_mode(im: Image.Image, fmt_name: str, label: str) -> _ModePlan:
    """Decide (from the whole image, strip by strip) how its mode converts; the sentences are the story."""
    mode = im.mode
    if mode == "L":
        return _ModePlan(f"8-bit greyscale {fmt_name} scaled from [0, 255] to [0, 1]", _same, _over_255)
    if mode == "RGB":
        return _ModePlan(f"8-bit RGB {fmt_name} scaled from [0, 255] to [0, 1]", _same, _over_255)
    if mode == "1":
        how = f"1-bit black-and-white {fmt_name} kept as greyscale (black 0, white 1)"
        return _ModePlan(how, _to("L"), _over_255)
    if mode.startswith("I;16") or mode in ("I", "F"):
        bits = {"I": "32-bit integer", "F": "32-bit float"}.get(mode, "16-bit")
        lo, hi = _finite_range(im, _same)
        how = f"{bits} greyscale {fmt_name} scaled from {_range_text(lo, hi)} to [0, 1]"
        return _ModePlan(how, _same, _scaler(lo, hi))
    if mode == "LA":
        how = f"greyscale+alpha (LA) {fmt_name} composited on white, alpha dropped"
        return _ModePlan(how, _same, lambda arr: _composite_on_white(arr)[:, :, 0])
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        prepare = _to("RGBA" if has_alpha else "RGB")
        to_rgb = _composite_on_white if has_alpha else _over_255
        grey = True
        for _, arr in _native_strips(im, prepare, _strip_rows(im.size[0], 1)):
            rgb = to_rgb(arr)
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
                grey = False
                break
        alpha_txt = ", transparent pixels composited on white" if has_alpha else ""
        if grey:
            how = f"palette ({mode}) {fmt_name} with only grey colours converted to greyscale{alpha_txt}"
            return _ModePlan(how, prepare, lambda arr: to_rgb(arr)[..., 0])
        return _ModePlan(f"palette ({mode}) {fmt_name} converted to RGB{alpha_txt}", prepare, to_rgb)
    if mode in ("RGBA", "RGBa"):
        prepare = _to("RGBA")
        opaque = all(
            bool(np.all(arr[..., 3] == 255))
            for _, arr in _native_strips(im, prepare, _strip_rows(im.size[0], 1))
        )
        if opaque:
            how = f"RGBA {fmt_name} fully opaque, alpha dropped"
            return _ModePlan(how, prepare, lambda arr: arr[..., :3].astype(np.float32) / 255.0)
        return _ModePlan(f"RGBA {fmt_name} composited on white, alpha dropped", prepare, _composite_on_white)
    if mode == "CMYK":
        how = f"CMYK {fmt_name} converted to RGB (PIL's simple conversion, no colour profile)"
        return _ModePlan(how, _to("RGB"), _over_255)
    if mode in ("YCbCr", "LAB", "HSV", "RGBX"):
        return _ModePlan(f"{mode} {fmt_name} converted to RGB", _to("RGB"), _over_255)
    if mode in ("I;32", "I;32S") or mode.startswith(("I;", "F;")):
        prepare = _to("F")
        lo, hi = _finite_range(im, prepare)
        how = f"{mode} greyscale {fmt_name} scaled from {_range_text(lo, hi)} to [0, 1]"
        return _ModePlan(how, prepare, _scaler(lo, hi))
    try:
        im.crop((0, 0, 1, 1)).convert("RGB")
    except (ValueError, OSError) as exc:
        raise UnsupportedMedia(
            f"{label} uses the pixel mode {mode!r}, which ConvScope cannot convert.", field="file"
        ) from exc
    return _ModePlan(f"{mode} {fmt_name} converted to RGB", _to("RGB"), _over_255)


def reduction_factor(width: int, height: int, max_side: int | None) -> int:
    """The smallest whole factor that brings the longer side to at most max_side (1: no reduction)."""
    longer = max(width, height)
    if max_side is None or longer <= max_side:
        return 1
    return -(-longer // max(1, max_side))


def box_reduce(arr: NDArray[Any], factor: int) -> FloatImage:
    """Area (box) average over factor x factor blocks; partial blocks at the edges average what they have."""
    if factor <= 1:
        return np.asarray(arr, dtype=np.float32)
    height, width = arr.shape[:2]
    rows = np.arange(0, height, factor)
    cols = np.arange(0, width, factor)
    sums = np.add.reduceat(np.add.reduceat(arr, rows, axis=0, dtype=np.float64), cols, axis=1)
    counts = np.outer(np.minimum(factor, height - rows), np.minimum(factor, width - cols)).astype(np.float64)
    if sums.ndim == 3:
        counts = counts[:, :, None]
    return (sums / counts).astype(np.float32)


def reduce_float_image(pixels: FloatImage, factor: int) -> FloatImage:
    """box_reduce of a float image a strip of rows at a time (bounded temporaries)."""
    if factor <= 1:
        return pixels
    rows = _strip_rows(int(pixels.shape[1]), factor)
    parts = [box_reduce(pixels[top : top + rows], factor) for top in range(0, int(pixels.shape[0]), rows)]
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


class _Stats:
    """Min, max, mean, std (and per-channel means) merged strip by strip in float64 (Chan et al.)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.lo = np.inf
        self.hi = -np.inf
        self.channel_sums: NDArray[np.float64] | None = None
        self.shape: tuple[int, ...] = ()

    def add(self, strip: FloatImage) -> None:
        if strip.size == 0:
            return
        values = strip.astype(np.float64)
        n = int(values.size)
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        delta = mean - self.mean
        total = self.count + n
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.lo = min(self.lo, float(values.min()))
        self.hi = max(self.hi, float(values.max()))
        if values.ndim == 3:
            sums = values.reshape(-1, values.shape[2]).sum(axis=0)
            self.channel_sums = sums if self.channel_sums is None else self.channel_sums + sums

    def result(self, shape: tuple[int, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "shape": list(shape),
            "dtype": "float32",
            "min": float(self.lo) if self.count else 0.0,
            "max": float(self.hi) if self.count else 0.0,
            "mean": float(self.mean),
            "std": float(np.sqrt(self.m2 / self.count)) if self.count else 0.0,
        }
        if self.channel_sums is not None and len(shape) == 3:
            per_channel = self.count / shape[2]
            out["channel_means"] = [float(v / per_channel) for v in self.channel_sums]
        return out


def pixel_statistics(pixels: FloatImage) -> dict[str, Any]:
    """Statistics of a float image, computed a strip at a time (no float64 copy of the whole)."""
    stats = _Stats()
    rows = _strip_rows(int(pixels.shape[1]), 1)
    for top in range(0, int(pixels.shape[0]), rows):
        stats.add(pixels[top : top + rows])
    return stats.result(tuple(int(v) for v in pixels.shape))


def _convert(
    im: Image.Image, fmt_name: str, label: str, factor: int, *, with_stats: bool
) -> tuple[FloatImage, str, dict[str, Any] | None]:
    """Convert strip by strip into a float image reduced by factor; statistics are of the full image."""
    plan = _plan_mode(im, fmt_name, label)
    width, height = im.size
    out: FloatImage | None = None
    stats = _Stats() if with_stats else None
    full_shape: tuple[int, ...] = ()
    for top, native in _native_strips(im, plan.prepare, _strip_rows(width, factor)):
        strip = plan.convert(native)
        del native
        if stats is not None:
            stats.add(strip)
        small = box_reduce(strip, factor) if factor > 1 else strip
        if out is None:
            channels = strip.shape[2:]
            full_shape = (height, width, *channels)
            out_h = -(-height // factor)
            out_w = -(-width // factor)
            out = np.empty((out_h, out_w, *channels), dtype=np.float32)
        out[top // factor : top // factor + small.shape[0]] = small
    assert out is not None  # an image has at least one row (checked before decoding)
    return out, plan.how, None if stats is None else stats.result(full_shape)


# ----------------------------------------------------------------------------------------------- DICOM


def _ds_float(value: Any) -> float | None:
    """First number of a DICOM value that may be multi-valued (WindowCenter can be a list)."""
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
            value = value[0] if len(value) else None
        return None if value is None else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _decode_dicom(data: bytes, label: str, max_pixels: int) -> DecodedImage:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_color_lut, apply_modality_lut  # pydicom.pixels: pydicom >= 3
    except ImportError as exc:
        raise UnsupportedMedia(
            f"{label} is a DICOM file, and reading DICOM needs pydicom version 3 or later, which this server "
            f"does not have ({type(exc).__name__}: {exc}).",
            field="file",
            missing_package="pydicom",
        ) from exc

    force = not (len(data) >= 132 and data[128:132] == b"DICM")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise InvalidInput(f"{label} is not a readable DICOM file ({exc}).", field="file") from exc

    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InvalidInput(
            f"{label} is a DICOM file without pixel data (perhaps a report, a structure set or a DICOMDIR); "
            "upload an image slice.",
            field="file",
        )
    frames = int(_ds_float(ds.get("NumberOfFrames")) or 1)
    if frames > 1:
        raise UnsupportedMedia(
            f"{label} is a multi-frame DICOM with {frames} frames; "
            "volumes are not supported yet, upload one slice.",
            field="file",
            frames=frames,
        )
    rows = int(ds.get("Rows", 0) or 0)
    cols = int(ds.get("Columns", 0) or 0)
    if rows * cols > max_pixels:
        raise _too_many_pixels(label, cols, rows, max_pixels)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    ts_name = getattr(transfer_syntax, "name", None) or (
        str(transfer_syntax) if transfer_syntax else "unknown"
    )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = ds.pixel_array
    except (NotImplementedError, RuntimeError, ImportError) as exc:
        raise UnsupportedMedia(
            f"{label} uses the compressed DICOM transfer syntax “{ts_name}”, which cannot be decoded here "
            "(no decoder installed); export it uncompressed (Explicit VR Little Endian) and upload again.",
            field="file",
            transfer_syntax=str(transfer_syntax),
        ) from exc
    except (ValueError, AttributeError, KeyError, TypeError, OSError, EOFError, IndexError) as exc:
        raise InvalidInput(
            f"{label} has DICOM pixel data that cannot be read ({exc}).", field="file"
        ) from exc

    modality = str(ds.get("Modality", "") or "").strip() or "unknown"
    metadata: dict[str, Any] = {
        "modality": modality,
        "rows": rows,
        "columns": cols,
        "photometric_interpretation": photometric,
        "bits_allocated": int(ds.get("BitsAllocated", 0) or 0),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 0)) or 0),
        "transfer_syntax": ts_name,
    }
    spacing = ds.get("PixelSpacing")
    if spacing is not None:
        with contextlib.suppress(TypeError, ValueError):
            metadata["pixel_spacing_mm"] = [float(v) for v in spacing]
    thickness = _ds_float(ds.get("SliceThickness"))
    if thickness is not None:
        metadata["slice_thickness_mm"] = thickness
    # Descriptive, non-identifying fields only; patient name, ids and dates are never copied out.
    for key, out in (("BodyPartExamined", "body_part"), ("StudyDescription", "study_description")):
        text = str(ds.get(key, "") or "").strip()
        if text:
            metadata[out] = text
    bit_depth = metadata["bits_stored"] or 16

    if photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420") or (
        raw.ndim == 3 and raw.shape[-1] == 3
    ):
        if raw.ndim != 3 or raw.shape[-1] != 3:
            raise InvalidInput(
                f"{label} says it is colour but its pixel data is shaped {raw.shape}.", field="file"
            )
        rgb, lo, hi = _stretch(raw) if raw.dtype != np.uint8 else (raw.astype(np.float32) / 255.0, 0.0, 255.0)
        note = "" if photometric == "RGB" else f" (stored as {photometric}, converted to RGB by pydicom)"
        sentence = f"DICOM {modality} colour image scaled from {_range_text(lo, hi)} to [0, 1]{note}."
        return DecodedImage(rgb, "dicom", photometric, bit_depth, sentence, metadata)

    if photometric == "PALETTE COLOR":
        lut = np.asarray(apply_color_lut(raw, ds))
        rgb, lo, hi = _stretch(lut)
        sentence = (
            f"DICOM {modality} palette-colour image: colour table applied, "
            f"scaled from {_range_text(lo, hi)} to [0, 1]."
        )
        return DecodedImage(rgb, "dicom", photometric, bit_depth, sentence, metadata)

    if raw.ndim != 2:
        raise InvalidInput(
            f"{label} has pixel data shaped {raw.shape}; expected one 2-D slice.", field="file"
        )

    steps: list[str] = [f"DICOM {modality}"]
    slope = _ds_float(ds.get("RescaleSlope"))
    intercept = _ds_float(ds.get("RescaleIntercept"))
    has_rescale = slope is not None or intercept is not None or bool(ds.get("ModalityLUTSequence"))
    # The standard's pipeline (PS3.3 C.11): stored values -> modality LUT (rescale or LUT) -> VOI LUT or
    # window -> display. Both steps are pydicom's own functions, so the numbers are the standard's.
    values = np.asarray(apply_modality_lut(raw, ds) if has_rescale else raw, dtype=np.float64)
    if has_rescale:
        if ds.get("ModalityLUTSequence"):
            steps.append("modality LUT from the file applied")
        else:
            unit = " (HU)" if modality == "CT" else ""
            steps.append(f"rescale slope/intercept applied{unit}")
            metadata["rescale_slope"] = slope if slope is not None else 1.0
            metadata["rescale_intercept"] = intercept if intercept is not None else 0.0
        if modality == "CT" and not ds.get("ModalityLUTSequence"):
            metadata["units"] = "HU"

    voi = _apply_voi(raw if not has_rescale else values, ds)
    if voi is not None:
        pixels, how, window = voi
        steps.append(how)
        metadata["window"] = window
    else:
        pixels, lo, hi = _stretch(values)
        steps.append(f"no window in the file, so the value range {_range_text(lo, hi)} was scaled to [0, 1]")
        metadata["window"] = {"centre": (lo + hi) / 2.0, "width": hi - lo, "source": "data range"}
    metadata["value_range"] = [float(np.min(values)), float(np.max(values))]
    if photometric == "MONOCHROME1":
        # MONOCHROME1 means "high values are dark"; invert so that bright is always high.
        pixels = (1.0 - pixels).astype(np.float32)
        steps.append("MONOCHROME1 inverted so that white means high")
    sentence = steps[0] + ": " + ", ".join(steps[1:]) + "."
    return DecodedImage(np.ascontiguousarray(pixels), "dicom", photometric, bit_depth, sentence, metadata)


def _windows(ds: Any) -> list[tuple[float, float, str | None]]:
    """Every (centre, width, explanation) the file offers (Window Center/Width are multi-valued, VM 1-n)."""
    centres, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centres is None or widths is None:
        return []

    def listed(value: Any) -> list[Any]:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            return [value]
        return list(value)

    explanations = listed(ds.get("WindowCenterWidthExplanation", "") or "")
    out = []
    for i, (c, w) in enumerate(zip(listed(centres), listed(widths), strict=False)):
        try:
            note = str(explanations[i]).strip() if i < len(explanations) else ""
            out.append((float(c), float(w), note or None))
        except (TypeError, ValueError):
            break
    return out


def _apply_voi(values: NDArray[Any], ds: Any) -> tuple[FloatImage, str, dict[str, Any]] | None:
    """The file's first VOI LUT or window applied by pydicom (`apply_voi_lut`), scaled to [0, 1].

    values: the modality LUT's output (stored values when the file has none), (H, W).
    Returns (pixels, what was done, metadata["window"]) or None when the file has no usable VOI
    (then the caller stretches the value range). A window the standard forbids (width < 1 for LINEAR,
    <= 0 otherwise, an unknown VOI LUT Function) is reported and skipped, never guessed at.
    """
    from pydicom.pixels import apply_voi_lut

    lut_seq = ds.get("VOILUTSequence")
    if lut_seq and lut_seq[0].get("LUTDescriptor") is not None and lut_seq[0].get("LUTData") is not None:
        descriptor = [int(v) for v in lut_seq[0].LUTDescriptor]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns when a LUT is applied to floats (after a rescale)
            table_input = np.rint(values).astype(np.int64) if values.dtype.kind == "f" else values
            out = np.asarray(apply_voi_lut(table_input, ds, index=0, prefer_lut=True), dtype=np.float64)
        # PS3.3 C.11.2.1.1: the VOI LUT's output range is 0 .. 2^n - 1, n = the descriptor's third value.
        top = float(2 ** descriptor[2] - 1)
        lut_note = str(lut_seq[0].get("LUTExplanation", "") or "").strip()
        named = f" ({lut_note})" if lut_note else ""
        lut_how = (
            f"VOI LUT from the file applied{named}: {descriptor[0] or 65536} entries from value "
            f"{descriptor[1]}, output 0 .. {int(top)} scaled to [0, 1]"
        )
        if len(lut_seq) > 1:
            lut_how += f" (the first of {len(lut_seq)} VOI LUTs in the file)"
        lut_window: dict[str, Any] = {
            "source": "file",
            "function": "LUT",
            "explanation": lut_note or None,
            "lut_count": len(lut_seq),
        }
        return np.clip(out / top, 0.0, 1.0).astype(np.float32), lut_how, lut_window

    windows = _windows(ds)
    if not windows:
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    centre, width, explanation = windows[0]
    try:
        out = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=False), dtype=np.float64)
        # The window's output range [y_min, y_max] is whatever it gives for -inf and +inf (pydicom derives
        # it from Bits Stored, Pixel Representation and the rescale, as PS3.3 C.11.2.1.2 says).
        y_min, y_max = (
            float(v)
            for v in np.asarray(
                apply_voi_lut(np.array([-np.inf, np.inf]), ds, index=0, prefer_lut=False), dtype=np.float64
            )
        )
    except (ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
        # e.g. width 0 with LINEAR, an unknown VOI LUT Function, or a file without Bits Stored.
        note = f"the window in the file (centre {_num(centre)} / width {_num(width)}, {function}) cannot be applied ({exc})"
        return _stretched_with_note(values, note, centre, width, function)
    span = y_max - y_min
    pixels = (out - y_min) / span if span > 0 else np.zeros_like(out)
    how = f"window centre {_num(centre)} / width {_num(width)} from the file"
    if function != "LINEAR":
        how += f" ({function})"
    if explanation:
        how += f" “{explanation}”"
    if len(windows) > 1:
        others = "; ".join(f"{_num(c)} / {_num(w)}" + (f" “{e}”" if e else "") for c, w, e in windows[1:])
        how += f" (the first of {len(windows)} windows in the file; the others: {others})"
    window: dict[str, Any] = {"centre": centre, "width": width, "source": "file", "function": function}
    if explanation:
        window["explanation"] = explanation
    if len(windows) > 1:
        window["alternatives"] = [{"centre": c, "width": w, "explanation": e} for c, w, e in windows[1:]]
    return np.clip(np.nan_to_num(pixels), 0.0, 1.0).astype(np.float32), how, window


def _stretched_with_note(
    values: NDArray[Any], note: str, centre: float, width: float, function: str
) -> tuple[FloatImage, str, dict[str, Any]]:
    pixels, lo, hi = _stretch(values)
    how = f"{note}, so the value range {_range_text(lo, hi)} was scaled to [0, 1]"
    window = {
        "centre": (lo + hi) / 2.0,
        "width": hi - lo,
        "source": "data range",
        "rejected": {"centre": centre, "width": width, "function": function},
    }
    return pixels, how, window


class NotedImage(np.ndarray):  # type: ignore[type-arg]
    """A float image that remembers how it was derived from the stored upload (e.g. "downsampled from 6000 x 6000
    to 2000 x 2000 pixels ..."), so that the steps a model input shows stay true without every route passing it on.
    `np.asarray` turns it back into a plain array."""

    working_note: str | None = None

    def __array_finalize__(self, obj: object) -> None:
        self.working_note = getattr(obj, "working_note", None)


def with_working_note(pixels: NDArray[np.float32], note: str | None) -> NDArray[np.float32]:
    """`pixels` carrying `note` (a view, no copy); unchanged when there is nothing to say."""
    if note is None:
        return pixels
    noted = pixels.view(NotedImage)
    noted.working_note = note
    return noted
