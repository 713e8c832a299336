"""Receptive fields computed from the modules that actually run, and the effective RF by gradient.

Theoretical receptive field
---------------------------
Each spatial tensor carries, per axis, three numbers (Araujo et al., "Computing receptive fields of
convolutional neural networks", Distill 2019):

- ``size`` r: how many input pixels one unit can see,
- ``jump`` j: the distance in input pixels between two neighbouring units (the product of strides),
- ``start`` s: the input coordinate of the centre of the RF of unit 0 (pixel centres at 0, 1, 2, ...).

A convolution or pooling with kernel k, stride t, padding p and dilation d (effective kernel
``k_e = d (k - 1) + 1``) maps ``(r, j, s)`` to ``(r + (k_e - 1) j,  j t,  s + ((k_e - 1) / 2 - p) j)``.

The numbers are propagated through the real forward pass: a ``TorchFunctionMode`` sees every torch call
(``conv2d``, ``max_pool2d``, ``avg_pool2d``, ``adaptive_*_pool2d``, ``pad``, ``cat``, ``+``, ``*`` ...)
with its real arguments, including functional calls inside blocks (Inception's ``F.avg_pool2d``
branches) and strides inside ResNet blocks and their downsample shortcuts. Forward hooks then read the
state of every module's output.

Rules for merging paths (the choice made here):

- **Union rule.** Where several tensors with the same grid meet (a residual ``+``, Inception's and
  DenseNet's channel ``cat``, an element-wise product), a unit of the result sees everything any input
  unit at that position sees, so its RF is the *union* of the inputs' RF boxes: left edge
  ``min(s_i - (r_i - 1) / 2)``, right edge ``max(s_i + (r_i - 1) / 2)``. When the branches are centred
  on the same point (all torchvision models) this is exactly "the maximum over branches"; for a ResNet
  block it is the main 3x3 chain, since the 1x1 shortcut sees less.
- **Global context is flagged, not merged.** A squeeze-and-excitation gate (a ``(N, C, 1, 1)`` tensor
  multiplied into a larger map) technically lets every unit depend on the whole image. Merging it would
  make every later RF "the whole image" and hide the local growth the lecture is about, so such inputs
  only set ``global_context=True``.
- **Collapsing space** (global average pooling, ``flatten``, a ``mean`` over H and W): the result sees
  the union of the RFs of all positions, i.e. a kernel as large as the whole map; later ``Linear``
  layers keep that RF. These rows have ``grid=False``.
- Adaptive pooling with a non-dividing output size and ``interpolate`` get approximate numbers
  (``approx=True``).

Sizes are *not* clipped to the image: an RF of 427 on a 224 image means the unit's window extends
past the borders into the zero padding, which is how these numbers are usually quoted (ResNet-50
``layer4``: 427). ``rf_box`` returns both the raw box and the box clipped to the image.

Effective receptive field
-------------------------
``effective_rf`` back-propagates one unit (or one unit's channel) to the input: ``|d unit / d input|``
summed over input channels, normalised to a maximum of 1 (Luo et al. 2016). It is usually much smaller
than the theoretical box and roughly Gaussian.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from app.core.models.hooks import (
    Hook,
    LayerCapture,
    StopForward,
    eval_mode,
    first_tensor,
    forward_hooks,
    frozen_parameters,
    get_layer,
    hooked,
    model_lock,
)
from app.core.models.layers import layer_kind


@dataclass(frozen=True)
class AxisRF:
    """Receptive field along one axis: size r, jump j, centre of unit 0 ``start``."""

    size: float
    jump: float
    start: float

    @property
    def left(self) -> float:
        return self.start - (self.size - 1) / 2

    @property
    def right(self) -> float:
        return self.start + (self.size - 1) / 2

    def kernel(self, k: int, stride: int, padding: float, dilation: int = 1) -> AxisRF:
        """Apply a window of ``k`` taps (conv or pool) to this axis."""
        k_eff = dilation * (k - 1) + 1
        return AxisRF(
            size=self.size + (k_eff - 1) * self.jump,
            jump=self.jump * stride,
            start=self.start + ((k_eff - 1) / 2 - padding) * self.jump,
        )


def _merged(states: list[RFState], axes: tuple[int, int] | None, extra_context: bool = False) -> RFState:
    """Where branches meet, a unit sees the union of the branches' windows."""
    h, ah = _union([s.h for s in states])
    w, aw = _union([s.w for s in states])
    return RFState(
        h=h,
        w=w,
        axes=axes,
        global_context=any(s.global_context for s in states) or extra_context,
        approx=ah or aw or any(s.approx for s in states),
    )


