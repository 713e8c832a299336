"""Use cases of the convolution lab, shared by the JSON API and the HTML pages.

Validates what a client sent (naming the field), calls the pure core, and turns the results into
pictures and plain numbers. Core errors (ConvolutionError, PoolingError, CostError) become
:class:`app.errors.InvalidInput` with the same field.
"""

from __future__ import annotations

import io
import json
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from cachetools import LRUCache
from numpy.typing import NDArray
from PIL import Image

from app.config import Settings
from app.core.convolution import arithmetic as convolution
from app.core.convolution import fc_cost as conv_cost
from app.core.convolution import kernels, lecture_presets, pooling
from app.core.convolution.arithmetic import CellStep, ConvResult, KernelInput
from app.core.imaging import imageio
from app.core.imaging.rendering import colorize, encode_png, upscale_nearest
from app.errors import InvalidInput, NotFound, OverLimit
from app.services.images import ImageRecord, ImageStore

MAX_GRID = 16
MAX_PLAYGROUND_KERNEL = 7
MAX_FILTER_KERNEL = 11
MAX_KERNELS = 8
SIGNED_CMAP = "rdbu"
MAGNITUDE_CMAP = "viridis"


@contextmanager
def domain_errors() -> Iterator[None]:
    """Turn the core's ValueErrors (which carry a field) into a 422 naming that field."""
    try:
        yield
    except (convolution.ConvolutionError, pooling.PoolingError, conv_cost.CostError) as exc:
        raise InvalidInput(exc.message, field=exc.field) from exc


# ------------------------------------------------------------------------------------------ grids


def parse_number(text: object, field_name: str) -> float:
    """One cell: a finite number (typed text like '0.25', '-3', '1e-2'), else a 422 naming the cell."""
    if isinstance(text, bool):
        raise InvalidInput(f"{field_name} must be a number", field=field_name)
    if isinstance(text, int | float):
        value = float(text)
    else:
        s = str(text).strip().replace("−", "-")
        if s == "":
            raise InvalidInput(f"{field_name} is empty: type a number", field=field_name)
        try:
            value = float(s)
        except ValueError:
            raise InvalidInput(f"{field_name}: {s[:20]!r} is not a number", field=field_name) from None
    if not math.isfinite(value):
        raise InvalidInput(f"{field_name} must be a finite number", field=field_name)
    return value


def to_matrix(
    value: object,
    field_name: str,
    *,
    max_rows: int,
    max_cols: int,
    odd: bool = False,
    square: bool = False,
    min_size: int = 1,
) -> NDArray[np.float64]:
    """Rows of numbers -> ``(R, C)`` float64, checking shape limits; errors name ``field_name.r.c`` (pydantic's
    dotted spelling, as every error of the API and the pages)."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or not value:
        raise InvalidInput(f"{field_name} must be a non-empty list of rows", field=field_name)
    rows: list[list[float]] = []
    for r, row in enumerate(value):
        if not isinstance(row, Sequence) or isinstance(row, str | bytes) or not row:
            raise InvalidInput(
                f"{field_name}.{r} must be a non-empty row of numbers", field=f"{field_name}.{r}"
            )
        rows.append([parse_number(v, f"{field_name}.{r}.{c}") for c, v in enumerate(row)])
    width = len(rows[0])
    for r, row in enumerate(rows):
        if len(row) != width:
            raise InvalidInput(
                f"{field_name}: row {r + 1} has {len(row)} numbers but row 1 has {width}; rows must be equally long",
                field=f"{field_name}.{r}",
            )
    n_rows = len(rows)
    if n_rows > max_rows or width > max_cols:
        raise InvalidInput(
            f"{field_name} is {n_rows}x{width}; the largest allowed is {max_rows}x{max_cols}",
            field=field_name,
        )
    if n_rows < min_size or width < min_size:
        raise InvalidInput(f"{field_name} must be at least {min_size}x{min_size}", field=field_name)
    if square and n_rows != width:
        raise InvalidInput(f"{field_name} must be square (got {n_rows}x{width})", field=field_name)
    if odd and (n_rows % 2 == 0 or width % 2 == 0):
        raise InvalidInput(
            f"{field_name} is {n_rows}x{width}: kernel sizes must be odd (1, 3, 5, ... {max_rows}) so the "
            "kernel has a centre pixel",
            field=field_name,
        )
    return np.array(rows, dtype=np.float64)


# ------------------------------------------------------------------------------------- playground


@dataclass(frozen=True)
class PlaygroundParams:
    """Everything the matrix playground (and POST /api/v1/convolve) takes."""

    input: NDArray[np.float64]
    kernel: NDArray[np.float64]
    padding: str = "none"
    amount: int = 0
    stride: int = 1
    dilation: int = 1
    flip: bool = False
    relu: bool = False
    pool: str | None = None
    pool_size: int = 2
    pool_stride: int | None = None


@dataclass(frozen=True)
class PlaygroundOutcome:
    """A playground run: the convolution, its steps, and the ReLU / pooling / flatten stages."""

    params: PlaygroundParams
    result: ConvResult
    steps: list[CellStep]
    relu_output: NDArray[np.float64] | None
    pool_source: NDArray[np.float64]
    pooled: pooling.PoolResult | None
    windows: list[pooling.PoolWindow]
    flattened: NDArray[np.float64]

    @property
    def final(self) -> NDArray[np.float64]:
        """The last stage's grid (what is flattened)."""
        if self.pooled is not None:
            return np.asarray(self.pooled.output, dtype=np.float64)
        return self.pool_source


