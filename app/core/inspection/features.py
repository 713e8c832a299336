"""Capture the activations of many layers in one forward pass; channel statistics, sorting, pages.

``capture(model, x, layers)`` returns ``{name: tensor (N, ...)}`` for every requested dotted layer
name. Values are copied at the moment the layer finishes, so a later in-place op (``ReLU(inplace=True)``
right after a BatchNorm) does not change what was captured. A module called more than once keeps its
last output (a reused ReLU inside a ResNet block gives the block's output).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from app.core.models.layers import Hook, LayerNotFound, _first_tensor, eval_mode, forward_hooks

SortKey = Literal["index", "mean", "max", "std"]
SORT_KEYS: tuple[str, ...] = ("index", "mean", "max", "std")


@dataclass(frozen=True)
class Capture:
    """Activations ``{layer: (C, H, W) or (D,) tensor}`` of one sample plus the model output ``(K,)``."""

    activations: dict[str, torch.Tensor]
    output: torch.Tensor | None

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.activations.values())


def capture(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None, keep_batch: bool = False
) -> Capture:
    """Run ``model(x)`` once and record the outputs of ``layers`` (all modules if ``None``).

    ``x``: ``(N, C, H, W)``. Returned tensors are ``(C, H, W)`` for the first sample (``keep_batch``
    keeps ``(N, C, H, W)``), detached CPU copies. The model runs in eval mode without gradients; hooks
    are removed and ``training`` flags restored whatever happens. Modules whose output is not a tensor
    (or that did not run, e.g. auxiliary heads in eval mode) are absent from the result.
    Raises ``LayerNotFound`` for an unknown name before running anything.
    """
    modules = dict(model.named_modules())
    wanted = [n for n in modules if n] if layers is None else list(dict.fromkeys(layers))
    missing = [n for n in wanted if n not in modules]
    if missing:
        raise LayerNotFound(missing[0], [n for n in modules if n])
    recorder = CaptureRecorder()
    # no_grad rather than inference_mode: inference tensors have no version counter.
    with (
        eval_mode(model),
        torch.no_grad(),
        forward_hooks(((n, modules[n]) for n in wanted), recorder.make_hook),
    ):
        result = model(x)
    return recorder.result(result, keep_batch)


class CaptureRecorder:
    """Forward hooks that copy module outputs; ``result`` returns them as a ``Capture``."""

    def __init__(self) -> None:
        self.store: dict[str, torch.Tensor] = {}
        # A Sequential returns its last child's tensor unchanged: copy each distinct (tensor, version)
        # once. The version counter moves on every in-place op, so a BatchNorm output later modified in
        # place by ReLU(inplace=True) is copied again for the ReLU. Originals are kept alive so that ids
        # stay unique during the pass.
        self.copies: dict[tuple[int, int], torch.Tensor] = {}
        self.keep_alive: list[torch.Tensor] = []

    def make_hook(self, name: str) -> Hook:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            out = _first_tensor(output)
            if out is None:
                return
            key = (id(out), out._version)
            if key not in self.copies:
                self.keep_alive.append(out)
                self.copies[key] = out.detach().to("cpu", copy=True)
            self.store[name] = self.copies[key]

        return hook

    def result(self, model_output: Any, keep_batch: bool = False) -> Capture:
        self.keep_alive.clear()
        self.copies.clear()
        out = _first_tensor(model_output)
        output = out.detach().cpu() if out is not None else None
        store = self.store
        if not keep_batch:
            store = {k: v[0] for k, v in store.items()}
            output = output[0] if output is not None and output.dim() > 1 else output
        return Capture(activations=store, output=output)


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel statistics of one ``(C, H, W)`` map; each array is ``(C,)``."""

    mean: np.ndarray
    max: np.ndarray
    min: np.ndarray
    std: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(v) for v in getattr(self, k)] for k in ("mean", "max", "min", "std")}


def as_maps(act: torch.Tensor | np.ndarray) -> np.ndarray:
    """View any activation as channel maps: ``(C, H, W)`` stays, ``(D,)`` becomes ``(D, 1, 1)``,
    ``(C, L)`` becomes ``(C, 1, L)``."""
    arr = act.detach().cpu().numpy() if isinstance(act, torch.Tensor) else np.asarray(act)
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 1:
        return arr.reshape(-1, 1, 1)
    if arr.ndim == 2:
        return arr.reshape(arr.shape[0], 1, arr.shape[1])
    if arr.ndim == 3:
        return arr
    raise ValueError(f"cannot show an activation of shape {arr.shape} as channel maps")


def channel_stats(maps: np.ndarray) -> ChannelStats:
    """``(C, H, W)`` -> mean, max, min, std per channel.

    Mean and std are accumulated in float64: finite float32 activations near 1e19 and above (an uploaded model
    with huge weights) overflow a float32 sum of squares to infinity, which JSON cannot carry.
    """
    flat = maps.reshape(maps.shape[0], -1)
    return ChannelStats(
        mean=flat.mean(axis=1, dtype=np.float64),
        max=flat.max(axis=1),
        min=flat.min(axis=1),
        std=flat.std(axis=1, dtype=np.float64),
    )


def sort_channels(stats: ChannelStats, key: str = "index", descending: bool = True) -> np.ndarray:
    """Channel indices ``(C,)`` ordered by ``key`` (``index`` keeps the natural order).

    Ties keep the natural order (stable sort), so the order is deterministic.
    """
    count = stats.mean.shape[0]
    if key == "index":
        return np.arange(count)
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r}; choose one of {', '.join(SORT_KEYS)}")
    values = getattr(stats, key)
    order = np.argsort(-values if descending else values, kind="stable")
    return order.astype(np.int64)


@dataclass(frozen=True)
class Page:
    """One page of channel indices."""

    items: list[int]
    page: int
    per_page: int
    pages: int
    total: int


def paginate(indices: Sequence[int] | np.ndarray, page: int, per_page: int) -> Page:
    """Page ``page`` (1-based) of ``indices``; a page past the end is clamped to the last one."""
    if per_page < 1:
        raise ValueError("per_page must be at least 1")
    total = len(indices)
    pages = max(1, math.ceil(total / per_page))
    page = min(max(page, 1), pages)
    start = (page - 1) * per_page
    items = [int(i) for i in list(indices)[start : start + per_page]]
    return Page(items=items, page=page, per_page=per_page, pages=pages, total=total)
