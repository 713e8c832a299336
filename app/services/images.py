"""Image intake: a content-addressed store of uploaded and sample images that survives restarts.

Layout under settings.data_dir:
    images/<id[:2]>/<id>            the original bytes, exactly as uploaded (id = sha256 of them)
    derived/<id[:2]>/<id>.<v>.png   cached display PNGs and thumbnails (rebuildable)
    convscope.sqlite3               table `images`: one row of metadata per id

Decoding is bounded three ways: bytes (settings.max_upload_bytes), pixels read from the header before
decoding (settings.max_image_pixels) and time (settings.max_decode_seconds, enforced by running the
decode in a worker thread and abandoning the wait). A timed-out decode cannot be killed, but the pixel
bound guarantees it finishes, and the worker pool is small so runaway decodes cannot pile up.
Uploads are also refused when one side is more than settings.max_aspect_ratio times the other (a 10000 x 1
strip becomes gigabytes once a model resizes its shorter side), read from the header before decoding.

Large images are never held at full resolution as float32 (a 36 MP colour upload would be 432 MB): the
upload is converted strip by strip into a working copy whose longer side is at most
settings.working_image_side (area-averaged), plus full-resolution statistics. `load()` returns that working
copy (what models, explanations and pictures use); `load_full()` is for the few callers that need every
pixel and check the size first (the .npy download is bounded by settings.max_npy_values).

Write failures (a read-only or full data directory) never become 500s: a failed upload raises
StorageFailed (507) and saves nothing, a failed cache write is logged and the bytes are served from
memory, and a store whose directory is read-only at start-up serves what it has (read-only mode).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import functools
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from cachetools import LRUCache
from numpy.typing import NDArray
from PIL import Image

from app.config import Settings
from app.core.imaging import imageio
from app.core.imaging.rendering import encode_png
from app.errors import InvalidInput, NotFound, OverLimit, PayloadTooLarge, StorageFailed

log = logging.getLogger(__name__)

DB_NAME = "convscope.sqlite3"
THUMB_SIZE = 192
_ID_RE = re.compile(r"^[0-9a-f]{64}$")
# The side of the throwaway copy decoded when full-resolution statistics must be computed again (after a
# restart, or once they have left their cache).
STATS_DECODE_SIDE = 64
# Samples are the project's own files: they bypass the upload limits but still have a sane bound.
SAMPLE_MAX_PIXELS = 4_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mode TEXT NOT NULL,
    conversion TEXT NOT NULL,
    created TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    source TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
)
"""


@dataclass(frozen=True)
class ImageRecord:
    """Metadata of one stored image. mode is "L" (greyscale, (H, W)) or "RGB" ((H, W, 3))."""

    id: str
    name: str
    kind: str
    width: int
    height: int
    mode: str
    conversion: str
    created: str
    size_bytes: int
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def description(self) -> str | None:
        """One line about a sample (None for uploads)."""
        value = self.metadata.get("description")
        return str(value) if value else None

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class SampleSpec:
    """A gallery entry: make() returns (file bytes, filename) or None when its source is unavailable."""

    key: str
    name: str
    description: str
    make: Callable[[], tuple[bytes, str] | None]


class DataDirUnusable(RuntimeError):
    """The data directory can be neither written nor read at start-up; the message says which and why."""


def _unusable(root: Path, what: str, exc: BaseException) -> DataDirUnusable:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    message = (
        f"The data directory {root} cannot be used: {what} ({reason}). "
        "Set CONVSCOPE_DATA_DIR to a folder ConvScope can write to, or fix its permissions."
    )
    log.error(message)
    return DataDirUnusable(message)


