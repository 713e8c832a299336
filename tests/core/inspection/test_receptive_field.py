"""Theoretical receptive fields from the real modules; known values; effective RF by gradient.

Hand derivations (r: RF size, j: jump) with r_out = r_in + (k - 1) j_in, j_out = j_in * stride:

AlexNet (torchvision): conv1 11/s4 -> r 11, j 4; pool1 3/s2 -> 11 + 2*4 = 19, j 8; conv2 5 -> 19 + 4*8 = 51;
pool2 3/s2 -> 51 + 2*8 = 67, j 16; conv3, conv4, conv5 3x3 -> 99, 131, **163**; pool5 3/s2 -> 163 + 2*16 =
**195**, j 32.

VGG-16: conv1_1, conv1_2 -> 3, 5; pool1 2/s2 -> 6, j 2; conv2_x -> 10, 14; pool2 -> 16, j 4; conv3_x -> 24,
32, 40; pool3 -> 44, j 8; conv4_x -> 60, 76, 92; pool4 -> 100, j 16; conv5_1..3 -> 132, 164, **196**;
pool5 -> 196 + 16 = **212**, j 32. (212 is pool5; conv5_3 is 196.)

ResNet-50 (torchvision v1.5, stride on the 3x3 of each bottleneck; union rule: the 1x1 shortcut sees less
than the main chain, so the main chain decides): conv1 7/s2 -> 7, j 2; maxpool 3/s2 -> 11, j 4; layer1:
3 blocks x one 3x3 (+2*4) -> 35; layer2: first 3x3/s2 +2*4 -> 43, j 8, then 3 blocks x 16 -> 91; layer3:
+16 -> 107, j 16, 5 x 32 -> 267; layer4: +32 -> 299, j 32, 2 x 64 -> **427**.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from app.core.inspection.receptive_field import effective_rf, receptive_fields, rf_box, stack_vs_large
from app.core.models.layers import LayerNotFound


def _all_hooks_empty(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules()
    )


def test_small_stack_by_hand() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1),  # r 3, j 1
        nn.ReLU(),
        nn.Conv2d(1, 1, 3, padding=1),  # r 5
        nn.MaxPool2d(2),  # r 6, j 2
        nn.Conv2d(1, 1, 3, dilation=2, padding=2),  # k_eff 5: r 6 + 4*2 = 14
        nn.Conv2d(1, 1, 5, stride=3),  # r 14 + 4*2 = 22, j 6
    )
    rf = receptive_fields(model, torch.zeros(1, 1, 40, 40))
    assert [rf[n].size for n in ["0", "2", "3", "4", "5"]] == [3, 5, 6, 14, 22]
    assert [rf[n].jump for n in ["0", "2", "3", "4", "5"]] == [1, 1, 2, 2, 6]
    # start: pool 2x2 centres unit 0 at 0.5; the unpadded 5x5 moves it by 2 jumps of 2.
    assert rf["3"].start_h == 0.5
    assert rf["5"].start_h == 0.5 + 2 * 2
    assert rf["5"].output_shape == (1, 6, 6)
    assert _all_hooks_empty(model)


def test_asymmetric_kernels_per_axis() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, (1, 7), padding=(0, 3)), nn.Conv2d(1, 1, (7, 1), padding=(3, 0)))
    rf = receptive_fields(model, torch.zeros(1, 1, 16, 16))
    assert (rf["0"].size_h, rf["0"].size_w) == (1, 7)
    assert (rf["1"].size_h, rf["1"].size_w) == (7, 7)


class Branchy(nn.Module):
    """Inception-like: cat of a 1x1 branch, two 3x3 (r 5) and a functional 3x3 avg-pool; then a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(2, 2, 1)
        self.b2 = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
        self.down_main = nn.Sequential(nn.Conv2d(6, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=1))
        self.down_short = nn.Conv2d(6, 4, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat = torch.cat([self.b1(x), self.b2(x), F.avg_pool2d(x, 3, stride=1, padding=1)], dim=1)
        out = self.down_main(cat)
        out += self.down_short(cat)
        return out


def test_branches_take_the_union() -> None:
    model = Branchy()
    rf = receptive_fields(model, torch.zeros(1, 2, 16, 16))
    assert rf["b1"].size == 1 and rf["b2"].size == 5
    # cat: union of 1, 5 and 3 centred windows = 5; main chain: +2 (j 1) -> 7, j 2; +2*2 -> 11.
    assert rf["down_main.0"].size == 7 and rf["down_main.0"].jump == 2
    assert rf["down_main"].size == 11
    # shortcut 1x1/s2 keeps 5; the sum sees the union = main chain.
    assert rf["down_short"].size == 5
    assert _all_hooks_empty(model)


def test_off_centre_union() -> None:
    class Shifted(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # Pad 2 on the left and crop 2 on the right: unit i sees pixel i - 2 as well as pixel i.
            shifted = F.pad(x, (2, 0, 0, 0))[..., :, : x.shape[-1]]
            return x + shifted

    model = nn.Sequential(Shifted())
    rf = receptive_fields(model, torch.zeros(1, 1, 8, 8))
    assert rf["0"].size_w == 3  # union of [i-2, i-2] and [i, i]
    assert rf["0"].size_h == 1
    assert rf["0"].start_w == -1


def test_squeeze_excitation_is_context_not_size() -> None:
    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y * torch.sigmoid(F.adaptive_avg_pool2d(y, 1))

    model = nn.Sequential(SE())
    rf = receptive_fields(model, torch.zeros(1, 1, 8, 8))
    assert rf["0"].size == 3
    assert rf["0"].global_context and not rf["0.conv"].global_context


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alexnet", {"features.10": (163, 16), "features.12": (195, 32)}),
        ("vgg16", {"features.28": (196, 16), "features.30": (212, 32)}),
        ("resnet50", {"layer1": (35, 4), "layer2": (91, 8), "layer3": (267, 16), "layer4": (427, 32)}),
    ],
)
def test_known_values(name: str, expected: dict[str, tuple[int, int]]) -> None:
    model = torchvision.models.get_model(name, weights=None)
    # RF and jump do not depend on the input size; 64x64 keeps the test fast (AlexNet needs >= 63).
    rf = receptive_fields(model, torch.zeros(1, 3, 64, 64))
    for layer, (size, jump) in expected.items():
        assert (rf[layer].size, rf[layer].jump) == (size, jump), layer
    assert _all_hooks_empty(model)


