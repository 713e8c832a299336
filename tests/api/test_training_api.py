"""POST /api/v1/train: a job whose partial carries the history, whose result names a model every view opens,
bounded before it starts, cancellable, and refused with the field named."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.models.custom_models import build_module, parse_architecture
from app.core.training import engine
from app.services import training as training_service

# A small CNN for 32x32 RGB input: the digits (28x28 greyscale) are resized and their channel copied.
ARCH: dict[str, Any] = {
    "name": "tiny-digits",
    "in_channels": 3,
    "input_size": [32, 32],
    "categories": [f"class {i}" for i in range(10)],
    "layers": [
        {"type": "conv2d", "out_channels": 8, "kernel_size": 3},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "conv2d", "out_channels": 16, "kernel_size": 3},
        {"type": "relu"},
        {"type": "global_avgpool"},
        {"type": "flatten"},
        {"type": "linear", "out_features": 10},
    ],
}
SMALL = {"dataset": "digits", "epochs": 2, "seed": 3, "train_size": 120, "val_size": 40, "batch_size": 16}


def _train(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/train", json=body)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def _wait(client: TestClient, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[engine.TrainResult]:
    """The engine's results of the jobs run during the test (the best state among them)."""
    results: list[engine.TrainResult] = []
    real = training_service.train

    def spy(*args: Any, **kwargs: Any) -> engine.TrainResult:
        result = real(*args, **kwargs)
        results.append(result)
        return result

    monkeypatch.setattr(training_service, "train", spy)
    return results