def _union(axes: Sequence[AxisRF]) -> tuple[AxisRF, bool]:
    """Union of RF windows of aligned grids; the flag says the jumps disagreed (approximate)."""
    left = min(a.left for a in axes)
    right = max(a.right for a in axes)
    jumps = {a.jump for a in axes}
    return AxisRF(size=right - left + 1, jump=max(jumps), start=(left + right) / 2), len(jumps) > 1


@dataclass(frozen=True)
class RFState:
    """RF of every unit of one tensor.

    ``axes`` are the tensor dimensions that hold (H, W): ``(2, 3)`` for NCHW maps, ``(1, 2)`` inside a
    ConvNeXt block's channels-last part, ``None`` once space has been collapsed (pooled or flattened).
    """

    h: AxisRF
    w: AxisRF
    axes: tuple[int, int] | None = (2, 3)
    global_context: bool = False
    approx: bool = False

    @property
    def grid(self) -> bool:
        return self.axes is not None

    def collapse(self, height: int, width: int) -> RFState:
        """Union of the RFs of all ``height x width`` positions (global pooling, flatten)."""
        return replace(self, h=self.h.kernel(height, 1, 0), w=self.w.kernel(width, 1, 0), axes=None)


def _hw(tensor: torch.Tensor, axes: tuple[int, int]) -> tuple[int, int] | None:
    if max(axes) >= tensor.dim():
        return None
    return int(tensor.shape[axes[0]]), int(tensor.shape[axes[1]])


def _dims(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[int]:
    """The permutation of ``permute(x, dims)`` / ``x.permute(*dims)``."""
    if "dims" in kwargs:
        return [int(d) for d in kwargs["dims"]]
    rest = args[1:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        return [int(d) for d in rest[0]]
    return [int(d) for d in rest]


@dataclass(frozen=True)
class LayerRF:
    """Theoretical RF of one module's output. ``output_shape`` is per sample, e.g. ``(C, H, W)``."""

    name: str
    type: str
    kind: str  # layer_kind(): conv, pool, norm, ..., container
    output_shape: tuple[int, ...] | None
    size_h: float
    size_w: float
    jump_h: float
    jump_w: float
    start_h: float
    start_w: float
    grid: bool  # an NCHW map: positions (y, x) exist and rf_box applies
    spatial: bool  # still has (H, W) somewhere (False once pooled or flattened)
    global_context: bool
    approx: bool
    order: int

    @property
    def size(self) -> float:
        """The larger of the two axes (they agree for square kernels)."""
        return max(self.size_h, self.size_w)

    @property
    def jump(self) -> float:
        return max(self.jump_h, self.jump_w)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "kind": self.kind,
            "output_shape": list(self.output_shape) if self.output_shape is not None else None,
            "rf": _num(self.size),
            "rf_h": _num(self.size_h),
            "rf_w": _num(self.size_w),
            "jump": _num(self.jump),
            "jump_h": _num(self.jump_h),
            "jump_w": _num(self.jump_w),
            "start_h": _num(self.start_h),
            "start_w": _num(self.start_w),
            "grid": self.grid,
            "spatial": self.spatial,
            "global_context": self.global_context,
            "approx": self.approx,
        }


def _num(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 3)


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1])) if len(value) > 1 else (int(value[0]), int(value[0]))
    return int(value), int(value)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _adaptive_axis(axis: AxisRF, size_in: int, size_out: int) -> tuple[AxisRF, bool]:
    if size_in % size_out == 0:
        k = size_in // size_out
        return axis.kernel(k, k, 0), False
    # PyTorch windows run from floor(i*in/out) to ceil((i+1)*in/out): take the widest one.
    widest = max(
        math.ceil((i + 1) * size_in / size_out) - math.floor(i * size_in / size_out) for i in range(size_out)
    )
    stride = size_in / size_out
    return AxisRF(
        axis.size + (widest - 1) * axis.jump, axis.jump * stride, axis.start + (widest - 1) / 2 * axis.jump
    ), True


