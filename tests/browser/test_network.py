"""The inside-the-network pages in a browser: regions swap without reloading, the URL follows the view,
Back/Forward bring the view and its controls back together, errors sit next to their field. (axe runs on these
pages, in several states, in tests/browser/test_accessibility.py.)"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

MODEL = "resnet18"


def state(page: Any) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(page.url).query).items()}


def mark_document(page: Any) -> None:
    """A marker that a full page load would wipe out: swaps must keep it."""
    page.evaluate("() => { window.__sameDocument = true; }")


def same_document(page: Any) -> bool:
    return bool(page.evaluate("() => window.__sameDocument === true"))


@pytest.mark.browser
def test_pick_layer_channel_and_back(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/network?model={MODEL}&weights=untrained", timeout=120_000)
    assert page.locator("#features .features").get_attribute("data-layer") == "conv1"
    mark_document(page)
    first = page.locator("#fmap-grid img").first.get_attribute("src")
    assert first.startswith("/pictures/")
    assert page.locator("#fmap-grid img").first.evaluate("img => img.complete && img.naturalWidth > 0")
    page.locator('.tree button.layer-link[data-layer="layer2"]').first.click()
    page.wait_for_selector('#features .features[data-layer="layer2"]', timeout=120_000)
    page.wait_for_function("() => location.search.includes('layer=layer2')")
    assert page.locator("#current-layer").inner_text() == "layer2"
    assert page.locator("#fmap-grid img").first.get_attribute("src") != first
    assert same_document(page)

    page.locator("#fmap-grid .fmap").nth(2).click()
    page.wait_for_selector("#channel-view .channel-view", timeout=60_000)
    page.wait_for_function("() => location.search.includes('channel=')")
    entries = page.evaluate("history.length")
    assert state(page)["channel"] == page.locator("#fmap-grid .fmap").nth(2).get_attribute("value")
    # The opacity read-out follows the slider while it moves.
    page.locator("#channel-opacity").fill("0.25")
    page.wait_for_function(
        "() => document.querySelector('output[for=channel-opacity]').textContent === '0.25'"
    )
    # A slider step replaces the history entry instead of adding one.
    page.wait_for_function("() => location.search.includes('opacity=0.25')")
    assert page.evaluate("history.length") == entries

    page.select_option('#features-controls select[name="sort"]', "max")
    page.wait_for_function("() => location.search.includes('sort=max')")
    page.wait_for_selector(
        '#features-controls select[name="sort"] option[value="max"][selected]', state="attached"
    )
    assert same_document(page)

    # Back: the view of the previous URL, its controls in step with it (rendered by the server from the URL).
    page.go_back()
    page.wait_for_function("() => !location.search.includes('sort=max')")
    page.wait_for_selector(
        '#features-controls select[name="sort"] option[value="index"][selected]', state="attached"
    )
    assert page.locator('#features-controls select[name="sort"]').input_value() == "index"
    assert page.locator("#channel-view .channel-view").count() == 1
    assert state(page)["opacity"] == "0.25"
    assert page.locator("#channel-opacity").input_value() == "0.25"
    page.go_back()
    page.wait_for_function("() => !location.search.includes('channel=')")
    page.wait_for_selector("#channel-view p.muted")
    assert page.locator("#current-layer").inner_text() == "layer2"
    page.go_back()
    page.wait_for_function("() => !location.search.includes('layer=layer2')")
    page.wait_for_selector('#features .features[data-layer="conv1"]')
    page.go_forward()
    page.wait_for_selector('#features .features[data-layer="layer2"]')
    assert state(page)["layer"] == "layer2"


@pytest.mark.browser
def test_a_block_of_the_tree_opens_with_its_layers(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/network?model={MODEL}&weights=untrained", timeout=120_000)
    assert page.locator('.tree button[data-layer="layer3.1"]').count() == 0
    page.locator('.tree button[data-layer="layer3"]').locator("xpath=../..").locator("summary").first.click()
    page.wait_for_selector('.tree button[data-layer="layer3.1"]', timeout=60_000)
    page.locator('.tree button[data-layer="layer3.1"]').click()
    page.wait_for_selector('#features .features[data-layer="layer3.1"]', timeout=60_000)
    page.wait_for_function("() => location.search.includes('layer=layer3.1')")


@pytest.mark.browser
def test_a_bad_value_is_shown_next_to_its_field_and_the_pictures_stay(page: Any, live_server: str) -> None:
    page.goto(
        f"{live_server}/network?model={MODEL}&weights=untrained&layer=layer1&channel=3", timeout=120_000
    )
    page.wait_for_selector("#channel-view .channel-view")
    overlay = page.locator("#channel-view img").first.get_attribute("src")
    url = page.url
    page.fill('#channel-controls input[name="vmin"]', "5")
    page.fill('#channel-controls input[name="vmax"]', "1")
    page.locator('#channel-controls input[name="vmax"]').dispatch_event("change")
    message = page.wait_for_selector(".field-message", timeout=60_000)
    assert "vmax" in message.inner_text()
    assert page.locator('#channel-controls input[name="vmax"]').get_attribute("aria-invalid") == "true"
    assert page.locator("#channel-view img").first.get_attribute("src") == overlay
    assert page.url == url  # a failed request does not land in the address bar
    page.fill('#channel-controls input[name="vmax"]', "9")
    page.locator('#channel-controls input[name="vmax"]').dispatch_event("change")
    page.wait_for_function("() => location.search.includes('vmax=9')")
    page.wait_for_function("() => !document.querySelector('.field-message')")


@pytest.mark.browser
def test_receptive_field_click_swaps_the_probe_and_pushes_the_unit(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/receptive-fields?model={MODEL}&weights=untrained&layer=layer2", timeout=120_000)
    page.wait_for_selector("#rf-probe .rf-probe")
    mark_document(page)
    page.wait_for_function(
        "() => { const i = document.getElementById('rf-clickable'); return i.complete && i.naturalWidth > 0; }"
    )
    page.locator("#rf-clickable").click(position={"x": 2, "y": 2})
    page.wait_for_selector('#rf-probe .rf-probe[data-y="0"][data-x="0"]', timeout=60_000)
    page.wait_for_function("() => location.search.includes('y=0') && location.search.includes('x=0')")
    assert same_document(page)
    page.select_option('#rf-layer-form select[name="layer"]', "layer3.0.conv1")
    page.wait_for_selector('#rf-clickable[data-layer="layer3.0.conv1"]', timeout=60_000)
    page.wait_for_function("() => location.search.includes('layer=layer3.0.conv1')")
    page.go_back()
    page.wait_for_selector('#rf-probe .rf-probe[data-y="0"][data-x="0"]')
    assert page.locator('#rf-layer-form select[name="layer"]').input_value() == "layer2"


@pytest.mark.browser
def test_choose_the_call_of_a_layer_that_runs_twice(page: Any, live_server: str) -> None:
    """ResNet-18's layer1.0.relu runs twice (after bn1, after the residual sum): a call control appears with
    the last call chosen; choosing call 0 swaps the maps and lands in the URL; a call the module does not have
    (sent by a hand-edited control) gets a message beside the control and the maps stay; a new layer from the tree
    does not carry the call over."""
    page.goto(f"{live_server}/network?model={MODEL}&weights=untrained&layer=layer1.0.relu", timeout=120_000)
    select = page.locator('#call-controls select[name="call"]')
    assert select.input_value() == "1"
    assert "call 1, the last, shown" in page.locator("#features h2").inner_text()
    assert page.locator("#call-controls option").count() == 2
    mark_document(page)
    before = page.locator("#fmap-grid img").first.get_attribute("src")
    select.select_option("0")
    page.wait_for_function("() => location.search.includes('call=0')", timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('#features h2').textContent.includes('call 0, the first, shown')"
    )
    after = page.locator("#fmap-grid img").first.get_attribute("src")
    assert after != before and same_document(page)
    assert page.locator("#fmap-grid img").first.evaluate("img => img.complete && img.naturalWidth > 0")

    url = page.url
    page.evaluate(
        "() => { const s = document.querySelector('#call-controls select');"
        " s.options[1].value = '7'; s.value = '7'; s.dispatchEvent(new Event('change', {bubbles: true})); }"
    )
    message = page.wait_for_selector("#call-controls .field-message", timeout=60_000)
    assert "2 times" in message.inner_text()
    assert page.locator('#call-controls select[name="call"]').get_attribute("aria-invalid") == "true"
    assert page.locator("#fmap-grid img").first.get_attribute("src") == after
    assert page.url == url

    page.locator('.tree button.layer-link[data-layer="layer2"]').first.click()
    page.wait_for_selector('#features .features[data-layer="layer2"]', timeout=120_000)
    page.wait_for_function("() => location.search.includes('layer=layer2')")
    assert "call=" not in page.url and page.locator("#call-controls").count() == 0


@pytest.mark.browser
def test_receptive_field_click_probes_the_call_shown(page: Any, live_server: str) -> None:
    page.goto(
        f"{live_server}/receptive-fields?model={MODEL}&weights=untrained&layer=layer1.0.relu", timeout=120_000
    )
    page.wait_for_selector("#rf-probe .rf-probe")
    assert page.locator('#rf-call-form select[name="call"]').input_value() == "1"
    page.locator('#rf-call-form select[name="call"]').select_option("0")
    page.wait_for_function("() => location.search.includes('call=0')", timeout=60_000)
    page.wait_for_function(
        "() => document.querySelector('#rf-probe h3').textContent.includes('call 0, the first, shown')"
    )
    page.wait_for_function(
        "() => { const i = document.getElementById('rf-clickable'); return i.complete && i.naturalWidth > 0; }"
    )
    page.locator("#rf-clickable").click(position={"x": 2, "y": 2})
    page.wait_for_selector('#rf-probe .rf-probe[data-y="0"][data-x="0"]', timeout=60_000)
    page.wait_for_function("() => location.search.includes('y=0') && location.search.includes('call=0')")
    assert "call 0, the first, shown" in page.locator("#rf-probe h3").inner_text()
