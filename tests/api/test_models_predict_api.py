from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image


def test_models_list_has_milestones_builtins_and_offline_flags(client: TestClient) -> None:
    models = client.get("/api/v1/models", params={"milestones": True}).json()
    by_name = {m["name"]: m for m in models}
    assert {"alexnet", "vgg16", "googlenet", "inception_v3", "resnet50", "densenet121"} <= set(by_name)
    assert by_name["efficientnet_lite0"]["pretrained_available"] is True
    assert by_name["resnet18"]["pretrained_available"] is False  # the tests' TORCH_HOME is empty
    assert by_name["resnet18"]["year"] == 2015 and by_name["resnet18"]["params"] == 11_689_512
    assert by_name["nodule-cnn"]["builtin"] is True and by_name["nodule-cnn"]["in_channels"] == 1


def test_unknown_model_is_a_404_with_choices(client: TestClient) -> None:
    response = client.get("/api/v1/models/lenet9000")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found" and error["field"] == "model" and "resnet18" in error["choices"]


def test_predict_with_the_builtin_nodule_model(client: TestClient, gray_image_id: str) -> None:
    response = client.post("/api/v1/predict", json={"image_id": gray_image_id, "k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "nodule-cnn" and body["weights"] == "pretrained"
    labels = {p["label"] for p in body["predictions"]}
    assert labels == {"nodule", "no nodule"}
    assert abs(sum(p["probability"] for p in body["predictions"]) - 1.0) < 1e-5
    assert body["preprocessing"]["input_shape"][:2] == [1, 1]


def test_predict_untrained_resnet18_is_labelled(client: TestClient, sample_image_id: str) -> None:
    response = client.post(
        "/api/v1/predict", json={"image_id": sample_image_id, "model": "resnet18", "weights": "auto", "k": 3}
    )
    body = response.json()
    assert response.status_code == 200
    assert body["weights"] == "untrained"
    assert "resnet18-f37072fd.pth" in body["weights_note"]
    assert len(body["predictions"]) == 3
    assert body["preprocessing"]["input_shape"] == [1, 3, 224, 224]
    assert any("normalised" in s for s in body["preprocessing"]["steps"])


def test_predict_pretrained_missing_is_a_409_with_the_fix(client: TestClient, sample_image_id: str) -> None:
    response = client.post(
        "/api/v1/predict", json={"image_id": sample_image_id, "model": "resnet18", "weights": "pretrained"}
    )
    assert response.status_code == 409
    assert "convscope weights download resnet18" in response.json()["error"]["message"]


def test_predict_validation_names_the_field(client: TestClient, sample_image_id: str) -> None:
    response = client.post("/api/v1/predict", json={"image_id": sample_image_id, "k": 0})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "k"
    response = client.post("/api/v1/predict", json={"image_id": "0" * 64})
    assert response.status_code == 404


def test_model_input_picture_and_tensor(client: TestClient, sample_image_id: str) -> None:
    png = client.get(
        "/api/v1/predict/input", params={"image_id": sample_image_id, "model": "efficientnet_lite0"}
    )
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    npy = client.get(
        "/api/v1/predict/input",
        params={"image_id": sample_image_id, "model": "efficientnet_lite0", "format": "npy"},
    )
    tensor = np.load(io.BytesIO(npy.content))
    assert tensor.shape == (1, 3, 224, 224)
    assert tensor.min() >= -1.0 - 1e-6 and tensor.max() <= 1.0 + 1e-6  # mean = std = 0.5


def test_download_job_fails_cleanly_offline(client: TestClient) -> None:
    response = client.post("/api/v1/models/squeezenet1_1/weights/download")
    assert response.status_code == 202
    status_url = response.json()["status_url"]
    for _ in range(200):
        job = client.get(status_url).json()
        if job["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.05)
    assert job["status"] == "failed"
    assert "Could not download" in job["error"]


def test_download_of_shipped_weights_is_refused(client: TestClient) -> None:
    job = client.post("/api/v1/models/efficientnet_lite0/weights/download").json()
    for _ in range(100):
        status = client.get(job["status_url"]).json()
        if status["status"] != "queued" and status["status"] != "running":
            break
        time.sleep(0.05)
    assert status["status"] == "failed" and "needs no download" in status["error"]


def test_unknown_job_is_a_404(client: TestClient) -> None:
    assert client.get("/api/v1/jobs/nope").status_code == 404


def test_every_error_has_code_message_and_field(client: TestClient) -> None:
    for response in (
        client.get("/api/v1/nowhere"),
        client.post("/api/v1/predict", json=[1, 2]),
        client.get("/api/v1/jobs/unknown"),
    ):
        error = response.json()["error"]
        assert response.status_code >= 400
        assert {"code", "message", "field"} <= set(error)


def test_the_steps_say_when_the_stored_image_was_downsampled_first(tmp_path: Path) -> None:
    """Model views work on a bounded working copy (working_image_side); the input's story must say so."""
    from app.config import Settings
    from app.main import create_app

    settings = Settings(data_dir=tmp_path / "data", working_image_side=64)
    rgb = (np.random.default_rng(0).random((200, 160, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    with TestClient(create_app(settings)) as client:
        image_id = client.post("/api/v1/images", files={"file": ("big.png", buffer.getvalue(), "image/png")})
        image_id = image_id.json()["id"]
        r = client.post("/api/v1/predict", json={"image_id": image_id, "model": "nodule-cnn"})
        assert r.status_code == 200, r.text
        steps = r.json()["preprocessing"]["steps"]
        assert "downsampled from 160 × 200 to 40 × 50 pixels" in steps[0], steps
        assert "working_image_side = 64" in steps[0]
        assert steps[1].startswith("input: 40 x 50 px")


def _two_halves_png() -> bytes:
    """448 x 224: a red picture and a blue one side by side, each with a white bar near its outer edge."""
    image = np.zeros((224, 448, 3), dtype=np.uint8)
    image[:, :224, 0] = 200
    image[:, 224:, 2] = 200
    image[:, 8:24] = 255
    image[:, 424:440] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_predict_fit_keeps_both_halves_of_a_wide_image(client: TestClient) -> None:
    image_id = client.post("/api/v1/images", files={"file": ("pair.png", _two_halves_png())}).json()["id"]
    body = {"image_id": image_id, "model": "resnet18", "weights": "untrained", "k": 1}
    crop = client.post("/api/v1/predict", json=body).json()
    fit = client.post("/api/v1/predict", json={**body, "fit": "fit"}).json()
    assert crop["preprocessing"]["fit"] == "crop"  # the default: the model's own transform
    assert fit["preprocessing"]["fit"] == "fit"
    assert any(s.startswith("fit (not the model's own crop)") for s in fit["preprocessing"]["steps"])
    params = {"image_id": image_id, "model": "resnet18", "weights": "untrained", "format": "npy"}
    crop_x = np.load(io.BytesIO(client.get("/api/v1/predict/input", params=params).content))[0]
    fit_x = np.load(io.BytesIO(client.get("/api/v1/predict/input", params={**params, "fit": "fit"}).content))[
        0
    ]
    # White is the largest normalised value in every channel: the bars survive only with fit.
    white = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])

    def bar_columns(x: np.ndarray) -> int:
        """Columns white from top to bottom of the picture (rows 60..163 are picture in both inputs)."""
        return int(np.all(np.abs(x[:, 60:164] - white[:, None, None]) < 0.05, axis=(0, 1)).sum())

    assert bar_columns(crop_x) == 0 and bar_columns(fit_x) >= 2
    # Both halves are in the fitted input: red on the left, blue on the right.
    assert fit_x[0, 112, 30:100].mean() > fit_x[2, 112, 30:100].mean()
    assert fit_x[2, 112, 124:200].mean() > fit_x[0, 112, 124:200].mean()
    bad = client.post("/api/v1/predict", json={**body, "fit": "stretch"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "fit"
