"""Issue 9, defect 2 and the schema part of 9: the filter lab's output and the playground's matrices are bounded.

A 6000x6000 image (a compressible PNG of about 100 KB) filtered with one kernel, or with eight kernels per
channel, as JSON, a PNG grid or .npy, must give a clean refusal or a bounded answer: the server's peak RSS
may rise by less than RSS_BOUND_MIB. Before the fix one kernel as JSON took +3.1 GB and 15 s and returned
144 MB (the issue's figures; as .npy here, +3046 MiB and 9 s). After: downscaled to filter_display_side
(1024) and answered, +212 MiB (the PNG decode, shrunk before the float conversion) and 2.4 s on a first
request; eight kernels per channel are refused from the plan in milliseconds.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from server_harness import RSS_BOUND_MIB, ServerProcess, assert_clean_refusal  # type: ignore[import-not-found]

SIDE = 6000
ONE_KERNEL: dict[str, Any] = {"kernels": [{"name": "sobel_x"}], "mode": "grey"}
EIGHT_PER_CHANNEL: dict[str, Any] = {
    "kernels": [
        {"name": n}
        for n in (
            "sobel_x",
            "sobel_y",
            "laplacian",
            "box_blur",
            "sharpen",
            "identity",
            "prewitt_x",
            "prewitt_y",
        )
    ],
    "mode": "per_channel",
}


def _big_png() -> bytes:
    """A 6000x6000 RGB PNG that compresses well (smooth ramps and a few blocks): about 100 KB on the wire."""
    ramp = np.linspace(0, 255, SIDE, dtype=np.float32)
    pixels = np.empty((SIDE, SIDE, 3), dtype=np.uint8)
    pixels[..., 0] = ramp[None, :].astype(np.uint8)
    pixels[..., 1] = ramp[:, None].astype(np.uint8)
    pixels[..., 2] = 128
    pixels[1000:2000, 3000:4500] = (250, 20, 20)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big_image_id(server: ServerProcess) -> str:
    data = _big_png()
    response = server.client.post("/api/v1/images", files={"file": ("big.png", data, "image/png")})
    assert response.status_code in (200, 201), response.text[:300]
    image_id: str = response.json()["id"]
    return image_id


def test_kernel_names_exist(server: ServerProcess) -> None:
    names = {k["name"] for k in server.client.get("/api/v1/kernels").json()}
    assert {k["name"] for k in EIGHT_PER_CHANNEL["kernels"]} <= names


@pytest.mark.parametrize("fmt", ["json", "png", "npy"])
def test_one_kernel_on_a_6000px_image_is_downsampled_and_bounded(
    server: ServerProcess, big_image_id: str, fmt: str
) -> None:
    body = {"image_id": big_image_id, **ONE_KERNEL, "format": fmt}
    measured = server.measure(lambda c: c.post("/api/v1/filter", json=body))
    print(f"\n1 kernel {fmt}: {measured}")
    response = measured.response
    assert response.status_code == 200, response.text[:500]
    assert measured.peak_increase_mib < RSS_BOUND_MIB, measured
    if fmt == "json":
        out = response.json()
        assert out["original_shape"][:2] == [SIDE, SIDE]
        assert max(out["input_shape"][:2]) == 1024
        assert out["maps"][0]["shape"] == [1024, 1024]
        assert any("downscaled" in n and "1024" in n for n in out["notes"]), out["notes"]
    elif fmt == "png":
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (1024, 1024)
    else:
        assert response.headers["content-type"] == "application/octet-stream"
        assert np.load(io.BytesIO(response.content), allow_pickle=False).shape == (1, 1024, 1024)


@pytest.mark.parametrize("fmt", ["json", "png", "npy"])
def test_eight_kernels_per_channel_full_size_is_refused_before_the_work(
    server: ServerProcess, big_image_id: str, fmt: str
) -> None:
    # max_side 4000: 8 kernels x 3 channels x 16 M pixels = 384 M values (1.5 GB of float32).
    body = {"image_id": big_image_id, **EIGHT_PER_CHANNEL, "format": fmt, "max_side": 4000}
    measured = server.measure(lambda c: c.post("/api/v1/filter", json=body))
    print(f"\n8 kernels per channel {fmt}: {measured}")
    error = assert_clean_refusal(measured)
    assert error["code"] == "over_limit"
    assert error["limit"] == "max_filter_output_values"
    assert error["estimate"] == 24 * 4000 * 4000
    assert "max_filter_output_values" in error["message"]


@pytest.mark.parametrize("fmt", ["json", "png", "npy"])
def test_eight_kernels_per_channel_at_display_size_is_bounded(
    server: ServerProcess, big_image_id: str, fmt: str
) -> None:
    body = {"image_id": big_image_id, **EIGHT_PER_CHANNEL, "format": fmt}
    measured = server.measure(lambda c: c.post("/api/v1/filter", json=body))
    print(f"\n8 kernels per channel, display size, {fmt}: {measured}")
    if measured.response.status_code == 200:
        assert measured.peak_increase_mib < RSS_BOUND_MIB, measured
    else:
        error = assert_clean_refusal(measured)
        assert error["code"] == "over_limit"
        assert error["limit"] in error["message"]


def test_json_too_large_points_to_npy_or_max_side(server: ServerProcess, big_image_id: str) -> None:
    body = {"image_id": big_image_id, **ONE_KERNEL, "format": "json", "max_side": 3000}
    measured = server.measure(lambda c: c.post("/api/v1/filter", json=body))
    error = assert_clean_refusal(measured)
    assert error["limit"] == "max_json_values"
    assert "format=npy" in error["message"] and "max_side" in error["message"]


def test_the_filter_page_downsamples_a_large_image(server: ServerProcess, big_image_id: str) -> None:
    measured = server.measure(lambda c: c.get("/filters", params={"image_id": big_image_id}))
    print(f"\nGET /filters: {measured}")
    assert measured.response.status_code == 200
    assert "downscaled" in measured.response.text
    assert measured.peak_increase_mib < RSS_BOUND_MIB, measured
    form = {
        "image_id": big_image_id,
        "kernels.1.name": "sobel_x",  # the page's (and the API's) field names
        "kernels.2.name": "sobel_y",
        "mode": "per_channel",
        "max_side": "1024",
    }
    measured = server.measure(lambda c: c.post("/filters/run", data=form, headers={"HX-Request": "true"}))
    print(f"POST /filters/run: {measured}")
    assert measured.response.status_code == 200, measured.response.text[:300]
    assert measured.peak_increase_mib < RSS_BOUND_MIB, measured


# ------------------------------------------------------------------------------------ /convolve bodies


@pytest.fixture(scope="module")
def big_body_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose body-size limit is out of the way, so only the schema's matrix limits act."""
    root: Path = tmp_path_factory.mktemp("filter-limits")
    proc = ServerProcess(root / "data", root / "torch", env={"CONVSCOPE_MAX_BODY_BYTES": str(256 * 2**20)})
    yield proc
    proc.stop()


def test_a_5000x5000_convolve_body_is_refused_naming_the_field(big_body_server: ServerProcess) -> None:
    # 5000 rows of 5000 zeros (50 MB of JSON), built as bytes so the test itself stays small.
    row = b"[" + b",".join([b"0"] * 5000) + b"]"
    body = b'{"kernel": [[1]], "input": [' + b",".join([row] * 5000) + b"]}"
    measured = big_body_server.measure(
        lambda c: c.post("/api/v1/convolve", content=body, headers={"content-type": "application/json"})
    )
    print(f"\n5000x5000 convolve: {measured.seconds:.2f} s, +{measured.peak_increase_mib:.0f} MiB")
    response = measured.response
    assert response.status_code == 422, response.text[:300]
    error = response.json()["error"]
    assert error["field"] == "input"
    assert "16" in error["message"]