def run_playground(params: PlaygroundParams, with_steps: bool = True) -> PlaygroundOutcome:
    """Convolve, write out every cell, then ReLU -> pool -> flatten as asked."""
    with domain_errors():
        res = convolution.convolve(
            params.input,
            params.kernel,
            padding=params.padding,
            amount=params.amount,
            stride=params.stride,
            dilation=params.dilation,
            flip=params.flip,
        )
        steps = convolution.all_steps(res) if with_steps else []
        relu_out = np.asarray(pooling.relu(res.output), dtype=np.float64) if params.relu else None
        source = relu_out if relu_out is not None else res.output
        pooled = None
        windows: list[pooling.PoolWindow] = []
        if params.pool is not None:
            pooled = pooling.pool(source, params.pool, params.pool_size, params.pool_stride)
            windows = pooling.pool_windows(source, pooled)
        final = np.asarray(pooled.output if pooled is not None else source, dtype=np.float64)
    return PlaygroundOutcome(
        params=params,
        result=res,
        steps=steps,
        relu_output=relu_out,
        pool_source=source,
        pooled=pooled,
        windows=windows,
        flattened=np.asarray(pooling.flatten(final), dtype=np.float64),
    )


def list_presets() -> list[lecture_presets.LecturePreset]:
    return lecture_presets.list_presets()


def get_preset(name: str) -> lecture_presets.LecturePreset:
    try:
        return lecture_presets.get_preset(name)
    except KeyError:
        names = [p.name for p in lecture_presets.list_presets()]
        raise NotFound(f"no preset called {name!r}", field="preset", choices=names) from None


# ---------------------------------------------------------------------------------------- kernels


def list_kernels() -> list[kernels.NamedKernel]:
    return kernels.list_kernels()


def get_kernel(name: str, field_name: str = "name") -> kernels.NamedKernel:
    try:
        return kernels.get_kernel(name)
    except KeyError:
        raise InvalidInput(
            f"no kernel called {name!r}; see GET /api/v1/kernels",
            field=field_name,
            choices=sorted(kernels.KERNELS),
        ) from None


@dataclass(frozen=True)
class KernelRequest:
    """A kernel asked for by name or given as weights (2-D, or 3-D with one grid per channel)."""

    name: str | None = None
    weights: object | None = None
    label: str | None = None
    channel_weights: Sequence[float] | None = None


