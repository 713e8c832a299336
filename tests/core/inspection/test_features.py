"""One forward pass captures many layers; values equal torchvision's feature extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from app.core.inspection.features import as_maps, capture, channel_stats, paginate, sort_channels
from app.core.models.layers import LayerNotFound


def _all_hooks_empty(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model("resnet18", weights=None).eval()


def test_capture_equals_feature_extractor(resnet: nn.Module) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 3, 64, 64)
    layers = ["conv1", "layer1", "layer2.1.conv2", "layer3", "layer4.0.downsample", "avgpool", "fc"]
    got = capture(resnet, x, layers)
    extractor = create_feature_extractor(resnet, return_nodes={name: name for name in layers})
    with torch.no_grad():
        expected = extractor(x)
    for name in layers:
        assert torch.allclose(got.activations[name], expected[name][0], atol=1e-6), name
    assert got.output is not None
    assert torch.allclose(got.output, expected["fc"][0], atol=1e-6)
    assert _all_hooks_empty(resnet)


def test_inplace_relu_does_not_change_captured_bn(resnet: nn.Module) -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 3, 32, 32)
    got = capture(resnet, x, ["bn1", "relu"])
    with torch.no_grad():
        bn = resnet.bn1(resnet.conv1(x))[0]
    # ReLU(inplace=True) runs right after bn1: the capture must keep the negative values.
    assert torch.allclose(got.activations["bn1"], bn, atol=1e-6)
    assert (got.activations["bn1"] < 0).any()
    assert torch.allclose(got.activations["relu"], bn.clamp(min=0), atol=1e-6)


def test_capture_all_layers_and_state_restored(resnet: nn.Module) -> None:
    resnet.train()
    got = capture(resnet, torch.zeros(2, 3, 32, 32), None, keep_batch=True)
    assert resnet.training
    resnet.eval()
    assert got.activations["layer2"].shape == (2, 128, 4, 4)
    assert "layer1.0.conv1" in got.activations
    assert _all_hooks_empty(resnet)


def test_unknown_layer(resnet: nn.Module) -> None:
    with pytest.raises(LayerNotFound) as info:
        capture(resnet, torch.zeros(1, 3, 32, 32), ["layer9"])
    assert "layer1" in info.value.choices


def test_stats_sort_paginate() -> None:
    maps = np.zeros((4, 2, 2), dtype=np.float32)
    maps[0] = 1.0
    maps[1] = [[0, 0], [0, 8]]
    maps[2] = 3.0
    maps[3] = -1.0
    stats = channel_stats(maps)
    assert stats.mean.tolist() == [1.0, 2.0, 3.0, -1.0]
    assert stats.max.tolist() == [1.0, 8.0, 3.0, -1.0]
    assert sort_channels(stats, "mean").tolist() == [2, 1, 0, 3]
    assert sort_channels(stats, "max").tolist() == [1, 2, 0, 3]
    assert sort_channels(stats, "mean", descending=False).tolist() == [3, 0, 1, 2]
    assert sort_channels(stats, "index").tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        sort_channels(stats, "median")
    page = paginate(list(range(10)), page=2, per_page=4)
    assert (page.items, page.pages, page.total) == ([4, 5, 6, 7], 3, 10)
    assert paginate(list(range(10)), page=9, per_page=4).items == [8, 9]
    assert paginate([], page=1, per_page=4).pages == 1


def test_as_maps_shapes() -> None:
    assert as_maps(torch.zeros(5)).shape == (5, 1, 1)
    assert as_maps(np.zeros((3, 7))).shape == (3, 1, 7)
    assert as_maps(torch.zeros(2, 4, 4)).shape == (2, 4, 4)


def test_filter_views() -> None:
    from app.core.inspection.filters_view import (
        conv_weight,
        filter_order,
        normalise_signed,
        per_input_channel,
        rgb_tiles,
    )

    weight = np.zeros((3, 3, 2, 2), dtype=np.float32)
    weight[0, 0] = [[1.0, -1.0], [0.5, 0.0]]  # red channel only
    weight[1] = -2.0
    weight[2, 2, 0, 0] = 0.25
    norm = normalise_signed(weight)
    assert np.abs(norm).reshape(3, -1).max(axis=1).tolist() == [1.0, 1.0, 1.0]  # each filter its own scale
    tiles = rgb_tiles(weight)
    assert tiles.shape == (3, 2, 2, 3)
    np.testing.assert_allclose(tiles[0, 0, 0], [1.0, 0.5, 0.5])  # +max red -> full red, zero -> mid grey
    np.testing.assert_allclose(tiles[0, 0, 1], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(tiles[1], 0.0)  # all -max -> black
    assert filter_order(weight, "norm").tolist() == [1, 0, 2]
    kernels, limit = per_input_channel(weight, 0)
    assert kernels.shape == (3, 2, 2) and limit == 1.0
    grey = rgb_tiles(weight[:, :1])
    np.testing.assert_allclose(grey[..., 0], grey[..., 2])
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 1))
    assert conv_weight(model)[0] == "0"
    assert conv_weight(model, "2")[1].shape == (5, 4, 1, 1)
    with pytest.raises(LayerNotFound) as info:
        conv_weight(model, "1")
    assert info.value.choices == ["0", "2"]


def test_every_call_of_a_reused_module_is_kept(resnet: nn.Module) -> None:
    """ResNet-18's ``layer1.0.relu`` runs twice: after bn1 and after the residual sum. The default is the last
    call; ``at(name, 0)`` gives the first, which equals ``relu(bn1(conv1(.)))`` computed by hand."""
    torch.manual_seed(3)
    x = torch.randn(1, 3, 32, 32)
    got = capture(resnet, x, ["layer1.0.relu", "layer1.0", "layer1.0.bn1"])
    assert got.call_count("layer1.0.relu") == 2 and got.call_count("layer1.0") == 1
    block = resnet.layer1[0]
    with torch.no_grad():
        stem = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        first = torch.relu(block.bn1(block.conv1(stem)))[0]
    assert torch.allclose(got.at("layer1.0.relu", 0), first, atol=1e-6)
    assert torch.allclose(got.at("layer1.0.relu"), got.activations["layer1.0"], atol=1e-6)
    assert torch.equal(got.at("layer1.0.relu", -1), got.activations["layer1.0.relu"])
    assert not torch.allclose(got.at("layer1.0.relu", 0), got.at("layer1.0.relu", 1))
    with pytest.raises(ValueError, match="runs 2 times"):
        got.at("layer1.0.relu", 2)
    with pytest.raises(KeyError):
        got.at("layer9")
