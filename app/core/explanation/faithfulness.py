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

All perturbed images are built with one broadcast comparison against a rank image and evaluated in batches
under ``torch.inference_mode``; images that are equal (the first and last of every map, steps that only change
pixels where the two ends already agree, maps with the same order) are evaluated once, so the numbers are those
of one image at a time with fewer forwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
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


@dataclass
class _Setup:
    """What every map's curves share: the pixel counts of each step, the two curves' start and end images."""

    counts: np.ndarray  # (n + 1,) int64: pixels changed at each step
    step_px: int
    fractions: np.ndarray  # (n + 1,) float64
    ends: tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]  # (start, end) of deletion, then of insertion


def _setup(x: Tensor, protocol: Protocol, steps: int) -> _Setup:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}")
    if steps < 1:
        raise ValueError("steps must be at least 1")
    _, _, h, w = x.shape
    if protocol == "rise":
        step_px = rise_step_pixels((h, w))
        n = protocol_steps(protocol, (h, w), steps)
        counts = np.minimum(np.arange(n + 1, dtype=np.int64) * step_px, h * w)
        deleted = torch.zeros_like(x)
        blurred = rise_blur(x)  # once for every map and step
    else:
        counts = torch.round(torch.linspace(0, h * w, steps + 1)).long().numpy()
        step_px = math.ceil(h * w / steps)
        deleted = make_baseline(x, "zeros")
        blurred = make_baseline(x, "blur")
    fractions = counts.astype(np.float64) / (h * w)
    return _Setup(counts, step_px, fractions, ((x, deleted), (blurred, x)))


# 64-bit random labels of the pixels: the sum of the labels of a set of pixels names the set (a match is then
# checked pixel by pixel, so a collision can only cost a forward, never change a number).
def _pixel_labels(size: int) -> np.ndarray:
    return np.random.default_rng(12345).integers(0, 2**63, size=size, dtype=np.uint64)


