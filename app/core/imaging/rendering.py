"""Turn arrays into pictures: colour maps, colour-bar gradients, grids, overlays, PNG and .npy bytes.

The only module that knows about colours. Everything else hands it plain arrays.
Signed maps use a diverging map centred on zero; magnitudes a perceptually uniform one (never jet).
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image

# Names offered to users -> matplotlib colour-map names. "rdbu" is reversed so that positive is red.
COLORMAPS: dict[str, str] = {
    "viridis": "viridis",
    "magma": "magma",
    "inferno": "inferno",
    "cividis": "cividis",
    "gray": "gray",
    "rdbu": "RdBu_r",
}
SEQUENTIAL_COLORMAPS = ("viridis", "magma", "inferno", "cividis", "gray")
DIVERGING_COLORMAP = "rdbu"

UInt8Image = NDArray[np.uint8]


@cache
def colormap_lut(cmap: str) -> UInt8Image:
    """A (256, 3) uint8 lookup table for one of COLORMAPS."""
    if cmap not in COLORMAPS:
        raise ValueError(f"unknown colour map {cmap!r}; choose one of {sorted(COLORMAPS)}")
    # matplotlib is imported lazily: only its colour tables are used, and only once per map.
    from matplotlib import colormaps

    table = colormaps[COLORMAPS[cmap]](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255).astype(np.uint8)


def signed_limits(values: NDArray[np.floating]) -> tuple[float, float]:
    """Limits symmetric around zero, so that zero sits in the middle of a diverging map."""
    finite = values[np.isfinite(values)]
    bound = float(np.max(np.abs(finite))) if finite.size else 0.0
    if bound == 0.0:
        bound = 1.0
    return -bound, bound


def value_limits(values: NDArray[np.floating]) -> tuple[float, float]:
    """(min, max) of the finite values; a flat map gets a unit-wide range around its value."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return lo - 0.5, lo + 0.5
    return lo, hi


def colorize(
    values: NDArray[np.floating],
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> UInt8Image:
    """Map a (H, W) array of numbers to a (H, W, 3) uint8 picture with a colour map.

    Without limits the map spans the data's own range (or, for "rdbu", a range symmetric about zero).
    """
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"colorize expects a 2-D array, got shape {arr.shape}")
    if vmin is None or vmax is None:
        lo, hi = signed_limits(arr) if cmap == DIVERGING_COLORMAP else value_limits(arr)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    span = vmax - vmin if vmax > vmin else 1.0
    # In float32 and in place: this runs for every map a page shows, so it is kept to a few passes.
    scaled = arr - np.float32(vmin)
    scaled *= np.float32(255.0 / span)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    scaled += np.float32(0.5)
    index = scaled.astype(np.uint8)
    return np.take(colormap_lut(cmap), index, axis=0)


def cmap_css_gradient(cmap: str, stops: int = 11) -> str:
    """A CSS linear-gradient (left = low, right = high) for an HTML colour bar."""
    lut = colormap_lut(cmap)
    parts = []
    for i in range(stops):
        r, g, b = lut[round(i * 255 / (stops - 1))]
        parts.append(f"rgb({r},{g},{b}) {100 * i / (stops - 1):.0f}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def to_uint8_image(img: NDArray[np.floating] | UInt8Image) -> UInt8Image:
    """A [0, 1] float image (H, W) or (H, W, C) -> uint8 (H, W, 3) for display."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"cannot display an array of shape {np.asarray(img).shape}")
    return np.ascontiguousarray(arr)


def resize_to(img: UInt8Image, size: tuple[int, int], smooth: bool = True) -> UInt8Image:
    """Resize a uint8 (H, W) or (H, W, 3) image to size=(H, W)."""
    height, width = size
    if img.shape[0] == height and img.shape[1] == width:
        return img
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(img).resize((width, height), resample))


def upscale_nearest(img: UInt8Image, factor: int) -> UInt8Image:
    """Blow up small maps with visible pixels (a 7x7 map stays 7x7 blocks)."""
    if factor <= 1:
        return img
    return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1)


def overlay(base: UInt8Image, heat_rgb: UInt8Image, alpha: float) -> UInt8Image:
    """Blend a heat map over an image; the heat map is resized bilinearly to the image's size.

    (H, W, 3) uint8, (h, w, 3) uint8 -> (H, W, 3) uint8.
    """
    alpha = float(np.clip(alpha, 0.0, 1.0))
    base_rgb = to_uint8_image(base)
    heat = resize_to(heat_rgb, (base_rgb.shape[0], base_rgb.shape[1]))
    mixed = (1.0 - alpha) * base_rgb.astype(np.float32) + alpha * heat.astype(np.float32)
    return np.round(mixed).astype(np.uint8)


def tile_grid(tiles: list[UInt8Image], ncols: int, pad: int = 2, pad_value: int = 255) -> UInt8Image:
    """Lay equally sized (h, w, 3) tiles out in rows of ncols with pad pixels between them."""
    if not tiles:
        raise ValueError("tile_grid needs at least one tile")
    rgb = [to_uint8_image(t) for t in tiles]
    h = max(t.shape[0] for t in rgb)
    w = max(t.shape[1] for t in rgb)
    ncols = max(1, min(ncols, len(rgb)))
    nrows = -(-len(rgb) // ncols)
    out = np.full((nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad, 3), pad_value, np.uint8)
    for i, tile in enumerate(rgb):
        r, c = divmod(i, ncols)
        y, x = r * (h + pad), c * (w + pad)
        out[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return out


def encode_png(img: NDArray[np.uint8]) -> bytes:
    """uint8 (H, W) or (H, W, 3) -> PNG bytes."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError("encode_png expects uint8; colour-map or scale the array first")
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def encode_npy(arr: np.ndarray) -> bytes:
    """An array as .npy bytes (loadable with numpy.load, no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(arr), allow_pickle=False)
    return buffer.getvalue()