def resolve_kernel(req: KernelRequest, index: int, channels: int, mode: str) -> KernelInput:
    """Library name or explicit odd-sized weights (1..11) -> a core KernelInput, errors name the field."""
    fld = f"kernels.{index}"
    if req.weights is not None and req.name:
        raise InvalidInput(
            "give a kernel name or its weights, not both (use label to name your own weights)",
            field=f"{fld}.name",
        )
    if req.weights is None:
        if not req.name:
            raise InvalidInput("give a kernel name or its weights", field=f"{fld}.name")
        named = get_kernel(req.name, f"{fld}.name")
        w: NDArray[np.float64] = named.weights
        label = req.label or named.title
    else:
        data = req.weights
        is_3d = (
            isinstance(data, Sequence)
            and len(data) > 0
            and isinstance(data[0], Sequence)
            and len(data[0]) > 0
            and isinstance(data[0][0], Sequence)
            and not isinstance(data[0][0], str)
        )
        if is_3d:
            assert isinstance(data, Sequence)
            if mode != "3d":
                raise InvalidInput("3-D kernel weights need mode '3d'", field=f"{fld}.weights")
            if len(data) != channels:
                raise InvalidInput(
                    f"a 3-D kernel needs one grid per image channel ({channels}), got {len(data)}",
                    field=f"{fld}.weights",
                )
            grids = [
                to_matrix(
                    g, f"{fld}.weights.{d}", max_rows=MAX_FILTER_KERNEL, max_cols=MAX_FILTER_KERNEL, odd=True
                )
                for d, g in enumerate(data)
            ]
            if any(g.shape != grids[0].shape for g in grids):
                raise InvalidInput(
                    "every depth slice of a 3-D kernel must have the same size", field=f"{fld}.weights"
                )
            w = np.stack(grids)
        else:
            w = to_matrix(
                data, f"{fld}.weights", max_rows=MAX_FILTER_KERNEL, max_cols=MAX_FILTER_KERNEL, odd=True
            )
        label = req.label or req.name or f"custom {w.shape[-2]}x{w.shape[-1]}"
    if req.channel_weights is not None:
        if mode != "3d" or w.ndim != 2:
            raise InvalidInput(
                "channel_weights apply to a 2-D kernel in mode '3d'", field=f"{fld}.channel_weights"
            )
        cw = [parse_number(v, f"{fld}.channel_weights.{i}") for i, v in enumerate(req.channel_weights)]
        if len(cw) != channels:
            raise InvalidInput(
                f"channel_weights needs {channels} numbers (one per channel)", field=f"{fld}.channel_weights"
            )
        w = np.stack([c * w for c in cw])
        label = f"{label} [{', '.join(convolution.format_number(c) for c in cw)}]"
    return KernelInput(name=label, weights=w)


# ----------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class FilterParams:
    image_id: str
    kernels: list[KernelRequest]
    mode: str = "grey"
    padding: str = "reflect"
    stride: int = 1
    flip: bool = False
    relu: bool = False
    pool: str | None = None
    pool_size: int = 2
    pool_stride: int | None = None
    magnitude: bool = False
    scale: str = "each"
    limits: str = "robust"
    max_side: int | None = None
    # How the answer is encoded ("json", "png", "npy", or "page" for the HTML lab) and which map it holds:
    # the limits count what that answer costs.
    format: str = "json"
    index: int | None = None


@dataclass(frozen=True)
class FeatureMap:
    """One displayed map ``(H, W)`` float32 with its colour limits and summary numbers."""

    index: int
    label: str
    kernel: str
    channel: str | None
    values: NDArray[np.float32]
    vmin: float
    vmax: float
    cmap: str

    @property
    def signed(self) -> bool:
        return self.cmap == SIGNED_CMAP

    def stats(self) -> dict[str, float]:
        v = self.values
        return {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean())}


@dataclass(frozen=True)
class FilterOutcome:
    image_id: str
    image: NDArray[np.float32]
    original_shape: tuple[int, ...]
    mode: str
    kernels: list[KernelInput]
    maps: list[FeatureMap]
    notes: list[str] = field(default_factory=list)
    params: FilterParams | None = None


# Bytes an answer's encoding holds per output value on top of the maps, by format: JSON text as row strings,
# joined, then encoded (~10 B each); a PNG grid (RGB canvas 3 B, PIL's 4-byte pixels, the compressed bytes);
# the page's per-map PNGs and their base64 text; .npy is streamed map by map from the maps themselves.
ENCODING_BYTES_PER_VALUE: dict[str, int] = {"json": 32, "png": 12, "page": 12, "npy": 0}
# Images whose float32 pixels are larger than this are never decoded whole for filtering: PIL decodes them
# in 8/16 bits and shrinks them to the filtered size first. Worst case there is the upload limit (36 MP)
# at PIL's 4 bytes per RGB pixel, 137 MiB, plus the file itself, before any filtering starts.
FULL_DECODE_BYTES = 48 * 2**20
# Shrunk images are kept for the next request (the lab re-filters the same picture as settings change).
SHRUNK_CACHE_BYTES = 48 * 2**20


