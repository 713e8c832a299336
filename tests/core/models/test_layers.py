"""Module tree, shapes, parameters and MACs from one forward pass; hooks and training flags restored."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from app.core.models.layers import (
    LayerNotFound,
    conv_layer_names,
    flat_layers,
    get_layer,
    layer_names,
    layer_tree,
    totals,
)


def _all_hooks_empty(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules()
    )


class Tiny(nn.Module):
    """conv(3->8, 3x3) BN ReLU maxpool2 | grouped conv(8->16, 3x3, s2, groups=2) ReLU | pool | fc."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=False), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.block(self.stem(x))), 1))


def test_shapes_params_and_macs_by_hand() -> None:
    model = Tiny()
    tree = layer_tree(model, torch.randn(2, 3, 16, 16))
    conv1 = tree.find("stem.0")
    # 8 x 16 x 16 outputs, each 3 * 3*3 multiply-adds; params 8*3*9 + 8 bias.
    assert conv1.output_shape == (8, 16, 16)
    assert conv1.params == 8 * 3 * 9 + 8
    assert (conv1.macs, conv1.other_ops) == (8 * 16 * 16 * 3 * 9, 0)
    # BN: no MAC, one other operation (its eval-mode multiply-add) per element.
    assert (tree.find("stem.1").macs, tree.find("stem.1").other_ops) == (0, 8 * 16 * 16)
    assert (tree.find("stem.2").macs, tree.find("stem.2").other_ops) == (
        0,
        8 * 16 * 16,
    )  # ReLU: one per element
    assert tree.find("stem.3").output_shape == (8, 8, 8)
    assert (tree.find("stem.3").macs, tree.find("stem.3").other_ops) == (0, 8 * 8 * 8 * 4)  # 2x2 window
    grouped = tree.find("block.0")
    # groups=2: each output sees only 8/2 = 4 input channels.
    assert grouped.output_shape == (16, 4, 4)
    assert grouped.params == 16 * 4 * 9
    assert grouped.macs == 16 * 4 * 4 * 4 * 9
    assert tree.find("block.1").other_ops == 16 * 4 * 4
    assert (tree.find("pool").macs, tree.find("pool").other_ops) == (0, 16 * 4 * 4)  # every input read once
    assert tree.find("fc").macs == 16 * 5
    assert tree.find("stem").macs == sum(c.macs for c in tree.find("stem").children)
    assert tree.find("stem").other_ops == sum(c.other_ops for c in tree.find("stem").children)
    assert tree.output_shape == (5,)
    tot = totals(model, tree)
    assert tot.params == sum(p.numel() for p in model.parameters())
    # Hand-computed: conv 55,296 + grouped conv 9,216 + fc 80 MACs; BN 2,048 + ReLU 2,048 + max-pool 2,048 +
    # ReLU 256 + global pool 256 other operations.
    assert tot.macs == 55_296 + 9_216 + 80
    assert tot.other_ops == 2_048 + 2_048 + 2_048 + 256 + 256
    assert tot.macs == sum(i.macs for i in flat_layers(tree) if i.is_leaf)
    assert tot.input_shape == (3, 16, 16)
    assert tot.uncounted_types == ()


def test_depthwise_conv_macs() -> None:
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=6)
    tree = layer_tree(nn.Sequential(conv), torch.zeros(1, 6, 10, 10))
    assert tree.find("0").macs == 6 * 10 * 10 * 9


def test_totals_agree_with_torchvision_metadata() -> None:
    model = torchvision.models.get_model("resnet18", weights=None)
    tree = layer_tree(model, torch.zeros(1, 3, 224, 224))
    tot = totals(model, tree)
    meta = torchvision.models.get_model_weights("resnet18").DEFAULT.meta
    assert tot.params == meta["num_params"]
    # torchvision's "_ops" is GMACs of conv + linear, rounded to 3 decimals: so are ours, BN and pooling apart.
    assert tot.macs / 1e9 == pytest.approx(meta["_ops"], abs=0.0005)
    assert 0 < tot.other_ops < 0.01 * tot.macs
    assert len(conv_layer_names(tree)) == sum(isinstance(m, nn.Conv2d) for m in model.modules())


