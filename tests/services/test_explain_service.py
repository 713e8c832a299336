"""The explanation service on a cached model shared by concurrent requests."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from app.errors import InvalidInput
from app.services import explain

SMALL_MODELS = ("nodule-cnn", "digit-cnn", "squeezenet1_1")


@pytest.fixture
def loaded(registry: Any) -> Any:
    names = set(registry.names())
    return registry.get(next(m for m in SMALL_MODELS if m in names))


def test_concurrent_requests_on_one_model(
    loaded: Any, image_store: Any, sample_image_id: str, gray_image_id: str
) -> None:
    images = [image_store.load(sample_image_id), image_store.load(gray_image_id)]
    jobs = [
        (img, method, target)
        for img in images
        for method, target in (("gradcam", 0), ("layercam", 1), ("eigencam", None))
    ]
    expected = [explain.explain_cam(loaded, img, m, t).raw for img, m, t in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(explain.explain_cam, loaded, img, m, t) for _ in range(2) for img, m, t in jobs
        ]
        results = [f.result().raw for f in futures]
    for i, raw in enumerate(results):
        np.testing.assert_allclose(raw, expected[i % len(jobs)], rtol=1e-5, atol=1e-7)
    for name, module in loaded.module.named_modules():
        assert not module._forward_hooks, name
    assert all(not p.requires_grad and p.grad is None for p in loaded.module.parameters())


def test_cam_picture_modes(loaded: Any, image_store: Any, sample_image_id: str) -> None:
    outcome = explain.explain_cam(loaded, image_store.load(sample_image_id), "gradcam")
    shown = outcome.prepared.shown
    feature = explain.cam_picture(outcome.raw, shown, 0.5, "inferno", "raw", "feature")
    assert feature.values.shape == outcome.raw.shape
    np.testing.assert_array_equal(feature.values, outcome.raw)
    # Raw values keep their own scale: colours run from 0 to the map's maximum (1 for an all-zero map).
    expected_top = float(outcome.raw.max()) if outcome.raw.max() > 0 else 1.0
    assert feature.vmin == 0.0 and feature.vmax == pytest.approx(expected_top)
    assert feature.heatmap.shape == shown.shape and feature.overlay.shape == shown.shape
    upsampled = explain.cam_picture(outcome.raw, shown, 1.0, "viridis", "normalised", "input")
    assert upsampled.values.shape == shown.shape[:2]
    assert upsampled.vmin == 0.0 and upsampled.vmax == 1.0
    # Opacity 1 shows the heat map alone; 0 the image alone.
    np.testing.assert_array_equal(upsampled.overlay, upsampled.heatmap)
    np.testing.assert_array_equal(explain.cam_picture(outcome.raw, shown, 0.0).overlay, shown)
    with pytest.raises(InvalidInput):
        explain.cam_picture(outcome.raw, shown, 0.5, "jet")


def test_occlusion_defaults_scale_with_the_input() -> None:
    assert explain.occlusion_defaults((224, 224)) == (16, 8)
    window, stride = explain.occlusion_defaults((128, 128))
    assert window == 9 and stride == 4


class _TinyViT(torch.nn.Module):
    """Patch embedding then attention over the patches: the one spatial map comes before the mixing."""

    def __init__(self, in_channels: int, classes: int) -> None:
        super().__init__()
        self.conv_proj = torch.nn.Conv2d(in_channels, 8, kernel_size=16, stride=16)
        self.attention = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        mixed, _ = self.attention(tokens, tokens, tokens)
        return self.head(mixed.mean(1))


def test_cam_on_a_vision_transformer_is_a_clear_error(
    loaded: Any, image_store: Any, sample_image_id: str
) -> None:
    vit = dataclasses.replace(
        loaded, module=_TinyViT(loaded.in_channels, len(loaded.categories)).eval(), name="tiny-vit"
    )
    image = image_store.load(sample_image_id)
    assert explain.cam_unsupported(loaded) is None
    assert "vision transformer" in (explain.cam_unsupported(vit) or "")
    for call in (
        lambda: explain.explain_cam(vit, image, "gradcam"),
        lambda: explain.compare_methods(vit, image, ["gradcam"]),
    ):
        with pytest.raises(InvalidInput) as err:
            call()
        assert err.value.field == "model" and "Occlusion" in err.value.message
    # Occlusion does not need a spatial map and still works.
    assert explain.hide_patch(vit, image, 8, 8, None, "zeros", None, 2).box
