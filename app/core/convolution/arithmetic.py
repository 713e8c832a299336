"""Discrete 2-D convolution written out the way the lecture teaches it: multiply and sum.

Two entry points:

* :func:`convolve` works on small matrices (the playground, the lecture's worked examples). It keeps the
  padded input and the effective kernel so that :func:`cell_step` can write out, for any output cell,
  the window, every product and the sum, e.g. ``(4 x 0) + (0 x 0) + ... + (-4 x 2) = -8``.
* :func:`apply_kernels` filters a whole image (greyscale, per RGB channel, or with a 3-D kernel whose
  depth equals the number of channels) with torch ``conv2d`` and returns a stack of signed feature maps.

Deep-learning libraries compute *cross-correlation* (the kernel is slid over the input as it is); the
mathematical convolution of the lecture's integral flips the kernel first. ``flip=True`` selects the
latter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

PaddingMode = Literal["none", "zeros", "reflect", "replicate", "circular"]
PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)
FilterMode = Literal["grey", "per_channel", "3d"]
FILTER_MODES: tuple[str, ...] = get_args(FilterMode)

# numpy.pad names for each mode; torch's names differ ("constant" vs "zeros"), see _TORCH_PAD.
_NUMPY_PAD: dict[str, str] = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}
_TORCH_PAD: dict[str, str] = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
}

PADDING_DESCRIPTIONS: dict[str, str] = {
    "none": "no padding: the kernel only visits positions where it fits, so the output shrinks",
    "zeros": "a border of zeros around the input",
    "reflect": "the border mirrors the input without repeating the edge pixel (3 2 | 1 2 3 | 2 1)",
    "replicate": "the edge pixel is repeated outwards (1 1 | 1 2 3 | 3 3)",
    "circular": "the input wraps around, as if tiled (2 3 | 1 2 3 | 1 2)",
}

FLIP_SENTENCE = (
    "Cross-correlation slides the kernel over the input as it is (what deep-learning libraries such as "
    "PyTorch call convolution); true convolution, the lecture's integral f(τ)·g(t−τ), first flips the "
    "kernel upside down and left to right, so the two differ unless the kernel is symmetric."
)


class ConvolutionError(ValueError):
    """A request the arithmetic cannot satisfy; ``field`` names the offending input for the UI/API."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def format_number(value: float) -> str:
    """Short, exact-looking text for a number: ``30``, ``-0.25``, ``1.333``; never ``-0``."""
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if abs(v - round(v)) < 1e-9:
        r = round(v)
        return str(0 if r == 0 else r)
    text = f"{v:.4g}"
    return "0" if text in {"-0", "0"} else text


def output_size(n: int, k: int, padding: int, stride: int, dilation: int) -> int:
    """Output length along one axis: ``floor((n + 2p - d(k-1) - 1) / s) + 1`` (PyTorch's formula)."""
    return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1


@dataclass(frozen=True)
class SizeFormula:
    """The output-size formula for one axis, symbolic and with the current numbers."""

    axis: str
    n: int
    k: int
    padding: int
    stride: int
    dilation: int
    result: int
    symbolic: str
    substituted: str

    def as_dict(self) -> dict[str, object]:
        return {
            "axis": self.axis,
            "n": self.n,
            "k": self.k,
            "padding": self.padding,
            "stride": self.stride,
            "dilation": self.dilation,
            "result": self.result,
            "symbolic": self.symbolic,
            "substituted": self.substituted,
        }


def size_formula(axis: str, n: int, k: int, padding: int, stride: int, dilation: int) -> SizeFormula:
    """Write the output-size formula for one axis with its numbers, e.g.
    ``⌊(6 + 2·0 − 1·(3−1) − 1)/1⌋ + 1 = 4``."""
    result = output_size(n, k, padding, stride, dilation)
    sym_n = "H" if axis == "rows" else "W"
    symbolic = f"⌊({sym_n} + 2p − d·(k−1) − 1) / s⌋ + 1"
    substituted = (
        f"⌊({n} + 2·{padding} − {dilation}·({k}−1) − 1) / {stride}⌋ + 1"
        f" = ⌊{n + 2 * padding - dilation * (k - 1) - 1} / {stride}⌋ + 1 = {result}"
    )
    return SizeFormula(axis, n, k, padding, stride, dilation, result, symbolic, substituted)


