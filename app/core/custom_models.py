"""Models described by users: a JSON architecture (a sequence of layers, or a torchvision name) built into a module.

Nothing here unpickles: weights come separately as safetensors. Every size is bounded, so a described model
cannot exhaust memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, list_models

MAX_LAYERS = 64
MAX_CHANNELS = 1024
MAX_FEATURES = 65_536
MAX_KERNEL = 11
MAX_INPUT_SIDE = 512
MAX_PARAMETERS = 60_000_000
MAX_CLASSES = 10_000


class ArchitectureError(ValueError):
    """A described architecture that cannot be built; `field` says where (e.g. 'layers.3.kernel_size')."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


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
    """Validate a JSON description; raise ArchitectureError naming the offending field."""
    if not isinstance(spec, dict):
        raise ArchitectureError("the architecture must be a JSON object", "architecture")
    name = spec.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 80:
        raise ArchitectureError("name must be a string of 1 to 80 characters", "name")
    in_channels = _int(spec, "in_channels", "architecture", default=3, lo=1, hi=4)
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
        if tv not in set(list_models(module=torchvision.models)):
            raise ArchitectureError(
                f"torchvision must name a torchvision classifier, not {tv!r}", "torchvision"
            )
        if in_channels != 3:
            raise ArchitectureError("torchvision architectures take 3 input channels", "in_channels")
        arch.torchvision = str(tv)
    else:
        layers = spec.get("layers")
        if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
            raise ArchitectureError(f"layers must be a list of 1 to {MAX_LAYERS} layers", "layers")
        arch.layers = [dict(layer) if isinstance(layer, dict) else {} for layer in layers]
    build_module(arch)  # builds once to check shapes and the parameter bound
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


def _layer(
    spec: dict[str, Any], index: int, channels: int, features: int | None
) -> tuple[nn.Module, int, int | None]:
    """Build one layer; track the channels (or flat features) flowing into the next."""
    where = f"layers.{index}"
    kind = spec.get("type")
    if kind == "conv2d":
        out = _int(spec, "out_channels", where, lo=1, hi=MAX_CHANNELS)
        k = _int(spec, "kernel_size", where, default=3, lo=1, hi=MAX_KERNEL)
        stride = _int(spec, "stride", where, default=1, lo=1, hi=8)
        padding = _int(spec, "padding", where, default=k // 2, lo=0, hi=MAX_KERNEL)
        dilation = _int(spec, "dilation", where, default=1, lo=1, hi=8)
        groups = _int(spec, "groups", where, default=1, lo=1, hi=MAX_CHANNELS)
        if channels % groups or out % groups:
            raise ArchitectureError(
                f"{where}.groups must divide the input and output channels", f"{where}.groups"
            )
        return nn.Conv2d(channels, out, k, stride, padding, dilation, groups), out, None
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(channels), channels, None
    if kind in ("relu", "relu6", "gelu", "sigmoid", "tanh"):
        act: dict[str, type[nn.Module]] = {
            "relu": nn.ReLU,
            "relu6": nn.ReLU6,
            "gelu": nn.GELU,
            "sigmoid": nn.Sigmoid,
            "tanh": nn.Tanh,
        }
        return act[kind](), channels, features
    if kind in ("maxpool2d", "avgpool2d"):
        k = _int(spec, "kernel_size", where, default=2, lo=1, hi=MAX_KERNEL)
        stride = _int(spec, "stride", where, default=k, lo=1, hi=MAX_KERNEL)
        pool = nn.MaxPool2d(k, stride) if kind == "maxpool2d" else nn.AvgPool2d(k, stride)
        return pool, channels, None
    if kind == "global_avgpool":
        return nn.AdaptiveAvgPool2d(1), channels, None
    if kind == "flatten":
        return nn.Flatten(), channels, -1
    if kind == "dropout":
        p = spec.get("p", 0.5)
        if not isinstance(p, int | float) or not 0 <= p < 1:
            raise ArchitectureError(f"{where}.p must be in [0, 1)", f"{where}.p")
        return nn.Dropout(float(p)), channels, features
    if kind == "linear":
        if features is None:
            raise ArchitectureError(f"{where}: a linear layer needs a flatten before it", f"{where}.type")
        out = _int(spec, "out_features", where, lo=1, hi=MAX_FEATURES)
        return nn.LazyLinear(out), channels, out
    raise ArchitectureError(
        f"{where}.type must be one of conv2d, batchnorm2d, relu, relu6, gelu, sigmoid, tanh, maxpool2d, avgpool2d, "
        f"global_avgpool, flatten, dropout, linear (not {kind!r})",
        f"{where}.type",
    )


def build_module(arch: Architecture) -> nn.Module:
    """The module for a validated architecture, with seeded random weights; its output size is checked."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if arch.torchvision:
            model: nn.Module = get_model(arch.torchvision, weights=None, num_classes=len(arch.categories))
        else:
            seq = nn.Sequential()
            channels, features = arch.in_channels, None
            counts: dict[str, int] = {}
            for index, spec in enumerate(arch.layers):
                module, channels, features = _layer(spec, index, channels, features)
                kind = str(spec["type"])
                counts[kind] = counts.get(kind, 0) + 1
                name = spec.get("name") or f"{kind}{counts[kind]}"
                if not isinstance(name, str) or not name.isidentifier() or name in seq._modules:
                    raise ArchitectureError(
                        f"layers.{index}.name must be a unique identifier", f"layers.{index}.name"
                    )
                seq.add_module(name, module)
            model = seq
            # One dry run materialises the lazy linear layers and checks every shape.
            try:
                with torch.no_grad():
                    out = model(torch.zeros(1, arch.in_channels, *arch.input_size))
            except RuntimeError as exc:
                raise ArchitectureError(f"the layers do not fit together: {exc}", "layers") from exc
            if out.ndim != 2 or out.shape[1] != len(arch.categories):
                raise ArchitectureError(
                    f"the last layer gives output of shape {tuple(out.shape)}, expected (1, {len(arch.categories)}) "
                    "for the categories listed",
                    "layers",
                )
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMETERS:
        raise ArchitectureError(
            f"{params:,} parameters is more than the {MAX_PARAMETERS:,} allowed", "layers"
        )
    return model


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load a safetensors state dict strictly; mismatches become an ArchitectureError naming keys."""
    expected = model.state_dict()
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
    model.load_state_dict(tensors, strict=True)
