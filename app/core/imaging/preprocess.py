"""Image -> the exact tensor a model sees, with a human account of every step.

torchvision's ImageNet preprocessing resizes the shorter side (e.g. to 256 px) and then keeps only the centre
(e.g. 224 x 224). Done literally, a 10000 x 1 image becomes 256 x 2,560,000 pixels (7.5 GB) before the crop
throws almost all of it away. Here the resize is computed only for the pixels that survive the crop, from only
the input pixels that feed them: each output pixel is the same weighted sum of input pixels that torch's
antialiased `interpolate` forms (same filter, same support, same normalisation), so the result equals
`weights.transforms()` (a test checks it) while every tensor stays the size of the model input, or of the
input's part that matters. Every intermediate's element count is estimated from the shapes before anything
is allocated, and refused past a limit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from numpy.typing import NDArray

from app.core.models.zoo import Preprocessing
from app.errors import OverLimit

# ITU-R BT.601 luma, the weights PIL uses for RGB -> L.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
LIMIT_SETTING = "max_preprocess_elements"

# How an image that is not the model's shape becomes its input: "crop" is the model's own transform (for
# torchvision models: shorter side resized, centre kept, so a wide image loses its sides); "fit" resizes the
# longer side to the input size, keeping the aspect ratio, and pads the rest with zeros (nothing is lost).
Fit = Literal["crop", "fit"]
FITS: tuple[str, ...] = get_args(Fit)


@dataclass
class PreparedInput:
    """The network's input and what to show about it."""

    tensor: torch.Tensor  # (1, C, H, W) float32, normalised
    shown: NDArray[np.uint8]  # (H, W, 3): the tensor de-normalised back to [0, 255] for display
    steps: list[str]
    fit: Fit = "crop"  # which geometry made the tensor (see Fit)


def match_channels(tensor: torch.Tensor, channels: int) -> tuple[torch.Tensor, str | None]:
    """Make a (C, H, W) tensor have `channels` channels; say what was done (None if nothing)."""
    have = tensor.shape[0]
    if have == channels:
        return tensor, None
    if have == 1 and channels == 3:
        return tensor.expand(3, -1, -1).clone(), "greyscale copied into the 3 colour channels (R = G = B)"
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=tensor.dtype).view(3, 1, 1)
        return (tensor * weights).sum(
            0, keepdim=True
        ), "colour converted to greyscale (0.299 R + 0.587 G + 0.114 B)"
    raise ValueError(f"cannot turn {have} channels into {channels}")


# --- the geometry: which input pixels feed which output pixels, with which weights ---------------------------


@dataclass(frozen=True)
class AxisPlan:
    """One image axis: `in_size` input pixels -> `resized` (the full resize, never built) -> `crop` kept.

    Output position t (0 <= t < crop) is resized position `offset + t`; positions outside [0, resized) are
    the centre crop's zero padding. Kept positions are `first` .. `first + kept - 1`; kept position i is
    `sum_k weight[i, k] * input[start + lo[i] + k]` for k < count[i].
    """

    in_size: int
    resized: int
    crop: int
    offset: int
    first: int
    start: int  # the input pixels read are start .. stop - 1
    stop: int
    lo: NDArray[np.int64]  # (kept,), relative to start
    count: NDArray[np.int64]  # (kept,)
    weight: NDArray[np.floating]  # (kept, taps)

    @property
    def kept(self) -> int:
        return int(self.lo.shape[0])

    @property
    def taps(self) -> int:
        return int(self.weight.shape[1])

    @property
    def trimmed(self) -> bool:
        """Whether part of the input along this axis is never read (it would be cropped away)."""
        return self.start > 0 or self.stop < self.in_size


_F32 = np.float32
# Input axes up to this many pixels get torch's float32 weights exactly; longer ones (only absurd strips) float64.
FLOAT32_EXACT_SIZE = 1 << 16


def _filter(mode: str, x: NDArray[np.floating]) -> NDArray[np.floating]:
    """torch's antialiasing filters in x's precision (aten UpSampleKernel: triangle; Keys cubic, a = -0.5)."""
    real = x.dtype.type
    x = np.abs(x)
    one, two = real(1.0), real(2.0)
    if mode == "bilinear":
        return np.where(x < one, one - x, real(0.0)).astype(real)
    a = real(-0.5)
    near = ((a + two) * x - (a + real(3.0))) * x * x + one
    far = ((a * x - real(5.0) * a) * x + real(8.0) * a) * x - real(4.0) * a
    return np.where(x < one, near, np.where(x < two, far, real(0.0))).astype(real)