def pad_array(x: NDArray[np.float64], mode: str, amount: int) -> NDArray[np.float64]:
    """Pad the last two axes of ``(H, W)`` or ``(C, H, W)`` by ``amount`` on every side
    -> ``(..., H+2a, W+2a)``.

    Raises :class:`ConvolutionError` when the mode cannot pad that much (reflection needs ``amount < size``,
    circular ``amount <= size``, the same limits as ``torch.nn.functional.pad``).
    """
    if mode not in PADDING_MODES:
        raise ConvolutionError(
            f"unknown padding mode {mode!r}; choose one of {', '.join(PADDING_MODES)}", "padding"
        )
    if amount < 0:
        raise ConvolutionError("padding amount must be 0 or more", "amount")
    if mode == "none" or amount == 0:
        return x
    h, w = x.shape[-2], x.shape[-1]
    if mode == "reflect" and amount >= min(h, w):
        raise ConvolutionError(
            f"reflection padding of {amount} needs an input larger than {amount} on each side "
            f"(input is {h}x{w})",
            "amount",
        )
    if mode == "circular" and amount > min(h, w):
        raise ConvolutionError(
            f"circular padding of {amount} cannot exceed the input size ({h}x{w})",
            "amount",
        )
    widths = [(0, 0)] * (x.ndim - 2) + [(amount, amount), (amount, amount)]
    return np.pad(x, widths, mode=_NUMPY_PAD[mode])  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True)
class ConvResult:
    """A convolution kept with everything needed to explain it cell by cell.

    ``padded`` is ``(H+2p, W+2p)`` or ``(C, H+2p, W+2p)``; ``kernel`` is the kernel as *applied* (already
    flipped for true convolution), ``(kh, kw)`` or ``(C, kh, kw)``; ``output`` is ``(OH, OW)``.
    """

    input: NDArray[np.float64]
    padded: NDArray[np.float64]
    kernel: NDArray[np.float64]
    given_kernel: NDArray[np.float64]
    output: NDArray[np.float64]
    padding: str
    amount: int
    stride: int
    dilation: int
    flip: bool
    formulas: tuple[SizeFormula, SizeFormula] = field(repr=False)

    @property
    def effective_amount(self) -> int:
        return 0 if self.padding == "none" else self.amount


@dataclass(frozen=True)
class CellStep:
    """One output cell written out: window position, values, weights, products and their sum."""

    row: int
    col: int
    # window cells in padded-input coordinates, row-major, one per kernel weight (per channel for 3-D)
    cells: list[tuple[int, int, int]]
    # the same cells in original-input coordinates, or None where the cell is padding
    source: list[tuple[int, int] | None]
    values: list[float]
    weights: list[float]
    products: list[float]
    total: float
    text: str

    def as_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "col": self.col,
            "cells": [list(c) for c in self.cells],
            "source": [list(s) if s is not None else None for s in self.source],
            "values": self.values,
            "weights": self.weights,
            "products": self.products,
            "total": self.total,
            "text": self.text,
        }


def _as_float_array(a: object, name: str) -> NDArray[np.float64]:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConvolutionError(f"{name} must be a grid of numbers", name) from exc
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = "".join(f".{int(i)}" for i in bad)
        raise ConvolutionError(f"{name}{where} is not a finite number", f"{name}{where}")
    return arr


