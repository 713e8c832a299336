"""Open /explain, run Grad-CAM on a sample with the built-in nodule model, see the heat map and its colour bar."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.browser
def test_grad_cam_on_a_sample(page: Any, live_server: str) -> None:
    models = {m["name"] for m in page.request.get(f"{live_server}/api/v1/models").json()}
    # The built-in nodule classifier when it has been trained; otherwise a small torchvision net.
    model = "nodule-cnn" if "nodule-cnn" in models else "squeezenet1_1"
    page.goto(f"{live_server}/explain?model={model}&method=gradcam")
    assert page.locator('select[name="layer"] option:checked').inner_text().endswith("(default)")
    assert "last convolutional block" in page.locator(".layer-picker .why").inner_text()
    # Picking a sample submits the form through HTMX; the result replaces #explain-body.
    option = page.locator('select[name="image_id"] option', has_text="Synthetic chest CT slice").first
    page.select_option('select[name="image_id"]', value=option.get_attribute("value"))
    page.wait_for_selector("#explain-result .cam-result img.cam-overlay", timeout=120_000)
    heat = page.locator("#explain-result img.cam-heatmap")
    assert heat.get_attribute("src").startswith("data:image/png;base64,")
    assert heat.evaluate("img => img.complete && img.naturalWidth > 0")
    bar = page.locator("#explain-result .colorbar")
    assert bar.is_visible()
    assert "gradient" in bar.locator(".colorbar-ramp").get_attribute("style")
    assert page.locator("#explain-result .topk li").count() >= 2
    # The URL follows the form (hx-push-url), so the view can be shared or reloaded.
    assert "image_id=" in page.url
