"""Occlusion sensitivity (Zeiler & Fergus 2014): hide a window, see how much the class probability drops.

The map at a pixel is the mean drop of the target probability over every window that covers it; the
window positions follow Captum's ``Occlusion`` (first window at 0, then every ``stride`` until the
image is covered, the last window cut off at the border), so the two agree number for number.

Speed: perturbations are evaluated in batches; each perturbed image is the input with one slice
assigned from the baseline (no full-size masks are built, unlike Captum's mask arithmetic), the batch
is laid out channels-last (faster CPU convolutions) and the forward runs under ``torch.inference_mode``.

Progressive mode evaluates the same windows in a coarse-to-fine order: first every ``s``-th window in
each direction (about a fifteenth of them), then every ``s/2``-th, ... then all; after each level the
missing windows are interpolated linearly from the evaluated ones, giving a usable coarse map early at
no extra cost. The final map is identical to the non-progressive one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.core.explanation.cam import CheckFn, ProgressFn
from app.core.models.hooks import eval_mode, model_lock

BASELINES = ("zeros", "mean", "blur")
BASELINE_NOTES = {
    "zeros": "the value 0 of the network's input (after normalisation: the training-set mean colour)",
    "mean": "the image's own mean value per channel",
    "blur": "a strongly blurred copy of the image (hides detail, keeps colour and brightness)",
}


@dataclass
class OcclusionResult:
    """``drops`` ``(ny, nx)``: probability drop per window; ``map`` ``(H, W)``: mean drop per pixel."""

    drops: np.ndarray
    map: np.ndarray
    target: int
    probability: float  # of the target on the unoccluded input (a logit when score is "logit")
    starts_y: list[int]
    starts_x: list[int]
    window: int
    stride: int
    baseline: str
    evaluated: int  # windows evaluated (all of them once finished)
    score: str = "probability"  # what ``drops`` measure: "probability" or "logit"


@dataclass
class PartialMap:
    """A progressive step: the map so far, the fraction of windows evaluated and the level's step."""

    map: np.ndarray
    drops: np.ndarray
    fraction: float
    step: int


PartialFn = Callable[[PartialMap], None]