def _taps_needed(mode: str, in_size: int, resized: int) -> int:
    """How many input pixels one output pixel may read (torch's max_interp_size), without building anything."""
    if mode not in ("bilinear", "bicubic"):
        return 1
    scale = in_size / resized
    support = (1.0 if mode == "bilinear" else 2.0) * max(scale, 1.0)
    return min(math.ceil(support) * 2 + 1, in_size)


def plan_axis(in_size: int, resized: int, crop: int, offset: int, mode: str) -> AxisPlan:
    """Weights of torch's antialiased resize (align_corners=False) for the kept positions of one axis.

    Mirrors aten's `_compute_indices_min_size_weights_aa` step by step in float32, as torch computes it for
    float images (so the sums match to rounding): centre = scale * (i + 0.5), support = half the filter's
    width times max(scale, 1), taps from trunc(centre - support + 0.5) to trunc(centre + support + 0.5),
    weights normalised to sum 1. "nearest" mirrors `nearest_idx`: floor(i * scale). Past FLOAT32_EXACT_SIZE
    input pixels float32 centres drift by whole pixels (torch's would too), so those axes use float64.
    """
    real: type[np.floating] = _F32 if in_size <= FLOAT32_EXACT_SIZE else np.float64
    first = max(0, -offset)
    positions = np.arange(max(offset, 0), min(offset + crop, resized), dtype=np.int64)
    scale = real(real(in_size) / real(resized))
    if mode in ("nearest", "nearest-exact"):
        if resized == in_size:
            src = positions
        else:
            shift = 0.5 if mode == "nearest-exact" else 0.0
            src = np.floor((positions + shift).astype(_F32) * scale).astype(np.int64)
        lo = np.minimum(src, in_size - 1)
        count = np.ones_like(lo)
        weight = np.ones((lo.shape[0], 1), dtype=real)
    elif mode in ("bilinear", "bicubic"):
        half = real(1.0 if mode == "bilinear" else 2.0)  # half the filter's width at scale 1
        support = real(half * scale) if scale >= 1.0 else half
        invscale = real(real(1.0) / scale) if scale >= 1.0 else real(1.0)
        centre = (np.float64(scale) * (positions + 0.5)).astype(real)
        # astype(int64) truncates toward zero, like the C++ cast it mirrors.
        lo = np.maximum(((centre - support).astype(np.float64) + 0.5).astype(np.int64), 0)
        hi = np.minimum(((centre + support).astype(np.float64) + 0.5).astype(np.int64), in_size)
        count = np.maximum(hi - lo, 0)
        taps = max(1, int(count.max(initial=1)))
        k = np.arange(taps)
        offsets = ((k[None, :] + lo[:, None]).astype(real) - centre[:, None]).astype(np.float64)
        weight = _filter(mode, ((offsets + 0.5) * np.float64(invscale)).astype(real))
        weight = np.where(k[None, :] < count[:, None], weight, real(0.0)).astype(real)
        total = np.zeros(weight.shape[0], dtype=real)
        for j in range(taps):  # summed in order, in float32, as torch does
            total = (total + weight[:, j]).astype(real)
        weight = np.divide(weight, total[:, None], out=np.zeros_like(weight), where=total[:, None] != 0)
    else:
        raise ValueError(f"unsupported interpolation {mode!r}")
    if lo.size:
        start, stop = int(lo.min()), int((lo + count).max())
    else:  # nothing kept (all padding): read nothing
        start, stop = 0, 0
    return AxisPlan(in_size, resized, crop, offset, first, start, stop, lo - start, count, weight)


