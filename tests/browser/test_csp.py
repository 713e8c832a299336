"""The Content-Security-Policy does not break the app: every page and typical HTMX swaps run with no CSP
violation and no console error, and the computed colours and widths (data-style, applied by a static script
instead of style="" attributes) really are applied."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

# Registered before any page script: every violation (inline script or style, eval, foreign source) is kept.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});
"""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A tab that enforces the CSP (the shared `page` fixture bypasses it for Playwright's eval-based waits)."""
    context = browser.new_context(viewport={"width": 1280, "height": 720}, bypass_csp=False)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    yield tab
    context.close()


def _watch(page: Any) -> list[str]:
    problems: list[str] = []
    page.add_init_script(RECORD_VIOLATIONS)
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    return problems


def _violations(page: Any, problems: list[str], where: str) -> list[str]:
    found = [f"{where}: {v}" for v in page.evaluate("window.__csp || []")]
    found += [f"{where}: {p}" for p in problems]
    problems.clear()
    return found


def _site_links(page: Any, live_server: str) -> list[str]:
    """Every page the home page and the navigation link to, on this server (not the API or its CDN docs)."""
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
    paths: list[str] = []
    variants: dict[str, int] = {}
    for href in hrefs:
        parts = urlsplit(href)
        if f"{parts.scheme}://{parts.netloc}" != live_server:
            continue
        # /docs is FastAPI's Swagger UI: its code comes from a CDN (unreachable offline), under its own policy.
        if parts.path.startswith(("/api/", "/docs", "/redoc", "/static/")):
            continue
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        # the home page links each sample to /predict: two of them show what a third would
        if path not in paths and variants.get(parts.path, 0) < 2:
            variants[parts.path] = variants.get(parts.path, 0) + 1
            paths.append(path)
    return paths


@pytest.mark.browser
def test_every_page_runs_under_the_csp(page: Any, live_server: str) -> None:
    problems = _watch(page)
    page.goto(f"{live_server}/")
    assert "script-src 'self'" in _csp_of(page, live_server)
    paths = _site_links(page, live_server)
    assert len(paths) >= 15, paths  # the nav (12 pages), the home page and the lecture map's deep links
    found = _violations(page, problems, "/")
    for path in [*paths, "/login"]:
        page.goto(f"{live_server}{path}", wait_until="networkidle", timeout=120_000)
        found += _violations(page, problems, path)
    assert not found, "\n".join(found)


def _csp_of(page: Any, live_server: str) -> str:
    response = page.request.get(f"{live_server}/")
    return str(response.headers.get("content-security-policy", ""))


@pytest.mark.browser
def test_htmx_swaps_run_under_the_csp_and_styles_are_applied(page: Any, live_server: str) -> None:
    problems = _watch(page)
    found: list[str] = []

    # The matrix playground: an edit swaps in a coloured result (cell colours come from data-style).
    page.goto(f"{live_server}/conv?preset=vertical_edge")
    page.locator('input[name="input.0.0"]').fill("20")
    expect(page.locator('#conv-output td[data-row="0"][data-col="0"]')).to_have_text("10")
    background = page.eval_on_selector(
        '#conv-output td[data-row="0"][data-col="1"]', "el => getComputedStyle(el).backgroundColor"
    )
    assert background not in ("rgba(0, 0, 0, 0)", "transparent"), background
    # resizing must not also recompute with the old size (the size selects have their own request)
    page.select_option('select[name="in_cols"]', "7")
    expect(page.locator("#conv-input-grid tr:first-child input")).to_have_count(7)
    found += _violations(page, problems, "/conv")

    # The cost page: bars get their width from data-style.
    page.goto(f"{live_server}/cost")
    page.wait_for_selector(".cost-bar")
    widths = page.eval_on_selector_all(".cost-bar", "els => els.map(e => e.getBoundingClientRect().width)")
    assert len(widths) >= 2 and all(w > 0 for w in widths) and len(set(widths)) > 1, widths
    found += _violations(page, problems, "/cost")

    # Predictions: choosing an image swaps in the probability bars (and moves the thumbnail highlight).
    page.goto(f"{live_server}/predict")
    first = page.locator('select[name="image_id"] option[value]:not([value=""])').first.get_attribute("value")
    page.select_option('select[name="image_id"]', first)
    page.wait_for_selector(".bars .bar")
    expect(page.locator(f'.picker-thumbs a[aria-current="true"][href*="{first}"]')).to_have_count(1)
    widths = page.eval_on_selector_all(".bars .bar", "els => els.map(e => e.getBoundingClientRect().width)")
    assert max(widths) > 10, widths
    found += _violations(page, problems, "/predict")

    # The filter lab: ticking a kernel recomputes (the form's trigger no longer needs eval), and the colour bar
    # has its gradient.
    page.goto(f"{live_server}/filters")
    page.wait_for_selector("#filters-result .fmap-img")
    before = page.locator("#filters-result .fmap-img").count()
    page.locator('.kernel-library input[type="checkbox"]').nth(3).check()
    expect(page.locator("#filters-result .fmap-img")).not_to_have_count(before, timeout=60_000)
    ramp = page.eval_on_selector(
        "#filters-result .colorbar-ramp", "el => getComputedStyle(el).backgroundImage"
    )
    assert "gradient" in ramp, ramp
    found += _violations(page, problems, "/filters")
    assert not found, "\n".join(found)
