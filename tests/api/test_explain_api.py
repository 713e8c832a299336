"""The explanation API: CAM in every format, occlusion as a job (202, poll, cancel), patch, compare, errors."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

SMALL_MODELS = ("nodule-cnn", "digit-cnn", "squeezenet1_1")


@pytest.fixture
def model_name(registry: Any) -> str:
    """The smallest model available: a built-in when trained, else SqueezeNet (untrained)."""
    names = set(registry.names())
    return next(m for m in SMALL_MODELS if m in names)


def _wait(client: TestClient, url: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(url).json()
        if body["status"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def _small_layer(client: TestClient, image_id: str, model: str) -> str:
    """The spatial layer with the fewest channels (keeps Score-CAM to a handful of forwards)."""
    r = client.get("/api/v1/explain/layers", params={"image_id": image_id, "model": model})
    assert r.status_code == 200
    layers = r.json()["layers"]
    return str(min(layers, key=lambda info: (info["shape"][0], -len(info["name"])))["name"])


def test_methods_and_layers(client: TestClient, sample_image_id: str, model_name: str) -> None:
    methods = client.get("/api/v1/explain/methods").json()
    keys = [m["key"] for m in methods]
    for key in (
        "gradcam",
        "gradcam++",
        "xgradcam",
        "layercam",
        "hirescam",
        "scorecam",
        "ablationcam",
        "eigencam",
        "random",
    ):
        assert key in keys
    assert {m["key"] for m in methods if m["slow"]} == {"scorecam", "ablationcam"}
    body = client.get(
        "/api/v1/explain/layers", params={"image_id": sample_image_id, "model": model_name}
    ).json()
    names = [info["name"] for info in body["layers"]]
    assert body["default"] in names
    assert "last convolutional block" in body["why"]
    assert all(len(info["shape"]) == 3 for info in body["layers"])


def test_cam_json(client: TestClient, sample_image_id: str, model_name: str, registry: Any) -> None:
    r = client.post(
        "/api/v1/explain/cam",
        json={"image_id": sample_image_id, "model": model_name, "format": "json", "normalise": "raw", "k": 3},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "gradcam" and body["layer"] == body["default_layer"]
    assert body["shape"] == body["input_size"]
    assert len(body["predictions"]) == min(3, len(registry.get(model_name).categories))
    # Default target = top-1.
    assert body["target"] == body["predictions"][0]["index"]
    assert body["label"] == body["predictions"][0]["label"]
    assert body["min"] >= 0.0
    assert body["raw_max"] >= body["raw_min"] >= 0.0


def test_cam_formats(client: TestClient, sample_image_id: str, model_name: str) -> None:
    base = {"image_id": sample_image_id, "model": model_name, "method": "layercam", "target": 1}
    png = client.post("/api/v1/explain/cam", json=base)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    overlay = np.asarray(Image.open(io.BytesIO(png.content)))
    heat = client.post("/api/v1/explain/cam", json={**base, "format": "heatmap"})
    assert heat.headers["content-type"] == "image/png"
    assert np.asarray(Image.open(io.BytesIO(heat.content))).shape == overlay.shape
    # Feature resolution, raw values: the .npy is the layer's own grid with the raw numbers.
    js = client.post(
        "/api/v1/explain/cam", json={**base, "format": "json", "resolution": "feature", "normalise": "raw"}
    )
    info = js.json()
    npy = client.post(
        "/api/v1/explain/cam",
        params={"format": "npy"},
        json={**base, "resolution": "feature", "normalise": "raw"},
    )
    assert npy.headers["content-type"] == "application/octet-stream"
    arr = np.load(io.BytesIO(npy.content))
    assert list(arr.shape) == info["shape"] == info["activation_shape"][1:]
    assert info["target"] == 1
    assert float(arr.max()) == pytest.approx(info["raw_max"], rel=1e-5)
    # Normalised, upsampled: values in [0, 1] at the input size.
    up = np.load(io.BytesIO(client.post("/api/v1/explain/cam", json={**base, "format": "npy"}).content))
    assert list(up.shape) == info["input_size"]
    assert up.min() >= 0.0 and up.max() <= 1.0 + 1e-6


def test_cam_greyscale_and_dicom(client: TestClient, gray_image_id: str, model_name: str) -> None:
    from pydicom.data import get_testdata_file

    r = client.post(
        "/api/v1/explain/cam", json={"image_id": gray_image_id, "model": model_name, "format": "json"}
    )
    assert r.status_code == 200, r.text
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    with open(path, "rb") as fh:
        up = client.post("/api/v1/images", files={"file": ("ct.dcm", fh.read(), "application/dicom")})
    assert up.status_code == 201, up.text
    dicom_id = up.json()["id"]
    r = client.post(
        "/api/v1/explain/cam",
        json={"image_id": dicom_id, "model": model_name, "format": "json", "method": "hirescam"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["max"] <= 1.0 + 1e-6


@pytest.mark.parametrize(
    ("patch", "status", "field"),
    [
        ({"method": "jetcam"}, 422, "method"),
        ({"layer": "no.such.layer"}, 422, "layer"),
        ({"model": "no-such-model"}, 404, "model"),
        ({"target": 10_000_000}, 422, "target"),
        ({"opacity": 2}, 422, "opacity"),
        ({"cmap": "jet"}, 422, "cmap"),
    ],
)
def test_cam_errors_name_the_field(
    client: TestClient, sample_image_id: str, model_name: str, patch: dict[str, Any], status: int, field: str
) -> None:
    r = client.post("/api/v1/explain/cam", json={"image_id": sample_image_id, "model": model_name, **patch})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field
    if field in ("method", "layer", "model"):
        assert err["choices"]


def test_unknown_image_is_404(client: TestClient, model_name: str) -> None:
    r = client.post("/api/v1/explain/cam", json={"image_id": "0" * 64, "model": model_name})
    assert r.status_code == 404


def test_slow_cam_is_a_job(client: TestClient, sample_image_id: str, model_name: str) -> None:
    layer = _small_layer(client, sample_image_id, model_name)
    r = client.post(
        "/api/v1/explain/cam",
        json={"image_id": sample_image_id, "model": model_name, "method": "scorecam", "layer": layer},
    )
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["status_url"])
    assert job["status"] == "done", job
    assert job["result"]["method"] == "scorecam" and job["result"]["layer"] == layer
    raw = client.get(f"/api/v1/jobs/{job['id']}/artifacts/map", params={"format": "npy"})
    arr = np.load(io.BytesIO(raw.content))
    assert list(arr.shape) == job["result"]["activation_shape"][1:]
    assert (
        client.get(f"/api/v1/jobs/{job['id']}/artifacts/values", params={"format": "png"}).status_code == 200
    )


def test_occlusion_job_lifecycle(
    client: TestClient, sample_image_id: str, model_name: str, registry: Any
) -> None:
    size = min(registry.get(model_name).input_size)
    window = size // 4
    r = client.post(
        "/api/v1/explain/occlusion",
        json={
            "image_id": sample_image_id,
            "model": model_name,
            "window": window,
            "stride": window // 2,
            "baseline": "blur",
        },
    )
    assert r.status_code == 202, r.text
    created = r.json()
    # The 202 says what the job will cost before it runs (issue 9): 49 windows + the unoccluded input + top-k.
    assert set(created) == {
        "job_id",
        "status_url",
        "estimated_seconds",
        "forward_passes",
        "macs",
        "batch_size",
        "time_limit_seconds",
    }
    assert created["forward_passes"] == 49 + 2 and created["macs"] > 0
    assert 0 <= created["estimated_seconds"] <= created["time_limit_seconds"]
    assert created["status_url"].endswith(f"/api/v1/jobs/{created['job_id']}")
    job = _wait(client, created["status_url"])
    assert job["status"] == "done", job
    res = job["result"]
    assert res["window"] == window and res["stride"] == window // 2 and res["baseline"] == "blur"
    assert res["grid"] == [7, 7] and res["windows"] == 49
    assert res["target"] == res["predictions"][0]["index"]
    assert job["progress"] == 1.0
    # Progressive mode reported a coarse map on the way (its partial survives in the job).
    assert job["partial"] is not None and job["partial"]["fraction"] < 1.0
    arr = np.load(io.BytesIO(client.get(f"/api/v1/jobs/{job['id']}/artifacts/map?format=npy").content))
    assert list(arr.shape) == res["shape"]
    assert float(arr.max()) == pytest.approx(res["max"], rel=1e-5)
    drops = np.load(io.BytesIO(client.get(f"/api/v1/jobs/{job['id']}/artifacts/drops?format=npy").content))
    assert drops.shape == (7, 7)
    png = client.get(f"/api/v1/jobs/{job['id']}/artifacts/map?format=png")
    assert png.headers["content-type"] == "image/png"


def test_occlusion_cancel(
    client: TestClient, sample_image_id: str, model_name: str, hold_job_workers: Any
) -> None:
    """Cancelled while queued behind workers that cannot finish: the DELETE cannot lose a race to the job."""
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    release, blockers = hold_job_workers(jobs)
    try:
        r = client.post(
            "/api/v1/explain/occlusion",
            json={
                "image_id": sample_image_id,
                "model": model_name,
                "window": 4,
                "stride": 2,
                "progressive": False,
            },
        )
        assert r.status_code == 202, r.text
        url = r.json()["status_url"]
        assert client.get(url).json()["status"] == "queued"
        cancelled = client.delete(url)
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
    finally:
        release.set()
    for blocker in blockers:
        assert jobs.wait(blocker.id, timeout=60).status == "done"
    job = _wait(client, url, timeout=120)
    assert job["status"] == "cancelled"  # the worker that picks it up later must not run it
    assert job["result"] is None


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"window": 100_000}, "window"),
        ({"window": 8, "stride": 9}, "stride"),
        ({"baseline": "noise"}, "baseline"),
    ],
)
def test_occlusion_validation(
    client: TestClient, sample_image_id: str, model_name: str, patch: dict[str, Any], field: str
) -> None:
    r = client.post(
        "/api/v1/explain/occlusion", json={"image_id": sample_image_id, "model": model_name, **patch}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_patch(client: TestClient, gray_image_id: str, model_name: str, registry: Any) -> None:
    h, w = registry.get(model_name).input_size
    r = client.post(
        "/api/v1/explain/occlusion/patch",
        json={
            "image_id": gray_image_id,
            "model": model_name,
            "y": h // 2,
            "x": w // 2,
            "window": h // 4,
            "k": 2,
            "score": "probability",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    y0, x0, y1, x1 = body["box"]
    assert y1 - y0 == h // 4 and x1 - x0 == h // 4 and y0 <= h // 2 < y1
    assert len(body["before"]) == len(body["after"]) == 2
    assert body["target"] == body["before"][0]["index"]
    assert body["score"] == "probability"
    assert body["target_before"] == pytest.approx(body["before"][0]["probability"], rel=1e-5)
    outside = client.post(
        "/api/v1/explain/occlusion/patch",
        json={"image_id": gray_image_id, "model": model_name, "y": h + 5, "x": 0},
    )
    assert outside.status_code == 422


def test_compare(client: TestClient, sample_image_id: str, model_name: str) -> None:
    r = client.post(
        "/api/v1/explain/compare",
        json={
            "image_id": sample_image_id,
            "model": model_name,
            "methods": ["gradcam", "eigencam"],
            "steps": 4,
            "protocol": "convscope",
            "images": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["method"] for m in body["methods"]] == ["gradcam", "eigencam"]
    assert body["random"]["method"] == "random"
    assert body["scale"]["min"] == 0.0 and body["scale"]["max"] == 1.0
    assert len(body["fractions"]) == 5
    for entry in [*body["methods"], body["random"]]:
        assert 0.0 <= entry["deletion_auc"] <= 1.0 and 0.0 <= entry["insertion_auc"] <= 1.0
        assert len(entry["deletion_curve"]) == 5
        assert (
            entry["overlay_url"].startswith("/pictures/")
            and client.get(entry["overlay_url"]).status_code == 200
        )
        assert "overlay_png" not in entry  # pictures by URL, never inlined
    bad = client.post(
        "/api/v1/explain/compare",
        json={"image_id": sample_image_id, "model": model_name, "methods": ["nope"]},
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "methods"


def test_no_hooks_or_gradients_linger(
    client: TestClient, sample_image_id: str, model_name: str, registry: Any
) -> None:
    for method in ("gradcam", "gradcam++", "eigencam"):
        r = client.post(
            "/api/v1/explain/cam", json={"image_id": sample_image_id, "model": model_name, "method": method}
        )
        assert r.status_code == 200
    module = registry.get(model_name).module
    for name, m in module.named_modules():
        assert not m._forward_hooks and not m._backward_hooks, name
    assert all(p.grad is None for p in module.parameters())
    assert not any(m.training for m in module.modules())


def test_compare_with_a_slow_method_is_a_job(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    layer = _small_layer(client, sample_image_id, model_name)
    r = client.post(
        "/api/v1/explain/compare",
        json={
            "image_id": sample_image_id,
            "model": model_name,
            "methods": ["gradcam", "scorecam"],
            "layer": layer,
            "steps": 4,
        },
    )
    assert r.status_code == 202, r.text
    job = _wait(client, r.json()["status_url"])
    assert job["status"] == "done", job
    result = job["result"]
    assert [m["method"] for m in result["methods"]] == ["gradcam", "scorecam"]
    assert result["random"]["method"] == "random" and result["layer"] == layer
    assert {"map:gradcam", "map:scorecam", "map:random", "shown"} <= set(job["artifacts"])
    arr = np.load(
        io.BytesIO(client.get(f"/api/v1/jobs/{job['id']}/artifacts/map:scorecam?format=npy").content)
    )
    assert arr.min() >= 0.0 and arr.max() <= 1.0 + 1e-6


def test_cam_on_a_vision_transformer_is_a_422(client: TestClient, sample_image_id: str) -> None:
    body = {"image_id": sample_image_id, "model": "vit_b_32", "weights": "untrained"}
    for url, extra in (("/api/v1/explain/cam", {"format": "json"}), ("/api/v1/explain/compare", {})):
        r = client.post(url, json={**body, **extra})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["field"] == "model" and "vision transformer" in err["message"]
    r = client.get("/api/v1/explain/layers", params={"image_id": sample_image_id, "model": "vit_b_32"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "model"


def test_unknown_job_names_the_field(client: TestClient) -> None:
    for method in ("GET", "DELETE"):
        r = client.request(method, "/api/v1/jobs/no-such-job")
        assert r.status_code == 404 and r.json()["error"]["field"] == "job_id"


# --- Bounded jobs (issue 9) -------------------------------------------------------------------------------------


def _jobs(client: TestClient) -> Any:
    return client.app.state.jobs  # type: ignore[attr-defined]


def test_occlusion_over_the_time_limit_is_a_422_with_the_estimate(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    _jobs(client).max_seconds = 1e-9  # every job is past this
    r = client.post(
        "/api/v1/explain/occlusion",
        json={"image_id": sample_image_id, "model": model_name, "window": 8, "stride": 4},
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "over_limit" and error["field"] == "stride"
    assert error["limit"] == "max_job_seconds" and error["maximum"] == 1e-9
    assert error["estimate"] >= 0 and error["forward_passes"] == error["windows"] + 2 and error["macs"] > 0
    assert "max_job_seconds" in error["message"] and "forward passes" in error["message"]
    assert _jobs(client).active() == []


def test_a_full_queue_is_a_503_with_retry_after(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    jobs = _jobs(client)
    jobs.max_per_client = 1
    release = threading.Event()

    def blocker(ctx: Any) -> dict[str, Any]:
        release.wait(60)
        return {}

    # TestClient's requests come from the host "testclient": one job of its own fills its share.
    held = jobs.submit("blocker", blocker, client="testclient")
    try:
        body = {"image_id": sample_image_id, "model": model_name, "window": 8, "stride": 4}
        r = client.post("/api/v1/explain/occlusion", json=body)
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        error = r.json()["error"]
        assert error["code"] == "busy" and error["limit"] == "max_queued_jobs_per_client"
        slow = client.post(
            "/api/v1/explain/cam",
            json={"image_id": sample_image_id, "model": model_name, "method": "scorecam"},
        )
        assert slow.status_code == 503 and "Retry-After" in slow.headers
        # Another client still has room; and so does everyone once the job ends.
        jobs.max_per_client, jobs.max_queued = 5, 1
        assert (
            client.post("/api/v1/explain/occlusion", json=body).json()["error"]["limit"] == "max_queued_jobs"
        )
    finally:
        release.set()
    assert jobs.wait(held.id, timeout=30).status == "done"
    ok = client.post("/api/v1/explain/occlusion", json=body)
    assert ok.status_code == 202, ok.text
    client.delete(ok.json()["status_url"])


def test_job_status_carries_its_estimate_and_limit(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    layer = _small_layer(client, sample_image_id, model_name)
    r = client.post(
        "/api/v1/explain/cam",
        json={"image_id": sample_image_id, "model": model_name, "method": "ablationcam", "layer": layer},
    )
    assert r.status_code == 202, r.text
    created = r.json()
    assert created["forward_passes"] > 1 and created["batch_size"] >= 1
    job = _wait(client, created["status_url"])
    assert job["status"] == "done", job
    assert job["estimate"]["forward_passes"] == created["forward_passes"]
    assert job["time_limit_seconds"] == created["time_limit_seconds"] == 600.0


def test_a_fast_compare_estimated_past_max_request_seconds_runs_as_a_job(
    client: TestClient, sample_image_id: str, model_name: str
) -> None:
    """Inline work has a bound too: past max_request_seconds the same comparison is a job (202, cancellable)."""
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    body = {"image_id": sample_image_id, "model": model_name, "methods": ["gradcam"], "steps": 100}
    assert client.post("/api/v1/explain/compare", json=body).status_code == 200
    jobs.request_seconds = 1e-9  # any estimate is past it
    r = client.post("/api/v1/explain/compare", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["forward_passes"] > 100  # 2 curves x 101 points per map, plus the CAM's passes
    job = _wait(client, r.json()["status_url"])
    assert job["status"] == "done", job
    assert [m["method"] for m in job["result"]["methods"]] == ["gradcam"]


# --- Idempotent starts (issue 9 follow-up): a resent request follows its running job ---------------------------


def _mine(jobs: Any) -> list[Any]:
    return [j for j in jobs.active() if j.client != "someone-else"]


def test_the_same_request_twice_is_one_job(
    client: TestClient, sample_image_id: str, model_name: str, hold_job_workers: Any
) -> None:
    jobs = client.app.state.jobs  # type: ignore[attr-defined]
    jobs.max_per_client = 2
    layer = _small_layer(client, sample_image_id, model_name)
    occlusion = {"image_id": sample_image_id, "model": model_name, "window": 8, "stride": 4}
    cam_body = {"image_id": sample_image_id, "model": model_name, "method": "scorecam", "layer": layer}
    compare = {**occlusion, "methods": ["ablationcam"], "layer": layer, "steps": 4}
    del compare["window"], compare["stride"]
    release, _ = hold_job_workers(jobs)
    try:
        for url, body, other in (
            ("/api/v1/explain/occlusion", occlusion, {"stride": 8}),
            ("/api/v1/explain/cam", cam_body, {"k": 3}),
            ("/api/v1/explain/compare", compare, {"steps": 5}),
        ):
            first = client.post(url, json=body)
            again = client.post(url, json=body)
            assert first.status_code == again.status_code == 202, again.text
            assert again.json()["job_id"] == first.json()["job_id"], url
            assert len(_mine(jobs)) == 1  # counted once against max_queued_jobs_per_client
            # Other parameters are other work: a second job (the share of two is now used up).
            changed = client.post(url, json={**body, **other})
            assert changed.status_code == 202 and changed.json()["job_id"] != first.json()["job_id"]
            assert len(_mine(jobs)) == 2
            # Full: new work is refused, with the kinds and ids of the jobs to wait for or cancel...
            busy = client.post(url, json={**body, "k": 4})
            assert busy.status_code == 503 and "Retry-After" in busy.headers
            error = busy.json()["error"]
            assert {j["id"] for j in error["jobs"]} == {first.json()["job_id"], changed.json()["job_id"]}
            # ...but the same request still gets its job.
            assert client.post(url, json=body).json()["job_id"] == first.json()["job_id"]
            # Once it ended (here: cancelled while queued), the same request starts a new job.
            assert client.delete(first.json()["status_url"]).json()["status"] == "cancelled"
            restarted = client.post(url, json=body)
            assert restarted.status_code == 202 and restarted.json()["job_id"] != first.json()["job_id"]
            for job in _mine(jobs):
                jobs.cancel(job.id)
    finally:
        release.set()


def test_cam_of_one_call_of_a_reused_layer(client: TestClient, sample_image_id: str) -> None:
    """ResNet-18's layer4.1.relu runs twice (after bn1, after the residual sum): both are CAM targets, the
    layer list says so, and the answer names the call used."""
    base = {"image_id": sample_image_id, "model": "resnet18", "weights": "untrained", "format": "json"}
    listed = client.get(
        "/api/v1/explain/layers",
        params={"image_id": sample_image_id, "model": "resnet18", "weights": "untrained"},
    ).json()["layers"]
    relu = next(info for info in listed if info["name"] == "layer4.1.relu")
    assert relu["calls"] == 2 and relu["label"] == "layer4.1.relu (called 2 times)"
    last = client.post(
        "/api/v1/explain/cam", json={**base, "layer": "layer4.1.relu", "normalise": "raw"}
    ).json()
    first = client.post(
        "/api/v1/explain/cam", json={**base, "layer": "layer4.1.relu", "normalise": "raw", "call": 0}
    ).json()
    assert (last["call"], last["calls"], first["call"], first["calls"]) == (1, 2, 0, 2)
    assert first["raw_max"] != last["raw_max"]
    r = client.post("/api/v1/explain/cam", json={**base, "layer": "layer4.1.relu", "call": 5})
    assert r.status_code == 422 and r.json()["error"]["field"] == "call"


def test_occlusion_without_a_model_runs_the_default_model(
    client: TestClient, sample_image_id: str, registry: Any
) -> None:
    """The model named once (app.deps.model_name) before the estimate: omitted or empty means the default."""
    default = registry.default_model()
    size = min(registry.get(None).input_size)
    for extra in ({}, {"model": ""}):
        r = client.post(
            "/api/v1/explain/occlusion",
            json={"image_id": sample_image_id, "window": size // 2, "stride": size // 2, **extra},
        )
        assert r.status_code == 202, r.text
        job = _wait(client, r.json()["status_url"])
        assert job["status"] == "done" and job["result"]["model"] == default, job


def test_cam_of_each_call_of_a_layer_called_twice(client: TestClient, sample_image_id: str) -> None:
    """EfficientNet-Lite0's `_swish` (stem and head): the layers list says so; call 0 and -1 are different maps."""
    layers = client.get(
        "/api/v1/explain/layers", params={"image_id": sample_image_id, "model": "efficientnet_lite0"}
    ).json()
    swish = next(entry for entry in layers["layers"] if entry["name"] == "_swish")
    assert swish["calls"] == 2 and swish["label"] == "_swish (called 2 times)"
    out = {}
    for call in (0, -1):
        r = client.post(
            "/api/v1/explain/cam",
            json={
                "image_id": sample_image_id,
                "model": "efficientnet_lite0",
                "layer": "_swish",
                "call": call,
                "format": "json",
                "resolution": "feature",
            },
        )
        assert r.status_code == 200, r.text
        out[call] = r.json()
        assert out[call]["calls"] == 2 and out[call]["call"] == call % 2
        assert out[call]["shape"] == out[call]["activation_shape"][1:]
    assert out[0]["activation_shape"] != out[-1]["activation_shape"]
    assert out[-1]["activation_shape"] == swish["shape"]  # the listed shape is the last call's