def _write_problem(exc: BaseException) -> str:
    """Why a write failed, in words a user can act on."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "the disk is full"
    if isinstance(exc, sqlite3.Error) and "full" in str(exc).lower():
        return "the disk is full"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the data directory is read-only"
    return "the data directory cannot be written"


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def clean_name(filename: str | None) -> str:
    """A display name from a client-supplied filename: no path, no control characters, bounded length."""
    return imageio.clean_filename(filename) or "upload"


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding the pixels; None if PIL cannot tell."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception:  # any failure here is the decoder's to report, with its own message
        return None
    return int(width), int(height)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write bytes so that readers see either nothing or the whole file, even after a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    # fsync the directory too, so the rename itself is durable (not available on every platform).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _ArrayCache:
    """A thread-safe LRU of decoded arrays bounded by their total bytes (cachetools, sized by nbytes)."""

    def __init__(self, max_bytes: int) -> None:
        self._items: LRUCache[str, NDArray[np.float32]] = LRUCache(
            maxsize=max(1, max_bytes), getsizeof=lambda arr: int(arr.nbytes)
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> NDArray[np.float32] | None:
        with self._lock:
            return self._items.get(key)  # a hit makes it the most recently used

    def put(self, key: str, arr: NDArray[np.float32]) -> None:
        if arr.nbytes > self._items.maxsize:
            return  # larger than the whole cache: decoded again when needed, never kept
        with self._lock:
            self._items[key] = arr

    @property
    def nbytes(self) -> int:
        with self._lock:
            return int(self._items.currsize)

    def __len__(self) -> int:
        return len(self._items)


def _stats_nbytes(stats: dict[str, Any]) -> int:
    """What one statistics entry costs, counted as its JSON text (a few hundred bytes)."""
    return len(json.dumps(stats))


class ImageStore:
    """Content-addressed image store with SQLite metadata; safe to share between request threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.data_dir)
        self.images_dir = self.root / "images"
        self.derived_dir = self.root / "derived"
        self.db_path = self.root / DB_NAME
        # True when the data directory could only be opened for reading: stored images are served and
        # uploads are refused with 507 (nothing else changes).
        self.read_only = False
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if not self.images_dir.is_dir():
                raise _unusable(self.root, f"cannot create {self.images_dir.name}/", exc) from exc
        # derived/ (the PNG cache) is created on its first write: a read-only directory may not have it.
        self._cache_write_failed = False
        # decode_image checks width x height against settings.max_image_pixels itself; PIL's own bomb
        # guard (an error at twice MAX_IMAGE_PIXELS) must never be stricter than the configured limit.
        if Image.MAX_IMAGE_PIXELS is not None and settings.max_image_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
        # Decoded working copies (settings.image_cache_bytes) and full-resolution statistics
        # (settings.image_stats_cache_bytes), each an LRU bounded in bytes.
        self._cache = _ArrayCache(settings.image_cache_bytes)
        self._stats: LRUCache[str, dict[str, Any]] = LRUCache(
            maxsize=max(1, settings.image_stats_cache_bytes), getsizeof=_stats_nbytes
        )
        self._stats_lock = threading.Lock()
        # Two workers: one slow decode never blocks every other upload, and runaways stay bounded.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
        self._db_lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        with self._connect():
            pass  # opens (and if need be creates) the database now, so a bad data directory fails at start

    # ----------------------------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """The store's one connection, used under a lock (opening one per call costs a WAL checkpoint)."""
        with self._db_lock:
            if self._conn is None:
                self._conn = self._open_database()
            with self._conn:
                yield self._conn

    def _open_database(self) -> sqlite3.Connection:
        """Open read-write (creating the schema); fall back to read-only when the directory is read-only."""
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.db_path, timeout=30, check_same_thread=False)
            # With WAL, NORMAL stays consistent after a crash while sparing an fsync per commit.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                conn.execute(_SCHEMA)
                conn.execute("CREATE INDEX IF NOT EXISTS images_source ON images (source)")
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            conn = self._open_read_only(exc)
        conn.row_factory = sqlite3.Row
        return conn

    def _open_read_only(self, cause: sqlite3.Error) -> sqlite3.Connection:
        if not self.db_path.is_file():
            raise _unusable(self.root, f"its database {DB_NAME} cannot be created", cause) from cause
        uri = "file:" + urllib.parse.quote(str(self.db_path))
        # mode=ro needs the WAL's -shm file or a writable directory; immutable=1 reads the file as it is
        # (safe here: nothing can write to a directory this process cannot write to either).
        for options in ("mode=ro", "immutable=1"):
            try:
                conn = sqlite3.connect(f"{uri}?{options}", uri=True, timeout=30, check_same_thread=False)
                conn.execute("SELECT count(*) FROM images").fetchone()
            except sqlite3.Error:
                continue
            self.read_only = True
            log.warning(
                "The data directory %s is read-only (%s): serving the images stored there; "
                "uploads are refused until it is writable again and the server restarts.",
                self.root,
                cause,
            )
            return conn
        raise _unusable(
            self.root, f"its database {DB_NAME} can be neither written nor read", cause
        ) from cause

    def close(self) -> None:
        """Stop the decode workers and close the database (the lifespan calls this on shutdown)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def path_for(self, image_id: str) -> Path:
        """Where the original bytes of an image live."""
        return self.images_dir / image_id[:2] / image_id

    def _derived_path(self, image_id: str, variant: str) -> Path:
        return self.derived_dir / image_id[:2] / f"{image_id}.{variant}.png"

    @staticmethod
    def _row_to_record(row: sqlite3.Row) -> ImageRecord:
        try:
            metadata = json.loads(row["metadata"] or "{}")
        except json.JSONDecodeError:
            metadata = {}
        return ImageRecord(
            id=row["id"],
            name=row["name"],
            kind=row["kind"],
            width=int(row["width"]),
            height=int(row["height"]),
            mode=row["mode"],
            conversion=row["conversion"],
            created=row["created"],
            size_bytes=int(row["size_bytes"]),
            source=row["source"],
            metadata=metadata if isinstance(metadata, dict) else {},
        )

    def _find(self, image_id: str) -> ImageRecord | None:
        if not _ID_RE.match(image_id):
            return None
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return None if row is None else self._row_to_record(row)

    def _decode(
        self,
        data: bytes,
        filename: str | None,
        max_pixels: int | None = None,
        max_side: int | None = None,
        with_stats: bool = False,
    ) -> imageio.DecodedImage:
        """Run the decoder in a worker thread and give up waiting after max_decode_seconds."""
        limit = self.settings.max_image_pixels if max_pixels is None else max_pixels
        decode: Callable[[], imageio.DecodedImage] = functools.partial(
            imageio.decode_image, data, filename, limit, max_side, with_stats=with_stats
        )
        future = self._executor.submit(decode)
        try:
            return future.result(timeout=self.settings.max_decode_seconds)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise PayloadTooLarge(
                f"{imageio.display_name(filename)} took longer than {self.settings.max_decode_seconds:g} s "
                "to decode; upload a smaller or simpler image.",
                field="file",
            ) from exc

    # ------------------------------------------------------------------------------------ public

    def check_size(self, size: int) -> None:
        """Raise PayloadTooLarge if size bytes exceed settings.max_upload_bytes."""
        limit = self.settings.max_upload_bytes
        if size > limit:
            raise PayloadTooLarge(
                f"The file is larger than the upload limit of {limit:,} bytes ({limit / 2**20:.1f} MiB).",
                field="file",
                max_bytes=limit,
            )

    def put(
        self,
        data: bytes,
        filename: str | None,
        *,
        source: str = "upload",
        name: str | None = None,
        extra_metadata: dict[str, Any] | None = None,
    ) -> ImageRecord:
        """Validate, decode and store bytes; returns the record (the existing one if already stored).

        Raises InvalidInput / UnsupportedMedia / PayloadTooLarge (field "file") for bad input.
        """
        return self._put(data, filename, source=source, name=name, extra_metadata=extra_metadata)

    def _put(
        self,
        data: bytes,
        filename: str | None,
        *,
        source: str = "upload",
        name: str | None = None,
        extra_metadata: dict[str, Any] | None = None,
        trusted: bool = False,
    ) -> ImageRecord:
        # trusted: the project's own samples, which must show even where upload limits are tiny.
        if not data:
            label = imageio.display_name(filename)
            raise InvalidInput(f"{label} is empty (0 bytes); choose an image file.", field="file")
        if not trusted:
            self.check_size(len(data))
        image_id = hashlib.sha256(data).hexdigest()
        path = self.path_for(image_id)
        existing = self._find(image_id)
        if existing is not None and path.is_file():
            return existing

        label = imageio.display_name(filename)
        if self.read_only:
            raise StorageFailed(
                f"{label} was not saved: the data directory is read-only, so no upload can be stored. "
                "Nothing was saved; stored images can still be used.",
                field="file",
                reason="read_only",
            )
        if not trusted:
            header_size = _header_size(data)
            if header_size is not None:
                self._check_aspect(*header_size, label)
        max_pixels = max(self.settings.max_image_pixels, SAMPLE_MAX_PIXELS) if trusted else None
        # The working copy and the full-resolution statistics in one strip-wise pass: no full float image.
        side = self.settings.working_image_side
        decoded = self._decode(data, filename, max_pixels, max_side=side, with_stats=True)
        if not trusted:
            # Formats PIL cannot read the header of (DICOM, some TIFFs) are checked once decoded.
            self._check_aspect(decoded.width, decoded.height, label)
        file_existed = path.is_file()
        try:
            _atomic_write(path, data)
        except OSError as exc:
            raise self._save_failed(label, exc) from exc
        metadata: dict[str, Any] = {
            "source_mode": decoded.source_mode,
            "bit_depth": decoded.bit_depth,
            **decoded.metadata,
            **(extra_metadata or {}),
        }
        record = ImageRecord(
            id=image_id,
            name=name or clean_name(filename),
            kind=decoded.kind,
            width=decoded.width,
            height=decoded.height,
            mode=decoded.mode,
            conversion=decoded.conversion,
            created=_utc_now(),
            size_bytes=len(data),
            source=source,
            metadata=metadata,
        )
        try:
            self._insert(record)
        except sqlite3.Error as exc:
            if not file_existed:
                # Nothing was saved: the file must not outlive its missing row (a later upload rewrites it).
                with contextlib.suppress(OSError):
                    path.unlink()
            raise self._save_failed(label, exc) from exc
        self._cache.put(self._cache_key(image_id, decoded.width, decoded.height, side), decoded.pixels)
        if decoded.stats is not None:
            self._remember_stats(image_id, decoded.stats)
        return self._find(image_id) or record

    def _check_aspect(self, width: int, height: int, label: str) -> None:
        """OverLimit when the longer side is more than settings.max_aspect_ratio times the shorter."""
        limit = self.settings.max_aspect_ratio
        ratio = max(width, height) / max(1, min(width, height))
        if ratio > limit:
            raise OverLimit(
                f"{label} is {width} × {height} pixels: its longer side is {ratio:,.1f} times its shorter "
                f"side, past the limit of {limit:g} (setting max_aspect_ratio). Crop it closer to a square "
                "and upload again.",
                field="file",
                limit="max_aspect_ratio",
                estimate=round(ratio, 2),
                maximum=limit,
            )

    def _save_failed(self, label: str, exc: BaseException) -> StorageFailed:
        problem = _write_problem(exc)
        log.error("saving %s failed (%s): %s", label, problem, exc)
        return StorageFailed(
            f"{label} could not be saved: {problem}. Nothing was saved; stored images can still be used. "
            "Try again later or tell whoever runs this server.",
            field="file",
            reason=problem,
        )

    def _insert(self, record: ImageRecord) -> None:
        with self._connect() as conn:
            # OR IGNORE: two identical uploads racing end with one row and the same id for both.
            conn.execute(
                "INSERT OR IGNORE INTO images (id, name, kind, width, height, mode, conversion, created,"
                " size_bytes, source, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.kind,
                    record.width,
                    record.height,
                    record.mode,
                    record.conversion,
                    record.created,
                    record.size_bytes,
                    record.source,
                    json.dumps(record.metadata, default=str),
                ),
            )

    def get(self, image_id: str) -> ImageRecord:
        """The record for an id; NotFound (field "image_id") if there is none."""
        record = self._find(image_id)
        if record is None:
            raise NotFound(
                f"There is no image with id {image_id[:80]!r}; upload one or pick a sample.",
                field="image_id",
            )
        return record

    def list_images(self, source: str | None = None) -> list[ImageRecord]:
        """Samples first (in gallery order), then uploads, newest first."""
        with self._connect() as conn:
            if source is None:
                rows = conn.execute("SELECT * FROM images").fetchall()
            else:
                rows = conn.execute("SELECT * FROM images WHERE source = ?", (source,)).fetchall()
        records = [self._row_to_record(row) for row in rows]
        samples = sorted(
            (r for r in records if r.source == "sample"),
            key=lambda r: (int(r.metadata.get("sample_order", 1000)), r.created),
        )
        others = sorted((r for r in records if r.source != "sample"), key=lambda r: r.created, reverse=True)
        return samples + others

    def read_bytes(self, image_id: str) -> bytes:
        """The original bytes as uploaded."""
        self.get(image_id)
        path = self.path_for(image_id)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(
                f"The file of image {image_id[:12]} is missing from the data directory; upload it again.",
                field="image_id",
            ) from exc

    @staticmethod
    def _cache_key(image_id: str, width: int, height: int, side: int) -> str:
        """The full image is cached under its id, a reduced copy under id@side."""
        return image_id if imageio.reduction_factor(width, height, side) == 1 else f"{image_id}@{side}"

    def load(self, image_id: str, max_side: int | None = None) -> NDArray[np.float32]:
        """The working copy: float32 in [0, 1], (H, W) greyscale or (H, W, 3) colour, longer side at most
        max_side (default settings.working_image_side; area-averaged by a whole factor when larger).

        Models, explanations and pictures use this: their inputs are 518 px or less, so a 36 MP upload costs
        a 2000 px copy instead of 432 MB. working_note() says when it was reduced. Returns a fresh copy.
        """
        side = self.settings.working_image_side if max_side is None else max(1, int(max_side))
        record = self.get(image_id)
        key = self._cache_key(image_id, record.width, record.height, side)
        if key == image_id:
            return self.load_full(image_id)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._decode_stored(record, side).pixels
            self._cache.put(key, cached)
        # The copy says how it was reduced: a model's preprocessing steps show that sentence first.
        return imageio.with_working_note(cached.copy(), self.working_note(image_id, max_side))

    def load_full(self, image_id: str) -> NDArray[np.float32]:
        """Every pixel, float32 in [0, 1]: 12 bytes a pixel for colour. Callers check the size first
        (see npy_pixels); everything else uses load(). Returns a fresh copy.
        """
        cached = self._cache.get(image_id)
        if cached is None:
            record = self.get(image_id)
            cached = self._decode_stored(record, None).pixels
            self._cache.put(image_id, cached)
        return cached.copy()

    def _decode_stored(
        self, record: ImageRecord, max_side: int | None, with_stats: bool = False
    ) -> imageio.DecodedImage:
        # Already accepted once: a later, lower pixel limit must not lock a stored image out.
        limit = max(self.settings.max_image_pixels, record.width * record.height)
        data = self.read_bytes(record.id)
        return self._decode(data, record.name, limit, max_side=max_side, with_stats=with_stats)

    def working_note(self, image_id: str, max_side: int | None = None) -> str | None:
        """One sentence when load() reduced the image (None when it is used at full resolution)."""
        side = self.settings.working_image_side if max_side is None else max(1, int(max_side))
        record = self.get(image_id)
        factor = imageio.reduction_factor(record.width, record.height, side)
        if factor == 1:
            return None
        width, height = -(-record.width // factor), -(-record.height // factor)
        return (
            f"downsampled from {record.width} × {record.height} to {width} × {height} pixels "
            f"(each {factor} × {factor} block averaged; setting working_image_side = {side})"
        )

    def _remember_stats(self, image_id: str, stats: dict[str, Any]) -> None:
        if _stats_nbytes(stats) > self._stats.maxsize:
            return
        with self._stats_lock:
            self._stats[image_id] = stats

    def pixel_stats(self, image_id: str) -> dict[str, Any]:
        """Shape and simple statistics of the full-resolution decoded pixels (what format=json returns).

        Computed strip by strip while decoding (at upload, or again here after a restart), never from a
        full-resolution float copy.
        """
        record = self.get(image_id)
        with self._stats_lock:
            stats = self._stats.get(image_id)
        if stats is None:
            # A tiny working copy: the statistics are gathered from every pixel on the way.
            stats = self._decode_stored(record, STATS_DECODE_SIDE, with_stats=True).stats
            assert stats is not None
            self._remember_stats(image_id, stats)
        return {"id": record.id, "mode": record.mode, **stats}

    def npy_pixels(self, image_id: str, max_side: int | None = None) -> NDArray[np.float32]:
        """Pixels for the .npy download: all of them, or the working copy at max_side; OverLimit past
        settings.max_npy_values numbers (checked from the record, before decoding).
        """
        record = self.get(image_id)
        limit = self.settings.max_npy_values
        width, height = record.width, record.height
        if max_side is not None:
            factor = imageio.reduction_factor(width, height, max_side)
            width, height = -(-width // factor), -(-height // factor)
        values = width * height * record.channels
        if values > limit:
            longer = max(record.width, record.height)
            scale = (limit / (record.width * record.height * record.channels)) ** 0.5
            suggestion = max(1, int(longer * scale))
            raise OverLimit(
                f"The .npy of image {record.short_id} would hold {values:,} float32 numbers "
                f"({width} × {height} × {record.channels}, {4 * values / 2**20:,.0f} MiB), past the limit of "
                f"{limit:,} (setting max_npy_values). Ask for a smaller copy with the max_side query parameter, "
                f"e.g. max_side={suggestion}.",
                field="max_side" if max_side is not None else "format",
                limit="max_npy_values",
                estimate=values,
                maximum=limit,
            )
        return self.load_full(image_id) if max_side is None else self.load(image_id, max_side)

    def display_png(self, image_id: str) -> bytes:
        """The working copy (longer side at most working_image_side) as an 8-bit PNG, cached on disk."""
        # The side is in the cache name: a changed working_image_side never serves a stale picture.
        return self._derived(image_id, f"display{self.settings.working_image_side}", None)

    def thumbnail_png(self, image_id: str, size: int = THUMB_SIZE) -> bytes:
        """A PNG no larger than size x size (aspect kept), cached on disk."""
        size = max(16, min(int(size), 1024))
        return self._derived(image_id, f"thumb{size}", size)

    def _derived(self, image_id: str, variant: str, size: int | None) -> bytes:
        self.get(image_id)
        path = self._derived_path(image_id, variant)
        # Any failure to read the cache (missing, or derived/ unusable) is a miss: the PNG is rebuilt.
        with contextlib.suppress(OSError):
            return path.read_bytes()
        pixels = imageio.pixels_to_uint8(self.load(image_id))
        if size is not None:
            picture = Image.fromarray(pixels)
            picture.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            png = buffer.getvalue()
        else:
            png = encode_png(pixels)
        try:
            _atomic_write(path, png)
        except OSError as exc:
            # The cache is only a cache: serve the PNG from memory and say so once in the log.
            if not self._cache_write_failed:
                self._cache_write_failed = True
                log.warning(
                    "cannot cache derived images in %s (%s); serving them uncached", self.derived_dir, exc
                )
        return png

    # ----------------------------------------------------------------------------------- samples

    def ensure_samples(self) -> list[ImageRecord]:
        """Register the offline sample gallery (idempotent; source="sample"); returns it in order.

        Samples already registered are not regenerated, so a restart costs one SQL query.
        A sample whose source is missing (e.g. an optional module) is skipped, never fatal.
        """
        registered: dict[str, ImageRecord] = {}
        for record in self.list_images(source="sample"):
            key = record.metadata.get("sample_key")
            if isinstance(key, str) and self.path_for(record.id).is_file():
                registered[key] = record
        out: list[ImageRecord] = []
        specs = sample_specs()
        if self.read_only:
            missing = [spec.key for spec in specs if spec.key not in registered]
            if missing:
                log.warning("data directory is read-only: samples %s cannot be added", ", ".join(missing))
            return [registered[spec.key] for spec in specs if spec.key in registered]
        for order, spec in enumerate(specs):
            if spec.key in registered:
                out.append(registered[spec.key])
                continue
            try:
                made = _made_sample(spec)
            except Exception:
                # A broken or missing sample source must not stop the app from starting.
                log.warning("sample %s could not be generated", spec.key, exc_info=True)
                continue
            if made is None:
                log.info("sample %s skipped: its source is not available", spec.key)
                continue
            data, filename = made
            try:
                record = self._put(
                    data,
                    filename,
                    trusted=True,
                    source="sample",
                    name=spec.name,
                    extra_metadata={
                        "sample_key": spec.key,
                        "sample_order": order,
                        "description": spec.description,
                    },
                )
            except Exception:
                log.warning("sample %s could not be stored", spec.key, exc_info=True)
                continue
            out.append(record)
        return out


# ------------------------------------------------------------------------------------- sample sources


# Generated sample bytes, per process: every store (and every test app) then registers them cheaply.
_SAMPLE_BYTES: dict[str, tuple[bytes, str]] = {}
_SAMPLE_LOCK = threading.Lock()


def _made_sample(spec: SampleSpec) -> tuple[bytes, str] | None:
    with _SAMPLE_LOCK:
        made = _SAMPLE_BYTES.get(spec.key)
        if made is None:
            made = spec.make()
            if made is not None:
                _SAMPLE_BYTES[spec.key] = made
        return made


def _png(pixels: NDArray[Any]) -> bytes:
    return imageio.pixels_to_png(np.asarray(pixels, dtype=np.float32))


def _synthetic(fn_name: str, filename: str, **kwargs: Any) -> Callable[[], tuple[bytes, str] | None]:
    def make() -> tuple[bytes, str] | None:
        try:
            # Imported lazily: the generator module is optional for the gallery.
            from app.core.imaging import synthetic
        except ImportError:
            return None
        fn = getattr(synthetic, fn_name, None)
        if fn is None:
            return None
        return _png(fn(**kwargs)), filename

    return make


def _pydicom_file(name: str) -> Callable[[], tuple[bytes, str] | None]:
    def make() -> tuple[bytes, str] | None:
        from pydicom.data import get_testdata_file

        # download=False: pydicom's other test files live online; these two ship in its wheel.
        path = get_testdata_file(name, download=False)
        if path is None:
            return None
        return Path(str(path)).read_bytes(), name

    return make


def _skimage(
    fn_name: str, filename: str, max_side: int | None = None
) -> Callable[[], tuple[bytes, str] | None]:
    def make() -> tuple[bytes, str] | None:
        try:
            from skimage import data as skdata
        except ImportError:
            return None
        arr = np.asarray(getattr(skdata, fn_name)())
        if arr.dtype == np.uint8:
            pixels = arr.astype(np.float32) / 255.0
        else:
            pixels = np.clip(arr.astype(np.float32), 0.0, 1.0)
        if max_side is not None and max(arr.shape[:2]) > max_side:
            picture = Image.fromarray(imageio.pixels_to_uint8(pixels))
            picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
            pixels = np.asarray(picture, dtype=np.float32) / 255.0
        return _png(pixels), filename

    return make


def sample_specs() -> list[SampleSpec]:
    """The gallery, in display order. Every source here works offline."""
    return [
        SampleSpec(
            "synthetic:ct_slice:v1",
            "Synthetic chest CT slice",
            "A chest-CT-like slice with lung nodules, generated by ConvScope (no patient data).",
            _synthetic("sample_ct_slice", "synthetic-ct-slice.png", seed=7, size=256),
        ),
        SampleSpec(
            "synthetic:shapes:v1",
            "Simple shapes",
            "Coloured shapes with sharp edges and corners: what early filters respond to.",
            _synthetic("sample_shapes", "shapes.png", size=256),
        ),
        SampleSpec(
            "synthetic:digit3:v1",
            "Digit 3",
            "A rendered digit, like the ones the built-in digit classifier learned from.",
            _synthetic("sample_digit", "digit-3.png", digit=3, size=112),
        ),
        SampleSpec(
            "pydicom:CT_small",
            "CT slice (DICOM)",
            "A real 128 × 128 CT slice shipped with pydicom; values rescaled to Hounsfield units.",
            _pydicom_file("CT_small.dcm"),
        ),
        SampleSpec(
            "pydicom:MR_small",
            "MR slice (DICOM)",
            "A real 64 × 64 MR slice shipped with pydicom, shown with the window stored in the file.",
            _pydicom_file("MR_small.dcm"),
        ),
        SampleSpec(
            "skimage:chelsea",
            "Chelsea the cat",
            "A tabby cat (scikit-image sample): a photo ImageNet models know well.",
            _skimage("chelsea", "chelsea.png"),
        ),
        SampleSpec(
            "skimage:astronaut",
            "Astronaut",
            "Astronaut Eileen Collins (NASA, public domain; scikit-image sample).",
            _skimage("astronaut", "astronaut.png"),
        ),
        SampleSpec(
            "skimage:coffee",
            "Cup of coffee",
            "A cup of coffee on a saucer (scikit-image sample).",
            _skimage("coffee", "coffee.png"),
        ),
        SampleSpec(
            "skimage:rocket",
            "Rocket launch",
            "A rocket lifting off its launch pad (scikit-image sample).",
            _skimage("rocket", "rocket.png"),
        ),
        SampleSpec(
            "skimage:retina:512",
            "Retina fundus photo",
            "A human retina fundus photograph, downscaled from 1411 px to 512 px (scikit-image sample).",
            _skimage("retina", "retina.png", max_side=512),
        ),
        SampleSpec(
            "skimage:shepp_logan_phantom",
            "Shepp–Logan phantom",
            "The classic head phantom used to test CT reconstruction (scikit-image sample).",
            _skimage("shepp_logan_phantom", "shepp-logan-phantom.png"),
        ),
    ]
