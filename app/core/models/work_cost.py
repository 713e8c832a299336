"""What long work will cost before it runs: forward passes x multiply-accumulates (MACs) per forward.

A job's seconds are estimated as ``forward passes x forward MACs / assumed MACs per second``. The forward
MACs come from :func:`app.core.models.layers.layer_tree` (one traced forward of one image), on the meta device when
the architecture can be built there, so that estimating the cost of a large model allocates nothing.
The counts of forward passes mirror the loops of app/core/explanation/occlusion.py, cam.py and faithfulness.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from app.core.models.layers import layer_tree

# Methods whose map needs the gradient of the class score: one forward and one backward, which costs about
# two forwards more (the usual 1:2 rule for a backward pass).
GRADIENT_FORWARDS = 3


def model_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """MACs (conv + linear + matrix products, as ``layer_tree`` counts them) of one forward of one ``(C, H, W)``
    input; at least one per parameter (a type ``layer_tree`` lists as uncounted still touches every weight).
    Normalisation, pooling and activations (``other_ops``) are left out: a few per cent of the work at most,
    which the measured ``assumed_macs_per_second`` absorbs."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tree = layer_tree(model, torch.zeros(1, *input_shape, device=device))
    params = sum(p.numel() for p in model.parameters())
    return max(int(tree.macs), int(params))


def meta_macs(build: Callable[[], nn.Module], input_shape: tuple[int, int, int]) -> int | None:
    """:func:`model_macs` of an architecture built on the meta device (no memory, no initialisation).

    None when the builder or the forward needs real tensor data (a few builders, e.g. RegNet, do).
    """
    try:
        with torch.device("meta"):
            model = build()
            return model_macs(model, input_shape)
    except Exception:  # any failure only means "build it for real instead"
        return None


def window_count(size: int, window: int, stride: int) -> int:
    """Windows along one axis, as :func:`app.core.explanation.occlusion.window_starts` places them."""
    return math.ceil((size - window) / stride) + 1


def occlusion_windows(input_size: tuple[int, int], window: int, stride: int) -> int:
    h, w = input_size
    return window_count(h, window, stride) * window_count(w, window, stride)


def occlusion_forwards(input_size: tuple[int, int], window: int, stride: int) -> int:
    """One forward per window, plus the unoccluded input and the final top-k."""
    return occlusion_windows(input_size, window, stride) + 2


def cheaper_occlusion(
    input_size: tuple[int, int], window: int, stride: int, max_forwards: int
) -> tuple[int, int] | None:
    """The (window, stride) closest to the one asked for that needs at most ``max_forwards`` forwards.

    Keeps the window and widens the stride first (up to the window), then grows the window with a stride of
    half of it. None when even one window covering the whole input is too much.
    """
    side = min(input_size)
    for st in range(stride, window + 1):
        if occlusion_forwards(input_size, window, st) <= max_forwards:
            return window, st
    for win in range(window + 1, side + 1):
        st = max(1, win // 2)
        if occlusion_forwards(input_size, win, st) <= max_forwards:
            return win, st
    return None


def cam_forwards(methods: Sequence[str], channels: int, gradient_methods: Sequence[str]) -> int:
    """Forwards of :func:`app.core.explanation.cam.compute_cams` for one image: the hooked pass (with a backward when a
    gradient method is asked for), then one forward per channel of the layer (plus one for dead channels)
    for each of Score-CAM and Ablation-CAM."""
    first = GRADIENT_FORWARDS if any(m in gradient_methods for m in methods) else 1
    slow = sum(1 for m in set(methods) if m in ("scorecam", "ablationcam"))
    return first + slow * (channels + 1)


def faithfulness_forwards(maps: int, steps: int) -> int:
    """Deletion and insertion curves: ``2 * (steps + 1)`` forwards per map."""
    return maps * 2 * (steps + 1)


def batch_for(forward_macs: int, macs_per_second: float, batch_seconds: float, largest: int = 64) -> int:
    """Images per batch so that one batch is about ``batch_seconds`` of estimated work (1..largest).

    Cancellation and the time limit are checked between batches, so this is also how late they can act.
    """
    if forward_macs <= 0:
        return largest
    return int(min(largest, max(1, math.floor(macs_per_second * batch_seconds / forward_macs))))
