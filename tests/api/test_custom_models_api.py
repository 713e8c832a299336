"""Uploading a model: JSON architecture + safetensors weights; it then works like any zoo model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from app.core.models.custom_models import build_module, parse_architecture

TINY = {
    "name": "Tiny <b>edge</b> net",
    "in_channels": 1,
    "input_size": [32, 32],
    "categories": ["dark", "bright"],
    "mean": [0.5],
    "std": [0.25],
    "layers": [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "conv2d", "out_channels": 8, "kernel_size": 3},
        {"type": "relu"},
        {"type": "global_avgpool"},
        {"type": "flatten"},
        {"type": "linear", "out_features": 2},
    ],
}


def _weights() -> tuple[bytes, dict[str, torch.Tensor]]:
    module = build_module(parse_architecture(TINY))
    torch.manual_seed(7)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in module.state_dict().items()}
    return save(state), state


def test_upload_architecture_and_weights_then_predict(client: TestClient, gray_image_id: str) -> None:
    blob, state = _weights()
    response = client.post(
        "/api/v1/models",
        files={
            "architecture": ("net.json", json.dumps(TINY), "application/json"),
            "weights": ("w.safetensors", blob),
        },
    )
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["name"].startswith("custom-") and info["source"] == "custom"
    assert info["pretrained_available"] is True and info["in_channels"] == 1
    assert info["params"] == sum(v.numel() for v in state.values() if v.is_floating_point())

    loaded = client.app.state.registry.get(info["name"])  # type: ignore[attr-defined]
    for key, value in state.items():
        assert torch.equal(loaded.module.state_dict()[key], value)
    pred = client.post(
        "/api/v1/predict", json={"image_id": gray_image_id, "model": info["name"], "k": 2}
    ).json()
    assert {p["label"] for p in pred["predictions"]} == {"dark", "bright"}
    assert pred["weights"] == "pretrained"

    # The same upload again is the same id (content-addressed), and the page escapes the user's name.
    again = client.post(
        "/api/v1/models",
        files={
            "architecture": ("net.json", json.dumps(TINY), "application/json"),
            "weights": ("w.safetensors", blob),
        },
    )
    assert again.json()["name"] == info["name"]
    html = client.get("/models").text
    assert "Tiny &lt;b&gt;edge&lt;/b&gt; net" in html and "Tiny <b>edge</b> net" not in html


def test_architecture_without_weights_is_untrained(client: TestClient, gray_image_id: str) -> None:
    info = client.post("/api/v1/models", files={"architecture": ("net.json", json.dumps(TINY))}).json()
    pred = client.post("/api/v1/predict", json={"image_id": gray_image_id, "model": info["name"]}).json()
    assert pred["weights"] == "untrained"


def test_bad_architectures_name_the_field(client: TestClient) -> None:
    bad = dict(TINY, layers=[{"type": "conv2d", "out_channels": 4, "kernel_size": 13}])
    response = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(bad))})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "architecture.layers.0.kernel_size"

    response = client.post("/api/v1/models", files={"architecture": ("a.json", "{not json")})
    assert response.status_code == 422 and response.json()["error"]["field"] == "architecture"

    # json.loads accepts NaN and Infinity; a NaN mean made every probability NaN (null in the JSON)
    for key, value in (("mean", "NaN"), ("std", "Infinity")):
        text = json.dumps(TINY).replace(f'"{key}": [{TINY[key][0]}]', f'"{key}": [{value}]')
        assert value in text
        response = client.post("/api/v1/models", files={"architecture": ("a.json", text)})
        assert response.status_code == 422 and response.json()["error"]["field"] == f"architecture.{key}"

    wrong_out = dict(TINY, layers=[*TINY["layers"][:-1], {"type": "linear", "out_features": 3}])  # type: ignore[misc]
    response = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(wrong_out))})
    assert response.status_code == 422 and "expected (1, 2)" in response.json()["error"]["message"]


def test_weights_that_do_not_fit_or_are_not_safetensors(client: TestClient) -> None:
    files = {"architecture": ("a.json", json.dumps(TINY)), "weights": ("w.safetensors", b"\x80\x04pickle")}
    response = client.post("/api/v1/models", files=files)
    assert response.status_code == 422 and response.json()["error"]["field"] == "weights"
    other = save({"conv9.weight": torch.zeros(1)})
    files = {"architecture": ("a.json", json.dumps(TINY)), "weights": ("w.safetensors", other)}
    response = client.post("/api/v1/models", files=files)
    assert response.status_code == 422 and "missing" in response.json()["error"]["message"]
    _, state = _weights()
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    files = {"architecture": ("a.json", json.dumps(TINY)), "weights": ("w.safetensors", save(state))}
    response = client.post("/api/v1/models", files=files)
    assert response.status_code == 422 and response.json()["error"]["field"] == "weights"
    assert key in response.json()["error"]["message"] and "NaN" in response.json()["error"]["message"]


def test_weights_that_overflow_are_refused_at_upload(client: TestClient) -> None:
    # Weights of 3e38 overflow in the first layer: refused at upload with the layer named, instead of being
    # accepted and then failing (500) in /explain/cam and the feature-map views.
    _, state = _weights()
    huge = {k: torch.full_like(v, 3e38) if v.is_floating_point() else v for k, v in state.items()}
    files = {"architecture": ("a.json", json.dumps(TINY)), "weights": ("w.safetensors", save(huge))}
    response = client.post("/api/v1/models", files=files)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "weights" and "not finite" in error["message"] and "conv2d1" in error["message"]


def _store_unchecked(client: TestClient, state: dict[str, torch.Tensor]) -> str:
    """A model stored without the upload probe (as before it existed), to reach the views' own guards."""
    from app.core.models.custom_models import estimate

    store = client.app.state.registry.custom  # type: ignore[attr-defined]
    arch = parse_architecture(TINY)
    cost = estimate(arch)
    info = {
        "created": "",
        "params": cost.params,
        "macs": cost.macs,
        "activation_bytes": cost.activation_bytes,
    }
    model_id = "custom-0123456789abcdef"
    store._write(store._root / model_id, arch, save(state), {**info, "depth": cost.depth})
    return model_id


