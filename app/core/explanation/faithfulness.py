"""Deletion and insertion scores (Petsiuk et al. 2018, RISE, arXiv:1806.07421): does a map point at
what the network really uses?

Deletion: hide the pixels the map ranks highest first (replace them with zeros of the network's input)
and follow the target probability; a faithful map makes it fall fast, so a LOW area under the curve is
good. Insertion: start from a blurred image and put back the highest-ranked pixels first; a faithful map
makes the probability rise fast, so a HIGH area is good. Both are compared with the same scores for a
random map, which any method worth using must beat.

Two protocols, named in every result (the numbers depend on them: on the same map RISE's insertion AUC
can be twice the other's):

- ``"rise"`` (default), the RISE authors' own (their ``evaluation.py``): insertion starts from the input
  convolved with ``gkern(klen=11, nsig=5)`` (zero padding), each step changes 224 pixels at 224x224
  (scaled to the input's area: ``round(H * W / 224)`` pixels, so always about 224 steps), deletion
  replaces with zero, pixels are ordered by ``np.flip(np.argsort(map))`` (ties: the later pixel in
  raster order first, with a stable sort) and the AUC is theirs: ``(sum - first/2 - last/2) / (n - 1)``.
- ``"convscope"``, this app's earlier protocol: ``steps`` equal slices of the pixels, insertion from a
  Gaussian blur of sigma 8 px (reflect padding), ties broken by a seeded random order, AUC by the
  trapezoid rule over the fraction of pixels.

All perturbed images of a curve are built with one broadcast comparison against a rank image and
evaluated in batches under ``torch.inference_mode``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from torch import Tensor, nn

from app.core.explanation.cam import CheckFn
from app.core.explanation.occlusion import evaluating, make_baseline

Protocol = Literal["rise", "convscope"]
PROTOCOLS: dict[str, str] = {
    "rise": (
        "RISE (Petsiuk et al. 2018, the authors' code): insertion from a blur with gkern(klen=11, nsig=5), "
        "224 px per step at 224x224 (scaled to the input's area), deletion to zero"
    ),
    "convscope": (
        "ConvScope's earlier protocol: equal slices of the pixels, insertion from a Gaussian blur of sigma 8 px, "
        "deletion to zero"
    ),
}
TIE_BREAKS: dict[str, str] = {
    "rise": "equal values: the later pixel in raster order first (stable sort, reversed, as in the RISE code)",
    "convscope": "equal values: a seeded random order (seed 0)",
}
DEFAULT_PROTOCOL: Protocol = "rise"
# The RISE code's settings: a 224x224 input, 224 pixels per step, blur kernel gkern(11, 5).
RISE_SIDE = 224
RISE_STEP = 224
RISE_KLEN = 11
RISE_NSIG = 5.0


@dataclass
class FaithfulnessResult:
    """Curves ``(n + 1,)`` of the target probability against the fraction of pixels changed."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float  # lower is better
    insertion_auc: float  # higher is better
    protocol: str = DEFAULT_PROTOCOL
    step_pixels: int = 0  # pixels changed per step (the last step may change fewer)

    @property
    def steps(self) -> int:
        return len(self.fractions) - 1

    @property
    def tie_break(self) -> str:
        return TIE_BREAKS[self.protocol]


