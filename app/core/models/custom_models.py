"""Models described by users: a JSON architecture (a sequence of layers, or a torchvision name) built into a module.

Nothing here unpickles: weights come separately as safetensors. What a described model would cost is computed
from the description before anything is allocated (`estimate`): parameters, multiply-accumulates and activation
memory, so that a 557-byte JSON of huge layers is refused by arithmetic instead of being built first.

Counting conventions (the same as app/core/models/layers.py, so an uploaded model's numbers agree with the layer tree):
- a MAC (multiply-accumulate) is one product of a convolution or linear weight (or of two activations, in
  attention) with an input value, added to a sum: `macs` counts only those, as torchvision, fvcore and ptflops
  do. The rest is `other_ops`: normalisation one per output element (the eval-mode scale and shift), pooling one
  per window element read, global average pooling one per input element, activations one per output element;
  dropout and flatten cost 0. The `max_model_macs` limit applies to `macs`;
- activation bytes are float32 bytes of the input plus the output of every layer, for one image: the sum, not
  the largest pair, because the views that look inside a model (feature maps, Grad-CAM's autograd graph) keep
  every layer's output alive at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.utils._device
import torchvision
from torch import nn
from torchvision.models import get_model, list_models

from app.core.models.hooks import eval_mode, forward_hooks
from app.core.models.layers import TreeRecorder

MAX_LAYERS = 64
MAX_CHANNELS = 1024
MAX_FEATURES = 65_536
MAX_KERNEL = 11
MAX_INPUT_SIDE = 512
MAX_CLASSES = 10_000
# Images give 1 (grey) or 3 (RGB) channels; any other count would fail in every view.
IN_CHANNELS = (1, 3)
# nesting of the architecture JSON: a real description needs 3 levels (object > layers > layer)
MAX_JSON_DEPTH = 32
FLOAT_BYTES = 4

LAYER_TYPES = (
    "conv2d",
    "batchnorm2d",
    "relu",
    "relu6",
    "gelu",
    "sigmoid",
    "tanh",
    "maxpool2d",
    "avgpool2d",
    "global_avgpool",
    "flatten",
    "dropout",
    "linear",
)
_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}
# Names an nn.Sequential already has (training, forward, modules, ...): add_module refuses them with a KeyError.
_RESERVED_NAMES = frozenset(dir(nn.Sequential()))


class ArchitectureError(ValueError):
    """A described architecture that cannot be built; `field` says where (e.g. 'layers.3.kernel_size')."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class LayerPlan:
    """One described layer with its arguments resolved and its shapes known (per image, no batch dimension)."""

    name: str
    kind: str
    args: dict[str, Any]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int
    other_ops: int = 0


@dataclass(frozen=True)
class Estimate:
    """What one image through the model costs, known before the model is built (conventions in the module doc)."""

    params: int
    macs: int
    activation_bytes: int
    depth: int  # convolutions and fully-connected layers
    output_shape: tuple[int, ...]  # per image
    other_ops: int = 0  # normalisation, pooling, activations (see the module doc)


@dataclass
class Architecture:
    """A validated description. Either `layers` (a sequential CNN) or `torchvision` (a zoo architecture)."""

    name: str
    in_channels: int
    input_size: tuple[int, int]
    categories: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layers: list[dict[str, Any]] = field(default_factory=list)
    torchvision: str | None = None
    # For `layers`: each layer resolved and shaped (filled by parse_architecture).
    plan: list[LayerPlan] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "in_channels": self.in_channels,
            "input_size": list(self.input_size),
            "categories": self.categories,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.torchvision:
            body["torchvision"] = self.torchvision
        else:
            body["layers"] = self.layers
        return body


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion: a hostile document cannot overflow it."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            deepest = max(deepest, depth + 1)
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
            deepest = max(deepest, depth + 1)
    return deepest


def _int(
    spec: dict[str, Any], key: str, where: str, default: int | None = None, lo: int = 0, hi: int = 1 << 30
) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchitectureError(f"{where}.{key} must be an integer", f"{where}.{key}")
    if not lo <= value <= hi:
        raise ArchitectureError(f"{where}.{key} must be between {lo} and {hi}, not {value}", f"{where}.{key}")
    return value


