"""Deletion and insertion scores (Petsiuk et al. 2018, RISE, arXiv:1806.07421): does a map point at
what the network really uses?

Deletion: hide the pixels the map ranks highest first (replace them with the baseline, zeros by
default) and follow the target probability; a faithful map makes it fall fast, so a LOW area under
the curve is good. Insertion: start from a blurred image and put back the highest-ranked pixels first;
a faithful map makes the probability rise fast, so a HIGH area is good. Both are compared with the same
scores for a random map, which any method worth using must beat.

All ``steps + 1`` perturbed images of a curve are built with one broadcast comparison against a rank
image and evaluated in batches under ``torch.inference_mode``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from app.core.explanation.cam import CheckFn
from app.core.explanation.occlusion import evaluating, make_baseline


@dataclass
class FaithfulnessResult:
    """Curves ``(steps + 1,)`` of the target probability against the fraction of pixels changed."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float  # lower is better
    insertion_auc: float  # higher is better


def pixel_ranks(saliency: np.ndarray, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Rank of every input pixel, 0 = most salient: ``(h, w) -> (H, W)`` int64.

    The map is upsampled bilinearly to the input size; ties (ReLU'd maps have many zeros) are broken
    by a seeded random order so that no corner of the image is favoured.
    """
    t = torch.from_numpy(np.ascontiguousarray(saliency, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy().ravel()
    tie = np.random.default_rng(seed).random(up.size)
    order = np.lexsort((tie, -up))
    ranks = np.empty(up.size, dtype=np.int64)
    ranks[order] = np.arange(up.size)
    return ranks.reshape(size)


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
    steps: int = 32,
    batch_size: int = 33,
    deletion_baseline: str = "zeros",
    insertion_baseline: str = "blur",
    seed: int = 0,
    check: CheckFn | None = None,
    lock: AbstractContextManager[object] | None = None,
) -> FaithfulnessResult:
    """Deletion and insertion curves of map ``saliency`` ``(h, w)`` for ``x`` ``(1, C, H, W)``.

    ``steps`` equal slices of the pixels, so ``2 * (steps + 1)`` forwards. AUC by the trapezoid rule
    over the fraction of pixels in [0, 1]. ``lock`` is held around each batch's forward.
    """
    if steps < 1:
        raise ValueError("steps must be at least 1")
    _, _, h, w = x.shape
    ranks = torch.from_numpy(pixel_ranks(saliency, (h, w), seed))
    counts = torch.round(torch.linspace(0, h * w, steps + 1)).long()
    fractions = (counts.double() / (h * w)).numpy()
    deleted = make_baseline(x, deletion_baseline)
    blurred = make_baseline(x, insertion_baseline)
    deletion = _curve(model, x, deleted, ranks, counts, target, batch_size, check, lock)
    insertion = _curve(model, blurred, x, ranks, counts, target, batch_size, check, lock)
    return FaithfulnessResult(
        fractions=fractions.astype(np.float32),
        deletion=deletion,
        insertion=insertion,
        deletion_auc=float(np.trapezoid(deletion, fractions)),
        insertion_auc=float(np.trapezoid(insertion, fractions)),
    )


def evaluate_maps(
    model: nn.Module,
    x: Tensor,
    maps: Mapping[str, np.ndarray],
    target: int,
    *,
    steps: int = 32,
    seed: int = 0,
    check: CheckFn | None = None,
    lock: AbstractContextManager[object] | None = None,
) -> dict[str, FaithfulnessResult]:
    """:func:`deletion_insertion` for every map in ``maps`` (name -> ``(h, w)``), same settings for all."""
    return {
        name: deletion_insertion(model, x, m, target, steps=steps, seed=seed, check=check, lock=lock)
        for name, m in maps.items()
    }
