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
