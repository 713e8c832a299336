"""Issue 9: what a large (36 MP) but small-on-the-wire image costs the server, upload and every later request.

A 6000x6000 RGB PNG (~120 KB) and a 6000x6000 16-bit greyscale PNG (~85 KB) are uploaded to a server of their
own, then predicted on, explained, shown, summarised and downloaded. Each request must give a clean answer (or a
clean refusal naming its limit) with a peak RSS increase below RSS_BOUND_MIB.

Before (a full-resolution float32 copy made at upload and by every load): RGB upload +984 MiB / 4.4 s, 16-bit
upload +1538 MiB / 4.5 s, predict +1379 MiB, grad-cam +1373 MiB, display.png +1339 MiB, pixels json +824 MiB,
pixels npy +1228 MiB (432 MB answer). After (strip-wise decode into a working copy of at most
working_image_side px, statistics on the way, .npy bounded by max_npy_values): upload +185 / +79 MiB, every
other request +160 MiB or less; the full .npy is a 422 naming max_npy_values and max_side.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from server_harness import RSS_BOUND_MIB, Measured, ServerProcess  # type: ignore[import-not-found]

SIDE = 6000


def _rgb_png() -> bytes:
    """A 6000x6000 RGB PNG that compresses well (ramps and a few blocks): about 100 KB."""
    ramp = np.linspace(0, 255, SIDE, dtype=np.float32)
    pixels = np.empty((SIDE, SIDE, 3), dtype=np.uint8)
    pixels[..., 0] = ramp[None, :].astype(np.uint8)
    pixels[..., 1] = ramp[:, None].astype(np.uint8)
    pixels[..., 2] = 128
    pixels[1000:2000, 3000:4500] = (250, 20, 20)
    pixels[4000:5000, 500:1500] = (20, 20, 250)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


def _grey16_png() -> bytes:
    """A 6000x6000 16-bit greyscale PNG (a ramp plus a bright square)."""
    ramp = np.linspace(1000, 60000, SIDE).astype(np.uint16)
    pixels = np.broadcast_to(ramp[None, :], (SIDE, SIDE)).copy()
    pixels[2000:3000, 2000:3000] = 65000
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: these uploads must not inflate the shared limits server."""
    proc = ServerProcess(tmp_path_factory.mktemp("large-data"), tmp_path_factory.mktemp("large-torch"))
    yield proc
    proc.stop()


def _bounded(measured: Measured, what: str) -> None:
    print(f"{what}: +{measured.peak_increase_mib:.0f} MiB, {measured.seconds:.2f} s")
    assert measured.peak_increase_mib < RSS_BOUND_MIB, (what, measured)


@pytest.fixture(scope="module")
def uploaded(big_server: ServerProcess) -> dict[str, str]:
    ids: dict[str, str] = {}
    for key, data in (("rgb", _rgb_png()), ("grey16", _grey16_png())):
        measured = big_server.measure(
            lambda c, data=data, key=key: c.post(
                "/api/v1/images", files={"file": (f"{key}.png", data, "image/png")}
            )
        )
        assert measured.response.status_code == 201, measured.response.text[:300]
        body = measured.response.json()
        assert (body["width"], body["height"]) == (SIDE, SIDE)
        _bounded(measured, f"upload {key} ({len(data):,} bytes)")
        ids[key] = body["id"]
    return ids


@pytest.mark.parametrize("key", ["rgb", "grey16"])
@pytest.mark.parametrize("model", ["nodule-cnn", "resnet18"])
def test_predict_is_bounded(
    big_server: ServerProcess, uploaded: dict[str, str], key: str, model: str
) -> None:
    body = {"image_id": uploaded[key], "model": model, "weights": "untrained", "k": 3}
    measured = big_server.measure(lambda c: c.post("/api/v1/predict", json=body))
    assert measured.response.status_code == 200, measured.response.text[:300]
    assert 1 <= len(measured.response.json()["predictions"]) <= 3  # nodule-cnn has two classes
    _bounded(measured, f"predict {model} on {key}")


@pytest.mark.parametrize("key", ["rgb", "grey16"])
def test_grad_cam_is_bounded(big_server: ServerProcess, uploaded: dict[str, str], key: str) -> None:
    body = {"image_id": uploaded[key], "model": "nodule-cnn", "weights": "untrained", "method": "gradcam"}
    measured = big_server.measure(
        lambda c: c.post("/api/v1/explain/cam", json=body, params={"format": "png"})
    )
    assert measured.response.status_code == 200, measured.response.text[:300]
    assert measured.response.headers["content-type"] == "image/png"
    _bounded(measured, f"grad-cam on {key}")


@pytest.mark.parametrize("key", ["rgb", "grey16"])
@pytest.mark.parametrize("path", ["/images/{id}/display.png", "/images/{id}/thumb.png"])
def test_pictures_are_bounded(
    big_server: ServerProcess, uploaded: dict[str, str], key: str, path: str
) -> None:
    measured = big_server.measure(lambda c: c.get(path.format(id=uploaded[key])))
    assert measured.response.status_code == 200, measured.response.text[:300]
    picture = Image.open(io.BytesIO(measured.response.content))
    assert max(picture.size) <= 2048
    _bounded(measured, f"{path.split('/')[-1]} of {key}")


@pytest.mark.parametrize("key", ["rgb", "grey16"])
def test_pixel_stats_are_bounded(big_server: ServerProcess, uploaded: dict[str, str], key: str) -> None:
    url = f"/api/v1/images/{uploaded[key]}/pixels"
    measured = big_server.measure(lambda c: c.get(url, params={"format": "json"}))
    assert measured.response.status_code == 200, measured.response.text[:300]
    stats = measured.response.json()
    assert stats["shape"][:2] == [SIDE, SIDE]  # statistics are of the full-resolution pixels
    assert 0.0 <= stats["min"] < stats["mean"] < stats["max"] <= 1.0
    _bounded(measured, f"pixels json of {key}")


@pytest.mark.parametrize("key", ["rgb", "grey16"])
def test_pixels_npy_is_bounded(big_server: ServerProcess, uploaded: dict[str, str], key: str) -> None:
    url = f"/api/v1/images/{uploaded[key]}/pixels"
    measured = big_server.measure(lambda c: c.get(url, params={"format": "npy"}))
    _bounded(measured, f"pixels npy of {key}")
    response = measured.response
    assert response.status_code == 422, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] == "over_limit" and "max_npy_values" in error["message"]
    assert "max_side" in error["message"]
    # The way out the message names works, bounded too.
    measured = big_server.measure(lambda c: c.get(url, params={"format": "npy", "max_side": 1024}))
    assert measured.response.status_code == 200, measured.response.text[:300]
    arr = np.load(io.BytesIO(measured.response.content), allow_pickle=False)
    assert max(arr.shape[:2]) <= 1024 and arr.dtype == np.float32
    _bounded(measured, f"pixels npy max_side=1024 of {key}")


def test_png_pixels_go_through_the_display_cache(
    big_server: ServerProcess, uploaded: dict[str, str], tmp_path: Path
) -> None:
    url = f"/api/v1/images/{uploaded['rgb']}/pixels"
    measured = big_server.measure(lambda c: c.get(url, params={"format": "png"}))
    assert measured.response.status_code == 200
    _bounded(measured, "pixels png of rgb")