class _RFTracker(TorchFunctionMode):
    """Follows every torch call of one forward pass and gives each output tensor an ``RFState``."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[int, RFState] = {}
        # Set while other hooks copy tensors, so their bookkeeping ops are not tracked.
        self.paused = False

    def set(self, tensor: torch.Tensor, state: RFState) -> None:
        key = id(tensor)
        if key not in self.states:
            # Forget the state when the tensor dies, so a recycled id never inherits it.
            weakref.finalize(tensor, self.states.pop, key, None)
        self.states[key] = state

    def get(self, tensor: torch.Tensor) -> RFState | None:
        return self.states.get(id(tensor))

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.paused:
            return result
        outputs = [t for t in _tensors(result)]
        if not outputs:
            return result
        inputs = [t for t in _tensors((args, kwargs)) if self.get(t) is not None]
        if not inputs:
            return result
        state = self._rule(func, args, kwargs, inputs, outputs[0])
        if state is not None:
            for out in outputs:
                self.set(out, state)
        return result

    def _rule(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: list[torch.Tensor],
        out: torch.Tensor,
    ) -> RFState | None:
        first = inputs[0]
        src = self.get(first)
        assert src is not None
        # Convolution and pooling rules need NCHW: (H, W) in the last two dimensions.
        spatial_in = first.dim() == 4 and src.axes == (2, 3)
        if func is F.conv2d and spatial_in:
            weight = _arg(args, kwargs, 1, "weight", None)
            kh, kw = int(weight.shape[-2]), int(weight.shape[-1])
            sh, sw = _pair(_arg(args, kwargs, 3, "stride", 1))
            dh, dw = _pair(_arg(args, kwargs, 5, "dilation", 1))
            padding = _arg(args, kwargs, 4, "padding", 0)
            if isinstance(padding, str):
                ph, pw = ((dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2) if padding == "same" else (0, 0)
            else:
                ph, pw = _pair(padding)
            return replace(src, h=src.h.kernel(kh, sh, ph, dh), w=src.w.kernel(kw, sw, pw, dw))
        if func in (F.max_pool2d, F.avg_pool2d, F.lp_pool2d) and spatial_in:
            if func is F.lp_pool2d:
                kernel = _arg(args, kwargs, 2, "kernel_size", 1)
                stride = _arg(args, kwargs, 3, "stride", None)
                padding, dilation = 0, 1
            else:
                kernel = _arg(args, kwargs, 1, "kernel_size", 1)
                stride = _arg(args, kwargs, 2, "stride", None)
                padding = _arg(args, kwargs, 3, "padding", 0)
                dilation = _arg(args, kwargs, 4, "dilation", 1) if func is F.max_pool2d else 1
            kh, kw = _pair(kernel)
            sh, sw = _pair(stride) if stride not in (None, [], ()) else (kh, kw)
            ph, pw = _pair(padding)
            dh, dw = _pair(dilation)
            return replace(src, h=src.h.kernel(kh, sh, ph, dh), w=src.w.kernel(kw, sw, pw, dw))
        if func in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d) and spatial_in:
            hin, win = int(first.shape[-2]), int(first.shape[-1])
            hout, wout = int(out.shape[-2]), int(out.shape[-1])
            h, ah = _adaptive_axis(src.h, hin, hout)
            w, aw = _adaptive_axis(src.w, win, wout)
            collapsed = hout == 1 and wout == 1 and (hin > 1 or win > 1)
            return replace(src, h=h, w=w, approx=src.approx or ah or aw, axes=None if collapsed else (2, 3))
        if func is F.pad and spatial_in:
            pad = list(_arg(args, kwargs, 1, "pad", ()))
            left = pad[0] if len(pad) > 0 else 0
            top = pad[2] if len(pad) > 2 else 0
            return replace(
                src,
                h=AxisRF(src.h.size, src.h.jump, src.h.start - top * src.h.jump),
                w=AxisRF(src.w.size, src.w.jump, src.w.start - left * src.w.jump),
            )
        name = getattr(func, "__name__", "")
        if (
            name in ("permute", "transpose", "swapaxes", "swapdims")
            and src.axes is not None
            and first is args[0]
        ):
            # Moving dimensions (channels-last inside ConvNeXt blocks) moves (H, W) with them.
            if name == "permute":
                order = _dims(args, kwargs)
            else:
                d0, d1 = (int(a) % first.dim() for a in args[1:3])
                order = list(range(first.dim()))
                order[d0], order[d1] = order[d1], order[d0]
            order = [d % first.dim() for d in order]
            return replace(src, axes=(order.index(src.axes[0]), order.index(src.axes[1])))
        return self._generic(inputs, out)

    def _generic(self, inputs: list[torch.Tensor], out: torch.Tensor) -> RFState:
        """Element-wise ops, cat, add, mul, reshapes: merge aligned inputs, flag context, collapse."""
        states = [(t, s) for t in inputs if (s := self.get(t)) is not None]

        def out_axes(t: torch.Tensor, s: RFState) -> tuple[int, int] | None:
            """Where this input's (H, W) are in the output, if the op kept them."""
            if s.axes is None:
                return None
            hw = _hw(t, s.axes)
            if out.dim() == t.dim() and _hw(out, s.axes) == hw:
                return s.axes
            # A reshape that keeps (H, W) last (ShuffleNet's channel shuffle goes through 5-D views).
            if s.axes == (t.dim() - 2, t.dim() - 1) and out.dim() >= 3 and tuple(out.shape[-2:]) == hw:
                return (out.dim() - 2, out.dim() - 1)
            return None

        placed = [(t, s, out_axes(t, s)) for t, s in states]
        aligned = [(s, a) for _, s, a in placed if a is not None]
        if aligned:
            axes = aligned[0][1]
            same = [s for s, a in aligned if a == axes]
            context = [s for _, s, a in placed if a is None or a != axes]
            # A squeeze-and-excitation gate (no grid of its own) is global context, not a wider window.
            return _merged(same, axes, extra_context=bool(context))
        spatial = [(t, s) for t, s in states if s.axes is not None]
        if spatial and out.dim() == 4:
            t0, s0 = spatial[0]
            hw = _hw(t0, s0.axes) if s0.axes is not None else None
            if hw is not None and s0.axes == (2, 3) and t0.dim() == 4:
                # A spatial size change we have no rule for (interpolate, unfold...): rescale the grid.
                fh = hw[0] / max(int(out.shape[-2]), 1)
                fw = hw[1] / max(int(out.shape[-1]), 1)
                return replace(
                    s0,
                    h=AxisRF(s0.h.size, s0.h.jump * fh, s0.h.start),
                    w=AxisRF(s0.w.size, s0.w.jump * fw, s0.w.start),
                    approx=True,
                )
        # Output without an (H, W) grid: spatial inputs are collapsed, the rest are merged.
        collapsed = []
        for t, s in states:
            hw = _hw(t, s.axes) if s.axes is not None else None
            collapsed.append(s.collapse(*hw) if hw is not None else replace(s, axes=None))
        return _merged(collapsed, None)