def test_reused_module_and_order() -> None:
    class Reuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_a = nn.Conv2d(1, 2, 3, padding=1)
            self.conv_b = nn.Conv2d(2, 2, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv_b(self.act(self.conv_a(x))))

    tree = layer_tree(Reuse(), torch.zeros(1, 1, 8, 8))
    assert tree.find("act").calls == 2
    assert tree.find("act").call_shapes == ((2, 8, 8), (2, 8, 8))
    assert tree.find("act").label == "act (called 2 times)" and tree.find("conv_a").label == "conv_a"
    assert conv_layer_names(tree) == ["conv_a", "conv_b"]


def test_no_hooks_left_and_training_restored_even_on_error() -> None:
    model = Tiny()
    model.train()
    model.block.eval()  # a mixed state must come back exactly
    layer_tree(model, torch.zeros(1, 3, 16, 16))
    assert _all_hooks_empty(model)
    assert model.training and model.stem.training and not model.block.training
    with pytest.raises(RuntimeError):
        layer_tree(model, torch.zeros(1, 5, 16, 16))  # wrong channel count fails inside forward
    assert _all_hooks_empty(model)
    assert model.training and not model.block.training


def test_get_layer_and_choices() -> None:
    model = Tiny()
    assert get_layer(model, "block.0") is model.block[0]
    assert get_layer(model, "") is model
    with pytest.raises(KeyError) as info:
        get_layer(model, "block.9")
    err = info.value
    assert isinstance(err, LayerNotFound)
    assert err.choices == layer_names(model)
    assert "block.0" in str(err)


def test_unused_module_has_no_shape() -> None:
    model = torchvision.models.get_model("googlenet", weights=None, aux_logits=True, init_weights=False)
    tree = layer_tree(model, torch.zeros(1, 3, 64, 64))
    # Auxiliary heads only run in training mode.
    assert tree.find("aux1").output_shape is None
    assert tree.find("aux1").order == -1
    assert tree.find("inception3a").output_shape == (256, 8, 8)
    assert _all_hooks_empty(model)


class SamePadConv(nn.Conv2d):
    """A TF-style "same" conv that owns its padding module (as EfficientNet-Lite ports do)."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(cin, cout, k)
        self.static_padding = nn.ZeroPad2d(k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.static_padding(x))


def test_conv_subclass_with_children_is_a_conv() -> None:
    model = nn.Sequential(SamePadConv(2, 4, 3), nn.ReLU())
    tree = layer_tree(model, torch.zeros(1, 2, 6, 6))
    conv = tree.find("0")
    assert conv.kind == "conv" and not conv.is_leaf
    assert conv.macs == 4 * 6 * 6 * 2 * 9
    assert conv_layer_names(tree) == ["0"]
    assert tree.macs == conv.macs


def test_efficientnet_lite0_swish_runs_at_the_stem_and_the_head() -> None:
    """Lite0's top-level ``_swish`` runs twice: on the stem (32 x 112 x 112) and on the head (1280 x 7 x 7). The
    tree says so, and a CAM or a feature capture can take either call (the last is the default)."""
    from app.core.explanation import cam
    from app.core.inspection.features import capture
    from app.core.models import zoo

    model = zoo.build_efficientnet_lite0(pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    swish = layer_tree(model, x).find("_swish")
    assert swish.calls == 2
    assert swish.call_shapes == ((32, 112, 112), (1280, 7, 7))
    assert swish.output_shape == (1280, 7, 7)
    got = capture(model, x, ["_swish", "_bn0"])
    assert got.at("_swish", 0).shape == (32, 112, 112)
    assert torch.allclose(got.at("_swish", 0), torch.clamp(got.activations["_bn0"], 0, 6))
    assert cam.compute_cams(model, x, ["gradcam"], "_swish", call=0).activation_shape == (1, 32, 112, 112)
    assert cam.compute_cams(model, x, ["gradcam"], "_swish").activation_shape == (1, 1280, 7, 7)
    assert _all_hooks_empty(model)
