"""The image API: upload, listing, metadata, pixels in three formats, and clear errors for bad input."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from app.config import Settings
from app.main import create_app

UPLOAD_FIELDS = {
    "id",
    "name",
    "kind",
    "width",
    "height",
    "mode",
    "channels",
    "conversion",
    "created",
    "size_bytes",
    "source",
}


def png_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def small_client(tmp_path: Path):
    """An app with a tiny upload limit, so the limit can be hit cheaply."""
    settings = Settings(data_dir=tmp_path / "small", max_upload_bytes=50_000, max_image_pixels=200_000)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def assert_error(response, status: int, code: str, field: str | None = "file") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["field"] == field
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    return error


def test_upload_png(client):
    arr = np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    data = png_bytes(arr)
    response = client.post("/api/v1/images", files={"file": ("my photo.png", data, "image/png")})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) >= UPLOAD_FIELDS
    assert body["id"] == hashlib.sha256(data).hexdigest()
    assert (body["width"], body["height"], body["mode"], body["channels"]) == (40, 30, "RGB", 3)
    assert body["name"] == "my photo.png" and body["kind"] == "png" and body["source"] == "upload"
    assert body["size_bytes"] == len(data)
    assert body["conversion"] == "8-bit RGB PNG scaled from [0, 255] to [0, 1]."
    # The same bytes again: the same id, still one upload.
    again = client.post("/api/v1/images", files={"file": ("copy.png", data, "image/png")})
    assert again.status_code == 201 and again.json()["id"] == body["id"]
    uploads = client.get("/api/v1/images", params={"source": "upload"}).json()
    assert uploads["count"] == 1 and uploads["images"][0]["id"] == body["id"]


def test_upload_dicom(client):
    data = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
    # A different name than the sample's, but the same bytes: it is the sample.
    body = client.post("/api/v1/images", files={"file": ("scan.dcm", data, "application/dicom")}).json()
    assert body["kind"] == "dicom" and body["mode"] == "L" and body["channels"] == 1
    assert body["metadata"]["modality"] == "CT"
    assert "HU" in body["conversion"]


def test_get_metadata_and_list(client, sample_image_id, gray_image_id):
    body = client.get(f"/api/v1/images/{gray_image_id}").json()
    assert body["id"] == gray_image_id and body["mode"] == "L" and body["channels"] == 1
    listed = client.get("/api/v1/images").json()
    ids = [img["id"] for img in listed["images"]]
    assert sample_image_id in ids and gray_image_id in ids
    assert listed["count"] == len(ids)
    # Samples come first, then uploads.
    sources = [img["source"] for img in listed["images"]]
    assert sources == sorted(sources, key=lambda s: s != "sample")


def test_samples_endpoint(client):
    body = client.get("/api/v1/samples").json()
    names = {img["name"] for img in body["images"]}
    assert {
        "CT slice (DICOM)",
        "MR slice (DICOM)",
        "Chelsea the cat",
        "Astronaut",
        "Cup of coffee",
        "Rocket launch",
        "Retina fundus photo",
        "Shepp–Logan phantom",
    } <= names
    assert all(img["source"] == "sample" and img["description"] for img in body["images"])
    assert body["count"] == len(body["images"])
    filtered = client.get("/api/v1/images", params={"source": "sample"}).json()
    assert [i["id"] for i in filtered["images"]] == [i["id"] for i in body["images"]]


def test_pixels_png_npy_json(client, sample_image_id, image_store):
    expected = image_store.load(sample_image_id)
    png = client.get(f"/api/v1/images/{sample_image_id}/pixels", params={"format": "png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    decoded = np.asarray(Image.open(io.BytesIO(png.content)))
    np.testing.assert_array_equal(decoded, np.round(expected * 255).astype(np.uint8))

    npy = client.get(f"/api/v1/images/{sample_image_id}/pixels", params={"format": "npy"})
    assert npy.headers["content-type"] == "application/octet-stream"
    arr = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert arr.dtype == np.float32 and arr.shape == (64, 64, 3)
    np.testing.assert_array_equal(arr, expected)

    stats = client.get(f"/api/v1/images/{sample_image_id}/pixels", params={"format": "json"}).json()
    assert stats["shape"] == [64, 64, 3]
    assert stats["min"] == pytest.approx(float(expected.min()))
    assert stats["max"] == pytest.approx(float(expected.max()))
    assert stats["mean"] == pytest.approx(float(expected.mean()), rel=1e-5)
    assert "pixels" not in stats


def test_pixels_bad_format_names_the_field(client, sample_image_id):
    response = client.get(f"/api/v1/images/{sample_image_id}/pixels", params={"format": "gif"})
    assert_error(response, 422, "invalid_input", field="format")


def test_unknown_image_is_404(client):
    for path in ("/api/v1/images/" + "0" * 64, "/api/v1/images/nonsense/pixels"):
        assert_error(client.get(path), 404, "not_found", field="image_id")


def test_empty_file(client):
    error = assert_error(
        client.post("/api/v1/images", files={"file": ("empty.png", b"", "image/png")}), 422, "invalid_input"
    )
    assert "empty" in error["message"]


def test_form_sent_before_a_file_was_chosen(client):
    # A browser posts an empty part with an empty filename when no file was picked.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n\r\n--b--\r\n"
    )
    response = client.post(
        "/api/v1/images", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    error = assert_error(response, 422, "invalid_input")
    assert error["field"] == "file"
    assert "No file was chosen" in error["message"]


def test_text_file(client):
    response = client.post(
        "/api/v1/images", files={"file": ("notes.txt", b"hello world\n" * 20, "text/plain")}
    )
    error = assert_error(response, 415, "unsupported_media")
    assert "is not an image ConvScope can read; supported:" in error["message"]


def test_truncated_png(client):
    data = png_bytes(np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    response = client.post("/api/v1/images", files={"file": ("cut.png", data[: len(data) // 2], "image/png")})
    assert "truncated" in assert_error(response, 422, "invalid_input")["message"]


def test_multi_frame_dicom(client):
    data = Path(get_testdata_file("SC_rgb_rle_2frame.dcm", download=False)).read_bytes()
    response = client.post("/api/v1/images", files={"file": ("volume.dcm", data, "application/dicom")})
    assert "volumes are not supported yet" in assert_error(response, 415, "unsupported_media")["message"]


def test_dicom_without_pixels(client):
    data = Path(get_testdata_file("rtplan.dcm", download=False)).read_bytes()
    response = client.post("/api/v1/images", files={"file": ("plan.dcm", data, "application/dicom")})
    assert "without pixel data" in assert_error(response, 422, "invalid_input")["message"]


def test_missing_file_field(client):
    response = client.post("/api/v1/images", files={"picture": ("a.png", b"123", "image/png")})
    assert_error(response, 422, "invalid_input")
    not_multipart = client.post("/api/v1/images", content=b"raw", headers={"content-type": "image/png"})
    assert "multipart/form-data" in assert_error(not_multipart, 422, "invalid_input")["message"]


def test_too_many_bytes(small_client):
    data = png_bytes(np.random.default_rng(6).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    assert len(data) > 50_000
    response = small_client.post("/api/v1/images", files={"file": ("big.png", data, "image/png")})
    assert assert_error(response, 413, "too_large")["max_bytes"] == 50_000


def test_content_length_is_not_trusted(small_client):
    # A body far larger than declared: the server counts what actually arrives.
    boundary = "xyz"
    payload = b"0" * 200_000
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks():
        for start in range(0, len(body), 16_384):
            yield body[start : start + 16_384]

    response = small_client.post(
        "/api/v1/images",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 413, "too_large")


def test_too_many_pixels(small_client):
    data = png_bytes(np.zeros((1000, 1000), dtype=np.uint8))
    assert len(data) < 50_000
    response = small_client.post("/api/v1/images", files={"file": ("huge.png", data, "image/png")})
    assert "200,000 pixels" in assert_error(response, 413, "too_large")["message"]


def test_server_keeps_serving_after_bad_input(client):
    bad_inputs = [b"", b"GIF89a-not-really", b"\x89PNG\r\n\x1a\n" + b"\0" * 30, b"\0" * 200 + b"DICM"]
    for data in bad_inputs:
        response = client.post("/api/v1/images", files={"file": ("bad.png", data, "image/png")})
        assert 400 <= response.status_code < 500, (data[:20], response.status_code, response.text)
        assert "error" in response.json()
    good = client.post(
        "/api/v1/images", files={"file": ("ok.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png")}
    )
    assert good.status_code == 201
    assert client.get("/api/v1/samples").status_code == 200


# ------------------------------------------------------------------ write failures (issue 9, defect 8)


def _block_dir(directory: Path) -> None:
    """A plain file where the store needs a folder: writes below it fail, even for root (tests run as root)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.write_bytes(b"not a directory")