class RFRecorder:
    """The tracking mode plus forward hooks that read each module's output state.

    Enter ``tracker`` around the forward pass, call ``start(x)`` on the input inside it, then ``result()``.
    """

    def __init__(self) -> None:
        self.tracker = _RFTracker()
        self.found: dict[str, LayerRF] = {}
        self.every_call: dict[str, list[LayerRF]] = {}
        self.counter = 0

    def start(self, x: torch.Tensor) -> None:
        self.tracker.set(x, RFState(h=AxisRF(1, 1, 0), w=AxisRF(1, 1, 0), axes=(2, 3)))

    def make_hook(self, name: str) -> Hook:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            out = first_tensor(output)
            state = self.tracker.get(out) if out is not None else None
            if out is None or state is None or not name:
                return
            self.found[name] = LayerRF(
                name=name,
                type=type(module).__name__,
                kind=layer_kind(module),
                output_shape=tuple(int(s) for s in out.shape[1:]),
                size_h=state.h.size,
                size_w=state.w.size,
                jump_h=state.h.jump,
                jump_w=state.w.jump,
                start_h=state.h.start,
                start_w=state.w.start,
                grid=state.axes == (2, 3) and out.dim() == 4,
                spatial=state.axes is not None,
                global_context=state.global_context,
                approx=state.approx,
                order=self.found[name].order if name in self.found else self.counter,
            )
            self.every_call.setdefault(name, []).append(self.found[name])
            self.counter += 1

        return hook

    def result(self) -> dict[str, LayerRF]:
        """``{name: LayerRF}`` of each module's LAST call, in execution order of first calls."""
        return dict(sorted(self.found.items(), key=lambda item: item[1].order))

    def result_calls(self) -> dict[str, list[LayerRF]]:
        """Modules that ran more than once: the RF of every call, in call order (0-based call index)."""
        return {name: rfs for name, rfs in self.every_call.items() if len(rfs) > 1}