def parse_architecture(spec: Any) -> Architecture:
    """Validate a JSON description; raise ArchitectureError naming the offending field.

    Pure arithmetic: nothing is built or allocated. For `layers`, every shape is inferred here (`arch.plan`).
    """
    if not isinstance(spec, dict):
        raise ArchitectureError("the architecture must be a JSON object", "architecture")
    if json_depth(spec) > MAX_JSON_DEPTH:
        raise ArchitectureError(
            f"the architecture is nested deeper than {MAX_JSON_DEPTH} levels", "architecture"
        )
    name = spec.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 80:
        raise ArchitectureError("name must be a string of 1 to 80 characters", "name")
    in_channels = spec.get("in_channels", 3)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels not in IN_CHANNELS:
        raise ArchitectureError(
            f"in_channels must be 1 (greyscale) or 3 (RGB), the channels an image can give, not {str(in_channels)[:20]}",
            "in_channels",
        )
    size = spec.get("input_size", [224, 224])
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= MAX_INPUT_SIDE for v in size)
    ):
        raise ArchitectureError(
            f"input_size must be [height, width], each 8 to {MAX_INPUT_SIDE}", "input_size"
        )
    categories = spec.get("categories")
    if (
        not isinstance(categories, list)
        or not 2 <= len(categories) <= MAX_CLASSES
        or not all(isinstance(c, str) and 0 < len(c) <= 100 for c in categories)
    ):
        raise ArchitectureError("categories must list 2 or more class names (strings)", "categories")
    mean = _floats(spec.get("mean", [0.0] * in_channels), "mean", in_channels)
    std = _floats(spec.get("std", [1.0] * in_channels), "std", in_channels)
    if any(s <= 0 for s in std):
        raise ArchitectureError("std values must be positive", "std")
    arch = Architecture(name, in_channels, (size[0], size[1]), list(categories), mean, std)
    if "torchvision" in spec:
        tv = spec["torchvision"]
        if not isinstance(tv, str) or tv not in set(list_models(module=torchvision.models)):
            raise ArchitectureError(
                f"torchvision must name a torchvision classifier, not {tv!r}", "torchvision"
            )
        if in_channels != 3:
            raise ArchitectureError("torchvision architectures take 3 input channels", "in_channels")
        arch.torchvision = tv
    else:
        layers = spec.get("layers")
        if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
            raise ArchitectureError(f"layers must be a list of 1 to {MAX_LAYERS} layers", "layers")
        arch.layers = [dict(layer) if isinstance(layer, dict) else {} for layer in layers]
        arch.plan = plan_layers(arch)
    return arch


def _floats(values: Any, key: str, n: int) -> tuple[float, ...]:
    if (
        not isinstance(values, list)
        or len(values) != n
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values
        )
    ):
        # JSON's NaN/Infinity would make every prediction NaN: refuse them here, naming the key.
        raise ArchitectureError(f"{key} must list {n} finite numbers (one per input channel)", key)
    return tuple(float(v) for v in values)


def _shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"a {shape[0]}-channel {shape[1]}x{shape[2]} feature map"
    return f"a flat vector of {shape[0]:,} values"