def convolve(
    x: NDArray[np.float64] | list[list[float]],
    kernel: NDArray[np.float64] | list[list[float]],
    *,
    padding: str = "none",
    amount: int = 0,
    stride: int = 1,
    dilation: int = 1,
    flip: bool = False,
) -> ConvResult:
    """Cross-correlate (or, with ``flip``, convolve) ``x`` with ``kernel``.

    ``(H, W) * (kh, kw) -> (OH, OW)``, or ``(C, H, W) * (C, kh, kw) -> (OH, OW)`` (a 3-D kernel sums over
    channels, as one conv2d output channel does). ``amount`` is ignored when ``padding == "none"``.
    Raises :class:`ConvolutionError` (with the field to blame) for impossible combinations.
    """
    xa = _as_float_array(x, "input")
    ka = _as_float_array(kernel, "kernel")
    if xa.ndim not in (2, 3):
        raise ConvolutionError("input must be a 2-D grid (or 3-D: channels x rows x columns)", "input")
    if ka.ndim != xa.ndim:
        raise ConvolutionError(
            f"kernel must have as many dimensions as the input ({xa.ndim}-D), got {ka.ndim}-D", "kernel"
        )
    if xa.ndim == 3 and ka.shape[0] != xa.shape[0]:
        raise ConvolutionError(
            f"a 3-D kernel needs depth {xa.shape[0]} (the input's channels), got {ka.shape[0]}", "kernel"
        )
    if min(xa.shape) < 1 or min(ka.shape) < 1:
        raise ConvolutionError(
            "input and kernel must not be empty", "input" if min(xa.shape) < 1 else "kernel"
        )
    if stride < 1:
        raise ConvolutionError("stride must be at least 1", "stride")
    if dilation < 1:
        raise ConvolutionError("dilation must be at least 1", "dilation")
    amt = 0 if padding == "none" else amount
    padded = pad_array(xa, padding, amt)
    kh, kw = ka.shape[-2], ka.shape[-1]
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    ph, pw = padded.shape[-2], padded.shape[-1]
    if span_h > ph or span_w > pw:
        raise ConvolutionError(
            f"the kernel spans {span_h}x{span_w} cells (size {kh}x{kw}, dilation {dilation}) but the "
            f"{'padded ' if amt else ''}input is only {ph}x{pw}",
            "kernel",
        )
    applied = ka[..., ::-1, ::-1].copy() if flip else ka
    # All windows at once: (..., OH', OW', span_h, span_w), then take every stride-th window and every
    # dilation-th cell inside it.
    win = np.lib.stride_tricks.sliding_window_view(padded, (span_h, span_w), axis=(-2, -1))
    win = win[..., ::stride, ::stride, ::dilation, ::dilation]
    if xa.ndim == 2:
        out = np.einsum("ijkl,kl->ij", win, applied)
    else:
        out = np.einsum("cijkl,ckl->ij", win, applied)
    if not np.all(np.isfinite(out)):
        raise ConvolutionError("the numbers are too large: the products overflow to infinity", "kernel")
    formulas = (
        size_formula("rows", xa.shape[-2], kh, amt, stride, dilation),
        size_formula("columns", xa.shape[-1], kw, amt, stride, dilation),
    )
    assert out.shape == (formulas[0].result, formulas[1].result)
    return ConvResult(
        input=xa,
        padded=padded,
        kernel=applied,
        given_kernel=ka,
        output=np.ascontiguousarray(out),
        padding=padding,
        amount=amt,
        stride=stride,
        dilation=dilation,
        flip=flip,
        formulas=formulas,
    )


def _source_index(i: int, n: int, amount: int, mode: str) -> int | None:
    """Map a padded coordinate back to the input coordinate it copies (None for zero padding)."""
    j = i - amount
    if 0 <= j < n:
        return j
    if mode == "zeros":
        return None
    if mode == "replicate":
        return min(max(j, 0), n - 1)
    if mode == "circular":
        return j % n
    # reflect without repeating the edge: -1 -> 1, n -> n-2
    period = 2 * (n - 1)
    if period == 0:
        return 0
    j = j % period
    return j if j < n else period - j