def display_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """``(H, W)`` after scaling the longer side down to ``max_side`` (never up), as :func:`_downscale` does."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _downscale(image: NDArray[np.float32], max_side: int) -> NDArray[np.float32]:
    """Antialiased bilinear downscale so the longer side is ``max_side`` (never upscales)."""
    h, w = image.shape[:2]
    size = display_size(h, w, max_side)
    return image if size == (h, w) else _resize_exact(image, size)


def _resize_exact(image: NDArray[np.float32], size: tuple[int, int]) -> NDArray[np.float32]:
    """Antialiased bilinear resize of ``(H, W)`` or ``(H, W, C)`` to ``size = (H', W')``, clipped to [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(image))
    t = t[None, None] if image.ndim == 2 else t.permute(2, 0, 1)[None]
    out = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    arr = out[0] if image.ndim == 2 else out.permute(1, 2, 0)
    return np.ascontiguousarray(arr.numpy().clip(0.0, 1.0))


class _ShrunkCache:
    """Shrunk images keyed by (image id, size): a cachetools LRU bounded in bytes, copies in and out."""

    def __init__(self, max_bytes: int) -> None:
        self._items: LRUCache[tuple[str, int, int], NDArray[np.float32]] = LRUCache(
            maxsize=max_bytes, getsizeof=lambda a: int(a.nbytes)
        )
        self._lock = threading.Lock()
        self._max_bytes = max_bytes

    def get(self, key: tuple[str, int, int]) -> NDArray[np.float32] | None:
        with self._lock:
            arr = self._items.get(key)
            return None if arr is None else arr.copy()

    def put(self, key: tuple[str, int, int], arr: NDArray[np.float32]) -> None:
        if arr.nbytes > self._max_bytes // 2:
            return
        with self._lock:
            self._items[key] = arr.copy()


_SHRUNK = _ShrunkCache(SHRUNK_CACHE_BYTES)