def gkern(klen: int = RISE_KLEN, nsig: float = RISE_NSIG) -> np.ndarray:
    """The RISE code's blur kernel ``(klen, klen)``: a centred delta smoothed by ``gaussian_filter(·, nsig)``
    (scipy's defaults: reflect mode, truncate 4), so it sums to 1 but is flatter than a plain Gaussian."""
    delta = np.zeros((klen, klen))
    delta[klen // 2, klen // 2] = 1.0
    return np.asarray(gaussian_filter(delta, nsig), dtype=np.float32)


def rise_blur(x: Tensor, klen: int = RISE_KLEN, nsig: float = RISE_NSIG) -> Tensor:
    """``(N, C, H, W)`` convolved channel by channel with :func:`gkern`, zero padding ``klen // 2`` (RISE)."""
    c = x.shape[1]
    kernel = torch.from_numpy(gkern(klen, nsig)).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    with torch.inference_mode():
        return F.conv2d(x, kernel, padding=klen // 2, groups=c).clone()


def rise_step_pixels(size: tuple[int, int]) -> int:
    """Pixels per step: 224 at 224x224, scaled with the input's area (at least 1)."""
    h, w = size
    return max(1, round(RISE_STEP * h * w / (RISE_SIDE * RISE_SIDE)))


def rise_auc(curve: np.ndarray) -> float:
    """The RISE code's AUC: trapezoid rule over equally spaced steps, x from 0 to 1."""
    arr = np.asarray(curve, dtype=np.float64)
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def _upsampled(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    if tuple(t.shape[2:]) == tuple(size):
        return t[0, 0].numpy().copy()
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def pixel_ranks(
    saliency: np.ndarray, size: tuple[int, int], seed: int = 0, protocol: Protocol = "convscope"
) -> np.ndarray:
    """Rank of every input pixel, 0 = most salient: ``(h, w) -> (H, W)`` int64.

    The map is upsampled bilinearly to the input size. Ties (ReLU'd maps have many zeros; Eigen-CAM can
    leave half the pixels equal) are broken as the protocol says (:data:`TIE_BREAKS`).
    """
    up = _upsampled(saliency, size).ravel()
    if protocol == "rise":
        order = np.flip(np.argsort(up, kind="stable"))
    else:
        tie = np.random.default_rng(seed).random(up.size)
        order = np.lexsort((tie, -up))
    ranks = np.empty(up.size, dtype=np.int64)
    ranks[order] = np.arange(up.size)
    return ranks.reshape(size)


def protocol_steps(protocol: Protocol, size: tuple[int, int], steps: int) -> int:
    """How many steps a curve has: ``steps`` for convscope, ceil(H * W / step pixels) for RISE."""
    if protocol == "rise":
        h, w = size
        return math.ceil(h * w / rise_step_pixels(size))
    return steps


def _curve(
    model: nn.Module,
    start: Tensor,
    end: Tensor,
    ranks: Tensor,
    counts: Tensor,
    target: int,
    batch_size: int,
    check: CheckFn | None,
    lock: AbstractContextManager[object] | None,
) -> np.ndarray:
    # Image i takes ``end`` at the counts[i] top-ranked pixels and ``start`` elsewhere.
    probs = []
    for s in range(0, len(counts), batch_size):
        if check is not None:
            check()
        masks = (ranks[None, None] < counts[s : s + batch_size, None, None, None]).to(start.dtype)
        # channels_last: faster CPU convolutions for the batch.
        batch = (start * (1 - masks) + end * masks).contiguous(memory_format=torch.channels_last)
        with evaluating(model, lock), torch.inference_mode():
            probs.append(torch.softmax(model(batch).float(), dim=1)[:, target])
    return torch.cat(probs).numpy().astype(np.float32)


def deletion_insertion(
    model: nn.Module,
    x: Tensor,
    saliency: np.ndarray,
    target: int,
    *,
    protocol: Protocol = DEFAULT_PROTOCOL,
    steps: int = 16,
    batch_size: int = 33,
    seed: int = 0,
    check: CheckFn | None = None,
    lock: AbstractContextManager[object] | None = None,
) -> FaithfulnessResult:
    """Deletion and insertion curves of map ``saliency`` ``(h, w)`` for ``x`` ``(1, C, H, W)``.

    ``protocol`` ``"rise"``: the RISE authors' (``steps`` is ignored: about 224 steps); ``"convscope"``:
    ``steps`` equal slices. ``2 * (n + 1)`` forwards for ``n`` steps. ``lock`` is held around each batch.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    _, _, h, w = x.shape
    ranks = torch.from_numpy(pixel_ranks(saliency, (h, w), seed, protocol))
    if protocol == "rise":
        step_px = rise_step_pixels((h, w))
        n = protocol_steps(protocol, (h, w), steps)
        counts = torch.clamp(torch.arange(n + 1) * step_px, max=h * w).long()
        deleted = torch.zeros_like(x)
        blurred = rise_blur(x)
    else:
        counts = torch.round(torch.linspace(0, h * w, steps + 1)).long()
        step_px = math.ceil(h * w / steps)
        deleted = make_baseline(x, "zeros")
        blurred = make_baseline(x, "blur")
    fractions = (counts.double() / (h * w)).numpy()
    deletion = _curve(model, x, deleted, ranks, counts, target, batch_size, check, lock)
    insertion = _curve(model, blurred, x, ranks, counts, target, batch_size, check, lock)
    if protocol == "rise":
        del_auc, ins_auc = rise_auc(deletion), rise_auc(insertion)
    else:
        del_auc = float(np.trapezoid(deletion, fractions))
        ins_auc = float(np.trapezoid(insertion, fractions))
    return FaithfulnessResult(
        fractions=fractions.astype(np.float32),
        deletion=deletion,
        insertion=insertion,
        deletion_auc=del_auc,
        insertion_auc=ins_auc,
        protocol=protocol,
        step_pixels=step_px,
    )


def evaluate_maps(
    model: nn.Module,
    x: Tensor,
    maps: Mapping[str, np.ndarray],
    target: int,
    *,
    protocol: Protocol = DEFAULT_PROTOCOL,
    steps: int = 16,
    seed: int = 0,
    check: CheckFn | None = None,
    lock: AbstractContextManager[object] | None = None,
) -> dict[str, FaithfulnessResult]:
    """:func:`deletion_insertion` for every map in ``maps`` (name -> ``(h, w)``), same settings for all."""
    return {
        name: deletion_insertion(
            model, x, m, target, protocol=protocol, steps=steps, seed=seed, check=check, lock=lock
        )
        for name, m in maps.items()
    }