def cell_step(result: ConvResult, row: int, col: int) -> CellStep:
    """Write out output cell ``(row, col)``: ``(w x v) + ... = total`` with weight first,
    as the lecture does."""
    oh, ow = result.output.shape
    if not (0 <= row < oh and 0 <= col < ow):
        raise ConvolutionError(f"output cell ({row}, {col}) is outside the {oh}x{ow} output", "cell")
    r0, c0 = row * result.stride, col * result.stride
    kh, kw = result.kernel.shape[-2], result.kernel.shape[-1]
    h, w = result.input.shape[-2], result.input.shape[-1]
    channels = result.input.shape[0] if result.input.ndim == 3 else 1
    padded = result.padded if result.padded.ndim == 3 else result.padded[None]
    kern = result.kernel if result.kernel.ndim == 3 else result.kernel[None]
    cells: list[tuple[int, int, int]] = []
    source: list[tuple[int, int] | None] = []
    values: list[float] = []
    weights: list[float] = []
    for c in range(channels):
        for a in range(kh):
            for b in range(kw):
                pr, pc = r0 + a * result.dilation, c0 + b * result.dilation
                cells.append((c, pr, pc))
                sr = _source_index(pr, h, result.amount, result.padding)
                sc = _source_index(pc, w, result.amount, result.padding)
                source.append(None if sr is None or sc is None else (sr, sc))
                values.append(float(padded[c, pr, pc]))
                weights.append(float(kern[c, a, b]))
    products = [wt * v for wt, v in zip(weights, values, strict=True)]
    total = float(result.output[row, col])
    terms = " + ".join(
        f"({format_number(wt)} x {format_number(v)})" for wt, v in zip(weights, values, strict=True)
    )
    text = f"{terms} = {format_number(total)}"
    return CellStep(row, col, cells, source, values, weights, products, total, text)


def all_steps(result: ConvResult) -> list[CellStep]:
    """Every output cell's step, row-major (the playground's Play order)."""
    oh, ow = result.output.shape
    return [cell_step(result, i, j) for i in range(oh) for j in range(ow)]


# --------------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class KernelInput:
    """A kernel to apply to an image: ``(k, k)`` (2-D) or ``(C, k, k)`` (3-D, depth = channels)."""

    name: str
    weights: NDArray[np.float64]


@dataclass(frozen=True)
class FilterResult:
    """Feature maps from :func:`apply_kernels`: ``maps`` is a list of ``(H', W')`` float32 arrays."""

    maps: list[NDArray[np.float32]]
    labels: list[str]
    kernel_index: list[int]
    channel: list[str | None]
    mode: str


_CHANNEL_NAMES = ("R", "G", "B")
# ITU-R BT.601 luma, the same weights PIL uses for convert("L"), so "grey" matches a greyscale upload.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def to_grey(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """``(H, W)`` or ``(H, W, 3)`` in [0, 1] -> ``(H, W)`` luminance."""
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    # three scaled adds: several times faster than tensordot over the interleaved last axis
    img = image.astype(np.float32, copy=False)
    grey = img[..., 0] * _LUMA[0]
    grey += img[..., 1] * _LUMA[1]
    grey += img[..., 2] * _LUMA[2]
    return grey


# conv2d on one large image holds far more than its output: oneDNN reorders input and output into
# channel blocks of 8-16, so one 2048x2048 single-channel 3x3 convolution peaks at about +316 MiB (measured).
# Convolving bands of at most this many output pixels keeps that overhead near BAND_BYTES.
BAND_OUTPUT_PIXELS = 1 << 18
# Measured peak of one band's conv2d (3 groups, the worst case): about 128 B per output pixel.
BAND_BYTES = 160 * BAND_OUTPUT_PIXELS