def _run_curves(
    model: nn.Module,
    setup: _Setup,
    ranks: Mapping[str, np.ndarray],
    target: int,
    batch_size: int,
    check: CheckFn | None,
    lock: AbstractContextManager[object] | None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Deletion and insertion curves of every map (name -> pixel ranks ``(H, W)``): name -> (deletion, insertion).

    Image ``k`` of a curve takes ``end`` at the ``counts[k]`` top-ranked pixels and ``start`` elsewhere. Images
    that are equal are evaluated once: two steps (of one map, or of two maps) whose changed pixels differ only
    where ``start`` already equals ``end`` (a black background deleted to zero, a flat region inserted into its
    own blur, the first and last image of every map, two maps with the same order) give the same image, so the
    same score. The distinct images go through the network in batches of ``batch_size``, deletion and insertion
    and all maps mixed, so no batch is left part-empty at the end of each curve.
    """
    names = list(ranks)
    counts = setup.counts
    flat_ranks = {name: np.asarray(r).ravel() for name, r in ranks.items()}
    size = next(iter(flat_ranks.values())).size
    labels = _pixel_labels(size)
    # Unique images: (kind, map index, count) of the first of each; index of every (kind, map, step) into them.
    unique: list[tuple[int, int, int]] = []
    where: dict[tuple[int, int], np.ndarray] = {}
    for kind, (start, end) in enumerate(setup.ends):
        changing = (start != end).any(dim=1)[0].reshape(-1).numpy()  # pixels where the two images differ
        seen: dict[tuple[int, int], list[int]] = {}  # key -> unique images with it (index into ``unique``)

        def moved(mi: int, c: int, changing: np.ndarray = changing) -> np.ndarray:
            return (flat_ranks[names[mi]] < c) & changing

        for mi, name in enumerate(names):
            order = np.argsort(flat_ranks[name], kind="stable")  # pixel at each rank
            moves = changing[order]
            n_moved = np.concatenate([[0], np.cumsum(moves)])
            key_sum = np.concatenate([[0], np.cumsum(np.where(moves, labels[order], 0), dtype=np.uint64)])
            idx = np.empty(len(counts), dtype=np.int64)
            last: tuple[int, int] | None = None
            for k, c in enumerate(counts):
                key = (int(n_moved[c]), int(key_sum[c]))
                if key == last:  # same map, nothing that differs changed since the last step: the same image
                    idx[k] = idx[k - 1]
                    continue
                last = key
                same = seen.get(key, [])
                found = -1
                if same:  # checked pixel by pixel: a collision of the labels' sums can only cost a forward
                    mine = moved(mi, int(c))
                    found = next((u for u in same if np.array_equal(moved(*unique[u][1:]), mine)), -1)
                if found < 0:
                    found = len(unique)
                    unique.append((kind, mi, int(c)))
                    seen.setdefault(key, []).append(found)
                idx[k] = found
            where[(kind, mi)] = idx
    # Evaluate the distinct images in batches.
    rank_stack = torch.from_numpy(
        np.stack([flat_ranks[n] for n in names]).reshape(len(names), *ranks[names[0]].shape)
    )
    starts = torch.cat([setup.ends[0][0], setup.ends[1][0]])  # (2, C, H, W)
    ends = torch.cat([setup.ends[0][1], setup.ends[1][1]])
    kinds = torch.tensor([u[0] for u in unique], dtype=torch.long)
    maps_of = torch.tensor([u[1] for u in unique], dtype=torch.long)
    counts_of = torch.tensor([u[2] for u in unique], dtype=torch.long)
    probs = []
    for s in range(0, len(unique), batch_size):
        if check is not None:
            check()
        sl = slice(s, s + batch_size)
        masks = (rank_stack[maps_of[sl]] < counts_of[sl, None, None])[:, None].to(starts.dtype)
        st, en = starts[kinds[sl]], ends[kinds[sl]]
        # channels_last: faster CPU convolutions for the batch.
        batch = (st * (1 - masks) + en * masks).contiguous(memory_format=torch.channels_last)
        with evaluating(model, lock), torch.inference_mode():
            probs.append(torch.softmax(model(batch).float(), dim=1)[:, target])
        if progress is not None:
            progress(min(1.0, (s + batch_size) / len(unique)))
    values = torch.cat(probs).numpy().astype(np.float32)
    return {name: (values[where[(0, mi)]], values[where[(1, mi)]]) for mi, name in enumerate(names)}


def _result(
    setup: _Setup, protocol: Protocol, deletion: np.ndarray, insertion: np.ndarray
) -> FaithfulnessResult:
    if protocol == "rise":
        del_auc, ins_auc = rise_auc(deletion), rise_auc(insertion)
    else:
        del_auc = float(np.trapezoid(deletion, setup.fractions))
        ins_auc = float(np.trapezoid(insertion, setup.fractions))
    return FaithfulnessResult(
        fractions=setup.fractions.astype(np.float32),
        deletion=deletion,
        insertion=insertion,
        deletion_auc=del_auc,
        insertion_auc=ins_auc,
        protocol=protocol,
        step_pixels=setup.step_px,
    )


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
    ``steps`` equal slices. At most ``2 * (n + 1)`` forwards for ``n`` steps (equal images are evaluated once).
    ``lock`` is held around each batch.
    """
    return evaluate_maps(
        model, x, {"map": saliency}, target, protocol=protocol, steps=steps, batch_size=batch_size, seed=seed,
        check=check, lock=lock,
    )["map"]  # fmt: skip


def evaluate_maps(
    model: nn.Module,
    x: Tensor,
    maps: Mapping[str, np.ndarray],
    target: int,
    *,
    protocol: Protocol = DEFAULT_PROTOCOL,
    steps: int = 16,
    batch_size: int = 33,
    seed: int = 0,
    check: CheckFn | None = None,
    lock: AbstractContextManager[object] | None = None,
    progress: Callable[[float], None] | None = None,
) -> dict[str, FaithfulnessResult]:
    """:func:`deletion_insertion` for every map in ``maps`` (name -> ``(h, w)``), same settings for all.

    The blurred image, the step counts and each map's pixel order are computed once, and the images of all the
    curves share batches (equal images once: see :func:`_run_curves`). The numbers are those of one map at a time.
    ``progress(fraction)`` after each batch.
    """
    setup = _setup(x, protocol, steps)
    size = (int(x.shape[2]), int(x.shape[3]))
    ranks = {name: pixel_ranks(m, size, seed, protocol) for name, m in maps.items()}
    if not ranks:
        return {}
    curves = _run_curves(model, setup, ranks, target, max(1, batch_size), check, lock, progress)
    return {name: _result(setup, protocol, *curves[name]) for name in maps}