@contextmanager
def evaluating(model: nn.Module, lock: AbstractContextManager[object] | None = None) -> Iterator[None]:
    """Around one forward: the caller's lock (if any), and eval mode for a model left in training mode.

    Only a model in training mode needs its flags touched (and then this module's per-model lock too).
    """
    with lock if lock is not None else nullcontext():
        if any(m.training for m in model.modules()):
            with model_lock(model), eval_mode(model):
                yield
        else:
            yield


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis, as Captum: ``ceil((size - window) / stride) + 1`` of them."""
    if window < 1 or stride < 1:
        raise ValueError("window and stride must be at least 1")
    if window > size:
        raise ValueError(f"window {window} is larger than the image side {size}")
    if stride > window and window < size:
        raise ValueError(f"stride {stride} larger than window {window} would leave pixels never hidden")
    count = math.ceil((size - window) / stride) + 1
    return [i * stride for i in range(count)]


def make_baseline(x: Tensor, kind: str, window: int = 16) -> Tensor:
    """The replacement values for hidden pixels: ``(1, C, H, W) -> (1, C, H, W)``.

    ``blur`` is a Gaussian blur with sigma of about a window, so a hidden patch carries no detail
    but no new edges either.
    """
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        return gaussian_blur(x, sigma=max(2.0, window / 2))
    raise KeyError(kind)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with reflect padding: ``(N, C, H, W) -> (N, C, H, W)``."""
    radius = max(1, int(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(coords**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    kx = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    ky = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    with torch.inference_mode():
        y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
        y = F.conv2d(y, kx, groups=c)
        y = F.pad(y, (0, 0, radius, radius), mode="reflect")
        y = F.conv2d(y, ky, groups=c)
    return y.clone()


def drops_to_map(
    drops: np.ndarray, starts_y: list[int], starts_x: list[int], window: int, size: tuple[int, int]
) -> np.ndarray:
    """Spread window drops back to pixels: ``(ny, nx) -> (H, W)``, each pixel the mean over its windows."""
    h, w = size
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    for i, y in enumerate(starts_y):
        for j, x in enumerate(starts_x):
            total[y : y + window, x : x + window] += drops[i, j]
            count[y : y + window, x : x + window] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


SCORES = ("logit", "probability")
# "auto" explains the logit when the top-1 probability is at least this (saturated: hiding barely moves it).
SATURATED = 0.99


def _probabilities(
    model: nn.Module,
    batch: Tensor,
    lock: AbstractContextManager[object] | None = None,
    score: str = "probability",
) -> Tensor:
    """Class scores ``(N, K)``: softmax probabilities, or the logits (the scores before softmax)."""
    with evaluating(model, lock), torch.inference_mode():
        logits = model(batch).float()
        return logits if score == "logit" else torch.softmax(logits, dim=1)


def _levels(ny: int, nx: int) -> list[int]:
    # Coarsest step: the smallest power of two whose sub-grid holds at most a twelfth of the windows.
    total = ny * nx
    s = 1
    while s < max(ny, nx) and math.ceil(ny / s) * math.ceil(nx / s) * 12 > total:
        s *= 2
    steps = []
    while s >= 1:
        steps.append(s)
        s //= 2
    return steps


def _fill_linear(drops: np.ndarray, step: int) -> np.ndarray:
    """Windows evaluated so far are those on the every-``step``-th grid; interpolate the others.

    Separable linear interpolation between evaluated neighbours (held constant past the last one):
    ``(ny, nx) -> (ny, nx)``. It tracks the full map better than copying the nearest value (on ResNet-18,
    correlation 0.60 vs 0.57 at the first level, 0.91 vs 0.84 at the second).
    """
    ny, nx = drops.shape
    ys = np.arange(0, ny, step)
    xs = np.arange(0, nx, step)
    known = drops[np.ix_(ys, xs)].astype(np.float64)
    rows = np.stack([np.interp(np.arange(nx), xs, row) for row in known])
    full = np.stack([np.interp(np.arange(ny), ys, col) for col in rows.T], axis=1)
    return full.astype(np.float32)


def occlusion(
    model: nn.Module,
    x: Tensor,
    target: int | None = None,
    *,
    window: int = 16,
    stride: int = 8,
    baseline: str = "zeros",
    batch_size: int = 64,
    progressive: bool = False,
    on_partial: PartialFn | None = None,
    progress: ProgressFn | None = None,
    check: CheckFn | None = None,
    lock: AbstractContextManager[object] | None = None,
    score: str = "probability",
) -> OcclusionResult:
    """Occlusion map of ``x`` ``(1, C, H, W)`` for class ``target`` (top-1 when None).

    ``score`` "probability" (default) measures drops of the softmax probability; "logit" drops of the
    class's logit, which still move where a saturated probability (p = 1.000) does not; "auto" the logit when
    the top-1 probability is at least :data:`SATURATED`, else the probability (the result says which).

    ``progress(fraction)`` and ``check()`` (which may raise to cancel) are called after every batch;
    in progressive mode ``on_partial`` gets the map after each coarse-to-fine level. ``lock`` (the
    caller's per-model lock) is held around each batch's forward only.
    Raises ValueError for a bad window/stride/target, KeyError for an unknown baseline.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError("occlusion takes one image (1, C, H, W)")
    _, _, h, w = x.shape
    starts_y = window_starts(h, window, stride)
    starts_x = window_starts(w, window, stride)
    base = make_baseline(x, baseline, window)
    ny, nx = len(starts_y), len(starts_x)
    logits0 = _probabilities(model, x, lock, "logit")[0]
    probs0 = torch.softmax(logits0, dim=0)
    if score == "auto":
        score = "logit" if float(probs0.max()) >= SATURATED else "probability"
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES} or 'auto'")
    p0 = logits0 if score == "logit" else probs0
    if target is None:
        target = int(p0.argmax())
    if not 0 <= target < p0.numel():
        raise ValueError(f"target {target} is not a class index in [0, {p0.numel() - 1}]")
    p_orig = float(p0[target])
    steps = _levels(ny, nx) if progressive else [1]
    done = np.zeros((ny, nx), dtype=bool)
    drops = np.zeros((ny, nx), dtype=np.float32)
    evaluated = 0
    for step in steps:
        grid = [(i, j) for i in range(0, ny, step) for j in range(0, nx, step) if not done[i, j]]
        for s in range(0, len(grid), batch_size):
            if check is not None:
                check()
            chunk = grid[s : s + batch_size]
            # channels_last: oneDNN's CPU convolutions run about 20% faster on it (bench/bench_explain.py).
            batch = x.repeat(len(chunk), 1, 1, 1).contiguous(memory_format=torch.channels_last)
            for b, (i, j) in enumerate(chunk):
                y0, x0 = starts_y[i], starts_x[j]
                batch[b, :, y0 : y0 + window, x0 : x0 + window] = base[
                    0, :, y0 : y0 + window, x0 : x0 + window
                ]
            probs = _probabilities(model, batch, lock, score)[:, target].numpy()
            for b, (i, j) in enumerate(chunk):
                drops[i, j] = p_orig - probs[b]
                done[i, j] = True
            evaluated += len(chunk)
            if progress is not None:
                progress(evaluated / (ny * nx))
        if on_partial is not None and step > 1:
            filled = _fill_linear(drops, step)
            on_partial(
                PartialMap(
                    map=drops_to_map(filled, starts_y, starts_x, window, (h, w)),
                    drops=filled,
                    fraction=evaluated / (ny * nx),
                    step=step,
                )
            )
    return OcclusionResult(
        drops=drops,
        map=drops_to_map(drops, starts_y, starts_x, window, (h, w)),
        target=target,
        probability=p_orig,
        starts_y=starts_y,
        starts_x=starts_x,
        window=window,
        stride=stride,
        baseline=baseline,
        evaluated=evaluated,
        score=score,
    )


@dataclass
class PatchResult:
    """Class probabilities ``(K,)`` before and after hiding one patch, and the patch box (y0, x0, y1, x1)."""

    before: np.ndarray
    after: np.ndarray
    box: tuple[int, int, int, int]
    score_before: np.ndarray | None = None  # (K,) in the score asked for (probabilities or logits)
    score_after: np.ndarray | None = None


def hide_patch(
    model: nn.Module,
    x: Tensor,
    cy: int,
    cx: int,
    *,
    window: int = 32,
    baseline: str = "zeros",
    lock: AbstractContextManager[object] | None = None,
    score: str = "probability",
) -> PatchResult:
    """Hide the ``window``-sized square centred at pixel (cy, cx) of ``x`` ``(1, C, H, W)``.

    The square is shifted to stay inside the image. One batched forward of 2 images.
    """
    _, _, h, w = x.shape
    if not (0 <= cy < h and 0 <= cx < w):
        raise ValueError(f"({cy}, {cx}) is outside the {h}x{w} input")
    window = max(1, min(window, h, w))
    y0 = min(max(0, cy - window // 2), h - window)
    x0 = min(max(0, cx - window // 2), w - window)
    base = make_baseline(x, baseline, window)
    hidden = x.clone()
    hidden[:, :, y0 : y0 + window, x0 : x0 + window] = base[:, :, y0 : y0 + window, x0 : x0 + window]
    logits = _probabilities(model, torch.cat([x, hidden]), lock, "logit")
    probs = torch.softmax(logits, dim=1).numpy()
    scores = probs if score == "probability" else logits.numpy()
    return PatchResult(
        before=probs[0],
        after=probs[1],
        box=(y0, x0, y0 + window, x0 + window),
        score_before=scores[0],
        score_after=scores[1],
    )


def top_k(probs: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` largest entries of ``(K,)`` as (index, probability), largest first."""
    order = np.argsort(-probs, kind="stable")[: max(1, min(k, len(probs)))]
    return [(int(i), float(probs[i])) for i in order]
