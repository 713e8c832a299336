"""Issue 9, defect 1: a 91-byte 10000 x 1 PNG made one prediction take 7.5 GB (ResNet-18) or 14.9 GB
(Inception v3), because the shorter side was resized to 256 px (256 x 2,560,000) before the centre crop.

Replayed on a real server: the extreme images are uploaded (the upload-time aspect-ratio limit is lifted so
that they get stored, as images stored before that limit existed would be), then predicted through the JSON
API and the page. Each must succeed (or be refused cleanly) within the RSS bound.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from server_harness import RSS_BOUND_MIB, ServerProcess  # type: ignore[import-not-found]

MODELS = ("resnet18", "inception_v3")
SHAPES = ((1, 10000), (10000, 1), (1, 25000))  # (height, width)


def _png(height: int, width: int) -> bytes:
    rng = np.random.default_rng(height * 7 + width)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Stored images of any shape must be safe to predict on, whatever the upload limit says today.
    proc = ServerProcess(
        Path(tmp_path_factory.mktemp("preprocess-data")),
        Path(tmp_path_factory.mktemp("preprocess-torch")),
        env={"CONVSCOPE_MAX_ASPECT_RATIO": "1000000"},
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def image_ids(server: ServerProcess) -> dict[tuple[int, int], str]:
    ids = {}
    for height, width in ((64, 48), *SHAPES):
        response = server.client.post(
            "/api/v1/images",
            files={"file": (f"strip-{width}x{height}.png", _png(height, width), "image/png")},
        )
        assert response.status_code in (200, 201), response.text
        ids[(height, width)] = response.json()["id"]
    # Build both models once on an ordinary image, so that the measurements below are of preprocessing.
    for model in MODELS:
        warm = server.client.post(
            "/api/v1/predict", json={"image_id": ids[(64, 48)], "model": model, "weights": "untrained"}
        )
        assert warm.status_code == 200, warm.text
    return ids


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_extreme_strip_predicts_through_the_api_within_the_bound(
    server: ServerProcess, image_ids: dict[tuple[int, int], str], shape: tuple[int, int], model: str
) -> None:
    body = {"image_id": image_ids[shape], "model": model, "weights": "untrained", "k": 3}
    measured = server.measure(lambda c: c.post("/api/v1/predict", json=body))
    print(
        f"{model} {shape[1]}x{shape[0]} API: +{measured.peak_increase_mib:.0f} MiB, {measured.seconds:.2f} s"
    )
    assert measured.response.status_code == 200, measured.response.text[:500]
    result = measured.response.json()
    crop = 299 if model == "inception_v3" else 224
    assert result["preprocessing"]["input_shape"] == [1, 3, crop, crop]
    assert any("cropped first" in step for step in result["preprocessing"]["steps"])
    assert len(result["predictions"]) == 3
    assert measured.peak_increase_mib < RSS_BOUND_MIB, measured


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_extreme_strip_predicts_on_the_page_within_the_bound(
    server: ServerProcess, image_ids: dict[tuple[int, int], str], shape: tuple[int, int], model: str
) -> None:
    params = {"image_id": image_ids[shape], "model": model, "weights": "untrained"}
    measured = server.measure(lambda c: c.get("/predict", params=params))
    print(
        f"{model} {shape[1]}x{shape[0]} page: +{measured.peak_increase_mib:.0f} MiB, {measured.seconds:.2f} s"
    )
    assert measured.response.status_code == 200, measured.response.text[:500]
    assert "cropped first" in measured.response.text
    assert measured.peak_increase_mib < RSS_BOUND_MIB, measured
