"""/explain, /occlusion and /compare in a real browser: pictures by URL, and history that follows the view.

Issue 10, item 11: a job's polling or an action never lands in the address bar; Enter in the target box makes one
history entry; arrow keys on the method select and the opacity slider replace the entry (debounced) instead of
pushing one each; Back restores controls that match the picture; the opacity label follows the slider.
"""

from __future__ import annotations

import re
from typing import Any

import pytest


def _model(page: Any, live_server: str) -> str:
    models = {m["name"] for m in page.request.get(f"{live_server}/api/v1/models").json()}
    # The built-in nodule classifier when it has been trained; otherwise a small torchvision net.
    return "nodule-cnn" if "nodule-cnn" in models else "squeezenet1_1"


def _sample(page: Any) -> str:
    option = page.locator('select[name="image_id"] option', has_text="Synthetic chest CT slice").first
    return str(option.get_attribute("value"))


def _history(page: Any) -> int:
    return int(page.evaluate("() => history.length"))


@pytest.mark.browser
def test_grad_cam_on_a_sample(page: Any, live_server: str) -> None:
    model = _model(page, live_server)
    page.goto(f"{live_server}/explain?model={model}&method=gradcam")
    assert page.locator('select[name="layer"] option:checked').inner_text().endswith("(default)")
    assert "last convolutional block" in page.locator(".layer-picker .why").inner_text()
    # Picking a sample submits the form through HTMX; the result replaces #explain-body.
    page.select_option('select[name="image_id"]', value=_sample(page))
    page.wait_for_selector("#explain-result .cam-result img.cam-overlay", timeout=120_000)
    heat = page.locator("#explain-result img.cam-heatmap")
    assert heat.get_attribute("src").startswith("/pictures/")  # by URL, never a data URI
    page.wait_for_function("() => document.querySelector('#explain-result img.cam-heatmap').complete")
    assert heat.evaluate("img => img.complete && img.naturalWidth > 0")
    bar = page.locator("#explain-result .colorbar")
    assert bar.is_visible()
    assert "gradient" in bar.locator(".colorbar-ramp").get_attribute("style")
    assert page.locator("#explain-result .topk li").count() >= 2
    assert "data:image" not in page.content()
    # The URL follows the form (hx-push-url), so the view can be shared or reloaded.
    assert "image_id=" in page.url


@pytest.mark.browser
def test_history_follows_the_view_not_the_requests(page: Any, live_server: str) -> None:
    model = _model(page, live_server)
    page.goto(f"{live_server}/explain?model={model}")
    sample = _sample(page)
    page.goto(f"{live_server}/explain?model={model}&image_id={sample}&method=gradcam")
    page.wait_for_selector("#explain-result .cam-result")
    start = _history(page)

    # Arrow keys on the method select: debounced, the entry replaced (no new history entries).
    page.focus('select[name="method"]')
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.wait_for_function("() => /method=(?!gradcam)/.test(location.search)", timeout=60_000)
    page.wait_for_selector("#explain-result .cam-result, #explain-result .job", timeout=60_000)
    assert _history(page) == start
    chosen = page.locator('select[name="method"]').input_value()
    assert f"method={re.escape(chosen)}".replace("\\", "") in page.url.replace("%2B", "+")

    # Back to Grad-CAM by hand, then the opacity slider: the label follows at once, the URL is replaced.
    page.goto(f"{live_server}/explain?model={model}&image_id={sample}&method=gradcam")
    page.wait_for_selector("#explain-result .cam-result")
    start = _history(page)
    page.focus('input[name="opacity"]')
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    assert page.locator("#explain-opacity-value").inner_text() == "0.70"
    page.wait_for_function("() => location.search.includes('opacity=0.7')", timeout=60_000)
    assert _history(page) == start

    # Enter in the target box: exactly one new entry.
    page.fill('input[name="target"]', "1")
    page.press('input[name="target"]', "Enter")
    page.wait_for_function("() => location.search.includes('target=1')", timeout=60_000)
    page.wait_for_selector("#explain-result .cam-result")
    page.wait_for_timeout(800)
    assert _history(page) == start + 1

    # A discrete choice pushes; Back brings the controls back in step with the picture and the URL.
    page.check('input[name="resolution"][value="feature"]')
    page.wait_for_function("() => location.search.includes('resolution=feature')", timeout=60_000)
    page.wait_for_selector("#explain-result .cam-result")
    page.go_back()
    page.wait_for_function("() => !location.search.includes('resolution=feature')", timeout=30_000)
    page.wait_for_timeout(300)
    assert page.locator('input[name="resolution"][value="input"]').is_checked()
    assert page.locator('input[name="target"]').input_value() == "1"

    # A slow method polls every 500 ms: no /job/ URL ever lands in the address bar.
    seen: list[str] = []
    page.on("framenavigated", lambda frame: seen.append(frame.url))
    before = _history(page)
    page.goto(f"{live_server}/explain?model={model}&image_id={sample}&method=scorecam")
    page.wait_for_selector("#explain-result .cam-result", timeout=180_000)
    assert "/job/" not in page.url and not any("/job/" in u for u in seen)
    assert _history(page) <= before + 1


