"""Issue 9, defects 1 and 7 over HTTP: unavailable zoo models are listed with the reason and refused with a
422 naming the limit; preprocessing past max_preprocess_elements is a clean 422 too."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app


def test_models_list_marks_unavailable_models_with_the_reason(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/api/v1/models").json()}
    assert models["resnet18"]["available"] is True and models["resnet18"]["unavailable_reason"] is None
    giant = models["vit_h_14"]
    assert giant["available"] is False and "max_zoo_parameters" in giant["unavailable_reason"]
    assert client.get("/api/v1/models/vit_l_16").json()["available"] is False


def test_predict_with_an_unavailable_model_is_a_422_naming_the_limit(
    client: TestClient, sample_image_id: str
) -> None:
    response = client.post(
        "/api/v1/predict", json={"image_id": sample_image_id, "model": "vit_h_14", "weights": "untrained"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "over_limit" and error["field"] == "model"
    assert error["limit"] == "max_zoo_parameters" and error["estimate"] > error["maximum"]
    assert client.app.state.registry.loaded_keys() == []  # type: ignore[attr-defined]


def test_downloading_weights_of_an_unavailable_model_is_refused(client: TestClient) -> None:
    response = client.post("/api/v1/models/efficientnet_v2_l/weights/download")
    assert response.status_code == 422
    assert response.json()["error"]["limit"] == "max_zoo_gflops"


def test_zoo_page_greys_out_unavailable_models_and_pickers_do_not_offer_them(client: TestClient) -> None:
    page = client.get("/models").text
    row = page[page.index('<code class="muted">vit_h_14</code>') - 600 :]
    assert "unavailable" in row[:1500] and "max_zoo_parameters" in row[:1500]
    assert 'href="/predict?model=vit_h_14"' not in page
    picker = client.get("/predict").text
    assert '<option value="vit_h_14" disabled' in picker
    assert '<option value="resnet18">' in picker


def test_predict_past_max_preprocess_elements_is_a_clean_422(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data", max_preprocess_elements=1000))
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(buffer, format="PNG")
    with TestClient(app) as c:
        image_id = c.post("/api/v1/images", files={"file": ("a.png", buffer.getvalue(), "image/png")}).json()[
            "id"
        ]
        response = c.post("/api/v1/predict", json={"image_id": image_id, "model": "nodule-cnn"})
        page = c.get("/predict", params={"image_id": image_id, "model": "nodule-cnn"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "over_limit" and error["limit"] == "max_preprocess_elements"
    assert "max_preprocess_elements" in error["message"]
    assert page.status_code == 422 and "max_preprocess_elements" in page.text
