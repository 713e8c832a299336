"""The matrix playground in a real browser: edit a cell, see the output change, click a cell, see the products."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

# Records when the matrix form last asked for, sent or received a re-render, so that a test can wait until
# HTMX is quiet. A click on an output cell blurs an edited cell, whose "change" re-renders the result a little
# later and re-selects the focus the request carried: reading or clicking before that swap lands is a race.
_TRACK_HTMX = """() => {
  if (window.__convQuiet) return;
  const state = {pending: 0, last: performance.now()};
  const bump = () => { state.last = performance.now(); };
  for (const name of ["conv-input", "conv-change", "conv-paint", "htmx:afterSettle"]) {
    document.addEventListener(name, bump, true);
  }
  document.addEventListener("htmx:beforeRequest", () => { state.pending += 1; bump(); }, true);
  document.addEventListener("htmx:afterRequest", () => { state.pending -= 1; bump(); }, true);
  // quiet: nothing in flight and nothing asked for during longer than the longest trigger delay (350 ms)
  window.__convQuiet = () => state.pending === 0 && performance.now() - state.last > 800;
}"""


def _wait_until_quiet(page: Any) -> None:
    page.wait_for_function("() => window.__convQuiet()")


@pytest.mark.browser
def test_edit_cell_and_step_through_products(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/conv?preset=vertical_edge")
    page.evaluate(_TRACK_HTMX)
    # Every read below is an auto-waiting expectation: it retries until the re-render has landed.
    expect(page.locator('#conv-output td[data-row="0"][data-col="1"]')).to_have_text("30")
    # 10 -> 20 in the input's top-left cell changes output (0, 0) from 0 to 10 once HTMX has re-rendered
    cell = page.locator('input[name="in_0_0"]')
    cell.fill("20")
    expect(page.locator('#conv-output td[data-row="0"][data-col="0"]')).to_have_text("10")
    # click an output cell: its window lights up and its multiply-and-sum is written out
    page.locator('#conv-output td[data-row="1"][data-col="1"]').click()
    _wait_until_quiet(page)  # the blur's re-render must land before we step on, or it re-selects (1, 1)
    step_text = page.locator("#conv-step-text")
    expect(step_text).to_contain_text("(1 x 10)")
    expect(step_text).to_contain_text("(-1 x 0)")
    expect(step_text).to_have_text(re.compile(r"= 30\s*$"))
    expect(page.locator("#conv-input-grid td.in-window")).to_have_count(9)
    expect(page.locator('#conv-input-grid td.in-window input[name="in_1_1"]')).to_have_count(1)
    page.locator("#conv-next").click()
    expect(page.locator("#conv-step-where")).to_contain_text("row 2, column 3")
    # a bad cell gives a message naming the field, and the cell is outlined
    cell.fill("abc")
    expect(page.locator("#conv-result .error-box")).to_contain_text("in_0_0")
    expect(page.locator('input[name="in_0_0"].invalid')).to_have_count(1)
    # a setting outside its min/max still reaches the server (no silent browser veto, no stale result)
    cell.fill("10")
    expect(page.locator("#conv-result .error-box")).to_have_count(0)
    stride = page.locator('input[name="stride"]')
    stride.fill("0")
    stride.press("Tab")
    expect(page.locator("#conv-result .error-box")).to_contain_text("stride")
    expect(page.locator('input[name="stride"].invalid')).to_have_count(1)
    expect(page.locator("#conv-form .field-message")).to_contain_text("stride")


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