def test_model_whose_outputs_overflow_gives_a_clear_error(client: TestClient, gray_image_id: str) -> None:
    _, state = _weights()
    huge = {k: torch.full_like(v, 3e38) if v.is_floating_point() else v for k, v in state.items()}
    name = _store_unchecked(client, huge)
    response = client.post("/api/v1/predict", json={"image_id": gray_image_id, "model": name})
    assert response.status_code == 422, response.text
    assert (
        response.json()["error"]["field"] == "model" and "not finite" in response.json()["error"]["message"]
    )


def test_torchvision_architecture_with_new_head(client: TestClient) -> None:
    arch = {
        "name": "ResNet-18 for 3 classes",
        "torchvision": "resnet18",
        "input_size": [64, 64],
        "categories": ["a", "b", "c"],
    }
    info = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(arch))}).json()
    assert info["num_classes"] == 3 and info["params"] == 11_178_051
    bad = dict(arch, torchvision="resnet19")
    response = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(bad))})
    assert response.status_code == 422 and response.json()["error"]["field"] == "architecture.torchvision"


def test_uploaded_models_survive_a_restart(client: TestClient, settings: object) -> None:
    from app.services.models import ModelRegistry

    info = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(TINY))}).json()
    fresh = ModelRegistry(settings)  # type: ignore[arg-type]
    assert info["name"] in fresh.names()


