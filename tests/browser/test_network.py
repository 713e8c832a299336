"""Open /network, pick a layer from the tree, see the feature grid change."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.browser
def test_pick_layer_changes_grid(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/network?model=resnet18&weights=untrained", timeout=120_000)
    grid = page.locator("#features .features")
    assert grid.get_attribute("data-layer") == "conv1"
    first = page.locator("#fmap-grid img").first.get_attribute("src")
    page.locator('.tree button.layer-link[data-layer="layer2"]').first.click()
    page.wait_for_selector('#features .features[data-layer="layer2"]', timeout=120_000)
    assert page.locator("#current-layer").inner_text() == "layer2"
    assert page.locator("#fmap-grid img").first.get_attribute("src") != first
    page.locator("#fmap-grid .fmap").first.click()
    page.wait_for_selector("#channel-view .channel-view", timeout=60_000)
