"""Learned convolution kernels as pictures.

The first convolution of an RGB network sees colour directly, so each of its kernels ``(3, kh, kw)`` is
shown as a small colour tile: every filter is divided by its own largest absolute weight (so weak and
strong filters are equally visible) and mapped signed, zero -> mid grey, positive -> towards the colour,
negative -> away from it. Later convolutions have tens or hundreds of input channels that are not
colours; there one output filter is shown as one signed ``(kh, kw)`` map per input channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from app.core.models.layers import LayerNotFound

FILTER_SORT_KEYS: tuple[str, ...] = ("index", "norm")


@dataclass(frozen=True)
class ConvInfo:
    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int


def conv_layers(model: nn.Module) -> list[ConvInfo]:
    """Every 2-D convolution in definition order."""
    return [
        ConvInfo(
            name=name,
            in_channels=m.in_channels,
            out_channels=m.out_channels,
            kernel_size=tuple(int(k) for k in m.kernel_size),
            groups=m.groups,
        )
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]


def conv_weight(model: nn.Module, name: str | None = None) -> tuple[str, np.ndarray]:
    """``(name, weight (O, C/groups, kh, kw))`` of conv ``name``, or of the first conv if ``None``.

    Raises ``LayerNotFound`` (choices: the conv layers) if ``name`` is not a 2-D convolution.
    """
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if not convs:
        raise LayerNotFound(name or "", [])
    if name is None:
        name = next(iter(convs))
    if name not in convs:
        raise LayerNotFound(name, list(convs))
    with torch.no_grad():
        weight = convs[name].weight.detach().cpu().float().numpy().copy()
    return name, weight


def normalise_signed(weight: np.ndarray) -> np.ndarray:
    """``(O, C, kh, kw)`` -> same shape in [-1, 1], each filter divided by its own max ``|w|``."""
    scale = np.abs(weight).reshape(weight.shape[0], -1).max(axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    return (weight / scale[:, None, None, None]).astype(np.float32)


def rgb_tiles(weight: np.ndarray) -> np.ndarray:
    """First-conv kernels ``(O, 3, kh, kw)`` -> colour tiles ``(O, kh, kw, 3)`` in [0, 1] (0.5 = zero).

    A single-channel (greyscale) first conv gives grey tiles; other channel counts are averaged to grey.
    """
    norm = normalise_signed(weight)
    if norm.shape[1] == 3:
        rgb = norm.transpose(0, 2, 3, 1)
    else:
        grey = norm.mean(axis=1) if norm.shape[1] != 1 else norm[:, 0]
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    return (0.5 + 0.5 * rgb).astype(np.float32)


def filter_order(weight: np.ndarray, key: str = "index") -> np.ndarray:
    """Output-filter indices ``(O,)``: natural order, or by L2 norm (strongest first)."""
    if key == "index":
        return np.arange(weight.shape[0])
    if key == "norm":
        norms = np.sqrt((weight.reshape(weight.shape[0], -1) ** 2).sum(axis=1))
        return np.argsort(-norms, kind="stable").astype(np.int64)
    raise ValueError(f"unknown sort key {key!r}; choose one of {', '.join(FILTER_SORT_KEYS)}")


def per_input_channel(weight: np.ndarray, out_index: int) -> tuple[np.ndarray, float]:
    """Kernels of one output filter: ``(O, C, kh, kw)`` -> ``(C, kh, kw)`` raw, plus its max ``|w|``.

    Each input-channel kernel is returned raw so that one shared symmetric colour range (the returned
    limit) keeps relative strengths between channels visible.
    """
    if not 0 <= out_index < weight.shape[0]:
        raise IndexError(f"filter {out_index} out of range 0..{weight.shape[0] - 1}")
    kernels = weight[out_index].astype(np.float32)
    limit = float(np.abs(kernels).max()) or 1.0
    return kernels, limit