def test_upload_form_on_the_models_page(client: TestClient) -> None:
    page = client.get("/models").text
    assert 'hx-post="/models/upload"' in page and "Example architecture" in page
    response = client.post(
        "/models/upload", files={"architecture": ("a.json", json.dumps(TINY))}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200 and "UNTRAINED" in response.text and "custom-" in response.text
    bad = client.post(
        "/models/upload", files={"architecture": ("a.json", "[]")}, headers={"HX-Request": "true"}
    )
    assert bad.status_code == 422 and 'class="error-box"' in bad.text


def test_a_stored_model_that_no_longer_validates_is_left_out(client: TestClient, gray_image_id: str) -> None:
    # An upload accepted before a stricter check (here: a NaN mean) took /models and every picker down with a 500.
    name = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(TINY))}).json()["name"]
    stored = client.app.state.registry.custom._root / name / "architecture.json"  # type: ignore[attr-defined]
    stored.write_text(json.dumps({**json.loads(stored.read_text()), "mean": [float("nan")]}))
    client.app.state.registry.custom._records.clear()  # type: ignore[attr-defined]  # as after a restart
    listing = client.get("/api/v1/models")
    assert listing.status_code == 200 and name not in {m["name"] for m in listing.json()}
    assert client.get("/models").status_code == 200
    response = client.post("/api/v1/predict", json={"image_id": gray_image_id, "model": name})
    assert response.status_code == 409 and response.json()["error"]["field"] == "model"
    assert "upload it again" in response.json()["error"]["message"]