def _map(shape: tuple[int, ...], where: str, kind: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ArchitectureError(
            f"{where}: {kind} needs a feature map (channels, height, width) but gets {_shape_text(shape)} "
            "(it comes after a flatten or linear layer)",
            f"{where}.type",
        )
    return shape[0], shape[1], shape[2]


def _out_side(side: int, k: int, stride: int, padding: int, dilation: int) -> int:
    # PyTorch's Conv2d/MaxPool2d output size (floor mode).
    return (side + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def _plan_one(
    spec: dict[str, Any], index: int, shape: tuple[int, ...]
) -> tuple[str, dict[str, Any], tuple[int, ...], int, int]:
    """(kind, resolved arguments, output shape, parameters, arithmetic) of one layer given its input shape.

    The arithmetic is MACs for conv2d and linear, other operations for normalisation and pooling (0 for the rest);
    `plan_layers` sorts them and adds activations."""
    where = f"layers.{index}"
    kind = spec.get("type")
    if not isinstance(kind, str):
        kind = repr(kind)
    if kind == "conv2d":
        c, h, w = _map(shape, where, kind)
        out = _int(spec, "out_channels", where, lo=1, hi=MAX_CHANNELS)
        k = _int(spec, "kernel_size", where, default=3, lo=1, hi=MAX_KERNEL)
        stride = _int(spec, "stride", where, default=1, lo=1, hi=8)
        padding = _int(spec, "padding", where, default=k // 2, lo=0, hi=MAX_KERNEL)
        dilation = _int(spec, "dilation", where, default=1, lo=1, hi=8)
        groups = _int(spec, "groups", where, default=1, lo=1, hi=MAX_CHANNELS)
        if c % groups or out % groups:
            raise ArchitectureError(
                f"{where}.groups must divide the input and output channels", f"{where}.groups"
            )
        ho, wo = (_out_side(s, k, stride, padding, dilation) for s in (h, w))
        if ho < 1 or wo < 1:
            raise ArchitectureError(
                f"{where}: the {h}x{w} input is smaller than the {k}x{k} kernel (dilation {dilation}, "
                f"padding {padding}) can cover",
                f"{where}.kernel_size",
            )
        args = {
            "in_channels": c,
            "out_channels": out,
            "kernel_size": k,
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
        }
        params = out * (c // groups) * k * k + out
        return kind, args, (out, ho, wo), params, out * ho * wo * (c // groups) * k * k
    if kind == "batchnorm2d":
        c, h, w = _map(shape, where, kind)
        return kind, {"num_features": c}, shape, 2 * c, c * h * w
    if kind in _ACTIVATIONS:
        return kind, {}, shape, 0, 0
    if kind in ("maxpool2d", "avgpool2d"):
        c, h, w = _map(shape, where, kind)
        k = _int(spec, "kernel_size", where, default=2, lo=1, hi=MAX_KERNEL)
        stride = _int(spec, "stride", where, default=k, lo=1, hi=MAX_KERNEL)
        ho, wo = (_out_side(s, k, stride, 0, 1) for s in (h, w))
        if ho < 1 or wo < 1:
            raise ArchitectureError(
                f"{where}: the {h}x{w} input is smaller than the {k}x{k} pooling window",
                f"{where}.kernel_size",
            )
        return kind, {"kernel_size": k, "stride": stride}, (c, ho, wo), 0, c * ho * wo * k * k
    if kind == "global_avgpool":
        c, h, w = _map(shape, where, kind)
        return kind, {}, (c, 1, 1), 0, c * h * w
    if kind == "flatten":
        return kind, {}, (math.prod(shape),), 0, 0
    if kind == "dropout":
        p = spec.get("p", 0.5)
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p < 1:
            raise ArchitectureError(f"{where}.p must be in [0, 1)", f"{where}.p")
        return kind, {"p": float(p)}, shape, 0, 0
    if kind == "linear":
        if len(shape) != 1:
            raise ArchitectureError(f"{where}: a linear layer needs a flatten before it", f"{where}.type")
        out = _int(spec, "out_features", where, lo=1, hi=MAX_FEATURES)
        return (
            kind,
            {"in_features": shape[0], "out_features": out},
            (out,),
            shape[0] * out + out,
            shape[0] * out,
        )
    raise ArchitectureError(
        f"{where}.type must be one of {', '.join(LAYER_TYPES)} (not {str(kind)[:40]!r})", f"{where}.type"
    )


def plan_layers(arch: Architecture) -> list[LayerPlan]:
    """Resolve and shape every layer of a `layers` description, by arithmetic; ArchitectureError names the field."""
    shape: tuple[int, ...] = (arch.in_channels, *arch.input_size)
    counts: dict[str, int] = {}
    names: set[str] = set()
    plan: list[LayerPlan] = []
    for index, spec in enumerate(arch.layers):
        kind, args, out_shape, params, arithmetic = _plan_one(spec, index, shape)
        macs, other = (arithmetic, 0) if kind in ("conv2d", "linear") else (0, arithmetic)
        if kind in _ACTIVATIONS:
            other = math.prod(out_shape)
        counts[kind] = counts.get(kind, 0) + 1
        name = spec.get("name") or f"{kind}{counts[kind]}"
        where = f"layers.{index}.name"
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 64 or name in names:
            raise ArchitectureError(f"{where} must be a unique identifier of at most 64 characters", where)
        if name in _RESERVED_NAMES:
            raise ArchitectureError(
                f"{where} {name!r} is the name of a PyTorch module attribute; choose another name", where
            )
        names.add(name)
        plan.append(LayerPlan(name, kind, args, shape, out_shape, params, macs, other))
        shape = out_shape
    if shape != (len(arch.categories),):
        raise ArchitectureError(
            f"the last layer gives output of shape {(1, *shape)}, expected (1, {len(arch.categories)}) "
            "for the categories listed",
            "layers",
        )
    return plan


def _module_of(step: LayerPlan) -> nn.Module:
    a = step.args
    if step.kind == "conv2d":
        return nn.Conv2d(
            a["in_channels"],
            a["out_channels"],
            a["kernel_size"],
            a["stride"],
            a["padding"],
            a["dilation"],
            a["groups"],
        )
    if step.kind == "batchnorm2d":
        return nn.BatchNorm2d(a["num_features"])
    if step.kind in _ACTIVATIONS:
        return _ACTIVATIONS[step.kind]()
    if step.kind == "maxpool2d":
        return nn.MaxPool2d(a["kernel_size"], a["stride"])
    if step.kind == "avgpool2d":
        return nn.AvgPool2d(a["kernel_size"], a["stride"])
    if step.kind == "global_avgpool":
        return nn.AdaptiveAvgPool2d(1)
    if step.kind == "flatten":
        return nn.Flatten()
    if step.kind == "dropout":
        return nn.Dropout(a["p"])
    return nn.Linear(a["in_features"], a["out_features"])


def _sequential(arch: Architecture) -> nn.Sequential:
    seq = nn.Sequential()
    for step in arch.plan:
        seq.add_module(step.name, _module_of(step))
    return seq


class _MetaExceptSizes(torch.utils._device.DeviceContext):
    """The meta device for everything but torch.arange/torch.tensor: RegNet computes its widths from small CPU
    tensors while building, which meta tensors (no data) cannot give."""

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        if func in (torch.arange, torch.tensor):
            return func(*args, **(kwargs or {}))
        return super().__torch_function__(func, types, args, kwargs)


def build_meta(arch: Architecture) -> nn.Module:
    """The module on the meta device: shapes and parameter counts without memory or initialisation."""
    if not arch.torchvision:
        with torch.device("meta"):
            return _sequential(arch)
    try:
        with torch.device("meta"):
            return get_model(arch.torchvision, weights=None, num_classes=len(arch.categories))
    except Exception:
        # A builder that reads tensor data while building (RegNet): retry with small CPU tensors allowed.
        with _MetaExceptSizes("meta"):
            return get_model(arch.torchvision, weights=None, num_classes=len(arch.categories))


def estimate(arch: Architecture) -> Estimate:
    """Parameters, MACs and activation bytes of one image, without allocating the model (conventions above).

    `layers`: arithmetic over `arch.plan`. `torchvision`: the model built on the meta device and run on a meta
    tensor (shapes propagate, no memory); a model that cannot run at `input_size` is an ArchitectureError. For
    torchvision models the activations are the leaf modules' outputs: functional operations (a residual `+`) are
    not modules and are not counted, in-place activations are counted as the copies the feature views make.
    Measured: 0.06 s (resnet18) to 0.9 s (regnet_y_128gf, 637 M parameters) and at most +30 MiB of RSS.
    """
    if not arch.torchvision:
        elements = arch.in_channels * arch.input_size[0] * arch.input_size[1]
        elements += sum(math.prod(step.out_shape) for step in arch.plan)
        return Estimate(
            params=sum(step.params for step in arch.plan),
            macs=sum(step.macs for step in arch.plan),
            other_ops=sum(step.other_ops for step in arch.plan),
            activation_bytes=FLOAT_BYTES * elements,
            depth=sum(1 for step in arch.plan if step.kind in ("conv2d", "linear")),
            output_shape=arch.plan[-1].out_shape,
        )
    try:
        model = build_meta(arch)
    except Exception as exc:
        # Whatever a builder raises is this architecture's problem, to be told to the client, not a 500.
        raise ArchitectureError(
            f"torchvision {arch.torchvision} cannot be checked before building it ({exc})", "torchvision"
        ) from exc
    model.eval()
    elements = arch.in_channels * arch.input_size[0] * arch.input_size[1]
    x = torch.zeros(1, arch.in_channels, *arch.input_size, device="meta")
    recorder = TreeRecorder(model)

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        count = recorder.make_hook(name)
        leaf = name in recorder.leaves

        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            nonlocal elements
            count(module, inputs, output)
            if leaf and isinstance(output, torch.Tensor):
                elements += output.numel()

        return hook

    try:
        with forward_hooks(recorder.named, make_hook), recorder.tracking(x), torch.no_grad():
            out = model(x)
    except Exception as exc:
        # Shape errors come as RuntimeError (conv), ValueError or AssertionError (ViT's fixed image size).
        size = f"[{arch.input_size[0]}, {arch.input_size[1]}]"
        raise ArchitectureError(
            f"torchvision {arch.torchvision} does not run at input_size {size}: {exc or type(exc).__name__}",
            "input_size",
        ) from exc
    tree = recorder.build(model, x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != len(arch.categories):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ArchitectureError(
            f"torchvision {arch.torchvision} gives output {shape}, expected (1, {len(arch.categories)})",
            "torchvision",
        )
    return Estimate(
        params=sum(p.numel() for p in model.parameters()),
        macs=tree.macs,
        other_ops=tree.other_ops,
        activation_bytes=FLOAT_BYTES * elements,
        depth=sum(1 for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)),
        output_shape=tuple(out.shape[1:]),
    )


def build_module(arch: Architecture) -> nn.Module:
    """The module for a validated architecture, with seeded random weights.

    No dry run: every shape was inferred in parse_architecture (layers) or estimate (torchvision).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if arch.torchvision:
            return get_model(arch.torchvision, weights=None, num_classes=len(arch.categories))
        return _sequential(arch)


def probe_inputs(arch: Architecture, batch_noise_seed: int = 0) -> torch.Tensor:
    """(2, C, H, W): a mid-grey image and a uniform-noise image, normalised as the model's preprocessing does."""
    generator = torch.Generator().manual_seed(batch_noise_seed)
    grey = torch.full((1, arch.in_channels, *arch.input_size), 0.5)
    noise = torch.rand((1, arch.in_channels, *arch.input_size), generator=generator)
    mean = torch.tensor(arch.mean).view(1, -1, 1, 1)
    std = torch.tensor(arch.std).view(1, -1, 1, 1)
    return (torch.cat([grey, noise]) - mean) / std


def first_non_finite_layer(model: nn.Module, inputs: torch.Tensor) -> str | None:
    """The first layer (dotted name, in execution order) whose output holds NaN or infinity, else None.

    The one real run an upload gets: weights that overflow on ordinary images are refused at upload instead of
    failing in every view that shows activations. Images go one at a time (half the peak memory of a batch), and
    each output is checked through its float32 sum: NaN and infinity always reach the sum, and a sum that
    overflows means values no view could average either. No copy of the output is made.
    """
    bad: list[str] = []

    def make_check(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def check(module: nn.Module, inputs: Any, output: Any) -> None:
            if (
                not bad
                and isinstance(output, torch.Tensor)
                and output.is_floating_point()
                and not bool(torch.isfinite(output.sum()))
            ):
                bad.append(name)

        return check

    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    with eval_mode(model), forward_hooks(leaves, make_check), torch.inference_mode():
        for image in inputs.split(1):
            out = model(image)
            if bad:
                return bad[0]
            if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
                return "output"
    return None


def _check_weights(expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ArchitectureError(
            f"the weights do not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}",
            "weights",
        )
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ArchitectureError(
                f"weight {key} has shape {tuple(value.shape)}, the architecture needs {tuple(expected[key].shape)}",
                "weights",
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            # NaN or infinite weights make every probability NaN: say which tensor, not a page of nulls.
            raise ArchitectureError(f"weight {key} contains NaN or infinite values", "weights")


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load a safetensors state dict strictly; mismatches become an ArchitectureError naming keys."""
    _check_weights(model.state_dict(), tensors)
    model.load_state_dict(tensors, strict=True)


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor, copied when its data is not 64-byte aligned (safetensors packs tensors end to end).

    Vectorised kernels take another path on unaligned data: measured, the same weights gave logits 1.5e-8 apart
    from those of the module that trained them. Torch allocates 64-byte aligned, so a copy fixes it.
    """
    return tensor if tensor.data_ptr() % 64 == 0 else tensor.clone()


def module_with_weights(arch: Architecture, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The module whose state is `tensors` (checked as in load_weights), built without random initialisation.

    Built on the meta device and given the tensors themselves (cast to the module's dtypes), so memory holds one
    copy of the weights instead of three (random init, the loaded tensors, the copy into the module): measured
    for a 141 MiB weights file, peak RSS +668 -> +387 MiB to build a stored model, +531 -> +388 MiB to upload.
    """
    model = build_meta(arch)
    expected = model.state_dict()
    _check_weights(expected, tensors)
    state = {key: _aligned(value.to(expected[key].dtype)) for key, value in tensors.items()}
    model.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        # A buffer outside the state dict (non-persistent) has no value to take: build it for real instead.
        model = build_module(arch)
        model.load_state_dict(state, strict=True)
    return model
