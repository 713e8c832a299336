"""The /network, /receptive-fields and /milestones pages and their HTMX partials."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient

MODEL = "resnet18"
HX = {"HX-Request": "true"}


def test_network_page(client: TestClient, sample_image_id: str) -> None:
    r = client.get("/network", params={"model": MODEL, "weights": "untrained", "image_id": sample_image_id})
    assert r.status_code == 200, r.text
    html = r.text
    assert "<details" in html and "layer4" in html
    # Names and shapes are cut short in the narrow tree; the full ones are in the tooltips.
    assert 'title="output shape 64×112×112"' in html and 'title="layer1.0.conv1"' in html
    assert "Untrained: random weights" in html  # banner over the filters
    assert "UNTRAINED" in html  # the lead's badge
    assert html.count('class="fmap"') == 32
    assert "Early" in html and "Late" in html


def test_features_partial_by_layer_and_depth(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    r = client.get("/network/features", params={**params, "layer": "layer3", "sort": "max"}, headers=HX)
    assert r.status_code == 200
    assert 'data-layer="layer3"' in r.text and "<html" not in r.text
    assert r.text.count('class="fmap"') == 32
    r = client.get("/network/features", params={**params, "depth": 0}, headers=HX)
    assert 'data-layer="conv1"' in r.text
    r = client.get("/network/features", params={**params, "layer": "nope"}, headers=HX)
    assert r.status_code == 404 and "nope" in r.text
    # An unknown colour map is the user's mistake, named next to its field, not a 500.
    for url, extra in (("/network/features", {}), ("/network/channel", {"layer": "conv1", "channel": 0})):
        r = client.get(url, params={**params, **extra, "cmap": "jet"}, headers=HX)
        assert r.status_code == 422 and "<code>cmap</code>" in r.text


def test_channel_filters_zoom(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    r = client.get(
        "/network/channel", params={**params, "layer": "layer1", "channel": 4, "alpha": 0.3}, headers=HX
    )
    assert r.status_code == 200 and "channel 4" in r.text and "colorbar" in r.text
    r = client.get(
        "/network/channel", params={**params, "layer": "layer1", "channel": 4, "alpha": 3}, headers=HX
    )
    assert r.status_code == 422
    r = client.get(
        "/network/filters", params={"model": MODEL, "weights": "untrained", "layer": "layer1.0.conv2"}
    )
    assert r.status_code == 200 and "per input channel" in r.text
    assert len(re.findall(r'class="ftile"', r.text)) == 64
    r = client.get(
        "/network/filter", params={"model": MODEL, "weights": "untrained", "layer": "conv1", "index": 2}
    )
    assert r.status_code == 200 and "kernel-values" in r.text and "(red)" in r.text


def test_receptive_fields_page_and_probe(client: TestClient, sample_image_id: str) -> None:
    params = {"model": MODEL, "weights": "untrained", "image_id": sample_image_id}
    r = client.get("/receptive-fields", params=params)
    assert r.status_code == 200
    assert 'id="rf-clickable"' in r.text and "<svg" in r.text and "rf-table" in r.text
    assert "VGG point" in r.text
    r = client.get(
        "/receptive-fields/probe", params={**params, "layer": "layer1", "y": 5, "x": 6}, headers=HX
    )
    assert r.status_code == 200 and 'class="rf-box"' in r.text and "Effective" in r.text
    r = client.get("/receptive-fields/map", params={**params, "layer": "layer2"}, headers=HX)
    assert r.status_code == 200 and 'data-layer="layer2"' in r.text


def test_milestones(client: TestClient, sample_image_id: str) -> None:
    r = client.get("/milestones")
    assert r.status_code == 200
    for name in (
        "AlexNet",
        "VGG-16",
        "GoogLeNet",
        "ResNet-50",
        "SqueezeNet",
        "MobileNet",
        "DenseNet",
        "EfficientNet",
    ):
        assert name in r.text
    assert "Transfer learning" in r.text
    r = client.get(
        "/milestones",
        params={
            "model_a": "squeezenet1_1",
            "model_b": MODEL,
            "weights": "untrained",
            "image_id": sample_image_id,
        },
        headers=HX,
    )
    assert r.status_code == 200, r.text
    assert r.text.count('class="compare-side"') == 2 and "Top 5" in r.text


def test_early_late_with_a_single_convolution(client: TestClient, sample_image_id: str) -> None:
    arch = {
        "name": "one conv",
        "in_channels": 1,
        "input_size": [32, 32],
        "categories": ["a", "b"],
        "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
            {"type": "relu"},
            {"type": "global_avgpool"},
            {"type": "flatten"},
            {"type": "linear", "out_features": 2},
        ],
    }
    files = {"architecture": ("a.json", json.dumps(arch), "application/json")}
    name = client.post("/api/v1/models", files=files).json()["name"]
    r = client.get("/network", params={"model": name, "image_id": sample_image_id})
    assert r.status_code == 200, r.text
    assert "Early" in r.text and "Late:" not in r.text and "only one convolution" in r.text
