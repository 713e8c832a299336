"""The convolution lab's JSON API: results, formats and 422s that name the field."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image

EDGE = [[10, 10, 10, 0, 0, 0]] * 6
EDGE_K = [[1, 0, -1]] * 3


def test_convolve_vertical_edge_with_steps(client: TestClient) -> None:
    r = client.post("/api/v1/convolve", json={"input": EDGE, "kernel": EDGE_K})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["output"] == [[0, 30, 30, 0]] * 4
    assert body["shape"] == [4, 4]
    assert len(body["steps"]) == 16
    assert body["steps"][1]["text"].endswith("= 30")
    assert body["formulas"][0]["result"] == 4
    assert body["flattened"][:4] == [0, 30, 30, 0]


@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate", "circular"])
def test_convolve_matches_torch_for_every_padding(client: TestClient, padding: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 9)).round(3)
    k = rng.normal(size=(3, 5)).round(3)
    body = {"input": x.tolist(), "kernel": k.tolist(), "padding": padding, "amount": 2, "stride": 2,
            "dilation": 2, "flip": True, "steps": False}  # fmt: skip
    r = client.post("/api/v1/convolve", json=body)
    assert r.status_code == 200, r.text
    mode = {"zeros": "constant"}.get(padding, padding)
    xt = F.pad(torch.tensor(x)[None, None], (2, 2, 2, 2), mode=mode)
    ref = F.conv2d(xt, torch.tensor(k[::-1, ::-1].copy())[None, None], stride=2, dilation=2)[0, 0].numpy()
    np.testing.assert_allclose(np.array(r.json()["output"]), ref, atol=1e-9)
    assert r.json()["steps"] is None


def test_convolve_relu_pool(client: TestClient) -> None:
    r = client.post(
        "/api/v1/convolve",
        json={"input": EDGE, "kernel": [[-1, 0, 1]] * 3, "relu": True, "pool": "max", "pool_size": 2},
    )
    body = r.json()
    assert body["output"][0] == [0, -30, -30, 0]
    assert body["relu"][0] == [0, 0, 0, 0]
    assert body["pooled"]["output"] == [[0, 0], [0, 0]]
    assert body["pooled"]["windows"][0]["rows"] == [0, 2]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": [[1, "x"], [1, 1]], "kernel": [[1]]}, "input.0.1"),
        ({"input": [[1, 1], [1, 1]], "kernel": [[1]], "stride": 0}, "stride"),
        # the schema refuses an over-long row by its path, before any number in it is read
        ({"input": [[1] * 17] * 3, "kernel": [[1]]}, "input.0"),
        ({"input": [[1] * 3] * 17, "kernel": [[1]]}, "input"),
        ({"input": [[1] * 8] * 8, "kernel": [[1] * 8] * 8}, "kernel"),
        ({"input": [[1, 1], [1, 1]], "kernel": [[1, 1, 1]] * 3}, "kernel"),
        ({"input": [[1, 1], [1]], "kernel": [[1]]}, "input.1"),
        ({"input": [[1, 1], [1, 1]], "kernel": [[1]], "padding": "mirror"}, "padding"),
        ({"input": [[1, 1], [1, 1]], "kernel": [[1]], "padding": "reflect", "amount": 3}, "amount"),
        ({"input": [[1e308, 1e308]], "kernel": [[10, 10]]}, "kernel"),
        # JSON true and "2" are not numbers (the filter endpoint already refused them)
        ({"input": [[1, True], [1, 1]], "kernel": [[1]]}, "input.0.1"),
        ({"input": [[1, 1], [1, 1]], "kernel": [["2"]]}, "kernel.0.0"),
    ],
)
def test_convolve_422_names_field(client: TestClient, body: dict[str, object], field: str) -> None:
    r = client.post("/api/v1/convolve", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_convolve_non_finite_is_422(client: TestClient) -> None:
    r = client.post(
        "/api/v1/convolve",
        content=b'{"input": [[1, NaN], [1, 1]], "kernel": [[1]]}',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422
    assert r.json()["error"]["field"].startswith("input")


def test_filter_json_png_npy(client: TestClient, sample_image_id: str) -> None:
    base = {
        "image_id": sample_image_id,
        "kernels": [{"name": "sobel_x"}, {"weights": [[0, 1, 0], [1, 1, 1], [0, 1, 0]]}],
    }
    r = client.post("/api/v1/filter", json=base)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [m["shape"] for m in body["maps"]] == [[64, 64], [64, 64]]
    assert body["maps"][0]["vmin"] == -body["maps"][0]["vmax"]
    assert body["maps"][0]["cmap"] == "rdbu"
    png = client.post("/api/v1/filter", json={**base, "format": "png"})
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size[0] > 64 * 2
    one = client.post("/api/v1/filter", json={**base, "format": "png", "index": 1})
    assert Image.open(io.BytesIO(one.content)).size == (64, 64)
    npy = client.post("/api/v1/filter", json={**base, "format": "npy"})
    arr = np.load(io.BytesIO(npy.content))
    assert arr.shape == (2, 64, 64)
    np.testing.assert_allclose(arr[0], np.array(body["maps"][0]["values"]), atol=1e-3)


def test_filter_modes_and_options(client: TestClient, sample_image_id: str) -> None:
    per = client.post(
        "/api/v1/filter",
        json={"image_id": sample_image_id, "kernels": [{"name": "laplacian"}], "mode": "per_channel"},
    ).json()
    assert [m["channel"] for m in per["maps"]] == ["R", "G", "B"]
    three = client.post(
        "/api/v1/filter",
        json={"image_id": sample_image_id, "mode": "3d",
              "kernels": [{"name": "laplacian", "channel_weights": [1, 0, -1]},
                          {"weights": [[[1]], [[0]], [[-1]]], "label": "R minus B"}],
              "relu": True, "pool": "max", "pool_size": 2, "max_side": 32},
    ).json()  # fmt: skip
    assert len(three["maps"]) == 2
    assert three["maps"][0]["shape"] == [16, 16]
    assert three["maps"][0]["min"] >= 0
    assert three["maps"][1]["label"] == "R minus B"
    assert any("downscaled" in n for n in three["notes"])


@pytest.mark.parametrize(
    ("kernel", "field"),
    [
        ({"weights": [[1, 1], [1, 1]]}, "kernels.0.weights"),
        # the schema's limits (and types) name the path in the request's own terms: no union tag (2d, 3d)
        ({"weights": [[1] * 13] * 13}, "kernels.0.weights"),
        ({"weights": [[1, "a", 1]] * 3}, "kernels.0.weights.0.1"),
        ({"weights": [[[1] * 3] * 3] * 4}, "kernels.0.weights"),
        ({"weights": [[[1] * 3] * 3, [[1, 1, 1], [1, 1, "x"], [1, 1, 1]]]}, "kernels.0.weights.1.1.2"),
        ({"name": "nope"}, "kernels.0.name"),
        ({}, "kernels.0.name"),
        # Both a library name and weights: ambiguous, so neither is silently dropped.
        ({"name": "sobel_x", "weights": [[1]]}, "kernels.0.name"),
    ],
)
def test_filter_422(client: TestClient, gray_image_id: str, kernel: dict[str, object], field: str) -> None:
    r = client.post("/api/v1/filter", json={"image_id": gray_image_id, "kernels": [kernel]})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_filter_kernel_larger_than_image_and_unknown_image(client: TestClient) -> None:
    tiny = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tiny, format="PNG")
    up = client.post("/api/v1/images", files={"file": ("tiny.png", tiny.getvalue(), "image/png")})
    assert up.status_code == 201, up.text
    r = client.post(
        "/api/v1/filter",
        json={"image_id": up.json()["id"], "kernels": [{"weights": [[1] * 7] * 7}], "padding": "none"},
    )
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "kernels.0"
    r = client.post("/api/v1/filter", json={"image_id": "0" * 64, "kernels": [{"name": "sobel_x"}]})
    assert r.status_code == 404


def test_cost_defaults_are_the_lecture(client: TestClient) -> None:
    body = client.get("/api/v1/cost", params={"fc_outputs": 65536}).json()
    assert body["convolution"]["multiplications"] == 589_824
    assert body["fully_connected"]["multiplications"] == 4_294_967_296
    assert body["percent_text"] == "0.01 %"
    ct = client.get("/api/v1/cost", params={"height": 512, "width": 512}).json()
    assert ct["input"]["values"] == 262_144
    r = client.get("/api/v1/cost", params={"kernel": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "kernel"
    r = client.get("/api/v1/cost", params={"height": 2, "width": 2, "kernel": 5, "padding": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "kernel"


def test_kernels_and_presets(client: TestClient) -> None:
    ks = client.get("/api/v1/kernels").json()
    assert {"sobel_x", "cross", "sobel_lecture"} <= {k["name"] for k in ks}
    ps = {p["name"]: p for p in client.get("/api/v1/presets").json()}
    assert ps["vertical_edge"]["output"] == [[0, 30, 30, 0]] * 4
    assert ps["small_nodule"]["slide_is_wrong"]
    assert ps["padded_nodule"]["output"][3][3] == 5


def test_random_garbage_never_500(client: TestClient, gray_image_id: str) -> None:
    rng = np.random.default_rng(99)
    junk: list[object] = [None, "x", "", [], [[]], [1, 2], [[1, "a"]], {"a": 1}, -1, 0, 10**9, [[1e308, -1e308]],
                          [[[1]]], True, 3.5]  # fmt: skip
    for _ in range(60):
        body: dict[str, object] = {"input": [[1, 2, 3]] * 3, "kernel": [[1]]}
        key = str(
            rng.choice(["input", "kernel", "padding", "amount", "stride", "dilation", "pool", "pool_size"])
        )
        body[key] = junk[int(rng.integers(len(junk)))]
        r = client.post("/api/v1/convolve", json=body)
        assert r.status_code < 500, (body, r.text)
        fbody: dict[str, object] = {"image_id": gray_image_id, "kernels": [{"name": "sobel_x"}]}
        fkey = str(rng.choice(["kernels", "mode", "padding", "stride", "pool_size", "max_side", "index"]))
        fbody[fkey] = junk[int(rng.integers(len(junk)))]
        if fkey == "kernels" and rng.random() < 0.5:
            fbody["kernels"] = [{"weights": junk[int(rng.integers(len(junk)))], "mode": "3d"}]
        r = client.post("/api/v1/filter", json=fbody)
        assert r.status_code < 500, (fbody, r.text)


# ------------------------------------------------------------------------ strict types and limits (issue 9)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"relu": 0}, "relu"), ({"stride": "2"}, "stride"), ({"flip": 1}, "flip"), ({"steps": "true"}, "steps"),
     ({"amount": True}, "amount"), ({"pool_size": 2.0}, "pool_size")],
)  # fmt: skip
def test_convolve_types_are_strict(client: TestClient, change: dict[str, object], field: str) -> None:
    r = client.post("/api/v1/convolve", json={"input": EDGE, "kernel": EDGE_K, **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


@pytest.mark.parametrize(
    ("change", "field"),
    [({"relu": 0}, "relu"), ({"stride": "2"}, "stride"), ({"flip": 1}, "flip"), ({"magnitude": "yes"}, "magnitude"),
     ({"max_side": "64"}, "max_side"), ({"index": True}, "index"), ({"image_id": 5}, "image_id")],
)  # fmt: skip
def test_filter_types_are_strict(
    client: TestClient, gray_image_id: str, change: dict[str, object], field: str
) -> None:
    body = {"image_id": gray_image_id, "kernels": [{"name": "sobel_x"}], **change}
    r = client.post("/api/v1/filter", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


@pytest.mark.parametrize("value", ["2.0", " 2", "+2", "1_0", "true", "2e0"])
def test_cost_query_integers_are_plain_digits(client: TestClient, value: str) -> None:
    r = client.get("/api/v1/cost", params={"stride": value})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "stride"
    assert client.get("/api/v1/cost", params={"stride": "2"}).status_code == 200


def test_matrix_limits_are_in_the_schema_and_refuse_before_reading_items(client: TestClient) -> None:
    from pydantic import ValidationError

    from app.schemas.convolution import ConvolveRequest

    # 5000 references to one 5000-number row: a 25 M-number body without 25 M objects in the test
    row = [0.5] * 5000
    with pytest.raises(ValidationError) as info:
        ConvolveRequest.model_validate({"input": [row] * 5000, "kernel": [[1]]})
    errors = info.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(("input",), "too_long")]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["ConvolveRequest"]["properties"]["input"]["maxItems"] == 16
    assert schema["ConvolveRequest"]["properties"]["input"]["items"]["maxItems"] == 16
    assert schema["ConvolveRequest"]["properties"]["kernel"]["maxItems"] == 7
    weights = schema["KernelIn"]["properties"]["weights"]
    assert "maxItems" in str(weights) and "number" in str(weights)  # typed, not list[Any]
    r = client.post("/api/v1/convolve", json={"input": [[1] * 3] * 100, "kernel": [[1]]})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "input"
    assert "16" in r.json()["error"]["message"]


def test_filter_json_is_the_same_numbers_as_before(client: TestClient, sample_image_id: str) -> None:
    """The JSON is now written row by row: same keys, same rounding as maps_json()."""
    from app.services import convolution as svc

    store = client.app.state.image_store  # type: ignore[attr-defined]
    params = svc.FilterParams(sample_image_id, [svc.KernelRequest("sobel_x"), svc.KernelRequest("laplacian")])
    outcome = svc.run_filter(store, params)
    import json

    assert json.loads(svc.maps_json_bytes(outcome)) == svc.maps_json(outcome)
    assert json.loads(svc.maps_json_bytes(outcome, 1)) == svc.maps_json(outcome, 1)
    assert svc.maps_npy(outcome) == b"".join(svc.maps_npy_chunks(outcome))
    arr = np.load(io.BytesIO(svc.maps_npy(outcome, 0)))
    np.testing.assert_array_equal(arr, outcome.maps[0].values)


def test_filter_limits_refuse_before_the_work(sample_image_id: str, client: TestClient) -> None:
    app_settings = client.app.state.settings  # type: ignore[attr-defined]
    app_settings.max_filter_output_values = 64 * 64 * 3
    app_settings.max_json_values = 64 * 64
    base = {"image_id": sample_image_id, "kernels": [{"name": "sobel_x"}, {"name": "sobel_y"}]}
    r = client.post("/api/v1/filter", json={**base, "mode": "per_channel", "format": "npy"})
    assert r.status_code == 422
    err = r.json()["error"]
    assert (err["code"], err["limit"], err["estimate"], err["maximum"]) == (
        "over_limit", "max_filter_output_values", 6 * 64 * 64, 3 * 64 * 64,
    )  # fmt: skip
    assert "max_filter_output_values" in err["message"]
    r = client.post("/api/v1/filter", json={**base, "format": "json"})
    err = r.json()["error"]
    assert (r.status_code, err["limit"], err["field"]) == (422, "max_json_values", "format")
    assert "format=npy" in err["message"] and "max_side" in err["message"]
    # one map with index, or pooling, fits the JSON limit
    assert client.post("/api/v1/filter", json={**base, "format": "json", "index": 1}).status_code == 200
    assert client.post("/api/v1/filter", json={**base, "pool": "max"}).status_code == 200
    assert client.post("/api/v1/filter", json={**base, "format": "npy"}).status_code == 200
    r = client.post("/api/v1/filter", json={**base, "format": "json", "index": 2})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "index")
    app_settings.max_filter_working_bytes = 1024
    r = client.post("/api/v1/filter", json={**base, "format": "npy"})
    assert r.json()["error"]["limit"] == "max_filter_working_bytes"


def test_large_images_are_downscaled_to_the_display_side(client: TestClient, sample_image_id: str) -> None:
    client.app.state.settings.filter_display_side = 40  # type: ignore[attr-defined]
    body = {"image_id": sample_image_id, "kernels": [{"name": "sobel_x"}]}
    out = client.post("/api/v1/filter", json=body).json()
    assert out["input_shape"] == [40, 40, 3] and out["original_shape"] == [64, 64, 3]
    assert any("downscaled from 64x64 to 40x40" in n and "max_side" in n for n in out["notes"])
    # max_side wins over the display side (and may go up to the image's own size)
    assert client.post("/api/v1/filter", json={**body, "max_side": 64}).json()["input_shape"] == [64, 64, 3]


def test_large_files_are_shrunk_while_decoding(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past FULL_DECODE_BYTES the image is never decoded whole as float32: PIL shrinks it first, and the
    result matches the store's decode resized to the same size."""
    from app.services import convolution as svc

    yy, xx = np.mgrid[0:120, 0:90]
    rgb = np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], axis=2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    image_id = client.post(
        "/api/v1/images", files={"file": ("r.png", buffer.getvalue(), "image/png")}
    ).json()["id"]
    store = client.app.state.image_store  # type: ignore[attr-defined]
    record = store.get(image_id)
    whole = svc.load_filter_image(store, record, (60, 45))
    monkeypatch.setattr(svc, "FULL_DECODE_BYTES", 1000)
    monkeypatch.setattr(store, "load", lambda *_: pytest.fail("decoded whole"))
    shrunk = svc.load_filter_image(store, record, (60, 45))
    assert shrunk.shape == whole.shape == (60, 45, 3)
    np.testing.assert_allclose(shrunk, whole, atol=0.02)