def test_global_pool_collapses_space() -> None:
    model = torchvision.models.get_model("resnet18", weights=None)
    rf = receptive_fields(model, torch.zeros(1, 3, 64, 64))
    assert rf["layer4"].grid and not rf["avgpool"].grid and not rf["fc"].grid
    # The pooled unit sees the union of all 2x2 positions of layer4: one more jump per extra position.
    assert rf["avgpool"].size == rf["layer4"].size + (2 - 1) * rf["layer4"].jump


def _positive_linear_stack() -> nn.Sequential:
    # No ReLU and positive weights: every pixel inside the theoretical box has a non-zero gradient.
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(2, 2, 3, padding=1),
        nn.Conv2d(2, 2, 3, stride=2),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.1)
    return model


@pytest.mark.parametrize(("y", "x"), [(2, 3), (0, 0), (5, 5)])
def test_box_matches_gradient_support(y: int, x: int) -> None:
    model = _positive_linear_stack()
    image = torch.rand(1, 1, 24, 24)
    rf = receptive_fields(model, image)
    layer = rf["3"]
    assert layer.output_shape == (2, 5, 5) or (y, x) != (5, 5)
    if (y, x) == (5, 5):
        with pytest.raises(IndexError):
            rf_box(layer, y, x)
        return
    grad = effective_rf(model, image, "3", y, x)
    ys, xs = np.nonzero(grad)
    box = rf_box(layer, y, x).clipped(24, 24)
    assert (ys.min(), xs.min(), ys.max(), xs.max()) == (box.top, box.left, box.bottom, box.right)
    assert rf_box(layer, y, x).height == layer.size


def test_effective_rf_leaves_model_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Tanh(), nn.Conv2d(2, 2, 3))
    model.train()
    model[3].weight.requires_grad_(False)
    erf = effective_rf(model, torch.rand(1, 1, 12, 12), "3", 4, 4, channel=1)
    assert erf.shape == (12, 12)
    assert erf.max() > 0
    assert model.training
    assert model[0].weight.requires_grad and not model[3].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert _all_hooks_empty(model)
    with pytest.raises(LayerNotFound):
        effective_rf(model, torch.rand(1, 1, 12, 12), "9", 0, 0)
    with pytest.raises(IndexError):
        effective_rf(model, torch.rand(1, 1, 12, 12), "3", 40, 0)
    assert _all_hooks_empty(model)


def test_stack_vs_large() -> None:
    rows = stack_vs_large(max_layers=3, channels=4, size=12)
    for row in rows:
        assert row.rf_stack == row.rf_large == 2 * row.n + 1
        assert row.params_stack == row.n * 9 * 4 * 4
        assert row.params_large == (2 * row.n + 1) ** 2 * 4 * 4
    # One 3x3 is the same layer either way; from two layers on the stack is cheaper (18 vs 25 weights).
    assert rows[0].saving == 0
    assert rows[1].params_stack < rows[1].params_large


def test_reshapes_and_permutes_keep_the_grid() -> None:
    class ShuffleThenChannelsLast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.pointwise = nn.Linear(4, 4)  # ConvNeXt-style: a Linear over channels-last maps
            self.after = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            n, c, h, w = y.shape
            # ShuffleNet's channel shuffle goes through a 5-D view.
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
            y = self.pointwise(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.after(y)

    model = ShuffleThenChannelsLast()
    rf = receptive_fields(model, torch.zeros(1, 4, 10, 10))
    assert rf["pointwise"].spatial and not rf["pointwise"].grid  # (H, W, C): spatial, but not NCHW
    assert rf["pointwise"].size == 3
    assert rf["after"].grid and rf["after"].size == 5 and not rf["after"].approx


def test_effective_rf_of_a_reused_module_follows_the_call() -> None:
    """One ReLU run twice: after a 3x3 conv, then after a second 3x3 conv. The theoretical RF table describes the
    last call (5x5), and so does the default ERF; call 0 is the first run (3x3). The ERF used to stop at the first
    call while the box showed the last."""
    torch.manual_seed(0)

    class Reuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(1, 2, 3, padding=1)
            self.c2 = nn.Conv2d(2, 2, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.c2(self.act(self.c1(x))))

    model = Reuse().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()  # all positive: no ReLU cuts a path, so the ERF's support is the whole RF
    image = torch.rand(1, 1, 12, 12) + 0.1
    rf = receptive_fields(model, image)["act"]
    assert rf.size == 5

    def support(erf: np.ndarray) -> tuple[int, int]:
        ys, xs = np.nonzero(erf)
        return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)

    assert support(effective_rf(model, image, "act", 6, 6)) == (5, 5)
    assert support(effective_rf(model, image, "act", 6, 6, call=1)) == (5, 5)
    assert support(effective_rf(model, image, "act", 6, 6, call=0)) == (3, 3)
    with pytest.raises(ValueError, match="runs 2 times"):
        effective_rf(model, image, "act", 6, 6, call=5)
    assert _all_hooks_empty(model)