def test_feature_maps_of_a_model_that_overflows_are_a_clear_422(
    client: TestClient, gray_image_id: str
) -> None:
    # "Out of range float values are not JSON compliant" was a 500 on /features for such a model.
    _, state = _weights()
    huge = {k: torch.full_like(v, 3e38) if v.is_floating_point() else v for k, v in state.items()}
    name = _store_unchecked(client, huge)
    response = client.post(
        "/api/v1/features", json={"image_id": gray_image_id, "model": name, "format": "json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "model" and "not finite" in error["message"]


def _upload(client: TestClient, text: str | bytes, **files: tuple[str, bytes]) -> dict:  # type: ignore[type-arg]
    response = client.post("/api/v1/models", files={"architecture": ("a.json", text), **files})
    assert response.status_code in (413, 422), (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["error"]  # type: ignore[no-any-return]


def test_hostile_architectures_are_refused_with_the_field(client: TestClient) -> None:
    error = _upload(client, "[" * 130_000 + "]" * 130_000)
    assert error["field"] == "architecture" and "nested" in error["message"]
    error = _upload(
        client,
        json.dumps(
            dict(TINY, categories=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["a"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]])
        ),
    )
    assert error["field"] == "architecture" and "nested" in error["message"]
    error = _upload(client, json.dumps(TINY).replace('"out_channels": 4', '"out_channels": ' + "9" * 5000))
    assert error["field"] == "architecture" and "not valid JSON" in error["message"]
    error = _upload(client, b"\xff\xfe{" + "ä".encode("latin-1"))
    assert error["field"] == "architecture"
    for reserved in ("training", "forward", "modules"):
        layers = [dict(TINY["layers"][0], name=reserved), *TINY["layers"][1:]]  # type: ignore[index, misc]
        error = _upload(client, json.dumps(dict(TINY, layers=layers)))
        assert error["field"] == "architecture.layers.0.name" and reserved in error["message"]
    for channels in (2, 4):
        error = _upload(client, json.dumps(dict(TINY, in_channels=channels, mean=[0.5] * 4, std=[0.25] * 4)))
        assert error["field"] == "architecture.in_channels" and "1 (greyscale) or 3 (RGB)" in error["message"]
    conv_after_flatten = [{"type": "flatten"}, {"type": "conv2d", "out_channels": 2}]
    error = _upload(client, json.dumps(dict(TINY, layers=conv_after_flatten)))
    assert error["field"] == "architecture.layers.1.type" and "feature map" in error["message"]
    too_small = [{"type": "maxpool2d", "kernel_size": 8}] * 3
    error = _upload(client, json.dumps(dict(TINY, layers=too_small)))
    assert error["field"] == "architecture.layers.1.kernel_size" and "4x4" in error["message"]
    error = _upload(client, json.dumps(dict(TINY, layers=[{"type": ["conv2d"]}])))
    assert error["field"] == "architecture.layers.0.type"


def test_torchvision_architecture_that_cannot_run_at_its_input_size(client: TestClient) -> None:
    arch = {
        "name": "tiny inception",
        "torchvision": "inception_v3",
        "input_size": [8, 8],
        "categories": ["a", "b"],
    }
    error = _upload(client, json.dumps(arch))
    assert error["field"] == "architecture.input_size" and "[8, 8]" in error["message"]


def test_models_past_the_cost_limits_are_refused_before_building(client: TestClient) -> None:
    # The 557-byte JSON: five 1024->1024 11x11 convolutions (+2.5 GB and 11 s before its 422).
    huge = [{"type": "conv2d", "out_channels": 1024, "kernel_size": 11}] * 5
    layers = [*huge, {"type": "global_avgpool"}, {"type": "flatten"}, {"type": "linear", "out_features": 2}]
    error = _upload(
        client, json.dumps(dict(TINY, in_channels=3, mean=[0.5] * 3, std=[0.25] * 3, layers=layers))
    )
    assert error["code"] == "over_limit" and error["limit"] == "max_model_parameters"
    assert error["maximum"] == 60_000_000 and error["estimate"] > 500_000_000
    # Two 1024-channel layers at 256x256: 9.4 M parameters, but ~620 G multiply-accumulates per image.
    wide = [{"type": "conv2d", "out_channels": 1024}, {"type": "conv2d", "out_channels": 1024}]
    layers = [*wide, {"type": "global_avgpool"}, {"type": "flatten"}, {"type": "linear", "out_features": 2}]
    error = _upload(client, json.dumps(dict(TINY, input_size=[256, 256], layers=layers)))
    assert error["limit"] == "max_model_macs" and "max_model_macs" in error["message"]


def test_a_too_long_file_name_is_named(client: TestClient) -> None:
    response = client.post("/api/v1/models", files={"architecture": ("a" * 5000 + ".json", json.dumps(TINY))})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "file name" in error["message"] and "255" in error["message"]
    response = client.post("/api/v1/images", files={"file": ("b" * 300 + ".png", b"123", "image/png")})
    assert response.status_code == 422 and "304 characters" in response.json()["error"]["message"]


def test_the_estimate_is_in_the_answer_and_on_the_page(client: TestClient) -> None:
    info = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(TINY))}).json()
    module = build_module(parse_architecture(TINY))
    assert info["params"] == sum(p.numel() for p in module.parameters())
    assert info["gflops"] > 0
    page = client.get("/models").text
    # 110,608 MACs (convs 36,864 + 73,728, linear 16; the pools are other operations, not MACs); float32 input
    # and outputs: 4 * (1024 + 4096 * 2 + 1024 + 2048 * 2 + 8 * 2 + 2) B = 56.1 KiB
    assert "per image: 110.6 k multiply-accumulates,\n      56.1 KiB of activations" in page
    partial = client.post(
        "/models/upload", files={"architecture": ("a.json", json.dumps(TINY))}, headers={"HX-Request": "true"}
    ).text
    assert "Per image: 110.6 k multiply-accumulates, 56.1 KiB of activations" in partial


def test_a_failed_save_is_a_507_and_the_server_keeps_serving(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.services.custom_models as service

    def read_only(*args: object, **kwargs: object) -> str:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(service.tempfile, "mkdtemp", read_only)
    response = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(TINY))})
    assert response.status_code == 507, response.text
    assert response.json()["error"]["code"] == "storage_failed"
    assert "Read-only" in response.json()["error"]["message"]
    monkeypatch.undo()
    assert client.get("/api/v1/models").status_code == 200
    assert (
        client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(TINY))}).status_code == 201
    )