def _dicom_ct_id(client: TestClient) -> str:
    samples = client.get("/api/v1/samples").json()["images"]
    return next(s["id"] for s in samples if s["name"].startswith("CT slice (DICOM)"))


def _edges_and_spread(body: dict[str, Any]) -> tuple[float, float, float]:
    """(largest |value| on the map's outer ring, largest inside it, share of inside pixels past 10 % of vmax)."""
    m = body["maps"][0]
    v = np.abs(np.array(m["values"]))
    inner = v[2:-2, 2:-2]
    ring = np.concatenate([v[0], v[-1], v[:, 0], v[:, -1]])
    return float(ring.max()), float(inner.max()), float((inner > 0.1 * m["vmax"]).mean())


def test_laplacian_on_the_ct_is_not_swamped_by_a_padding_frame(client: TestClient) -> None:
    # Issue 10: CT_small's edges are bright, so zero padding draws a frame 2.6x the strongest response inside,
    # and min-max colours then leave 95 % of the slice at the middle colour.
    ct = _dicom_ct_id(client)
    request: dict[str, Any] = {"image_id": ct, "kernels": [{"name": "laplacian"}]}
    old = client.post("/api/v1/filter", json={**request, "padding": "zeros", "limits": "full"}).json()
    ring, inside, spread = _edges_and_spread(old)
    assert ring > 2 * inside and spread < 0.1
    assert old["maps"][0]["vmax"] == pytest.approx(ring, rel=1e-3)
    # the defaults: reflect padding (said in the answer) and robust limits (the 99th percentile of |value|)
    new = client.post("/api/v1/filter", json=request).json()
    assert (new["padding"], new["limits"], new["scale"]) == ("reflect", "robust", "each")
    assert any(n.startswith("Padding: reflect") for n in new["notes"])
    assert any("99th percentile" in n for n in new["notes"])
    ring, inside, spread = _edges_and_spread(new)
    assert ring < inside and spread > 0.5
    values = np.abs(np.array(new["maps"][0]["values"]))
    assert new["maps"][0]["vmax"] == pytest.approx(float(np.percentile(values, 99)), rel=1e-3)
    # robust limits alone already help; full limits with reflect padding are the old min-max
    full = client.post("/api/v1/filter", json={**request, "limits": "full"}).json()
    assert full["maps"][0]["vmax"] == pytest.approx(float(values.max()), rel=1e-3)


def test_shared_scale_puts_every_map_on_one_scale(client: TestClient, sample_image_id: str) -> None:
    request = {"image_id": sample_image_id, "kernels": [{"name": "sobel_x"}, {"name": "gaussian_3"}]}
    each = client.post("/api/v1/filter", json=request).json()["maps"]
    shared = client.post("/api/v1/filter", json={**request, "scale": "shared"}).json()["maps"]
    assert each[0]["vmax"] != each[1]["vmax"]
    assert shared[0]["vmax"] == shared[1]["vmax"] == max(m["vmax"] for m in each)
    assert shared[0]["vmin"] == shared[1]["vmin"] == min(m["vmin"] for m in each)


def test_cost_query_model_takes_empty_as_default_and_says_the_ratio(client: TestClient) -> None:
    body = client.get("/api/v1/cost", params={"fc_outputs": "", "padding": ""}).json()
    assert body["fully_connected"]["multiplications"] == 4_294_967_296
    assert body["convolution"]["multiplications"] == 589_824
    assert body["fc_to_conv_multiplications"] == pytest.approx(4_294_967_296 / 589_824)
    r = client.get("/api/v1/cost", params={"stride": 0})
    assert r.status_code == 422 and r.json()["error"]["field"] == "stride"