def _banded_conv2d(xp: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> NDArray[np.float32]:
    """``conv2d`` of a padded ``(1, C, H, W)`` input in bands of output rows -> ``(O, OH, OW)`` float32.

    Same numbers as one ``F.conv2d`` call (each output row sees the same input rows), bounded working memory.
    """
    k_h, k_w = weight.shape[-2], weight.shape[-1]
    oh = (xp.shape[-2] - k_h) // stride + 1
    ow = (xp.shape[-1] - k_w) // stride + 1
    out = np.empty((weight.shape[0], oh, ow), dtype=np.float32)
    rows = max(1, BAND_OUTPUT_PIXELS // max(1, ow))
    with torch.inference_mode():
        for r0 in range(0, oh, rows):
            r1 = min(oh, r0 + rows)
            band = xp[:, :, r0 * stride : (r1 - 1) * stride + k_h, :]
            out[:, r0:r1, :] = F.conv2d(band, weight, stride=stride, groups=groups)[0].numpy()
    return out


def apply_kernels(
    image: NDArray[np.float32],
    kernels: list[KernelInput],
    *,
    mode: str = "grey",
    padding: str = "zeros",
    stride: int = 1,
    flip: bool = False,
) -> FilterResult:
    """Filter an image with one or more kernels (a "layer") -> one signed feature map per output.

    ``image`` is ``(H, W)`` or ``(H, W, C)`` float in [0, 1]. Modes:

    * ``grey``: the image is turned into luminance; each 2-D kernel gives one ``(H', W')`` map.
    * ``per_channel``: each 2-D kernel is applied to every channel separately (``C`` maps per kernel).
    * ``3d``: each kernel has depth ``C`` and sums over channels (one map per kernel); a 2-D kernel is
      used on every channel alike.

    Padding keeps the size (``(k-1)//2`` on each side, "same") unless ``padding == "none"`` (valid).
    Runs torch ``conv2d`` (cross-correlation; ``flip`` makes it true convolution).
    """
    if mode not in FILTER_MODES:
        raise ConvolutionError(f"unknown mode {mode!r}; choose one of {', '.join(FILTER_MODES)}", "mode")
    if padding not in PADDING_MODES:
        raise ConvolutionError(
            f"unknown padding mode {padding!r}; choose one of {', '.join(PADDING_MODES)}", "padding"
        )
    if stride < 1:
        raise ConvolutionError("stride must be at least 1", "stride")
    if not kernels:
        raise ConvolutionError("give at least one kernel", "kernels")
    img = image.astype(np.float32, copy=False)
    if mode == "grey":
        planes = to_grey(img)[None]
    elif img.ndim == 2:
        planes = img[None]
    else:
        planes = np.moveaxis(img, -1, 0)
    c = planes.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(planes)).unsqueeze(0)  # (1, C, H, W)
    h, w = planes.shape[-2], planes.shape[-1]
    maps: list[NDArray[np.float32]] = []
    labels: list[str] = []
    kidx: list[int] = []
    chans: list[str | None] = []
    for i, kin in enumerate(kernels):
        kw = np.asarray(kin.weights, dtype=np.float32)
        fld = f"kernels.{i}"
        if kw.ndim == 3 and mode != "3d":
            raise ConvolutionError(f"kernel {kin.name!r} is 3-D; use mode '3d' for kernels with depth", fld)
        if kw.ndim == 3 and kw.shape[0] != c:
            raise ConvolutionError(
                f"3-D kernel {kin.name!r} has depth {kw.shape[0]} but the image has {c} channel(s)", fld
            )
        if kw.ndim not in (2, 3):
            raise ConvolutionError(f"kernel {kin.name!r} must be 2-D or 3-D", fld)
        k_h, k_w = kw.shape[-2], kw.shape[-1]
        pad = 0 if padding == "none" else (k_h - 1) // 2
        pad_w = 0 if padding == "none" else (k_w - 1) // 2
        if k_h > h + 2 * pad or k_w > w + 2 * pad_w:
            raise ConvolutionError(
                f"kernel {kin.name!r} ({k_h}x{k_w}) is larger than the "
                f"{'padded ' if pad else ''}image ({h}x{w})",
                fld,
            )
        if padding == "reflect" and (pad >= h or pad_w >= w):
            raise ConvolutionError(
                f"reflection padding needs an image larger than {max(pad, pad_w)} pixels", fld
            )
        weight = torch.from_numpy((kw[..., ::-1, ::-1] if flip else kw).copy())
        xp = x if pad == 0 and pad_w == 0 else F.pad(x, (pad_w, pad_w, pad, pad), mode=_TORCH_PAD[padding])
        if mode == "3d":
            wt = weight if weight.ndim == 3 else weight.unsqueeze(0).expand(c, k_h, k_w)
            out = _banded_conv2d(xp, wt.unsqueeze(0).contiguous(), stride, groups=1)
            maps.append(out[0])
            labels.append(kin.name if weight.ndim == 3 else f"{kin.name} (x{c} depth)")
            kidx.append(i)
            chans.append(None)
        elif mode == "per_channel" and c > 1:
            wt = weight.unsqueeze(0).unsqueeze(0).expand(c, 1, k_h, k_w).contiguous()
            out = _banded_conv2d(xp, wt, stride, groups=c)
            for ch in range(c):
                maps.append(out[ch])
                name = _CHANNEL_NAMES[ch] if ch < len(_CHANNEL_NAMES) else str(ch)
                labels.append(f"{kin.name} · {name}")
                kidx.append(i)
                chans.append(name)
        else:
            out = _banded_conv2d(xp, weight.reshape(1, 1, k_h, k_w), stride, groups=1)
            maps.append(out[0])
            labels.append(kin.name)
            kidx.append(i)
            chans.append(None)
        del xp
    for i, m in enumerate(maps):
        if not np.all(np.isfinite(m)):
            raise ConvolutionError(
                "the kernel's weights are too large: the feature map overflows", f"kernels.{kidx[i]}"
            )
    return FilterResult(maps=maps, labels=labels, kernel_index=kidx, channel=chans, mode=mode)


# ------------------------------------------------------------------------------------- size estimates


@dataclass(frozen=True)
class FilterPlan:
    """What :func:`apply_kernels` (then ReLU and pooling) will produce, computed from shapes alone.

    ``map_shapes`` are the final ``(H', W')`` of every feature map in output order (after pooling);
    ``conv_shapes`` the same before pooling. A shape with a side below 1 means the run will be refused
    (kernel or pooling window larger than the map).
    """

    channels: int
    height: int
    width: int
    maps_per_kernel: list[int]
    conv_shapes: list[tuple[int, int]]
    map_shapes: list[tuple[int, int]]
    max_padded_values: int

    @property
    def output_values(self) -> int:
        """Numbers over all final maps (maps x output pixels)."""
        return sum(max(0, h) * max(0, w) for h, w in self.map_shapes)

    @property
    def conv_values(self) -> int:
        return sum(max(0, h) * max(0, w) for h, w in self.conv_shapes)

    def working_bytes(self, image_channels: int) -> int:
        """An upper estimate of the bytes filtering holds at its peak, not counting the answer's encoding:
        the float32 image and its planes, one kernel's padded input, one band of conv2d, every raw map
        and every pooled map.
        """
        image = 4 * self.height * self.width * image_channels
        planes = 4 * self.height * self.width * self.channels
        pooled = 4 * self.output_values if self.output_values != self.conv_values else 0
        return image + planes + 4 * self.max_padded_values + BAND_BYTES + 4 * self.conv_values + pooled


def plan_filter(
    height: int,
    width: int,
    channels: int,
    kernel_shapes: list[tuple[int, ...]],
    *,
    mode: str = "grey",
    padding: str = "zeros",
    stride: int = 1,
    pool_size: int | None = None,
    pool_stride: int | None = None,
) -> FilterPlan:
    """The shapes :func:`apply_kernels` and pooling will produce for an ``(H, W, C)`` image, without any pixels.

    Mirrors :func:`apply_kernels`: grey gives one map per kernel, per_channel ``C`` maps per kernel (when
    ``C > 1``), 3d one; padding other than "none" pads ``(k-1)//2`` per side ("same" for odd kernels);
    pooling (``pool_size`` given) is ``(n - size) // stride + 1`` per axis. Pure arithmetic: call it before
    loading or convolving anything.
    """
    planes = 1 if mode == "grey" else channels
    per_kernel = channels if mode == "per_channel" and channels > 1 else 1
    ps = pool_stride if pool_stride is not None else pool_size
    conv_shapes: list[tuple[int, int]] = []
    map_shapes: list[tuple[int, int]] = []
    counts: list[int] = []
    max_padded = 0
    for shape in kernel_shapes:
        k_h, k_w = int(shape[-2]), int(shape[-1])
        pad_h = 0 if padding == "none" else (k_h - 1) // 2
        pad_w = 0 if padding == "none" else (k_w - 1) // 2
        max_padded = max(max_padded, planes * (height + 2 * pad_h) * (width + 2 * pad_w))
        oh = output_size(height, k_h, pad_h, stride, 1)
        ow = output_size(width, k_w, pad_w, stride, 1)
        if pool_size is not None and ps is not None and oh >= 1 and ow >= 1:
            ph, pw = output_size(oh, pool_size, 0, ps, 1), output_size(ow, pool_size, 0, ps, 1)
        else:
            ph, pw = oh, ow
        counts.append(per_kernel)
        conv_shapes.extend([(oh, ow)] * per_kernel)
        map_shapes.extend([(ph, pw)] * per_kernel)
    return FilterPlan(planes, height, width, counts, conv_shapes, map_shapes, max_padded)
