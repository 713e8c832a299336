from __future__ import annotations

from fastapi.testclient import TestClient


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


def test_htmx_errors_come_back_as_a_partial(client: TestClient) -> None:
    response = client.get("/predict", params={"image_id": "f" * 64}, headers={"HX-Request": "true"})
    assert response.status_code == 404
    assert 'class="error-box"' in response.text and "<html" not in response.text
    page = client.get("/predict", params={"image_id": "f" * 64})
    assert page.status_code == 404 and "<html" in page.text


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
