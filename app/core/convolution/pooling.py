"""ReLU, max/average pooling (with the windows kept so a page can outline them) and flattening."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

PoolKind = Literal["max", "avg"]
POOL_KINDS: tuple[str, ...] = get_args(PoolKind)


class PoolingError(ValueError):
    """Impossible pooling settings; ``field`` names the offending input."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def relu(x: NDArray[np.floating]) -> NDArray[np.floating]:
    """``max(x, 0)`` elementwise, any shape -> same shape."""
    return np.maximum(x, 0)


@dataclass(frozen=True)
class PoolWindow:
    """One pooling window: output cell, the input rectangle ``[r0, r1) x [c0, c1)``, and (max) the winner."""

    row: int
    col: int
    r0: int
    c0: int
    r1: int
    c1: int
    value: float
    winner: tuple[int, int] | None

    def as_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "col": self.col,
            "rows": [self.r0, self.r1],
            "cols": [self.c0, self.c1],
            "value": self.value,
            "winner": list(self.winner) if self.winner is not None else None,
        }


@dataclass(frozen=True)
class PoolResult:
    """``output`` is ``(..., OH, OW)``; ``windows`` describe the last two axes (shared by leading axes)."""

    output: NDArray[np.floating]
    kind: str
    size: int
    stride: int


def pool(x: NDArray[np.floating], kind: str = "max", size: int = 2, stride: int | None = None) -> PoolResult:
    """Max or average pooling over the last two axes, no padding (PyTorch's default, floor mode).

    ``(..., H, W) -> (..., (H - size)//stride + 1, (W - size)//stride + 1)``.
    """
    s = size if stride is None else stride
    if kind not in POOL_KINDS:
        raise PoolingError(f"unknown pooling {kind!r}; choose max or avg", "pool")
    if size < 1:
        raise PoolingError("pooling size must be at least 1", "pool_size")
    if s < 1:
        raise PoolingError("pooling stride must be at least 1", "pool_stride")
    h, w = x.shape[-2], x.shape[-1]
    if size > h or size > w:
        raise PoolingError(f"a {size}x{size} pooling window does not fit a {h}x{w} map", "pool_size")
    win = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(-2, -1))[..., ::s, ::s, :, :]
    out = win.max(axis=(-2, -1)) if kind == "max" else win.mean(axis=(-2, -1))
    return PoolResult(output=np.ascontiguousarray(out), kind=kind, size=size, stride=s)


def pool_windows(x: NDArray[np.floating], result: PoolResult) -> list[PoolWindow]:
    """The windows of a 2-D pooling ``(H, W)``, row-major, with the max's position for max pooling."""
    if x.ndim != 2:
        raise PoolingError("pool_windows needs a single 2-D map", "input")
    oh, ow = result.output.shape[-2], result.output.shape[-1]
    out: list[PoolWindow] = []
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * result.stride, j * result.stride
            r1, c1 = r0 + result.size, c0 + result.size
            winner: tuple[int, int] | None = None
            if result.kind == "max":
                patch = x[r0:r1, c0:c1]
                a, b = np.unravel_index(int(np.argmax(patch)), patch.shape)
                winner = (r0 + int(a), c0 + int(b))
            out.append(PoolWindow(i, j, r0, c0, r1, c1, float(result.output[i, j]), winner))
    return out


def flatten(x: NDArray[np.floating]) -> NDArray[np.floating]:
    """Row-major reshape to a vector (as ``torch.flatten``):
    ``(H, W) -> (H*W,)``, ``(C, H, W) -> (C*H*W,)``."""
    return np.ascontiguousarray(x).reshape(-1)
