"""API twins of the inside-the-network pages, on ResNet-18 with random weights (no downloads)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.core.inspection.features import capture

MODEL = "resnet18"


def _no_hooks(client: TestClient) -> bool:
    registry = client.app.state.registry  # type: ignore[attr-defined]
    loaded = registry.get(MODEL, "untrained")
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in loaded.module.modules())


def test_summary_tree_and_totals(client: TestClient) -> None:
    r = client.get(f"/api/v1/models/{MODEL}/summary", params={"weights": "untrained"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["untrained"] is True
    totals = body["totals"]
    loaded = client.app.state.registry.get(MODEL, "untrained")  # type: ignore[attr-defined]
    assert totals["params"] == sum(p.numel() for p in loaded.module.parameters())
    assert totals["input_shape"] == [3, *loaded.input_size]
    names = [c["name"] for c in body["tree"]["children"]]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    layer1 = next(c for c in body["tree"]["children"] if c["name"] == "layer1")
    assert layer1["macs"] == sum(c["macs"] for c in layer1["children"])
    assert _no_hooks(client)


def test_layers_have_rf(client: TestClient, sample_image_id: str) -> None:
    r = client.get(
        f"/api/v1/models/{MODEL}/layers", params={"weights": "untrained", "image_id": sample_image_id}
    )
    assert r.status_code == 200, r.text
    rows = {row["name"]: row for row in r.json()["layers"]}
    assert rows["conv1"]["rf"] == 7 and rows["conv1"]["jump"] == 2
    assert rows["maxpool"]["rf"] == 11 and rows["maxpool"]["jump"] == 4
    assert rows["layer4"]["jump"] == 32
    assert rows["fc"]["grid"] is False
    assert r.json()["conv_layers"][0] == "conv1"


def test_unknown_model_and_layer_are_404_with_choices(client: TestClient, sample_image_id: str) -> None:
    r = client.get("/api/v1/models/no-such-net/summary")
    assert r.status_code == 404
    assert "resnet18" in r.json()["error"]["choices"]
    r = client.post(
        "/api/v1/features",
        json={"image_id": sample_image_id, "model": MODEL, "weights": "untrained", "layer": "layer9"},
    )
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["field"] == "layer" and "layer1" in err["choices"]
    r = client.get(f"/api/v1/models/{MODEL}/filters", params={"layer": "fc", "weights": "untrained"})
    assert r.status_code == 404 and "conv1" in r.json()["error"]["choices"]
    r = client.post(
        "/api/v1/receptive-field",
        json={"model": MODEL, "weights": "untrained", "layer": "nope", "y": 0, "x": 0},
    )
    assert r.status_code == 404 and r.json()["error"]["field"] == "layer"
    assert _no_hooks(client)


def test_features_json_png_npy(client: TestClient, sample_image_id: str) -> None:
    base = {"image_id": sample_image_id, "model": MODEL, "weights": "untrained", "layer": "layer2"}
    r = client.post("/api/v1/features", json={**base, "format": "json", "sort": "max", "per_page": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    maxima = [c["max"] for c in body["channels"]]
    assert maxima == sorted(maxima, reverse=True) and len(maxima) == 5
    assert body["shape"] == [128, 28, 28] and body["total_channels"] == 128

    r = client.post("/api/v1/features", json={**base, "format": "npy"})
    assert r.headers["content-type"] == "application/octet-stream"
    raw = np.load(io.BytesIO(r.content), allow_pickle=False)
    # The cached activation equals a fresh capture of the same prepared input.
    service = client.app.state.network_service  # type: ignore[attr-defined]
    loaded = client.app.state.registry.get(MODEL, "untrained")  # type: ignore[attr-defined]
    x = service.net_input(loaded, sample_image_id).tensor
    expected = capture(loaded.module, x, ["layer2"]).activations["layer2"].numpy()
    np.testing.assert_allclose(raw, expected, atol=1e-6)
    assert [c["max"] for c in body["channels"]] == pytest.approx(
        np.sort(expected.reshape(128, -1).max(1))[::-1][:5]
    )

    r = client.post("/api/v1/features", json={**base, "format": "png", "per_page": 8})
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size[0] > 0
    r = client.post("/api/v1/features", json={**base, "format": "png", "channel": 3, "overlay": True})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    r = client.post("/api/v1/features", json={**base, "format": "npy", "channel": 3})
    np.testing.assert_allclose(np.load(io.BytesIO(r.content)), expected[3], atol=1e-6)
    r = client.post("/api/v1/features", json={**base, "format": "png", "channel": 999})
    assert r.status_code == 422 and r.json()["error"]["field"] == "channel"
    assert _no_hooks(client)


def test_one_forward_serves_all_layers(client: TestClient, sample_image_id: str) -> None:
    base = {"image_id": sample_image_id, "model": MODEL, "weights": "untrained", "format": "json"}
    client.post("/api/v1/features", json={**base, "layer": "layer1"})
    service = client.app.state.network_service  # type: ignore[attr-defined]
    before = service.forward_passes
    for layer in ("layer2", "layer3.0.conv1", "maxpool"):
        assert client.post("/api/v1/features", json={**base, "layer": layer}).status_code == 200
    assert service.forward_passes == before


def test_filters(client: TestClient) -> None:
    r = client.get(f"/api/v1/models/{MODEL}/filters", params={"weights": "untrained", "format": "npy"})
    weight = np.load(io.BytesIO(r.content))
    loaded = client.app.state.registry.get(MODEL, "untrained")  # type: ignore[attr-defined]
    np.testing.assert_array_equal(weight, loaded.module.conv1.weight.detach().numpy())
    r = client.get(
        f"/api/v1/models/{MODEL}/filters", params={"weights": "untrained", "sort": "norm", "per_page": 10}
    )
    body = r.json()
    assert body["first_conv"] is True and body["weight_shape"] == [64, 3, 7, 7]
    norms = [i["norm"] for i in body["items"]]
    assert norms == sorted(norms, reverse=True)
    r = client.get(
        f"/api/v1/models/{MODEL}/filters",
        params={"weights": "untrained", "layer": "layer1.0.conv1", "filter": 5, "format": "json"},
    )
    assert r.json()["first_conv"] is False and r.json()["filter"] == 5
    r = client.get(f"/api/v1/models/{MODEL}/filters", params={"weights": "untrained", "format": "png"})
    assert r.headers["content-type"] == "image/png"


def test_receptive_field_probe(client: TestClient, sample_image_id: str) -> None:
    body = {
        "model": MODEL,
        "weights": "untrained",
        "image_id": sample_image_id,
        "layer": "layer2",
        "y": 10,
        "x": 12,
    }
    r = client.post("/api/v1/receptive-field", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    rf = out["receptive_field"]
    # Box centre = start + index * jump, width = RF size.
    assert out["box"]["right"] - out["box"]["left"] + 1 == rf["rf"]
    assert (out["box"]["left"] + out["box"]["right"]) / 2 == rf["start_w"] + 12 * rf["jump"]
    extent = out["erf_extent"]
    assert extent is not None
    assert out["box_clipped"]["left"] <= extent["left"] and extent["right"] <= out["box_clipped"]["right"]
    r = client.post("/api/v1/receptive-field", json={**body, "format": "npy"})
    erf = np.load(io.BytesIO(r.content))
    assert erf.shape == (224, 224) and erf.max() == pytest.approx(out["erf_max"])
    r = client.post("/api/v1/receptive-field", json={**body, "x": 99})
    assert r.status_code == 422 and r.json()["error"]["field"] == "x"
    loaded = client.app.state.registry.get(MODEL, "untrained")  # type: ignore[attr-defined]
    assert not any(p.requires_grad for p in loaded.module.parameters())  # the registry's flags are back
    assert not loaded.module.training
    assert _no_hooks(client)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    ("limits", "field"), [({"vmin": "NaN"}, "vmin"), ({"vmin": 0, "vmax": "Infinity"}, "vmax")]
)
def test_channel_range_must_be_finite(
    client: TestClient, sample_image_id: str, limits: dict[str, object], field: str
) -> None:
    body = {"image_id": sample_image_id, "model": MODEL, "weights": "untrained", "layer": "conv1"}
    r = client.post("/api/v1/features", json={**body, "channel": 0, "format": "png", **limits})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_features_of_one_call_of_a_reused_module(client: TestClient, sample_image_id: str) -> None:
    """ResNet-18's layer1.0.relu runs twice. Without `call` the last run is shown (as before); call 0 is the run
    after bn1, checked against a hand-computed relu(bn1(conv1(.))); a call that does not exist is a 422 on `call`."""
    base = {"image_id": sample_image_id, "model": MODEL, "weights": "untrained", "layer": "layer1.0.relu"}
    last = client.post("/api/v1/features", json={**base, "format": "json"}).json()
    assert (last["call"], last["calls"]) == (1, 2)
    first = client.post("/api/v1/features", json={**base, "format": "json", "call": 0}).json()
    assert (first["call"], first["calls"]) == (0, 2)
    raw = np.load(
        io.BytesIO(client.post("/api/v1/features", json={**base, "format": "npy", "call": 0}).content)
    )
    service = client.app.state.network_service  # type: ignore[attr-defined]
    loaded = client.app.state.registry.get(MODEL, "untrained")  # type: ignore[attr-defined]
    x = service.net_input(loaded, sample_image_id).tensor
    m = loaded.module
    with torch.no_grad():
        stem = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        expected = torch.relu(m.layer1[0].bn1(m.layer1[0].conv1(stem)))[0].numpy()
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    default = np.load(io.BytesIO(client.post("/api/v1/features", json={**base, "format": "npy"}).content))
    assert not np.allclose(raw, default)
    r = client.post("/api/v1/features", json={**base, "format": "json", "call": 2})
    assert r.status_code == 422 and r.json()["error"]["field"] == "call"
    assert "runs 2 times" in r.json()["error"]["message"]


def test_other_ops_are_apart_from_macs(client: TestClient) -> None:
    body = client.get(f"/api/v1/models/{MODEL}/summary", params={"weights": "untrained"}).json()
    totals = body["totals"]
    # torchvision's figure for ResNet-18: 1.814 GMACs (conv + linear); BN, ReLU and pooling are other operations.
    assert totals["macs"] / 1e9 == pytest.approx(1.814, abs=0.0005)
    bn1 = next(c for c in body["tree"]["children"] if c["name"] == "bn1")
    assert bn1["macs"] == 0 and bn1["other_ops"] == 64 * 112 * 112
    assert totals["other_ops"] == body["tree"]["other_ops"] > 0
    rows = client.get(f"/api/v1/models/{MODEL}/layers", params={"weights": "untrained"}).json()["layers"]
    relu = next(r for r in rows if r["name"] == "layer1.0.relu")
    assert relu["calls"] == 2 and relu["macs"] == 0 and relu["other_ops"] == 2 * 64 * 56 * 56


def test_receptive_field_defaults_to_the_centre_unit_and_says_when_it_outgrows_the_image(
    client: TestClient, sample_image_id: str
) -> None:
    base = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    r = client.post("/api/v1/receptive-field", json={**base, "layer": "layer4"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["y"], out["x"]) == (3, 3)  # layer4 is 7x7 on a 224-px input
    assert out["receptive_field"]["rf"] > 224 and out["larger_than_image"] is True
    r = client.post("/api/v1/receptive-field", json={**base, "layer": "conv1", "y": 0, "x": 0})
    assert r.json()["larger_than_image"] is False
    # No layer: the same layer the page opens on.
    r = client.post("/api/v1/receptive-field", json=base)
    page = client.get("/receptive-fields", params=base).text
    assert f'data-layer="{r.json()["layer"]}"' in page
    # Strict JSON: "3" is not 3; the field is named with the dotted spelling.
    r = client.post("/api/v1/receptive-field", json={**base, "layer": "layer4", "y": "3"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "y"


def test_features_by_depth_and_the_same_names_as_the_page(client: TestClient, sample_image_id: str) -> None:
    base = {"image_id": sample_image_id, "model": MODEL, "weights": "untrained"}
    r = client.post("/api/v1/features", json={**base, "depth": 1})
    assert r.status_code == 200 and r.json()["layer"] == "layer1.0.conv1"
    r = client.post("/api/v1/features", json={**base, "depth": 999})
    assert r.status_code == 422 and r.json()["error"]["field"] == "depth"
    # The page takes the same fields under the same names (its URL is the request model as a query).
    page = client.get(
        "/network", params={**base, "depth": 1}, headers={"HX-Request": "true", "HX-Target": "network-view"}
    )
    assert 'data-layer="layer1.0.conv1"' in page.text
    r = client.post("/api/v1/features", json={**base, "channels": [0, "1"]})
    assert r.status_code == 422 and r.json()["error"]["field"] == "channels.1"


def test_filters_query_model(client: TestClient) -> None:
    r = client.get(f"/api/v1/models/{MODEL}/filters", params={"weights": "untrained", "sort": "loudest"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "sort"
    r = client.get(f"/api/v1/models/{MODEL}/filters", params={"weights": "untrained", "per_page": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "per_page"
    r = client.get(f"/api/v1/models/{MODEL}/filters", params={"weights": "untrained", "per_page": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
