"""The matrix playground in a real browser: edit a cell, see the output change, click a cell, see the products."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.browser
def test_edit_cell_and_step_through_products(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/conv?preset=vertical_edge")
    first_out = page.locator('#conv-output td[data-row="0"][data-col="1"]')
    assert first_out.inner_text().strip() == "30"
    # 10 -> 20 in the input's top-left cell changes output (0, 0) from 0 to 10 once HTMX has re-rendered
    cell = page.locator('input[name="in_0_0"]')
    cell.fill("20")
    page.wait_for_function(
        "document.querySelector('#conv-output td[data-row=\"0\"][data-col=\"0\"]').textContent.trim() === '10'"
    )
    # click an output cell: its window lights up and its multiply-and-sum is written out
    page.locator('#conv-output td[data-row="1"][data-col="1"]').click()
    text = page.locator("#conv-step-text").inner_text()
    assert "(1 x 10)" in text and "(-1 x 0)" in text and text.strip().endswith("= 30")
    assert page.locator("#conv-input-grid td.in-window").count() == 9
    assert page.locator('#conv-input-grid td.in-window input[name="in_1_1"]').count() == 1
    page.locator("#conv-next").click()
    assert "row 2, column 3" in page.locator("#conv-step-where").inner_text()
    # a bad cell gives a message naming the field, and the cell is outlined
    cell.fill("abc")
    page.wait_for_selector("#conv-result .error-box")
    assert "in_0_0" in page.locator("#conv-result .error-box").inner_text()
    page.wait_for_selector('input[name="in_0_0"].invalid')
    # a setting outside its min/max still reaches the server (no silent browser veto, no stale result)
    cell.fill("10")
    page.wait_for_function("!document.querySelector('#conv-result .error-box')")
    stride = page.locator('input[name="stride"]')
    stride.fill("0")
    stride.press("Tab")
    page.wait_for_selector("#conv-result .error-box")
    assert "stride" in page.locator("#conv-result .error-box").inner_text()
    page.wait_for_selector('input[name="stride"].invalid')
    assert "stride" in page.locator("#conv-form .field-message").inner_text()


@pytest.mark.browser
def test_filter_lab_error_sits_on_its_field(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/filters")
    page.wait_for_selector("#filters-result .fmap-img")
    stride = page.locator('#filters-form input[name="stride"]')
    stride.fill("0")
    stride.press("Tab")
    page.wait_for_selector("#filters-result .error-box")
    assert "stride" in page.locator("#filters-result .error-box").inner_text()
    page.wait_for_selector('#filters-form input[name="stride"].invalid')
    assert "stride must be" in page.locator("#filters-form .field-message").inner_text()
    stride.fill("1")
    stride.press("Tab")
    page.wait_for_selector("#filters-result .fmap-img")
    assert page.locator("#filters-form .invalid, #filters-form .field-message").count() == 0
    # picking from the list moves the thumbnail highlight with it
    options = page.locator('select[name="image_id"] option')
    other = options.nth(2).get_attribute("value")
    page.select_option('select[name="image_id"]', other)
    current = page.locator('.picker-thumbs a[aria-current="true"]')
    assert current.count() == 1 and f"image_id={other}" in (current.get_attribute("href") or "")
