"""A person's path through the foundation: upload a photo, open Predict, choose a model, read the top-k."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data

pytestmark = pytest.mark.browser


def test_upload_a_photo_and_see_predictions(page: Any, live_server: str, tmp_path: Path) -> None:
    photo = tmp_path / "my cat.jpg"
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(data.chelsea())).save(buffer, format="JPEG", quality=92)
    photo.write_bytes(buffer.getvalue())

    page.goto(f"{live_server}/images")
    page.set_input_files("#upload-form input[type=file]", str(photo))
    page.click("#upload-form [type=submit]")
    card = page.locator("#upload-result")
    card.get_by_text("my cat.jpg").first.wait_for()

    card.get_by_role("link", name="Predict").first.click()
    page.wait_for_url("**/predict?image_id=*")
    page.locator("#predictions li").first.wait_for()  # the default built-in model answers at once

    page.select_option("select[name=model]", "efficientnet_lite0")
    page.locator(".prediction[data-model=efficientnet_lite0] #predictions li").first.wait_for()
    top = page.locator("#predictions li").first.inner_text()
    assert "cat" in top.lower()
    assert page.locator("text=What the network sees").count() == 1
    assert page.locator(".badge-untrained").count() == 0


def test_bad_upload_shows_a_message_and_the_page_keeps_working(
    page: Any, live_server: str, tmp_path: Path
) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not a picture")
    page.goto(f"{live_server}/images")
    page.set_input_files("#upload-form input[type=file]", str(bogus))
    page.click("#upload-form [type=submit]")
    page.locator("#upload-result .error-box").wait_for()
    assert "not an image" in page.locator("#upload-result").inner_text().lower()
    page.goto(f"{live_server}/predict")
    assert page.locator("h1").inner_text() == "Predictions"


def test_a_bad_k_is_shown_next_to_k_and_the_last_result_stays(page: Any, live_server: str) -> None:
    page.goto(f"{live_server}/images")
    first = page.locator("#gallery .gallery-link").first.get_attribute("href")
    assert first and "image_id=" in first
    image_id = first.split("image_id=")[1]
    page.goto(f"{live_server}/predict?image_id={image_id}&k=2")
    page.locator("#predictions li").nth(1).wait_for()
    good_url = page.url

    page.fill("#predict-k", "0")
    page.click("form.controls [type=submit]")
    error = page.locator("#error-k")
    error.get_by_text("k: Input should be greater than or equal to 1").wait_for()
    # The last good result is still there, and the address bar still names it.
    assert page.locator("#predictions li").count() == 2
    assert page.url == good_url

    page.fill("#predict-k", "3")
    page.select_option("#predict-fit", "fit")
    page.locator(".prediction[data-fit=fit]").wait_for()
    page.wait_for_url("**fit=fit*")
    assert error.inner_text() == ""  # the message went with the mistake
    assert "fit=fit" in page.url and "k=3" in page.url
    # The shown input is a picture by URL, loaded by the browser.
    src = page.locator("img[alt='the preprocessed input']").get_attribute("src")
    assert src and src.startswith("/pictures/")
    page.wait_for_function("() => document.querySelector(\"img[alt='the preprocessed input']\").complete")
    assert page.locator("img[alt='the preprocessed input']").evaluate("img => img.naturalWidth") == 128