def resized_size(height: int, width: int, prep: Preprocessing, fit: Fit = "crop") -> tuple[int, int]:
    """(H, W) after the resize step, as torchvision computes it (shorter side to an int, or a fixed size).

    fit="fit": the largest size with the image's aspect ratio that fits inside the model input (the longer
    side, relative to the input, becomes the input's; at least 1 px each way).
    """
    if fit == "fit":
        crop_h, crop_w = prep.crop_size
        scale = min(crop_h / height, crop_w / width)
        return max(1, min(crop_h, round(height * scale))), max(1, min(crop_w, round(width * scale)))
    if prep.direct_resize:
        return prep.crop_size
    if isinstance(prep.resize_size, int):
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = prep.resize_size, int(prep.resize_size * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    return prep.resize_size


def _crop_offset(resized: int, crop: int) -> int:
    """torchvision's centre crop: zero padding (floor half before) when too small, else round((n - c) / 2)."""
    if crop > resized:
        return -((crop - resized) // 2)
    # round() is Python's (half to even), as in torchvision.
    return round((resized - crop) / 2.0)


@dataclass(frozen=True)
class Plan:
    """The two axes, the pass order, and the largest tensor (elements) preprocessing will allocate."""

    rows: AxisPlan
    cols: AxisPlan
    rows_first: bool
    largest: int


def _check(sizes: list[tuple[int, str]], limit: int | None, height: int, width: int) -> int:
    largest, what = max(sizes)
    if limit is not None and largest > limit:
        raise OverLimit(
            f"Preparing this {width} x {height} px image for the model would build {what} with {largest:,} "
            f"values, more than the limit of {limit:,} ({LIMIT_SETTING}). Use an image with a less extreme "
            "shape or size.",
            field="image_id",
            limit=LIMIT_SETTING,
            estimate=largest,
            maximum=limit,
        )
    return largest


def plan(
    height: int,
    width: int,
    channels: int,
    prep: Preprocessing,
    limit: int | None = None,
    convert: bool = False,
    fit: Fit = "crop",
) -> Plan:
    """Everything preprocessing will do to an (H, W, C) image, sized before anything is allocated.

    Raises OverLimit when any tensor it would build has more than `limit` elements.
    """
    mode = prep.interpolation
    crop_h, crop_w = prep.crop_size
    new_h, new_w = resized_size(height, width, prep, fit)
    # The weight tables are (kept x taps): size them before building them (a 36 M-px row has long filters).
    _check(
        [
            (min(crop_h, new_h) * _taps_needed(mode, height, new_h), "the vertical resize weights"),
            (min(crop_w, new_w) * _taps_needed(mode, width, new_w), "the horizontal resize weights"),
        ],
        limit,
        height,
        width,
    )
    rows = plan_axis(height, new_h, crop_h, _crop_offset(new_h, crop_h), mode)
    cols = plan_axis(width, new_w, crop_w, _crop_offset(new_w, crop_w), mode)
    span_h, span_w = rows.stop - rows.start, cols.stop - cols.start
    rows_first_size = rows.kept * span_w * channels
    cols_first_size = span_h * cols.kept * channels
    rows_first = rows_first_size <= cols_first_size
    # Each pass reads, per output line, a slab of up to `taps` input lines (copied when not contiguous).
    if rows_first:
        slabs = rows.taps * span_w * channels, cols.taps * rows.kept * channels
    else:
        slabs = cols.taps * span_h * channels, rows.taps * cols.kept * channels
    sizes = [
        (min(rows_first_size, cols_first_size), "the image resized along one axis"),
        (max(slabs), "the input lines one resized line is computed from"),
        (max(channels, prep.in_channels) * crop_h * crop_w, "the model input"),
    ]
    if convert:
        sizes.append((span_h * span_w * channels, "the image converted to 32-bit floats"))
    largest = _check(sizes, limit, height, width)
    return Plan(rows, cols, rows_first, largest)


def _resample(x: torch.Tensor, axis: int, ax: AxisPlan) -> torch.Tensor:
    """(H, W, C) -> the same with `axis` replaced by the kept positions: a weighted sum over each one's taps.

    Each kept position reads one contiguous slab of at most `taps` input lines, so no temporary is larger
    than (taps x the other axis x C).
    """
    lines = x if axis == 0 else x.transpose(0, 1)
    out = torch.empty((ax.kept, *lines.shape[1:]), dtype=torch.float32)
    weight = torch.from_numpy(ax.weight).to(x.dtype)
    for i, (lo, count) in enumerate(zip(ax.lo.tolist(), ax.count.tolist(), strict=True)):
        out[i] = torch.tensordot(weight[i, :count], lines[lo : lo + count], dims=1)
    return out if axis == 0 else out.transpose(0, 1)


def _as_tensor(span: NDArray[np.generic]) -> torch.Tensor:
    """A zero-copy tensor over an (h, w, C) numpy view where possible (float32/float64, positive strides)."""
    if span.dtype not in (np.float32, np.float64) or any(s < 0 for s in span.strides):
        span = np.asarray(span, dtype=np.float32).copy()
    with warnings.catch_warnings():
        # Read-only arrays (broadcast views, memory maps) are fine: preprocessing never writes to its input.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(span)


def preprocess(
    image: NDArray[np.floating], prep: Preprocessing, limit: int | None = None, fit: Fit = "crop"
) -> PreparedInput:
    """Apply a model's preprocessing to an (H, W) or (H, W, C) [0, 1] image -> PreparedInput.

    fit="crop" (default): for torchvision models this equals `weights.transforms()` applied to the float
    tensor (a test checks it), but only the part of the image that survives the centre crop is ever resized.
    fit="fit": the whole image resized (same interpolation, aspect ratio kept) so that it fits the input,
    centred, the rest zero before normalisation. `limit` bounds the elements of every tensor built on the way
    (OverLimit naming max_preprocess_elements, before anything is allocated).
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, not {fit!r}")
    working_note = getattr(image, "working_note", None)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    height, width, channels = (int(n) for n in arr.shape)
    if height == 0 or width == 0:
        raise ValueError("the image has no pixels")
    convert = arr.dtype not in (np.float32, np.float64)
    steps = [
        f"input: {width} x {height} px, {channels} channel{'s' if channels > 1 else ''}, values in [0, 1]"
    ]
    if working_note:
        steps.insert(0, f"the stored image, {working_note}")
    the_plan = plan(height, width, channels, prep, limit, convert, fit)
    rows, cols = the_plan.rows, the_plan.cols
    crop_h, crop_w = prep.crop_size
    new_h, new_w = resized_size(height, width, prep, fit)
    trimmed = rows.trimmed or cols.trimmed
    if trimmed:
        steps.append(
            f"cropped first to {cols.stop - cols.start} x {rows.stop - rows.start} px at ({cols.start}, "
            f"{rows.start}): the part of the input that survives the centre crop, plus the resize filter's reach"
        )
    x = _as_tensor(arr[rows.start : rows.stop, cols.start : cols.stop])
    if the_plan.rows_first:
        x = _resample(_resample(x, 0, rows), 1, cols)
    else:
        x = _resample(_resample(x, 1, cols), 0, rows)
    # The crop's zero padding (only when the resized image is smaller than the crop).
    canvas = torch.zeros((crop_h, crop_w, channels), dtype=torch.float32)
    canvas[rows.first : rows.first + rows.kept, cols.first : cols.first + cols.kept] = x
    out = canvas.permute(2, 0, 1)
    if fit == "fit":
        around = new_h < crop_h or new_w < crop_w
        steps.append(
            f"fit (not the model's own crop): resized to {new_w} x {new_h} ({prep.interpolation}, aspect ratio "
            f"kept, nothing cut off)"
            + (f", centred on a {crop_w} x {crop_h} input with zero padding around it" if around else "")
        )
    elif prep.direct_resize:
        steps.append(f"resized to {crop_w} x {crop_h} ({prep.interpolation}, aspect ratio not kept)")
    else:
        if isinstance(prep.resize_size, int):
            resized = f"resized so the shorter side is {prep.resize_size} px ({prep.interpolation})"
        else:
            resized = f"resized to {new_w} x {new_h} ({prep.interpolation})"
        if trimmed:
            # Say what was computed, and that it is what the literal recipe would give.
            resized += (
                f", which makes the whole image {new_w} x {new_h}; only the pixels the centre crop keeps are "
                "computed (the same values as resizing everything, then cropping)"
            )
        else:
            resized += f" -> {new_w} x {new_h}"
        steps.append(resized)
        padded = (
            " (zero padding where the resized image is smaller)" if crop_h > new_h or crop_w > new_w else ""
        )
        steps.append(f"centre-cropped to {crop_w} x {crop_h}{padded}")
    # After the resize, so that a large greyscale image is not tripled first (copying commutes with resizing).
    out, converted = match_channels(out, prep.in_channels)
    if converted:
        steps.append(converted)
    shown_tensor = out.clamp(0, 1)
    out = TF.normalize(out.contiguous(), mean=list(prep.mean), std=list(prep.std))
    steps.append(
        "normalised per channel: (value - mean) / std with mean "
        + ", ".join(f"{m:g}" for m in prep.mean)
        + " and std "
        + ", ".join(f"{s:g}" for s in prep.std)
    )
    shown = np.round(shown_tensor.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    if shown.shape[2] == 1:
        shown = np.repeat(shown, 3, axis=2)
    return PreparedInput(tensor=out.unsqueeze(0).contiguous(), shown=shown, steps=steps, fit=fit)


def topk(logits: torch.Tensor, categories: list[str], k: int) -> list[tuple[int, str, float]]:
    """(1, K) logits -> the k most probable (index, label, probability), softmax over all classes."""
    probs = torch.softmax(logits.detach().float().reshape(-1), dim=0)
    k = max(1, min(k, probs.numel()))
    values, indices = probs.topk(k)
    out = []
    for p, i in zip(values.tolist(), indices.tolist(), strict=True):
        label = categories[i] if i < len(categories) else str(i)
        out.append((int(i), label, float(p)))
    return out
