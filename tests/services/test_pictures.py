"""The picture store: content-keyed URLs, lazy rendering once, byte-bounded caches, and the HTTP route."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.imaging.rendering import encode_png
from app.errors import NotFound
from app.services.pictures import PictureStore


def _png(value: int) -> bytes:
    return encode_png(np.full((8, 8), value, dtype=np.uint8))


def test_same_bytes_same_url_and_different_bytes_different_url() -> None:
    store = PictureStore(1 << 20, 1 << 20)
    a, b = store.png_url(_png(1)), store.png_url(_png(2))
    assert a == store.png_url(_png(1))
    assert a != b
    assert a.startswith("/pictures/") and a.endswith(".png")
    assert store.get(a.split("/")[-1][:-4]) == _png(1)


def test_lazy_pictures_render_once_on_first_request() -> None:
    store = PictureStore(1 << 20, 1 << 20)
    calls: list[int] = []
    array = np.arange(64, dtype=np.float32).reshape(8, 8)

    def render() -> bytes:
        calls.append(1)
        return _png(7)

    url = store.lazy_url("gray", array, render)
    assert calls == []  # nothing rendered until asked
    key = url.split("/")[-1][:-4]
    assert store.get(key) == _png(7)
    assert store.get(key) == _png(7)
    assert calls == [1]
    # The recipe is part of the key: the same array under another colour map is another picture.
    assert store.lazy_url("viridis", array, render) != url
    # So is the array.
    assert store.lazy_url("gray", array + 1, render) != url


def test_caches_are_bounded_in_bytes_and_evicted_pictures_say_reload() -> None:
    bound = 3 * max(len(_png(v)) for v in range(10))
    store = PictureStore(max_png_bytes=bound, max_pending_bytes=1 << 20)
    urls = [store.png_url(_png(v)) for v in range(10)]
    usage = store.usage()
    assert usage["png_bytes"] <= bound
    assert 2 <= usage["png_entries"] <= 3
    with pytest.raises(NotFound, match="Reload the page"):
        store.get(urls[0].split("/")[-1][:-4])
    assert store.get(urls[-1].split("/")[-1][:-4]) == _png(9)


def test_pending_arrays_are_bounded_in_bytes() -> None:
    store = PictureStore(1 << 20, max_pending_bytes=3 * (4 * 64 + 256))
    for v in range(10):
        store.lazy_url("gray", np.full((8, 8), v, dtype=np.float32), lambda: b"")
    assert store.usage()["pending_entries"] == 3


def test_route_serves_immutable_pngs_and_refuses_other_keys(client: TestClient) -> None:
    pictures: PictureStore = client.app.state.pictures  # type: ignore[attr-defined]
    url = pictures.png_url(_png(3))
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "immutable" in response.headers["cache-control"]
    assert response.content == _png(3)
    again = client.get(url, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/pictures/" + "0" * 32 + ".png").status_code == 404
    assert client.get("/pictures/not-a-key.png").status_code == 404


def test_image_url_encodes_the_image_itself_on_first_request() -> None:
    store = PictureStore(1 << 20, 1 << 20)
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    url = store.image_url(rgb)
    assert url == store.image_url(rgb.copy())  # same pixels, same URL
    assert store.get(url.split("/")[-1][:-4]) == encode_png(rgb)