def test_pictures_are_served_when_the_cache_cannot_be_written(client, image_store):
    data = png_bytes(np.random.default_rng(9).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    image_id = client.post("/api/v1/images", files={"file": ("a.png", data, "image/png")}).json()["id"]
    _block_dir(image_store.derived_dir)
    for url in (
        f"/images/{image_id}/display.png",
        f"/images/{image_id}/thumb.png",
        f"/api/v1/images/{image_id}/pixels?format=png",
    ):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:200])
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size[0] > 0


def test_a_failed_save_is_a_507_and_the_server_keeps_serving(client, image_store, sample_image_id):
    _block_dir(image_store.images_dir)
    data = png_bytes(np.zeros((10, 10), dtype=np.uint8))
    response = client.post("/api/v1/images", files={"file": ("lost.png", data, "image/png")})
    error = assert_error(response, 507, "storage_failed")
    assert "Nothing was saved" in error["message"]
    page = client.post("/images", files={"file": ("lost.png", data, "image/png")})
    assert page.status_code == 507 and "Nothing was saved" in page.text
    assert client.get(f"/api/v1/images/{sample_image_id}").status_code == 200
    assert all(r["name"] != "lost.png" for r in client.get("/api/v1/images").json()["images"])


def test_a_thin_strip_is_refused_naming_the_aspect_limit(client):
    strip = png_bytes(
        np.zeros((1, 10_000), dtype=np.uint8)
    )  # 91-byte-class PNG that became 7.5 GB in predict
    response = client.post("/api/v1/images", files={"file": ("strip.png", strip, "image/png")})
    error = assert_error(response, 422, "over_limit")
    assert error["limit"] == "max_aspect_ratio" and error["maximum"] == 50
    assert "max_aspect_ratio" in error["message"]
