"""Deletion/insertion scores: a map that points at the evidence beats a random map."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from app.core import cam, faithfulness
from app.core.occlusion import make_baseline


def test_ranks_are_a_permutation_led_by_the_peak() -> None:
    sal = np.zeros((4, 4), dtype=np.float32)
    sal[1, 2] = 5
    ranks = faithfulness.pixel_ranks(sal, (8, 8))
    assert sorted(ranks.ravel().tolist()) == list(range(64))
    top = np.unravel_index(int(ranks.argmin()), ranks.shape)
    assert top[0] in (2, 3) and top[1] in (4, 5)


def test_curve_end_points_are_the_clean_and_baseline_images(
    blob_net: Callable[..., nn.Module],
    blob_image: Callable[..., torch.Tensor],
    assert_model_clean: Callable[[nn.Module], None],
) -> None:
    model, x = blob_net(), blob_image()
    sal = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    res = faithfulness.deletion_insertion(model, x, sal, target=1, steps=8)

    def p(t: torch.Tensor) -> float:
        with torch.no_grad():
            return float(torch.softmax(model(t), 1)[0, 1])

    assert res.fractions[0] == 0 and res.fractions[-1] == 1 and len(res.fractions) == 9
    assert res.deletion[0] == pytest.approx(p(x), abs=1e-6)
    assert res.deletion[-1] == pytest.approx(p(torch.zeros_like(x)), abs=1e-6)
    assert res.insertion[0] == pytest.approx(p(make_baseline(x, "blur")), abs=1e-6)
    assert res.insertion[-1] == pytest.approx(p(x), abs=1e-6)
    assert res.deletion_auc == pytest.approx(float(np.trapezoid(res.deletion, res.fractions)))
    assert_model_clean(model)


def test_grad_cam_beats_the_random_baseline(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    model, x = blob_net(), blob_image()
    maps = cam.compute_cams(model, x, ["gradcam", "random"], "features", target=1).maps
    scores = faithfulness.evaluate_maps(model, x, {k: v[0] for k, v in maps.items()}, target=1, steps=16)
    assert scores["gradcam"].deletion_auc < scores["random"].deletion_auc
    assert scores["gradcam"].insertion_auc > scores["random"].insertion_auc


def test_invalid_steps(blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]) -> None:
    with pytest.raises(ValueError):
        faithfulness.deletion_insertion(blob_net(), blob_image(), np.ones((4, 4)), 1, steps=0)