def _digit_png() -> bytes:
    from PIL import Image

    from app.core.imaging.synthetic import sample_digit

    buffer = io.BytesIO()
    Image.fromarray((sample_digit(3, 56) * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_train_a_model_then_every_view_opens_it_with_the_engines_logits(
    client: TestClient, captured: list[engine.TrainResult]
) -> None:
    accepted = _train(client, architecture=ARCH, name="my digits", **SMALL)
    assert accepted["status_url"].endswith(f"/api/v1/jobs/{accepted['job_id']}")
    assert accepted["estimated_seconds"] > 0 and accepted["batch_size"] == 16
    job = _wait(client, accepted["job_id"])
    assert job["status"] == "done", job
    result = job["result"]
    assert len(result["history"]) == 2
    assert set(result["history"][0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert result["val_accuracy"] == max(h["val_accuracy"] for h in result["history"])
    assert (
        "28x28 → 32x32" in result["dataset_note"]
        and "1 channel → 3 channels (copied)" in result["dataset_note"]
    )
    assert job["partial"]["history"] == result["history"]
    name = result["model"]
    assert name.startswith("custom-")

    info = client.get(f"/api/v1/models/{name}").json()
    assert info["display_name"] == "my digits (uploaded)" and info["in_channels"] == 3
    assert info["pretrained_available"] is True

    # The saved model predicts exactly what the engine's best state gives on the same input tensor.
    image_id = client.post("/api/v1/images", files={"file": ("three.png", _digit_png(), "image/png")}).json()[
        "id"
    ]
    predicted = client.post("/api/v1/predict", json={"image_id": image_id, "model": name, "k": 10}).json()
    tensor_npy = client.get(
        "/api/v1/predict/input", params={"image_id": image_id, "model": name, "format": "npy"}
    ).content
    tensor = torch.from_numpy(np.load(io.BytesIO(tensor_npy)))
    arch = parse_architecture({**ARCH, "categories": [str(d) for d in range(10)]})
    reference = build_module(arch)
    reference.load_state_dict(captured[0].best_state)
    reference.eval()
    with torch.inference_mode():
        logits = reference(tensor)
        served = client.app.state.registry.get(name).module(tensor)  # type: ignore[attr-defined]
    assert torch.equal(logits, served)
    probs = torch.softmax(logits.reshape(-1), 0)
    by_index = {p["index"]: p["probability"] for p in predicted["predictions"]}
    assert by_index == {i: float(probs[i]) for i in range(10)}
    assert {p["label"] for p in predicted["predictions"]} == {str(d) for d in range(10)}

    for path, body in (
        ("/api/v1/features", {"image_id": image_id, "model": name, "format": "json"}),
        ("/api/v1/explain/cam", {"image_id": image_id, "model": name, "format": "json"}),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 200, (path, response.text)


def test_the_same_request_gives_the_same_model_and_another_seed_another(client: TestClient) -> None:
    first = _wait(client, _train(client, architecture=ARCH, **SMALL)["job_id"])["result"]
    again = _wait(client, _train(client, architecture=ARCH, **SMALL)["job_id"])["result"]
    # The store is content-addressed: the same weights, byte for byte, are the same model.
    assert again["model"] == first["model"] and again["history"] == first["history"]
    other = _wait(client, _train(client, architecture=ARCH, **{**SMALL, "seed": 4})["job_id"])["result"]
    assert other["model"] != first["model"]


def test_train_further_from_a_model_trained_here(client: TestClient) -> None:
    first = _wait(client, _train(client, architecture=ARCH, **SMALL)["job_id"])["result"]
    more = _wait(client, _train(client, model=first["model"], **{**SMALL, "epochs": 1})["job_id"])
    assert more["status"] == "done", more
    assert more["result"]["started_from"] == first["model"]
    assert more["result"]["model"] != first["model"]


def test_cancel_stops_the_run_and_stores_nothing(client: TestClient) -> None:
    registry = client.app.state.registry  # type: ignore[attr-defined]
    before = registry.custom.ids()
    body = {**SMALL, "epochs": 50, "train_size": 400, "batch_size": 8}
    job_id = _train(client, architecture=ARCH, **body)["job_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        partial = client.get(f"/api/v1/jobs/{job_id}").json()["partial"] or {}
        if partial.get("phase") == "training" and partial.get("batch", 0) > 0:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("training did not report progress")
    # A second run while one trains: refused, naming the limit.
    busy = client.post("/api/v1/train", json={"architecture": ARCH, **SMALL})
    assert busy.status_code == 503 and busy.json()["error"]["limit"] == "max_training_jobs"
    assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 200
    job = _wait(client, job_id, timeout=30)
    assert job["status"] == "cancelled"
    assert job["partial"]["epoch"] < 50
    assert registry.custom.ids() == before


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"epochs": 0}, "epochs", "invalid_input"),
        ({"epochs": "2"}, "epochs", "invalid_input"),
        ({"epochs": 101}, "epochs", "over_limit"),
        ({"batch_size": 0}, "batch_size", "invalid_input"),
        ({"batch_size": 513}, "batch_size", "over_limit"),
        ({"dataset": "cats"}, "dataset", "invalid_input"),
        ({"optimizer": "rmsprop"}, "optimizer", "invalid_input"),
        ({"lr": 0}, "lr", "invalid_input"),
        ({"train_size": 30_000}, "train_size", "over_limit"),
        ({"model": "custom-0000000000000000"}, "architecture", "invalid_input"),  # both given
        ({"architecture": {**ARCH, "categories": ["a", "b"]}}, "architecture.layers", "invalid_input"),
        ({"architecture": {**ARCH, "in_channels": 2}}, "architecture.in_channels", "invalid_input"),
        (
            {"architecture": {**ARCH, "layers": [{"type": "linear", "out_features": 10}]}},
            "architecture.layers.0.type",
            "invalid_input",
        ),
        ({"architecture": {**ARCH, "name": ""}}, "architecture.name", "invalid_input"),
    ],
)
def test_bad_requests_name_the_field(
    client: TestClient, change: dict[str, Any], field: str, code: str
) -> None:
    body = {"architecture": ARCH, **SMALL, **change}
    response = client.post("/api/v1/train", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["code"] == code, error
    assert client.app.state.jobs.active() == []  # type: ignore[attr-defined]


def test_categories_mismatch_says_what_the_dataset_has(client: TestClient) -> None:
    arch = {
        **ARCH,
        "categories": ["a", "b"],
        "layers": [*ARCH["layers"][:-1], {"type": "linear", "out_features": 2}],
    }
    error = client.post("/api/v1/train", json={"architecture": arch, **SMALL}).json()["error"]
    assert error["field"] == "architecture.categories"
    assert "digits has 10 classes" in error["message"] and "out_features 10" in error["message"]


def test_models_that_cannot_be_trained_further_are_named(client: TestClient) -> None:
    builtin = client.post("/api/v1/train", json={"model": "nodule-cnn", **SMALL})
    assert builtin.status_code == 422 and builtin.json()["error"]["field"] == "model"
    unknown = client.post("/api/v1/train", json={"model": "no-such-model", **SMALL})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "model"
    neither = client.post("/api/v1/train", json=SMALL)
    assert neither.status_code == 422 and neither.json()["error"]["field"] == "architecture"


def test_work_past_the_limits_is_refused_before_it_starts(client: TestClient) -> None:
    memory = {"architecture": {**ARCH, "input_size": [256, 256]}, **SMALL, "train_size": 4000}
    error = client.post("/api/v1/train", json=memory).json()["error"]
    assert (error["code"], error["field"], error["limit"]) == (
        "over_limit",
        "train_size",
        "max_train_dataset_bytes",
    )
    assert "MiB" in error["message"]
    slow = {"architecture": {**ARCH, "input_size": [128, 128]}, **SMALL, "epochs": 100, "train_size": 1000}
    error = client.post("/api/v1/train", json=slow).json()["error"]
    assert (error["code"], error["field"], error["limit"]) == ("over_limit", "epochs", "max_job_seconds")
    assert "max_job_seconds" in error["message"] and error["estimate"] > error["maximum"]
    wide = {
        **ARCH,
        "layers": [{"type": "conv2d", "out_channels": 512, "kernel_size": 3}, *ARCH["layers"][1:]],
    }
    error = client.post("/api/v1/train", json={"architecture": wide, **SMALL, "batch_size": 512}).json()[
        "error"
    ]
    assert (error["field"], error["limit"]) == ("batch_size", "max_train_batch_activation_bytes")
    assert client.app.state.jobs.active() == []  # type: ignore[attr-defined]


def test_datasets_are_listed(client: TestClient) -> None:
    listed = {d["name"]: d for d in client.get("/api/v1/train/datasets").json()}
    assert set(listed) == {"nodules", "digits", "shapes"}
    assert (
        listed["shapes"]["categories"] == ["circle", "square", "triangle"]
        and listed["shapes"]["channels"] == 3
    )


def test_only_one_training_job_at_a_time_under_concurrent_posts(client: TestClient) -> None:
    body = {"architecture": ARCH, **SMALL, "epochs": 30, "train_size": 400}
    codes: list[int] = []

    def post() -> None:
        codes.append(client.post("/api/v1/train", json=body).status_code)

    threads = [threading.Thread(target=post) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [202, 503, 503]
    for job in client.app.state.jobs.active():  # type: ignore[attr-defined]
        client.delete(f"/api/v1/jobs/{job.id}")


def test_a_diverging_run_fails_naming_the_learning_rate(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's TrainingDiverged (tested in tests/core/training) ends the job with its message; nothing is saved."""

    def diverge(*args: Any, **kwargs: Any) -> engine.TrainResult:
        raise engine.TrainingDiverged(1, 3, float("nan"), 10.0)

    monkeypatch.setattr(training_service, "train", diverge)
    before = client.app.state.registry.custom.ids()  # type: ignore[attr-defined]
    job = _wait(
        client, _train(client, architecture=ARCH, **{**SMALL, "optimizer": "sgd", "lr": 10.0})["job_id"]
    )
    assert job["status"] == "failed" and "learning rate (10) is probably too high" in job["error"]
    assert client.app.state.registry.custom.ids() == before  # type: ignore[attr-defined]
