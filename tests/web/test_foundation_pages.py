from __future__ import annotations

import io
import re

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image


def test_home_links_every_feature(client: TestClient) -> None:
    html = client.get("/").text
    for path in ("/images", "/predict", "/conv", "/filters", "/network", "/explain", "/occlusion"):
        assert f'href="{path}"' in html


def test_models_page_lists_the_zoo_with_metadata(client: TestClient) -> None:
    html = client.get("/models").text
    assert "AlexNet" in html and "VGG-16" in html and "EfficientNet-Lite0" in html
    assert "resnet18-f37072fd.pth" in html  # missing weights are named
    assert "11.7 M" in html  # ResNet-18 parameters from the weights metadata


def test_predict_page_and_partial(client: TestClient, gray_image_id: str) -> None:
    page = client.get("/predict", params={"image_id": gray_image_id})
    assert page.status_code == 200
    assert "nodule" in page.text and "What the network sees" in page.text
    assert page.headers["vary"] == "HX-Request"
    partial = client.get("/predict", params={"image_id": gray_image_id}, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and "<html" not in partial.text
    assert 'id="predictions"' in partial.text


def test_untrained_model_is_labelled_in_the_page(client: TestClient, sample_image_id: str) -> None:
    html = client.get(
        "/predict", params={"image_id": sample_image_id, "model": "resnet18"}, headers={"HX-Request": "true"}
    ).text
    assert "UNTRAINED" in html and "resnet18-f37072fd.pth" in html


def test_htmx_errors_come_back_next_to_their_field(client: TestClient) -> None:
    response = client.get("/predict", params={"image_id": "f" * 64}, headers={"HX-Request": "true"})
    assert response.status_code == 404
    assert "<html" not in response.text
    # The message fills the image picker's slot out of band; the last good result is not replaced.
    slot = re.search(r'<p id="error-image_id"[^>]*>(.*?)</p>', response.text)
    assert slot and "no image with id" in slot.group(1) and 'hx-swap-oob="true"' in slot.group(0)
    assert response.headers["HX-Reswap"] == "none" and response.headers["HX-Push-Url"] == "false"
    assert 'id="prediction"' not in response.text and 'id="predictions"' not in response.text
    page = client.get("/predict", params={"image_id": "f" * 64})
    assert page.status_code == 404 and "<html" in page.text
    assert re.search(r'<p id="error-image_id"[^>]*role="alert">[^<]*no image with id', page.text)


def test_a_bad_k_is_shown_next_to_k_with_the_api_s_message(client: TestClient, gray_image_id: str) -> None:
    api = client.post("/api/v1/predict", json={"image_id": gray_image_id, "k": 0}).json()["error"]
    partial = client.get(
        "/predict", params={"image_id": gray_image_id, "k": 0}, headers={"HX-Request": "true"}
    )
    assert partial.status_code == 422 and partial.headers["HX-Reswap"] == "none"
    slot = re.search(r'<p id="error-k"[^>]*>(.*?)</p>', partial.text)
    assert slot and slot.group(1) == api["message"] and api["field"] == "k"
    assert 'id="predictions"' not in partial.text
    # A whole page (reload, bookmark) keeps what was typed, marks the field, and shows no stale result.
    page = client.get("/predict", params={"image_id": gray_image_id, "k": "lots"})
    assert page.status_code == 422 and "<html" in page.text
    assert re.search(r'<input id="predict-k"[^>]*value="lots"[^>]*aria-invalid="true"', page.text)
    assert "k: Input should be a valid integer" in page.text
    # k = 21 is refused by both, with the same bound (one definition of the field).
    assert client.post("/api/v1/predict", json={"image_id": gray_image_id, "k": 21}).status_code == 422
    assert client.get("/predict", params={"image_id": gray_image_id, "k": 21}).status_code == 422
    assert client.get("/predict", params={"image_id": gray_image_id, "k": 20}).status_code == 200


def test_a_good_answer_clears_the_error_slots(client: TestClient, gray_image_id: str) -> None:
    partial = client.get(
        "/predict", params={"image_id": gray_image_id, "k": 2}, headers={"HX-Request": "true"}
    )
    assert partial.status_code == 200 and 'id="predictions"' in partial.text
    for name in ("image_id", "model", "weights", "k", "fit"):
        assert f'<p id="error-{name}" class="field-error" hx-swap-oob="true"></p>' in partial.text


def test_predict_pictures_are_urls_not_data_uris(client: TestClient, sample_image_id: str) -> None:
    params = {"image_id": sample_image_id, "model": "resnet18", "weights": "untrained"}
    page = client.get("/predict", params=params)
    assert page.status_code == 200
    assert "data:image" not in page.text and len(page.content) < 100_000
    urls = re.findall(r'<img[^>]+src="(/pictures/[0-9a-f]+\.png)"', page.text)
    assert len(urls) == 4  # the shown input and 3 normalised channels
    for url in urls:
        png = client.get(url)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert "immutable" in png.headers["cache-control"]
    shown = np.asarray(Image.open(io.BytesIO(client.get(urls[0]).content)))
    api = client.get("/api/v1/predict/input", params=params)
    np.testing.assert_array_equal(shown, np.asarray(Image.open(io.BytesIO(api.content))))


def test_the_page_says_which_shape_was_used(client: TestClient, sample_image_id: str) -> None:
    params = {"image_id": sample_image_id, "model": "resnet18", "weights": "untrained"}
    crop = client.get("/predict", params=params, headers={"HX-Request": "true"}).text
    assert 'data-fit="crop"' in crop and "the model's own transform" in crop
    fit = client.get("/predict", params={**params, "fit": "fit"}, headers={"HX-Request": "true"}).text
    assert 'data-fit="fit"' in fit and "resized to fit and padded" in fit
    bad = client.get("/predict", params={**params, "fit": "stretch"}, headers={"HX-Request": "true"})
    assert bad.status_code == 422 and re.search(r'<p id="error-fit"[^>]*>fit: Input should be', bad.text)


def test_user_text_is_escaped(client: TestClient) -> None:
    response = client.get(
        "/predict", params={"model": "<script>alert(1)</script>"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 404
    assert "<script>alert(1)</script>" not in response.text


def test_every_lecture_idea_on_the_home_page_links_to_a_working_page(client: TestClient) -> None:
    from app.web.home import LECTURE_MAP

    html = client.get("/").text
    for idea, href, _ in LECTURE_MAP:
        assert f'href="{href}"' in html.replace("&amp;", "&")
        assert client.get(href).status_code == 200, (idea, href)


def test_forms_leave_validation_to_the_server(client: TestClient) -> None:
    # htmx 2 silently drops a request when the browser's own min/max/required check fails, so the page
    # kept showing the previous result with no message. The server's 422 names the field instead.
    import re

    for path in ("/images", "/predict", "/models", "/cost", "/conv", "/filters"):
        forms = re.findall(r"<form\b[^>]*>", client.get(path).text)
        assert forms, path
        for form in forms:
            assert " novalidate" in form, (path, form)


def test_every_page_has_a_plain_text_title(client: TestClient) -> None:
    import re

    for path in (
        "/",
        "/images",
        "/predict",
        "/models",
        "/conv",
        "/filters",
        "/cost",
        "/network",
        "/receptive-fields",
        "/milestones",
        "/explain",
        "/occlusion",
        "/compare",
    ):
        head = client.get(path).text.split("</head>")[0]
        titles = re.findall(r"<title>(.*?)</title>", head, flags=re.S)
        assert len(titles) == 1 and "<" not in titles[0] and len(titles[0]) < 80, (path, titles)


def test_small_model_input_is_shown_enlarged(client: TestClient, gray_image_id: str) -> None:
    # The digit CNN's 28 x 28 tensor was drawn 28 px wide: a postage stamp on a projector.
    html = client.get(
        "/predict", params={"image_id": gray_image_id, "model": "digit-cnn"}, headers={"HX-Request": "true"}
    ).text
    assert 'alt="the preprocessed input" width="252" height="252"' in html
    assert "shown 9x enlarged" in html


def test_history_restore_request_gets_the_whole_page(client: TestClient, gray_image_id: str) -> None:
    """HTMX asks with HX-Request *and* HX-History-Restore-Request when it has no snapshot of a history entry
    (Back after a reload): what it swaps in is the whole body, so the answer must be the full page."""
    params = {"image_id": gray_image_id}
    partial = client.get("/predict", params=params, headers={"HX-Request": "true"})
    assert "<html" not in partial.text and 'id="predictions"' in partial.text
    restore = client.get(
        "/predict", params=params, headers={"HX-Request": "true", "HX-History-Restore-Request": "true"}
    )
    assert restore.status_code == 200
    assert "<html" in restore.text and 'id="predictions"' in restore.text
    assert restore.text.count("<nav") >= 1  # the navigation: a page, not a region
    boosted = client.get("/predict", params=params, headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in boosted.text
