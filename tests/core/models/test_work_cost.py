"""Job cost estimates: forward passes counted as the loops run them, MACs per forward, batch sizes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from app.core.explanation import cam, occlusion
from app.core.models import work_cost as job_cost


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)
    ).eval()


def test_model_macs_counts_every_multiply_accumulate() -> None:
    macs = job_cost.model_macs(_tiny(), (3, 8, 8))
    conv = 8 * 8 * 4 * 3 * 3 * 3  # outputs x inputs per output
    linear = 4 * 5
    # MACs are conv + linear only (torchvision's convention); ReLU and pooling are other operations.
    assert macs == conv + linear


def test_meta_macs_equal_the_real_model_and_allocate_nothing() -> None:
    real = torchvision.models.resnet18(weights=None).eval()
    expected = job_cost.model_macs(real, (3, 224, 224))
    assert job_cost.meta_macs(lambda: torchvision.models.resnet18(weights=None), (3, 224, 224)) == expected
    # 1.81 GMACs, torchvision's published figure for ResNet-18.
    assert expected == pytest.approx(1.814e9, rel=0.01)


def test_meta_macs_is_none_when_the_builder_needs_data() -> None:
    def needs_data() -> nn.Module:
        width = int(torch.tensor(4.0).item())  # meta tensors have no value
        return nn.Conv2d(3, width, 3)

    assert job_cost.meta_macs(needs_data, (3, 8, 8)) is None


@pytest.mark.parametrize(
    ("size", "window", "stride"), [(224, 16, 8), (224, 2, 2), (128, 9, 4), (28, 28, 1), (30, 7, 7)]
)
def test_occlusion_forwards_match_the_windows_the_loop_evaluates(size: int, window: int, stride: int) -> None:
    starts = occlusion.window_starts(size, window, stride)
    assert job_cost.occlusion_windows((size, size), window, stride) == len(starts) ** 2
    assert job_cost.occlusion_forwards((size, size), window, stride) == len(starts) ** 2 + 2


def test_the_issue_reproduction_is_twelve_thousand_windows() -> None:
    # vgg19, window 2, stride 2: 112 x 112 windows, each a 19.6 GMAC forward.
    assert job_cost.occlusion_windows((224, 224), 2, 2) == 12_544


def test_cheaper_occlusion_keeps_the_window_when_a_stride_suffices() -> None:
    budget = job_cost.occlusion_forwards((224, 224), 16, 8)
    assert job_cost.cheaper_occlusion((224, 224), 16, 2, budget) == (16, 8)
    # A stride cannot pass the window, so a tight budget grows the window.
    window, stride = job_cost.cheaper_occlusion((224, 224), 2, 2, 100) or (0, 0)
    assert window > 2 and job_cost.occlusion_forwards((224, 224), window, stride) <= 100
    assert job_cost.cheaper_occlusion((224, 224), 2, 2, 2) is None


def test_cam_forwards() -> None:
    grads = cam.GRADIENT_METHODS
    assert job_cost.cam_forwards(["gradcam"], 512, grads) == job_cost.GRADIENT_FORWARDS
    assert job_cost.cam_forwards(["scorecam"], 512, grads) == 1 + 513
    assert job_cost.cam_forwards(["gradcam", "scorecam", "ablationcam"], 10, grads) == 3 + 2 * 11
    assert job_cost.faithfulness_forwards(3, 24) == 3 * 2 * 25


def test_batch_for_is_about_the_given_seconds_of_work() -> None:
    assert job_cost.batch_for(10, 30.0, 1.0) == 3
    assert job_cost.batch_for(10**12, 25e9, 1.0) == 1  # never below one image
    assert job_cost.batch_for(1, 25e9, 1.0) == 64  # never above the largest
    assert job_cost.batch_for(0, 25e9, 1.0) == 64