@pytest.mark.browser
def test_occlusion_run_keeps_the_page_url(page: Any, live_server: str) -> None:
    model = _model(page, live_server)
    page.goto(f"{live_server}/occlusion?model={model}")
    page.select_option('select[name="image_id"]', value=_sample(page))
    page.wait_for_selector("#occlusion-image")
    page.fill('input[name="window"]', "32")
    page.fill('input[name="stride"]', "32")
    page.locator('input[name="stride"]').dispatch_event("change")
    page.wait_for_function("() => location.search.includes('stride=32')")
    page.click("#occlusion-run")
    page.wait_for_selector("#occlusion-job .occlusion-result", timeout=180_000)
    assert (
        page.url.startswith(f"{live_server}/occlusion?")
        and "/run" not in page.url
        and "/job/" not in page.url
    )
    assert page.locator("#occlusion-job img").first.get_attribute("src").startswith("/pictures/")
    page.reload()
    assert page.locator("#occlusion-form").is_visible()  # F5 gives the page, not 405
    # A click hides one patch; the answer names the score it shows.
    page.click("#occlusion-image", position={"x": 100, "y": 100})
    page.wait_for_selector("#patch-result .score-shown")
    assert "/patch" not in page.url


@pytest.mark.browser
def test_choosing_the_call_of_a_layer_called_twice(page: Any, live_server: str) -> None:
    """EfficientNet-Lite0's `_swish` (stem and head): the picker says "called 2 times", a call picker appears,
    choosing the first call shows the stem's map (its grid in the caption) and puts call=0 in the URL."""
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(f"{live_server}/explain?model=efficientnet_lite0")
    sample = _sample(page)
    page.goto(
        f"{live_server}/explain?model=efficientnet_lite0&image_id={sample}&layer=_swish&resolution=feature"
    )
    page.wait_for_selector("#explain-result .cam-result")
    assert "_swish (called 2 times)" in page.locator('select[name="layer"] option:checked').inner_text()
    call = page.locator('select[name="call"]')
    assert call.is_visible() and call.locator("option:checked").inner_text().startswith("2nd call (last)")
    head = page.locator("#explain-result .cam-call").inner_text()
    assert "call 2 of 2" in head
    page.select_option('select[name="call"]', value="0")
    page.wait_for_function(
        "() => (document.querySelector('#explain-result .cam-call') || {}).textContent.includes('call 1 of 2')",
        timeout=120_000,
    )
    assert re.search(r"[?&]call=0(&|$)", page.url)
    caption = page.locator("#explain-result figcaption", has_text="heat map").inner_text()
    assert "112×112" in caption  # the stem's grid, not the head's 7×7
    # Another layer: no call picker, and the stale call is not sent with it.
    page.select_option('select[name="layer"]', value="_conv_head")
    page.wait_for_function("() => !document.querySelector('select[name=call]')", timeout=120_000)
    assert "call=" not in page.url