def test_an_upload_is_built_and_run_once_and_reading_it_runs_nothing(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: four dry runs per upload (two in put(), two in _read()).
    import app.services.custom_models as service

    calls = {"build": 0, "probe": 0}
    real_build, real_probe = service.build_module, service.first_non_finite_layer

    def counting_build(arch: object) -> torch.nn.Module:
        calls["build"] += 1
        return real_build(arch)  # type: ignore[arg-type]

    def counting_probe(module: torch.nn.Module, inputs: torch.Tensor) -> str | None:
        calls["probe"] += 1
        return real_probe(module, inputs)

    monkeypatch.setattr(service, "build_module", counting_build)
    monkeypatch.setattr(service, "first_non_finite_layer", counting_probe)
    name = client.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(TINY))}).json()["name"]
    assert calls == {"build": 1, "probe": 1}
    store = client.app.state.registry.custom  # type: ignore[attr-defined]
    store._records.clear()  # as after a restart
    record = store.get(name)
    assert calls == {"build": 1, "probe": 1}
    assert record.params == sum(p.numel() for p in real_build(record.architecture).parameters())
    assert record.macs > 0 and record.activation_bytes > 0


def test_parts_past_their_limits_are_413_naming_the_field(tmp_path: Path) -> None:
    from app.config import Settings
    from app.main import create_app

    settings = Settings(data_dir=tmp_path / "small", max_model_bytes=10_000, max_model_parameters=1_000)
    with TestClient(create_app(settings)) as small:
        files = {"architecture": ("a.json", json.dumps(TINY)), "weights": ("w.safetensors", b"\0" * 20_000)}
        response = small.post("/api/v1/models", files=files)
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert (
            error["field"] == "weights"
            and error["max_bytes"] == 10_000
            and "max_model_bytes" in error["message"]
        )
        big_json = json.dumps({**TINY, "padding": "x" * 300_000})
        response = small.post("/api/v1/models", files={"architecture": ("a.json", big_json)})
        assert response.status_code == 413 and response.json()["error"]["field"] == "architecture"
        # The limits come from Settings: a lower max_model_parameters refuses TINY (170 parameters is fine).
        wide = dict(TINY, layers=[{"type": "conv2d", "out_channels": 64}, *TINY["layers"][1:]])  # type: ignore[misc]
        response = small.post("/api/v1/models", files={"architecture": ("a.json", json.dumps(wide))})
        error = response.json()["error"]
        assert response.status_code == 422 and error["limit"] == "max_model_parameters"
        assert error["maximum"] == 1_000 and "max_model_parameters" in error["message"]
        page = small.get("/models").text
        assert "1.0 k parameters" in page


def test_large_but_finite_activations_give_finite_feature_statistics(
    client: TestClient, gray_image_id: str
) -> None:
    """Weights of 1e18 pass the upload probe (every activation is finite) but a float32 sum of squares of such
    activations overflows: the feature views' statistics must stay finite numbers (JSON), not a 500 (QA)."""
    _, state = _weights()
    big = {k: torch.full_like(v, 1e18) if k.startswith("conv2d1.") else v for k, v in state.items()}
    files = {"architecture": ("a.json", json.dumps(TINY)), "weights": ("w.safetensors", save(big))}
    uploaded = client.post("/api/v1/models", files=files)
    assert uploaded.status_code == 201, uploaded.text
    model = uploaded.json()["name"]
    for layer in ("conv2d1", "relu1"):
        r = client.post(
            "/api/v1/features",
            json={"image_id": gray_image_id, "model": model, "layer": layer, "format": "json"},
        )
        assert r.status_code in (200, 422), r.text
        if r.status_code == 200:
            assert "Infinity" not in r.text and "NaN" not in r.text
