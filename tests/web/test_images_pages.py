"""The Images page: gallery, upload form (HTMX and plain), error placement, served PNGs, the picker."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image

from app.web.templating import get_templates

HX = {"HX-Request": "true"}


def png_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def test_gallery_page_lists_samples_and_the_upload_form(client, image_store):
    response = client.get("/images")
    assert response.status_code == 200
    html = response.text
    assert "<html" in html and "Upload an image" in html
    # The form works with HTMX and without it.
    assert 'hx-post="/images"' in html and 'hx-encoding="multipart/form-data"' in html
    assert 'method="post"' in html and 'enctype="multipart/form-data"' in html and 'name="file"' in html
    samples = image_store.list_images(source="sample")
    assert samples
    for record in samples:
        assert f"/images/{record.id}/thumb.png" in html
        assert record.name in html
    assert "DICOM CT: rescale slope/intercept applied (HU)" in html
    assert 'href="/static/css/images.css"' in html


def test_plain_form_upload_redirects_to_the_card(client):
    data = png_bytes(np.full((20, 30), 77, dtype=np.uint8))
    response = client.post("/images", files={"file": ("grey.png", data, "image/png")}, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    image_id = re.fullmatch(r"/images\?image_id=([0-9a-f]{64})", location).group(1)
    page = client.get(location).text
    assert 'class="card image-card"' in page
    assert "8-bit greyscale PNG scaled from [0, 255] to [0, 1]." in page
    assert "greyscale, 1 channel" in page
    for target in ("predict", "filters", "network", "explain"):
        assert f'href="/{target}?image_id={image_id}"' in page


def test_htmx_upload_returns_the_card_and_refreshes_the_gallery(client):
    data = png_bytes(np.random.default_rng(7).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    response = client.post(
        "/images", files={"file": ("<img src=x onerror=alert(1)>.png", data, "image/png")}, headers=HX
    )
    assert response.status_code == 200
    html = response.text
    assert "<html" not in html
    assert 'class="card image-card"' in html
    assert "8-bit RGB PNG scaled from [0, 255] to [0, 1]." in html
    assert "Predict" in html and "Filter lab" in html and "Inside the network" in html and "Explain" in html
    # The gallery comes along out of band, now with the upload in it.
    assert 'id="gallery" class="gallery" hx-swap-oob="true"' in html
    assert "Your uploads" in html
    # User-supplied names are escaped, never markup.
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert response.headers["vary"] == "HX-Request"


def test_htmx_upload_error_shows_the_message(client):
    response = client.post("/images", files={"file": ("notes.txt", b"just text", "text/plain")}, headers=HX)
    assert response.status_code == 415
    assert "<html" not in response.text
    assert 'class="error-box"' in response.text
    assert "“notes.txt” is not an image ConvScope can read; supported:" in response.text


def test_htmx_upload_of_an_empty_file(client):
    response = client.post("/images", files={"file": ("empty.png", b"", "image/png")}, headers=HX)
    assert response.status_code == 422
    assert "is empty" in response.text


def test_plain_form_error_is_shown_next_to_the_form(client):
    response = client.post("/images", files={"file": ("notes.txt", b"just text", "text/plain")})
    assert response.status_code == 415
    html = response.text
    assert "<html" in html and 'id="upload-form"' in html
    result_area = html.split('id="upload-result"', 1)[1].split("</section>", 1)[0]
    assert 'class="error-box"' in result_area and "is not an image ConvScope can read" in result_area


def test_htmx_get_with_an_image_returns_only_its_card(client, gray_image_id):
    response = client.get("/images", params={"image_id": gray_image_id}, headers=HX)
    assert response.status_code == 200
    assert "<html" not in response.text
    assert f'data-image-id="{gray_image_id}"' in response.text
    assert "hx-swap-oob" not in response.text


def test_page_with_an_unknown_image_is_404(client):
    response = client.get("/images", params={"image_id": "f" * 64})
    assert response.status_code == 404
    assert "There is no image with id" in response.text


def test_served_pngs(client, sample_image_id, image_store):
    display = client.get(f"/images/{sample_image_id}/display.png")
    assert display.status_code == 200 and display.headers["content-type"] == "image/png"
    assert "immutable" in display.headers["cache-control"] and display.headers["etag"]
    expected = np.round(image_store.load(sample_image_id) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(display.content))), expected)
    thumb = client.get(f"/images/{sample_image_id}/thumb.png")
    assert thumb.status_code == 200 and "max-age" in thumb.headers["cache-control"]
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 192
    assert client.get(f"/images/{'a' * 64}/thumb.png").status_code == 404


def test_dicom_card_shows_its_facts(client, image_store):
    ct = next(r for r in image_store.list_images(source="sample") if r.kind == "dicom" and "CT" in r.name)
    html = client.get("/images", params={"image_id": ct.id}, headers=HX).text
    assert "Modality" in html and "CT" in html
    assert "Pixel spacing" in html and " mm" in html
    assert "HU" in html


def test_image_picker_partial(client, image_store, sample_image_id):
    images = image_store.list_images()
    html = (
        get_templates()
        .get_template("partials/image_picker.html")
        .render(images=images, image_id=sample_image_id)
    )
    assert '<select name="image_id">' in html
    options = re.findall(r'<option value="([0-9a-f]{64})"( selected)?>', html)
    assert [value for value, _ in options] == [r.id for r in images]
    assert [value for value, selected in options if selected] == [sample_image_id]
    assert 'label="Samples"' in html and 'label="Uploads"' in html
    assert f"/images/{sample_image_id}/thumb.png" in html and 'href="/images"' in html
    unselected = (
        get_templates().get_template("partials/image_picker.html").render(images=images, image_id=None)
    )
    assert "— choose an image —" in unselected and " selected" in unselected.split("<optgroup", 1)[0]


def test_display_png_is_capped_but_the_api_png_is_full_size(client):
    wide = np.tile(np.arange(1500, dtype=np.uint32) % 256, (60, 1)).astype(np.uint8)
    image_id = client.post(
        "/api/v1/images", files={"file": ("wide.png", png_bytes(wide), "image/png")}
    ).json()["id"]
    shown = Image.open(io.BytesIO(client.get(f"/images/{image_id}/display.png").content))
    assert shown.size == (1024, 41)  # 60 * 1024 / 1500 = 40.96, rounded by PIL
    full = Image.open(io.BytesIO(client.get(f"/api/v1/images/{image_id}/pixels?format=png").content))
    np.testing.assert_array_equal(np.asarray(full), wide)


def test_one_template_answers_page_card_and_gallery(client, gray_image_id):
    # The same URL: a whole page for the address bar, one region of the same template for HTMX.
    page = client.get("/images", params={"image_id": gray_image_id})
    card = client.get("/images", params={"image_id": gray_image_id}, headers=HX)
    gallery = client.get("/images", headers=HX)
    assert "<html" in page.text and 'id="upload-form"' in page.text and 'id="gallery"' in page.text
    assert (
        "<html" not in card.text and 'id="gallery"' not in card.text and 'id="upload-form"' not in card.text
    )
    assert "<html" not in gallery.text and gallery.text.lstrip().startswith('<section id="gallery"')
    assert 'id="image-card"' not in gallery.text
    # The card in the page is the card HTMX gets.
    card_html = re.search(r'<article class="card image-card".*?</article>', card.text, re.S).group(0)
    assert card_html in page.text
    for response in (page, card, gallery):
        assert response.headers["vary"] == "HX-Request"
