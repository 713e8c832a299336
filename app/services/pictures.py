"""Pictures by URL: every PNG a page shows is served from a content-keyed URL, never inlined as a data URI.

A page registers what it will show (PNG bytes already made, or an array and the function that renders it) and
gets back `/pictures/<key>.png`. The key is a hash of the content (or of the array's bytes and the recipe), so a
URL always means the same bytes and the browser may cache it forever (Cache-Control: immutable); an HTMX swap
that shows the same tile again costs no bytes at all. Lazy pictures are rendered on their first request.

Both caches are LRUs bounded in bytes (Settings.picture_cache_bytes, picture_pending_bytes). A picture evicted
before the browser asked for it answers 404 with a message to reload the page: that is rare (the browser asks
within milliseconds of receiving the page) and costs one reload, never memory.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from app.config import Settings
from app.core.imaging.rendering import encode_png
from app.errors import NotFound

URL_PREFIX = "/pictures"
# A key is 32 hex characters of SHA-256: collisions are not a concern, and URLs stay short.
KEY_CHARS = 32


@dataclass(frozen=True)
class _Pending:
    render: Callable[[], bytes]
    nbytes: int


def _key(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        # Length-prefixed, so ("ab", "c") and ("a", "bc") never share a key.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:KEY_CHARS]


def array_fingerprint(array: np.ndarray) -> bytes:
    """The bytes that identify an array: dtype, shape and contents."""
    contiguous = np.ascontiguousarray(array)
    return f"{contiguous.dtype.str}{contiguous.shape}".encode() + contiguous.tobytes()


class PictureStore:
    """Content-keyed PNGs for pages, rendered at most once while they stay in the bounded cache."""

    def __init__(self, max_png_bytes: int, max_pending_bytes: int) -> None:
        self._lock = threading.Lock()
        self._png: LRUCache[str, bytes] = LRUCache(maxsize=max(1, max_png_bytes), getsizeof=len)
        self._pending: LRUCache[str, _Pending] = LRUCache(
            maxsize=max(1, max_pending_bytes), getsizeof=lambda p: p.nbytes
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PictureStore:
        return cls(settings.picture_cache_bytes, settings.picture_pending_bytes)

    @staticmethod
    def url(key: str) -> str:
        return f"{URL_PREFIX}/{key}.png"

    def png_url(self, png: bytes) -> str:
        """The URL of PNG bytes that are already made."""
        key = _key("png", png)
        with self._lock:
            if len(png) <= self._png.maxsize:
                self._png[key] = png
        return self.url(key)

    def lazy_url(self, recipe: str, array: np.ndarray, render: Callable[[], bytes]) -> str:
        """The URL of a picture rendered from `array` on first request.

        `recipe` names everything else the rendering depends on (colour map, limits, size): two calls with the
        same recipe and the same array must render the same bytes, since they share a URL.
        """
        key = _key("lazy", recipe, array_fingerprint(array))
        with self._lock:
            if key not in self._png and key not in self._pending:
                # The closure keeps the array alive; count it (plus a little for the closure itself).
                pending = _Pending(render, int(array.nbytes) + 256)
                if pending.nbytes <= self._pending.maxsize:
                    self._pending[key] = pending
        return self.url(key)

    def image_url(self, image: np.ndarray) -> str:
        """The URL of an image that is already a picture (uint8 grey or RGB), encoded as PNG on first request."""
        return self.lazy_url("image", image, lambda: encode_png(image))

    def get(self, key: str) -> bytes:
        """The PNG bytes of a key, rendering a pending picture now (the caller runs this off the event loop)."""
        with self._lock:
            png = self._png.get(key)
            pending = None if png is not None else self._pending.get(key)
        if png is not None:
            return png
        if pending is None:
            raise NotFound(
                "This picture is no longer cached (pictures are kept for a while after a page is shown). "
                "Reload the page to render it again."
            )
        png = pending.render()
        with self._lock:
            if len(png) <= self._png.maxsize:
                self._png[key] = png
            self._pending.pop(key, None)
        return png

    def usage(self) -> dict[str, int]:
        """Bytes held and entries, for tests and the health page."""
        with self._lock:
            return {
                "png_bytes": int(self._png.currsize),
                "png_entries": len(self._png),
                "pending_bytes": int(self._pending.currsize),
                "pending_entries": len(self._pending),
            }