def receptive_fields(model: nn.Module, example_input: torch.Tensor) -> dict[str, LayerRF]:
    """Theoretical RF of every module's output, from one forward pass of ``example_input (N, C, H, W)``.

    Returns ``{dotted name: LayerRF}`` in execution order (modules that never ran are absent). The
    model runs in eval mode without gradients; hooks are removed and ``training`` flags restored.
    """
    recorder = RFRecorder()
    x = example_input.detach().clone()
    with (
        model_lock(model),
        eval_mode(model),
        torch.no_grad(),
        forward_hooks(model.named_modules(), recorder.make_hook),
        recorder.tracker,
    ):
        recorder.start(x)
        model(x)
    return recorder.result()


@dataclass(frozen=True)
class Box:
    """Input rows ``top..bottom`` and columns ``left..right``, inclusive; may extend past the image."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    def clipped(self, height: int, width: int) -> Box:
        return Box(
            top=max(self.top, 0),
            left=max(self.left, 0),
            bottom=min(self.bottom, height - 1),
            right=min(self.right, width - 1),
        )

    def to_dict(self) -> dict[str, int]:
        return {"top": self.top, "left": self.left, "bottom": self.bottom, "right": self.right}


def rf_box(layer: LayerRF, y: int, x: int) -> Box:
    """Input box seen by the unit at output position ``(y, x)`` of ``layer`` (unclipped, inclusive).

    Edges are whole pixels: ``start + index * jump -/+ (size - 1) / 2`` (the half-pixel parts cancel).
    """
    if layer.output_shape is not None and layer.grid:
        height, width = layer.output_shape[-2], layer.output_shape[-1]
        if not (0 <= y < height and 0 <= x < width):
            raise IndexError(f"position ({y}, {x}) outside the {height}x{width} map of {layer.name}")
        cy = layer.start_h + y * layer.jump_h
        cx = layer.start_w + x * layer.jump_w
    else:
        cy, cx = layer.start_h, layer.start_w
    half_h = (layer.size_h - 1) / 2
    half_w = (layer.size_w - 1) / 2
    return Box(
        top=math.ceil(cy - half_h - 1e-9),
        left=math.ceil(cx - half_w - 1e-9),
        bottom=math.floor(cy + half_h + 1e-9),
        right=math.floor(cx + half_w + 1e-9),
    )


def effective_rf(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    y: int,
    x_pos: int,
    channel: int | None = None,
    call: int | None = None,
) -> np.ndarray:
    """``|d unit / d input|`` for the unit at ``(y, x_pos)`` of ``layer``: ``(1, C, H, W)`` -> ``(H, W)``.

    The unit is the sum over channels at that position (or one ``channel``). ``call`` picks the run of a module
    that runs several times in one forward (0-based, negative from the end; ``None``, the default, is the last
    call, the one ``receptive_fields`` describes); with a call index of 0 or more the forward stops right after
    that call. The gradient is summed in absolute value over input channels and NOT normalised (callers divide
    by ``max`` for display). Gradients are taken only with respect to the input; parameter ``requires_grad``
    flags are switched off for the pass and restored, eval mode is used and restored, the hook is always
    removed. Raises ``LayerNotFound`` for an unknown layer, ``CallNotFound`` (a ``ValueError``) for a call the
    layer did not have.
    """
    module = get_layer(model, layer)
    capture = LayerCapture(call, stop=call is not None and call >= 0, layer=layer)
    inp = x.detach().clone().requires_grad_(True)
    with (
        model_lock(model),
        eval_mode(model),
        frozen_parameters(model),
        torch.enable_grad(),
        hooked(layer, module, capture),
    ):
        with contextlib.suppress(StopForward):
            model(inp)
        out = capture.output
        if out.dim() != 4:
            raise ValueError(f"layer {layer} has no spatial map (output shape {tuple(out.shape)})")
        if not (0 <= y < out.shape[-2] and 0 <= x_pos < out.shape[-1]):
            raise IndexError(f"position ({y}, {x_pos}) outside the {out.shape[-2]}x{out.shape[-1]} map")
        if channel is not None and not 0 <= channel < out.shape[1]:
            raise IndexError(f"channel {channel} out of range 0..{out.shape[1] - 1}")
        unit = out[0, :, y, x_pos].sum() if channel is None else out[0, channel, y, x_pos]
        (grad,) = torch.autograd.grad(unit, inp)
    return grad[0].abs().sum(dim=0).cpu().numpy().astype(np.float32)


@dataclass(frozen=True)
class StackRow:
    """``n`` stacked 3x3 convs versus one ``(2n+1) x (2n+1)`` conv, C channels in and out."""

    n: int
    rf_stack: int
    rf_large: int
    kernel_large: int
    params_stack: int
    params_large: int
    macs_per_pixel_stack: int
    macs_per_pixel_large: int
    nonlinearities_stack: int
    nonlinearities_large: int

    @property
    def saving(self) -> float:
        return 1 - self.params_stack / self.params_large

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["saving"] = round(self.saving, 4)
        return d


def stack_vs_large(max_layers: int = 4, channels: int = 64, size: int = 32) -> list[StackRow]:
    """The VGG argument, measured on real modules for ``n = 1..max_layers``.

    Both sides are built as ``nn.Conv2d`` (bias off, same padding); parameters are counted from the
    modules and RFs from ``receptive_fields`` on a ``(1, C, size, size)`` zero input, so nothing is a
    formula typed in by hand.
    """
    from app.core.models.layers import layer_tree

    rows = []
    x = torch.zeros(1, channels, size, size)
    for n in range(1, max_layers + 1):
        stack_layers: list[nn.Module] = []
        for _ in range(n):
            stack_layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU()]
        stack = nn.Sequential(*stack_layers)
        k = 2 * n + 1
        large = nn.Sequential(nn.Conv2d(channels, channels, k, padding=n, bias=False), nn.ReLU())
        rf_stack = receptive_fields(stack, x)[str(2 * n - 2)]
        rf_large = receptive_fields(large, x)["0"]
        macs_stack = layer_tree(stack, x).macs // (size * size)
        macs_large = layer_tree(large, x).macs // (size * size)
        rows.append(
            StackRow(
                n=n,
                rf_stack=int(rf_stack.size),
                rf_large=int(rf_large.size),
                kernel_large=k,
                params_stack=sum(p.numel() for p in stack.parameters()),
                params_large=sum(p.numel() for p in large.parameters()),
                macs_per_pixel_stack=macs_stack,
                macs_per_pixel_large=macs_large,
                nonlinearities_stack=n,
                nonlinearities_large=1,
            )
        )
    return rows
