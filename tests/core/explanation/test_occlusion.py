"""Occlusion sensitivity: the largest drop is on the blob, numbers equal Captum's, progressive mode refines."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from app.core.explanation import occlusion as occ


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("baseline", occ.BASELINES)
def test_largest_drop_on_the_blob(
    baseline: str,
    channels: int,
    blob_centre: tuple[int, int],
    blob_net: Callable[..., nn.Module],
    blob_image: Callable[..., torch.Tensor],
) -> None:
    model, x = blob_net(channels), blob_image(channels=channels)
    res = occ.occlusion(model, x, target=1, window=6, stride=2, baseline=baseline)
    assert res.map.shape == (32, 32)
    peak = np.unravel_index(int(res.map.argmax()), res.map.shape)
    assert abs(peak[0] - blob_centre[0]) <= 2 and abs(peak[1] - blob_centre[1]) <= 2
    i, j = np.unravel_index(int(res.drops.argmax()), res.drops.shape)
    assert res.starts_y[i] <= blob_centre[0] < res.starts_y[i] + 6
    assert res.starts_x[j] <= blob_centre[1] < res.starts_x[j] + 6
    # Hiding the blob lowers the class-1 probability; hiding a far corner barely changes it.
    assert res.drops.max() > 0.1
    assert abs(float(res.drops[0, -1])) < 0.05 * float(res.drops.max())
    assert res.target == 1
    assert res.probability == pytest.approx(float(torch.softmax(model(x), 1)[0, 1].detach()), rel=1e-5)


@pytest.mark.parametrize(("size", "window", "stride", "baseline"), [(24, 8, 4, "zeros"), (26, 7, 5, "blur")])
def test_agrees_with_captum(
    size: int, window: int, stride: int, baseline: str, small_cnn: Callable[..., nn.Module]
) -> None:
    model = small_cnn(seed=3)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    ours = occ.occlusion(model, x, target=2, window=window, stride=stride, baseline=baseline, batch_size=7)
    base = occ.make_baseline(x, baseline, window)

    def prob(t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(t), dim=1)

    with torch.no_grad():
        ref = Occlusion(prob).attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=base,
            target=2,
            perturbations_per_eval=16,
        )
    np.testing.assert_allclose(ours.map, ref[0, 0].numpy(), atol=1e-6)
    assert ours.evaluated == len(ours.starts_y) * len(ours.starts_x)


def test_progressive_refines_to_the_same_map(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    model, x = blob_net(), blob_image(size=64)
    full = occ.occlusion(model, x, target=1, window=4, stride=2)
    partials: list[occ.PartialMap] = []
    fractions: list[float] = []
    prog = occ.occlusion(
        model,
        x,
        target=1,
        window=4,
        stride=2,
        progressive=True,
        on_partial=partials.append,
        progress=fractions.append,
        batch_size=16,
    )
    np.testing.assert_allclose(prog.map, full.map, atol=1e-7)
    assert len(partials) >= 2
    assert partials[0].fraction <= 0.1  # the first coarse map needs at most a tenth of the windows
    assert [p.step for p in partials] == sorted((p.step for p in partials), reverse=True)
    assert all(a.fraction < b.fraction for a, b in itertools.pairwise(partials))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    # The coarse map already points at the blob and correlates with the final one.
    first = partials[0].map
    assert first.shape == full.map.shape
    assert np.corrcoef(first.ravel(), full.map.ravel())[0, 1] > 0.5


def test_cancel_stops_between_batches(
    blob_net: Callable[..., nn.Module],
    blob_image: Callable[..., torch.Tensor],
    assert_model_clean: Callable[[nn.Module], None],
) -> None:
    model, x = blob_net(), blob_image()
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise InterruptedError

    with pytest.raises(InterruptedError):
        occ.occlusion(model, x, window=4, stride=2, batch_size=10, check=check)
    assert len(calls) == 3
    assert_model_clean(model)


def test_hide_patch_changes_top_k(
    blob_centre: tuple[int, int], blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    model, x = blob_net(), blob_image()
    on_blob = occ.hide_patch(model, x, *blob_centre, window=10)
    far = occ.hide_patch(model, x, 2, 30, window=10)
    assert on_blob.before[1] > 0.5 and on_blob.after[1] < 0.5
    assert occ.top_k(on_blob.before, 1)[0][0] == 1 and occ.top_k(on_blob.after, 1)[0][0] == 0
    assert abs(far.after[1] - far.before[1]) < 0.05
    # The square is clipped into the image.
    assert far.box == (0, 22, 10, 32)
    with pytest.raises(ValueError):
        occ.hide_patch(model, x, 40, 0)


def test_training_flag_restored_and_validation(small_cnn: Callable[..., nn.Module]) -> None:
    model = small_cnn()
    model.train()
    occ.occlusion(model, torch.randn(1, 3, 16, 16), window=8, stride=8)
    assert all(m.training for m in model.modules())
    assert (
        occ.window_starts(224, 16, 8) == list(range(0, 209, 8)) and len(occ.window_starts(224, 16, 8)) == 27
    )
    with pytest.raises(ValueError):
        occ.window_starts(10, 12, 4)
    with pytest.raises(ValueError):
        occ.window_starts(30, 4, 8)
    with pytest.raises(KeyError):
        occ.make_baseline(torch.zeros(1, 1, 8, 8), "noise")
    with pytest.raises(ValueError, match="target"):
        occ.occlusion(model, torch.randn(1, 3, 16, 16), target=7, window=8, stride=8)


def test_blur_keeps_the_mean_and_removes_detail() -> None:
    x = torch.zeros(1, 1, 32, 32)
    x[..., ::2, :] = 1.0  # stripes
    blurred = occ.gaussian_blur(x, sigma=3)
    assert blurred.shape == x.shape
    assert float(blurred.std()) < 0.1 * float(x.std())
    assert float(blurred.mean()) == pytest.approx(float(x.mean()), abs=0.02)


def test_coarse_fill_interpolates_between_evaluated_windows() -> None:
    ramp = np.add.outer(np.arange(9.0), 2 * np.arange(9.0)).astype(np.float32)  # linear in both axes
    filled = occ._fill_linear(ramp, 4)
    np.testing.assert_allclose(filled, ramp, atol=1e-5)  # exact for a linear map on a 0, 4, 8 grid
    held = occ._fill_linear(ramp[:7, :7], 4)  # past the last evaluated window (index 4) values are held
    clamp = np.minimum(np.arange(7), 4)
    np.testing.assert_allclose(held, ramp[np.ix_(clamp, clamp)], atol=1e-5)
