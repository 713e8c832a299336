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
    cell = page.locator('input[name="input.0.0"]')
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
    expect(page.locator('#conv-input-grid td.in-window input[name="input.1.1"]')).to_have_count(1)
    page.locator("#conv-next").click()
    expect(page.locator("#conv-step-where")).to_contain_text("row 2, column 3")
    # a bad cell: a message in words beside the grid, the cell outlined, and the last good result kept
    cell.fill("abc")
    expect(page.locator("#conv-errors .error-box")).to_contain_text(
        "Input row 1, column 1: 'abc' is not a number"
    )
    expect(page.locator('input[name="input.0.0"].invalid')).to_have_count(1)
    expect(page.locator("#conv-input-grid + .field-message")).to_contain_text("Input row 1, column 1")
    expect(page.locator('#conv-output td[data-row="0"][data-col="0"]')).to_have_text("10")
    # fixed: the marks go, the result follows the new value
    cell.fill("10")
    expect(page.locator("#conv-errors .error-box")).to_have_count(0)
    expect(page.locator("#conv-form .invalid, #conv-form .field-message")).to_have_count(0)
    expect(page.locator('#conv-output td[data-row="0"][data-col="0"]')).to_have_text("0")
    # a setting outside its min/max still reaches the server (no silent browser veto, no stale result)
    stride = page.locator('input[name="stride"]')
    stride.fill("0")
    stride.press("Tab")
    expect(page.locator("#conv-errors .error-box")).to_contain_text("Stride: must be at least 1")
    expect(page.locator('input[name="stride"].invalid')).to_have_count(1)
    expect(page.locator("#conv-form .field-message")).to_have_text("Stride: must be at least 1")
    expect(page.locator("#conv-output td.out-cell")).to_have_count(16)


@pytest.mark.browser
def test_filter_lab_error_sits_on_its_field(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/filters")
    expect(page.locator("#filters-result .fmap-img")).to_have_count(2)
    # every picture arrives by URL (no data URI) and loads
    for img in page.locator("#filters-result img").all():
        assert (img.get_attribute("src") or "").startswith("/pictures/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#filters-result img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    # the value under the mouse comes from the API twin, asked with the page's own request
    page.locator('#filters-result img.fmap-img[data-index="0"]').hover()
    expect(page.locator("#fmap-hover-0")).to_have_text(re.compile(r"^row \d+, col \d+: -?[0-9.e+-]+$"))
    stride = page.locator('#filters-form input[name="stride"]')
    stride.fill("0")
    stride.press("Tab")
    expect(page.locator("#filters-errors .error-box")).to_contain_text("Stride: must be at least 1")
    expect(page.locator('#filters-form input[name="stride"].invalid')).to_have_count(1)
    expect(page.locator("#filters-form .field-message")).to_have_text("Stride: must be at least 1")
    expect(page.locator("#filters-result .fmap-img")).to_have_count(2)  # the last good maps stay
    stride.fill("1")
    stride.press("Tab")
    expect(page.locator("#filters-errors .error-box")).to_have_count(0)
    expect(page.locator("#filters-form .invalid, #filters-form .field-message")).to_have_count(0)
    # a drawn cell: typing ticks "use it"; a bad one is outlined and named as the user sees it
    drawn = page.locator('#filters-form input[name="kernels.0.weights.1.1"]')
    drawn.fill("x")
    expect(page.locator("#filters-errors .error-box")).to_contain_text(
        "Your kernel row 2, column 2: 'x' is not a number"
    )
    expect(page.locator('input[name="kernels.0.weights.1.1"].invalid')).to_have_count(1)
    expect(page.locator("#filters-kernel-grid + .field-message")).to_contain_text(
        "Your kernel row 2, column 2"
    )
    drawn.fill("2")
    expect(page.locator("#filters-result .fmap-img")).to_have_count(3)
    expect(page.locator("#filters-form .invalid")).to_have_count(0)
    # picking from the list moves the thumbnail highlight with it
    options = page.locator('select[name="image_id"] option')
    other = options.nth(2).get_attribute("value")
    page.select_option('select[name="image_id"]', other)
    current = page.locator('.picker-thumbs a[aria-current="true"]')
    assert current.count() == 1 and f"image_id={other}" in (current.get_attribute("href") or "")


@pytest.mark.browser
def test_cost_bars_are_to_scale_and_errors_sit_on_their_field(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/cost")
    expect(page.locator("#cost-times")).to_contain_text("7,282 times as many multiplications as")
    fc = page.locator("#cost-bar-fc").bounding_box()
    conv = page.locator("#cost-bar-conv").bounding_box()
    assert fc is not None and conv is not None
    # 589,824 of 4,294,967,296 is a hairline (drawn 2 px at least), not 60 % of the bar as on a log scale
    assert fc["width"] > 400 and conv["width"] <= 3
    kernel = page.locator('#cost-form input[name="kernel"]')
    kernel.fill("0")
    expect(page.locator("#cost-errors .error-box")).to_contain_text("Kernel size: must be at least 1")
    expect(page.locator('#cost-form input[name="kernel"].invalid')).to_have_count(1)
    expect(page.locator("#cost-form .field-message")).to_have_text("Kernel size: must be at least 1")
    expect(page.locator("#cost-fc-mults")).to_have_text("4,294,967,296")  # the last good numbers stay
    kernel.fill("5")
    expect(page.locator("#cost-errors .error-box")).to_have_count(0)
    expect(page.locator("#cost-conv-mults")).to_have_text("1,638,400")
    expect(page).to_have_url(re.compile(r"/cost\?.*kernel=5"))


@pytest.mark.browser
def test_preset_menu_swaps_the_workspace_and_its_url_reloads_as_a_page(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/conv")
    page.select_option("#conv-preset-select", "small_nodule")
    expect(page).to_have_url(re.compile(r"/conv\?preset=small_nodule$"))
    expect(page.locator("#conv-preset-note")).to_contain_text("nodule")
    expect(page.locator("#conv-workspace #conv-workspace")).to_have_count(
        0
    )  # the block, not the page, swapped in
    page.reload()
    expect(page.locator("header.topbar")).to_have_count(1)
    expect(page.locator("#conv-preset-select")).to_have_value("small_nodule")
    expect(page.locator("#conv-preset-note")).to_contain_text("nodule")
    # the size menus re-render the workspace with the cells that still fit
    page.select_option('select[name="in_cols"]', "3")
    expect(page.locator("#conv-input-grid tr:first-child input")).to_have_count(3)
    expect(page.locator("#conv-errors .error-box")).to_have_count(0)