# EXIF orientation -> the transpose that puts the picture upright (what ImageOps.exif_transpose does).
_EXIF_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _decode_shrunk(data: bytes, label: str, size: tuple[int, int]) -> NDArray[np.float32] | None:
    """Decode with PIL straight to ``size = (H, W)`` (8/16-bit pixels, shrunk before the float conversion),
    converting modes as the image store does. None when PIL cannot do it (DICOM, TIFF only tifffile reads).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(imageio.PIL_FORMATS))
    except Exception:
        return None
    with im:
        try:
            if im.format == "TIFF" and imageio._pil_would_lose_bits(im):
                return None
            fmt = imageio.FORMAT_NAMES.get((im.format or "").lower(), im.format or "")
            try:
                orientation = int(im.getexif().get(imageio.EXIF_ORIENTATION_TAG, 1) or 1)
            except Exception:
                orientation = 1
            # (width, height) as stored in the file: a 90-degree EXIF turn swaps them
            target = (size[0], size[1]) if orientation in (5, 6, 7, 8) else (size[1], size[0])
            if im.format == "JPEG":
                im.draft(im.mode, target)  # JPEG decodes at 1/2, 1/4 or 1/8 scale directly
            im.seek(0)
            im.load()
            picture: Image.Image = im
            # Palettes cannot be resampled (only nearest): expand them first; every other mode is shrunk as
            # stored (CMYK, 16-bit, ...) and converted once small, as the store's decode would convert it.
            if picture.mode in ("P", "PA"):
                alpha = picture.mode == "PA" or "transparency" in picture.info
                picture = picture.convert("RGBA" if alpha else "RGB")
            elif picture.mode == "1":
                picture = picture.convert("L")
            try:
                small = picture.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
            except ValueError:  # a mode PIL cannot resample
                small = picture.convert("RGB").resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
            del picture
            if orientation in _EXIF_TRANSPOSE:
                small = small.transpose(_EXIF_TRANSPOSE[orientation])
            pixels, _ = imageio._convert_mode(small, fmt, label)
        except (OSError, ValueError, SyntaxError, EOFError):
            return None
    return np.ascontiguousarray(pixels, dtype=np.float32)


def load_filter_image(store: ImageStore, record: ImageRecord, size: tuple[int, int]) -> NDArray[np.float32]:
    """The image's float32 pixels at ``size = (H, W)`` with bounded memory.

    Small images come from the store (decoded whole, cached) and are resized with torch; large ones are
    decoded by PIL and shrunk before the float conversion, so a 36 MP upload never exists as float32.
    """
    full_bytes = 4 * record.width * record.height * record.channels
    if full_bytes <= FULL_DECODE_BYTES:
        # Every pixel (load() would give the working copy, reduced past working_image_side).
        image = store.load_full(record.id)
        return image if image.shape[:2] == size else _resize_exact(image, size)
    key = (record.id, size[0], size[1])
    cached = _SHRUNK.get(key)
    if cached is not None:
        return cached
    pixels = _decode_shrunk(store.read_bytes(record.id), record.name, size)
    if pixels is None:
        raise OverLimit(
            f"this {record.kind.upper()} image ({record.width}x{record.height}) cannot be shrunk while "
            f"decoding, and decoding it whole would take {full_bytes / 2**20:.0f} MiB; the filter lab decodes "
            f"files of this kind up to {FULL_DECODE_BYTES / 2**20:.0f} MiB of pixels. Upload a smaller copy.",
            field="image_id",
            limit="FULL_DECODE_BYTES",
            estimate=full_bytes,
            maximum=FULL_DECODE_BYTES,
        )
    # The store's mode is the contract (plans were made with its channel count).
    if record.channels == 1 and pixels.ndim == 3:
        pixels = convolution.to_grey(pixels)
    elif record.channels == 3 and pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[:2] != size:
        pixels = _resize_exact(pixels, size)
    _SHRUNK.put(key, pixels)
    return pixels


def check_filter_limits(
    plan: convolution.FilterPlan, params: FilterParams, settings: Settings, channels: int
) -> None:
    """Refuse (OverLimit, naming the setting) a filter whose output, JSON or working memory is past a limit.

    Called with the plan (shapes only), before the image is decoded or anything is convolved.
    """
    n_maps = len(plan.map_shapes)
    if params.index is not None and not 0 <= params.index < n_maps:
        raise InvalidInput(f"index must be between 0 and {n_maps - 1}", field="index")
    values = plan.output_values
    h, w = plan.map_shapes[0] if plan.map_shapes else (0, 0)
    if values > settings.max_filter_output_values:
        raise OverLimit(
            f"this filter would compute {values:,} output values ({n_maps} maps of about {h}x{w}); the limit "
            f"(max_filter_output_values) is {settings.max_filter_output_values:,}. Use fewer kernels, mode "
            "'grey' instead of 'per_channel', a stride or pooling, or a smaller max_side.",
            field="max_side" if params.max_side else "kernels",
            limit="max_filter_output_values",
            estimate=values,
            maximum=settings.max_filter_output_values,
        )
    answered = values
    if params.index is not None:
        mh, mw = plan.map_shapes[params.index]
        answered = max(0, mh) * max(0, mw)
    if params.format == "json" and answered > settings.max_json_values:
        raise OverLimit(
            f"a JSON answer would hold {answered:,} numbers; the limit (max_json_values) is "
            f"{settings.max_json_values:,}. Ask for format=npy (raw float32, loadable with numpy.load) or "
            "format=png, one map with index, or a smaller max_side.",
            field="format",
            limit="max_json_values",
            estimate=answered,
            maximum=settings.max_json_values,
        )
    working = plan.working_bytes(channels) + ENCODING_BYTES_PER_VALUE.get(params.format, 32) * answered
    if working > settings.max_filter_working_bytes:
        raise OverLimit(
            f"this filter would need about {working / 2**20:.0f} MiB of memory; the limit "
            f"(max_filter_working_bytes) is {settings.max_filter_working_bytes / 2**20:.0f} MiB. Use a smaller "
            + (
                "image size, fewer kernels or mode 'grey'."
                if params.format == "page"
                else "max_side, fewer kernels, or format=npy."
            ),
            field="max_side" if params.max_side else "kernels",
            limit="max_filter_working_bytes",
            estimate=working,
            maximum=settings.max_filter_working_bytes,
        )


def run_filter(store: ImageStore, params: FilterParams) -> FilterOutcome:
    """Plan and check the output size, load the image at its filtered size, filter, then ReLU / pool /
    magnitude for display.

    Everything that could make the work large (image size, display downsampling, maps x pixels, the answer's
    encoding) is computed from the stored record and the kernels' shapes and checked against Settings
    before a pixel is decoded.
    """
    if not params.kernels:
        raise InvalidInput("give at least one kernel", field="kernels")
    if len(params.kernels) > MAX_KERNELS:
        raise InvalidInput(f"at most {MAX_KERNELS} kernels at once", field="kernels")
    settings = store.settings
    record = store.get(params.image_id)
    channels = record.channels
    side = params.max_side
    auto_side = side is None and max(record.width, record.height) > settings.filter_display_side
    if auto_side:
        side = settings.filter_display_side
    size = display_size(record.height, record.width, side)
    notes: list[str] = []
    if size != (record.height, record.width):
        why = (
            f" (images larger than {settings.filter_display_side} px are shown at that size; "
            "ask for max_side to choose another)"
            if auto_side
            else ""
        )
        notes.append(
            f"The image was downscaled from {record.width}x{record.height} to {size[1]}x{size[0]} pixels "
            f"before filtering{why}."
        )
    if channels == 1 and params.mode != "grey":
        notes.append("The image is greyscale (one channel), so per-channel and 3-D filtering equal 'grey'.")
    resolved = [resolve_kernel(k, i, channels, params.mode) for i, k in enumerate(params.kernels)]
    plan = convolution.plan_filter(
        size[0],
        size[1],
        channels,
        [k.weights.shape for k in resolved],
        mode=params.mode,
        padding=params.padding,
        stride=params.stride,
        pool_size=params.pool_size if params.pool is not None else None,
        pool_stride=params.pool_stride,
    )
    check_filter_limits(plan, params, settings, channels)
    image = load_filter_image(store, record, size)
    original_shape = (
        (record.height, record.width) if channels == 1 else (record.height, record.width, channels)
    )
    with domain_errors():
        result = convolution.apply_kernels(
            image, resolved, mode=params.mode, padding=params.padding, stride=params.stride, flip=params.flip
        )
        arrays: list[NDArray[np.float32]] = []
        for m in result.maps:
            # in place where the size is kept: the maps are the bulk of this request's memory
            a = np.maximum(m, 0, out=m) if params.relu else m
            if params.pool is not None:
                a = np.asarray(pooling.pool(a, params.pool, params.pool_size, params.pool_stride).output)
            arrays.append(np.abs(a, out=a) if params.magnitude else a)
        result.maps.clear()
    signed = not params.magnitude and not params.relu
    cmap = SIGNED_CMAP if signed else MAGNITUDE_CMAP
    robust = params.limits == "robust"
    limits = [_limits(a, signed, robust) for a in arrays]
    if params.scale == "shared":
        shared = (min(lo for lo, _ in limits), max(hi for _, hi in limits))
        limits = [shared] * len(arrays)
    notes.append(_padding_note(params.padding))
    notes.append(_scale_note(params.scale, robust, signed))
    maps = [
        FeatureMap(
            index=i,
            label=result.labels[i],
            kernel=resolved[result.kernel_index[i]].name,
            channel=result.channel[i],
            values=a.astype(np.float32, copy=False),
            vmin=limits[i][0],
            vmax=limits[i][1],
            cmap=cmap,
        )
        for i, a in enumerate(arrays)
    ]
    if params.relu:
        notes.append("ReLU set every negative value to 0, so the maps use a sequential colour map from 0.")
    return FilterOutcome(params.image_id, image, original_shape, params.mode, resolved, maps, notes, params)


# Robust colour limits: this percentile of |value| (of value for maps that are never negative).
ROBUST_PERCENTILE = 99.0


def _limits(values: NDArray[np.floating], signed: bool, robust: bool = False) -> tuple[float, float]:
    """Colour limits of one map: symmetric around 0 for signed maps, from 0 otherwise.

    Full: the largest |value|. Robust: its 99th percentile, so that a thin frame or a few extreme pixels (a
    Laplacian's response to a zero-padded border) do not push everything else to the middle colour; values
    past the limit are drawn at the end colour. A percentile of 0 (a map that is mostly zero) falls back to the
    full range.
    """
    # The maps are finite (apply_kernels refuses overflow), so plain reductions need no masked copy.
    if not values.size:
        return (-1.0, 1.0) if signed else (0.0, 1.0)
    peak = max(abs(float(values.min())), abs(float(values.max()))) if signed else float(values.max())
    bound = peak
    if robust:
        # |value| only for signed maps: the others are >= 0 already (ReLU, magnitude), no copy needed
        sample = np.abs(values) if signed else values
        bound = float(np.percentile(sample, ROBUST_PERCENTILE))
        if not bound > 0:
            bound = peak
    bound = bound if bound > 0 else 1.0
    return (-bound, bound) if signed else (0.0, bound)


def _padding_note(padding: str) -> str:
    what = convolution.PADDING_DESCRIPTIONS.get(padding, "")
    return f"Padding: {padding}" + (f": {what}." if what else ".")


def _scale_note(scale: str, robust: bool, signed: bool) -> str:
    which = "one scale shared by all maps" if scale == "shared" else "each map on its own scale"
    if robust:
        of = "|value|" if signed else "value"
        how = (
            f"colour limits at the {ROBUST_PERCENTILE:g}th percentile of {of}, so the most extreme 1 % of "
            "pixels are drawn at the end colour"
        )
    else:
        how = (
            "colour limits at the full range (the largest |value|)"
            if signed
            else "colour limits at the maximum"
        )
    return f"Colours: {which}, {how}."


def select_maps(outcome: FilterOutcome, index: int | None) -> list[FeatureMap]:
    if index is None:
        return outcome.maps
    if not 0 <= index < len(outcome.maps):
        raise InvalidInput(f"index must be between 0 and {len(outcome.maps) - 1}", field="index")
    return [outcome.maps[index]]


def map_picture(fm: FeatureMap, min_side: int = 0) -> NDArray[np.uint8]:
    """A map coloured with its limits -> uint8 ``(H, W, 3)``, blown up to about ``min_side`` if small."""
    img = colorize(fm.values, fm.cmap, fm.vmin, fm.vmax)
    side = max(fm.values.shape)
    if min_side and side < min_side:
        img = upscale_nearest(img, max(1, min_side // side))
    return img


def maps_png(outcome: FilterOutcome, index: int | None = None, ncols: int | None = None) -> bytes:
    """One map, or all of them side by side in a grid, as PNG bytes.

    Each map is coloured straight into its place on one RGB canvas (no separate tiles), so a grid costs
    the canvas, PIL's copy of it and the compressed bytes.
    """
    chosen = select_maps(outcome, index)
    if len(chosen) == 1:
        return encode_png(map_picture(chosen[0]))
    n = len(chosen)
    per_row = ncols or (3 if outcome.mode == "per_channel" and n % 3 == 0 else min(4, n))
    per_row = max(1, min(per_row, n))
    rows = -(-n // per_row)
    pad = 4
    h = max(m.values.shape[0] for m in chosen)
    w = max(m.values.shape[1] for m in chosen)
    canvas = np.full((rows * h + (rows - 1) * pad, per_row * w + (per_row - 1) * pad, 3), 255, np.uint8)
    for i, m in enumerate(chosen):
        r, c = divmod(i, per_row)
        y, x = r * (h + pad), c * (w + pad)
        mh, mw = m.values.shape
        canvas[y : y + mh, x : x + mw] = colorize(m.values, m.cmap, m.vmin, m.vmax)
    return encode_png(canvas)


def maps_npy(outcome: FilterOutcome, index: int | None = None) -> bytes:
    """The raw map values as .npy: ``(N, H, W)`` float32 (or ``(H, W)`` with ``index``)."""
    return b"".join(maps_npy_chunks(outcome, index))


def maps_npy_chunks(outcome: FilterOutcome, index: int | None = None) -> Iterator[bytes]:
    """The same .npy as :func:`maps_npy` in pieces (header, then one map at a time), for streaming:
    the maps are never stacked or copied whole."""
    chosen = select_maps(outcome, index)
    shapes = {m.values.shape for m in chosen}
    if len(shapes) != 1:
        raise InvalidInput(
            "the maps have different sizes (padding 'none' with kernels of different sizes); ask for one "
            "with index",
            field="index",
        )
    h, w = chosen[0].values.shape
    shape = (h, w) if index is not None else (len(chosen), h, w)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": shape},
    )
    return _npy_body(header.getvalue(), [m.values for m in chosen])


def _npy_body(header: bytes, arrays: list[NDArray[np.float32]]) -> Iterator[bytes]:
    yield header
    for a in arrays:
        yield np.ascontiguousarray(a, dtype="<f4").tobytes()


def _decimals(values: NDArray[np.floating], digits: int = 5) -> int:
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    return max(0, digits - (math.floor(math.log10(peak)) + 1) if peak > 0 else digits)


def rounded(values: NDArray[np.floating], digits: int = 5) -> list[list[float]]:
    """Values rounded to about ``digits`` significant figures, so JSON stays compact."""
    out: list[list[float]] = np.round(values.astype(np.float64), _decimals(values, digits)).tolist()
    return out


def _values_json(values: NDArray[np.floating], digits: int = 5) -> str:
    """``rounded(values)`` as JSON text, built one row at a time (never a list of all Python floats)."""
    decimals = _decimals(values, digits)
    rows = (json.dumps(np.round(row.astype(np.float64), decimals).tolist()) for row in values)
    return "[" + ",".join(rows) + "]"


def maps_json(outcome: FilterOutcome, index: int | None = None, with_values: bool = True) -> dict[str, Any]:
    """The API twin's JSON body (see FilterResponse)."""
    chosen = select_maps(outcome, index)
    params = outcome.params or FilterParams(outcome.image_id, [])
    return {
        "image_id": outcome.image_id,
        "mode": outcome.mode,
        "padding": params.padding,
        "scale": params.scale,
        "limits": params.limits,
        "input_shape": list(outcome.image.shape),
        "original_shape": list(outcome.original_shape),
        "kernels": [
            {"name": k.name, "shape": list(k.weights.shape), "weights": k.weights.tolist()}
            for k in outcome.kernels
        ],
        "maps": [
            {
                "index": m.index,
                "label": m.label,
                "kernel": m.kernel,
                "channel": m.channel,
                "shape": list(m.values.shape),
                **m.stats(),
                "vmin": m.vmin,
                "vmax": m.vmax,
                "cmap": m.cmap,
                "values": rounded(m.values) if with_values else None,
            }
            for m in chosen
        ],
        "notes": outcome.notes,
    }


def maps_json_bytes(outcome: FilterOutcome, index: int | None = None) -> bytes:
    """:func:`maps_json` serialised, with each map's values written as text row by row (about 10 bytes a
    number instead of ~60 for Python floats in lists, then validated and encoded again)."""
    body = maps_json(outcome, index, with_values=False)
    chosen = select_maps(outcome, index)
    parts: list[str] = []
    for meta, m in zip(body.pop("maps"), chosen, strict=True):
        meta.pop("values")
        parts.append(json.dumps(meta)[:-1] + ',"values":' + _values_json(m.values) + "}")
    head = json.dumps(body)
    return (head[:-1] + ',"maps":[' + ",".join(parts) + "]}").encode()


# ------------------------------------------------------------------------------------------- cost


def cost(
    height: int,
    width: int,
    channels: int = 1,
    fc_outputs: int | None = None,
    filters: int = 1,
    kernel: int = 3,
    stride: int = 1,
    padding: int | None = None,
) -> conv_cost.CostComparison:
    with domain_errors():
        return conv_cost.compare_costs(height, width, channels, fc_outputs, filters, kernel, stride, padding)


def cost_presets() -> list[conv_cost.CostPreset]:
    return conv_cost.COST_PRESETS
