"""The cost estimate of a described model agrees with the module it builds (params, MACs, shapes, activations)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from app.core.models.custom_models import (
    ArchitectureError,
    build_meta,
    build_module,
    estimate,
    first_non_finite_layer,
    json_depth,
    module_with_weights,
    parse_architecture,
    probe_inputs,
)
from app.core.models.layers import layer_tree

EVERY_LAYER: dict[str, Any] = {
    "name": "every layer type",
    "in_channels": 3,
    "input_size": [37, 29],  # odd sizes: floor division in every output-size formula
    "categories": ["a", "b", "c"],
    "layers": [
        {"type": "conv2d", "out_channels": 6, "kernel_size": 5, "stride": 2, "padding": 1},
        {"type": "batchnorm2d"},
        {"type": "relu"},
        {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "dilation": 2, "groups": 3},
        {"type": "relu6"},
        {"type": "maxpool2d", "kernel_size": 3, "stride": 2},
        {"type": "conv2d", "out_channels": 8, "kernel_size": 1, "padding": 0},
        {"type": "gelu"},
        {"type": "avgpool2d", "kernel_size": 2},
        {"type": "tanh"},
        {"type": "flatten"},
        {"type": "dropout", "p": 0.1},
        {"type": "linear", "out_features": 10},
        {"type": "sigmoid"},
        {"type": "linear", "out_features": 3},
    ],
}
GLOBAL_POOL: dict[str, Any] = {
    "name": "global pool",
    "in_channels": 1,
    "input_size": [16, 20],
    "categories": ["x", "y"],
    "layers": [
        {"type": "conv2d", "out_channels": 4, "name": "stem"},
        {"type": "global_avgpool"},
        {"type": "flatten"},
        {"type": "linear", "out_features": 2, "name": "head"},
    ],
}


def _leaf_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        for name, m in model.named_modules()
        if not any(True for _ in m.children())
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


@pytest.mark.parametrize("spec", [EVERY_LAYER, GLOBAL_POOL], ids=["every-layer", "global-pool"])
def test_estimate_matches_the_built_module(spec: dict[str, Any]) -> None:
    arch = parse_architecture(spec)
    cost = estimate(arch)
    module = build_module(arch)
    x = torch.zeros(1, arch.in_channels, *arch.input_size)
    assert cost.params == sum(p.numel() for p in module.parameters())
    tree = layer_tree(module, x)
    assert cost.macs == tree.macs
    shapes = _leaf_outputs(module, x)
    assert {step.name: step.out_shape for step in arch.plan} == shapes
    assert cost.output_shape == (len(arch.categories),)
    assert cost.activation_bytes == 4 * (x.numel() + sum(math.prod(s) for s in shapes.values()))
    assert cost.depth == sum(1 for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    # The meta build has the same structure, and costs no memory.
    meta = build_meta(arch)
    assert all(p.is_meta for p in meta.parameters())
    assert [n for n, _ in meta.named_modules()] == [n for n, _ in module.named_modules()]


@pytest.mark.parametrize(("name", "size"), [("resnet18", (64, 64)), ("mobilenet_v3_small", (96, 80))])
def test_torchvision_estimate_matches_the_built_module(name: str, size: tuple[int, int]) -> None:
    arch = parse_architecture(
        {"name": name, "torchvision": name, "input_size": list(size), "categories": ["a", "b"]}
    )
    cost = estimate(arch)
    module = build_module(arch)
    x = torch.zeros(1, 3, *size)
    assert cost.params == sum(p.numel() for p in module.parameters())
    assert cost.macs == layer_tree(module, x).macs
    assert cost.output_shape == (2,)


def test_regnet_is_estimated_on_the_meta_device_too() -> None:
    # RegNet computes its widths from tensors while building: the meta build keeps those on the CPU.
    arch = parse_architecture(
        {"name": "r", "torchvision": "regnet_x_400mf", "input_size": [64, 64], "categories": ["a", "b"]}
    )
    assert estimate(arch).params == sum(p.numel() for p in build_module(arch).parameters())


def test_estimate_needs_no_memory_for_a_huge_description() -> None:
    # Five 1024->1024 11x11 convolutions (the 557-byte JSON): 634 M parameters, counted, not built.
    layers = [{"type": "conv2d", "out_channels": 1024, "kernel_size": 11}] * 5
    spec = dict(
        GLOBAL_POOL,
        layers=[
            *layers,
            {"type": "global_avgpool"},
            {"type": "flatten"},
            {"type": "linear", "out_features": 2},
        ],
    )
    cost = estimate(parse_architecture(spec))
    assert cost.params == 1024 * 1 * 121 + 1024 + 4 * (1024 * 1024 * 121 + 1024) + 1024 * 2 + 2
    assert cost.macs == 16 * 20 * 1024 * 121 * (1 + 4 * 1024) + 1024 * 2
    assert cost.other_ops == 1024 * 16 * 20  # the global average pool reads every input element once


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"layers": [{"type": "conv2d", "out_channels": 2, "name": "training"}]}, "layers.0.name"),
        ({"layers": [{"type": "relu", "name": "forward"}]}, "layers.0.name"),
        ({"layers": [{"type": "relu", "name": "a"}, {"type": "relu", "name": "a"}]}, "layers.1.name"),
        ({"in_channels": 4}, "in_channels"),
        ({"in_channels": 2}, "in_channels"),
        ({"in_channels": True}, "in_channels"),
        ({"layers": [{"type": "linear", "out_features": 2}]}, "layers.0.type"),
        ({"layers": [{"type": "flatten"}, {"type": "batchnorm2d"}]}, "layers.1.type"),
        (
            {"layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 11, "padding": 0}] * 2},
            "layers.1.kernel_size",
        ),
        ({"layers": [{"type": "flatten"}, {"type": "linear", "out_features": 3}]}, "layers"),
        ({"layers": [{"type": {"nested": True}}]}, "layers.0.type"),
    ],
)
def test_descriptions_that_cannot_work_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ArchitectureError) as info:
        parse_architecture({**GLOBAL_POOL, "in_channels": 1, **change})
    assert info.value.field == field


def test_torchvision_that_cannot_run_at_the_input_size() -> None:
    arch = parse_architecture(
        {"name": "i", "torchvision": "inception_v3", "input_size": [8, 8], "categories": ["a", "b"]}
    )
    with pytest.raises(ArchitectureError) as info:
        estimate(arch)
    assert info.value.field == "input_size"
    vit = parse_architecture(
        {"name": "v", "torchvision": "vit_b_16", "input_size": [64, 64], "categories": ["a", "b"]}
    )
    with pytest.raises(ArchitectureError):
        estimate(vit)


def test_json_depth_is_iterative() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep) == 100_000
    assert json_depth({"a": [1, {"b": 2}]}) == 3


def test_probe_finds_the_first_layer_that_overflows() -> None:
    arch = parse_architecture(GLOBAL_POOL)
    module = build_module(arch)
    assert first_non_finite_layer(module, probe_inputs(arch)) is None
    with torch.no_grad():
        module.head.weight.fill_(3e38)  # type: ignore[union-attr, operator]
        module.stem.weight.fill_(3e38)  # type: ignore[union-attr, operator]
    assert first_non_finite_layer(module, probe_inputs(arch)) == "stem"
    assert module.training  # restored


@pytest.mark.parametrize(
    "spec",
    [EVERY_LAYER, {"name": "r", "torchvision": "resnet18", "input_size": [32, 32], "categories": ["a", "b"]}],
    ids=["layers", "resnet18"],
)
def test_module_with_weights_equals_a_real_build_loaded(spec: dict[str, Any]) -> None:
    arch = parse_architecture(spec)
    torch.manual_seed(3)
    state = {
        k: torch.rand_like(v) + 0.5 if v.is_floating_point() else v
        for k, v in build_module(arch).state_dict().items()
    }
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}  # cast back to float32
    model = module_with_weights(arch, half)
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.parameters())
    reference = build_module(arch)
    reference.load_state_dict(half)
    x = probe_inputs(arch)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()(x))
    with pytest.raises(ArchitectureError):
        module_with_weights(arch, {**half, next(iter(half)): torch.zeros(1)})
