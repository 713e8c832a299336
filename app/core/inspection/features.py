"""Capture the activations of many layers in one forward pass; channel statistics, sorting, pages.

``capture(model, x, layers)`` returns ``{name: tensor (N, ...)}`` for every requested dotted layer
name. Values are copied at the moment the layer finishes, so a later in-place op (``ReLU(inplace=True)``
right after a BatchNorm) does not change what was captured. A module called more than once (a reused ReLU
inside a ResNet block, EfficientNet-Lite0's ``_swish``) is listed in ``activations`` with its LAST call's output
(the default everywhere) and in ``calls`` with the output of every call; ``Capture.at(name, call)`` picks one
(call index 0-based, negative from the end, ``None`` = last; see ``app.core.models.hooks``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from app.core.models.hooks import (
    Hook,
    LayerNotFound,
    eval_mode,
    first_tensor,
    forward_hooks,
    model_lock,
    resolve_call,
)

SortKey = Literal["index", "mean", "max", "std"]
SORT_KEYS: tuple[str, ...] = ("index", "mean", "max", "std")


@dataclass(frozen=True)
class Capture:
    """Activations ``{layer: (C, H, W) or (D,) tensor}`` of one sample plus the model output ``(K,)``."""

    activations: dict[str, torch.Tensor]
    output: torch.Tensor | None
    # Modules that ran more than once: the output of every call, in call order (the last is activations[name]).
    calls: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        tensors = {id(t): t for t in self.activations.values()}
        tensors.update({id(t): t for outputs in self.calls.values() for t in outputs})
        return sum(t.numel() * t.element_size() for t in tensors.values())

    def call_count(self, name: str) -> int:
        """How many times ``name`` ran (0 if it is not in the capture)."""
        if name in self.calls:
            return len(self.calls[name])
        return 1 if name in self.activations else 0

    def at(self, name: str, call: int | None = None) -> torch.Tensor:
        """The output of ``name`` at ``call`` (0-based, negative from the end, ``None``: the last call).

        ``KeyError`` when ``name`` is not in the capture, ``CallNotFound`` (a ``ValueError``) for a missing call.
        """
        if name not in self.activations:
            raise KeyError(name)
        index = resolve_call(call, self.call_count(name), name)
        return self.calls[name][index] if name in self.calls else self.activations[name]


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
        model_lock(model),
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
        self.every_call: dict[str, list[torch.Tensor]] = {}
        # A Sequential returns its last child's tensor unchanged: copy each distinct (tensor, version)
        # once. The version counter moves on every in-place op, so a BatchNorm output later modified in
        # place by ReLU(inplace=True) is copied again for the ReLU. Originals are kept alive so that ids
        # stay unique during the pass.
        self.copies: dict[tuple[int, int], torch.Tensor] = {}
        self.keep_alive: list[torch.Tensor] = []

    def make_hook(self, name: str) -> Hook:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            out = first_tensor(output)
            if out is None:
                return
            key = (id(out), out._version)
            if key not in self.copies:
                self.keep_alive.append(out)
                self.copies[key] = out.detach().to("cpu", copy=True)
            self.store[name] = self.copies[key]
            self.every_call.setdefault(name, []).append(self.copies[key])

        return hook

    def result(self, model_output: Any, keep_batch: bool = False) -> Capture:
        self.keep_alive.clear()
        self.copies.clear()
        out = first_tensor(model_output)
        output = out.detach().cpu() if out is not None else None
        store = self.store
        calls = {k: v for k, v in self.every_call.items() if len(v) > 1}
        if not keep_batch:
            firsts: dict[int, torch.Tensor] = {}  # one view per stored copy, so shared copies stay shared

            def first(t: torch.Tensor) -> torch.Tensor:
                return firsts.setdefault(id(t), t[0])

            store = {k: first(v) for k, v in store.items()}
            calls = {k: [first(t) for t in v] for k, v in calls.items()}
            output = output[0] if output is not None and output.dim() > 1 else output
        return Capture(activations=store, output=output, calls=calls)


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
