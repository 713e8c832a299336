"""ImageStore: content addressing, persistence across restarts, atomic writes, limits, samples."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from app.core.imaging import imageio
from app.errors import InvalidInput, NotFound, OverLimit, PayloadTooLarge, StorageFailed, UnsupportedMedia
from app.services import images as images_module
from app.services.images import DB_NAME, DataDirUnusable, ImageStore, sample_specs


def png_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def store_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        max_upload_bytes=200_000,
        max_image_pixels=250_000,
        max_decode_seconds=20.0,
    )


@pytest.fixture
def store(store_settings: Settings) -> Iterator[ImageStore]:
    image_store = ImageStore(store_settings)
    yield image_store
    image_store.close()


@pytest.fixture
def rgb_png() -> tuple[np.ndarray, bytes]:
    arr = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return arr, png_bytes(arr)


def test_put_is_content_addressed(store, rgb_png):
    _, data = rgb_png
    record = store.put(data, "photo.png")
    assert record.id == hashlib.sha256(data).hexdigest()
    path = store.path_for(record.id)
    assert path == store.root / "images" / record.id[:2] / record.id
    assert path.read_bytes() == data
    assert (record.width, record.height, record.mode, record.channels) == (32, 24, "RGB", 3)
    assert record.kind == "png" and record.source == "upload" and record.name == "photo.png"
    assert record.size_bytes == len(data)
    assert record.conversion == "8-bit RGB PNG scaled from [0, 255] to [0, 1]."
    assert record.created.endswith("+00:00")


def test_duplicate_upload_returns_the_same_record(store, rgb_png):
    _, data = rgb_png
    first = store.put(data, "a.png")
    second = store.put(data, "b.png")
    assert second == first
    assert len(store.list_images(source="upload")) == 1
    files = [p for p in (store.root / "images").rglob("*") if p.is_file()]
    assert len(files) == 1


def test_load_returns_pixels_and_a_private_copy(store, rgb_png):
    arr, data = rgb_png
    record = store.put(data, "photo.png")
    pixels = store.load(record.id)
    assert pixels.dtype == np.float32 and pixels.shape == (24, 32, 3)
    np.testing.assert_allclose(pixels, arr / 255.0, atol=1e-6)
    pixels[:] = 0.0
    np.testing.assert_allclose(store.load(record.id), arr / 255.0, atol=1e-6)


def test_greyscale_upload_stays_greyscale(store):
    grey = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) % 256
    record = store.put(png_bytes(grey.astype(np.uint8)), "grey.png")
    assert record.mode == "L" and record.channels == 1
    assert store.load(record.id).shape == (48, 64)


def test_survives_a_restart(store_settings, rgb_png):
    arr, data = rgb_png
    first_store = ImageStore(store_settings)
    record = first_store.put(data, "photo.png")
    first_store.close()
    second_store = ImageStore(store_settings)
    try:
        assert second_store.get(record.id) == record
        assert [r.id for r in second_store.list_images()] == [record.id]
        # The new store has an empty cache, so this decodes the stored bytes again.
        np.testing.assert_allclose(second_store.load(record.id), arr / 255.0, atol=1e-6)
    finally:
        second_store.close()
    with sqlite3.connect(store_settings.data_dir / DB_NAME) as conn:
        row = conn.execute("SELECT name, kind, width, height, source FROM images WHERE id = ?", (record.id,))
        assert row.fetchone() == ("photo.png", "png", 32, 24, "upload")


def test_atomic_write_leaves_no_temporary_files(store, rgb_png):
    _, data = rgb_png
    record = store.put(data, "photo.png")
    store.thumbnail_png(record.id)
    store.display_png(record.id)
    leftovers = [p for p in store.root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]
    assert leftovers == []


def test_failed_write_cleans_up_its_temporary_file(store, rgb_png, monkeypatch):
    _, data = rgb_png

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(images_module.os, "replace", broken_replace)
    # A failed save is a clear 507 that says nothing was saved (issue 9, defect 8), not a bare OSError.
    with pytest.raises(StorageFailed, match="Nothing was saved"):
        store.put(data, "photo.png")
    monkeypatch.undo()
    assert [p for p in store.root.rglob("*") if p.is_file() and p.suffix == ".tmp"] == []
    # Nothing half-registered either: the row is only written after the file.
    assert store.list_images() == []


def test_bad_input_is_not_stored(store):
    with pytest.raises(InvalidInput):
        store.put(b"", "empty.png")
    with pytest.raises(UnsupportedMedia):
        store.put(b"just some text", "notes.txt")
    assert store.list_images() == []
    assert [p for p in (store.root / "images").rglob("*") if p.is_file()] == []


def test_byte_limit(store, store_settings):
    noise = np.random.default_rng(2).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    data = png_bytes(noise)
    assert len(data) > store_settings.max_upload_bytes
    with pytest.raises(PayloadTooLarge) as info:
        store.put(data, "big.png")
    assert info.value.field == "file"
    assert info.value.extra["max_bytes"] == store_settings.max_upload_bytes


def test_pixel_limit(store, store_settings):
    data = png_bytes(np.zeros((600, 600), dtype=np.uint8))  # compresses to a few hundred bytes
    assert len(data) < store_settings.max_upload_bytes
    with pytest.raises(PayloadTooLarge) as info:
        store.put(data, "wide.png")
    assert "250,000 pixels" in info.value.message


def test_decode_time_limit(tmp_path, monkeypatch, rgb_png):
    _, data = rgb_png
    release = threading.Event()
    real_decode = imageio.decode_image

    def stuck_decode(
        payload: bytes, filename: str | None, max_pixels: int, *args: Any, **kwargs: Any
    ) -> imageio.DecodedImage:
        release.wait()
        return real_decode(payload, filename, max_pixels, *args, **kwargs)

    monkeypatch.setattr(imageio, "decode_image", stuck_decode)
    slow_store = ImageStore(Settings(data_dir=tmp_path / "slow", max_decode_seconds=0.05))
    try:
        with pytest.raises(PayloadTooLarge) as info:
            slow_store.put(data, "slow.png")
        assert "took longer than 0.05 s" in info.value.message
        assert slow_store.list_images() == []
    finally:
        release.set()
        slow_store.close()


def test_unknown_ids(store):
    for bad in ("0" * 64, "not-an-id", "../../etc/passwd", ""):
        with pytest.raises(NotFound) as info:
            store.get(bad)
        assert info.value.field == "image_id"
        with pytest.raises(NotFound):
            store.load(bad)


def test_missing_file_is_a_clear_not_found(store, rgb_png):
    _, data = rgb_png
    record = store.put(data, "photo.png")
    store.path_for(record.id).unlink()
    fresh = ImageStore(store.settings)
    try:
        with pytest.raises(NotFound) as info:
            fresh.load(record.id)
        assert "missing" in info.value.message
        # Uploading the same bytes again repairs it.
        assert fresh.put(data, "photo.png").id == record.id
        assert fresh.load(record.id).shape == (24, 32, 3)
    finally:
        fresh.close()


def test_names_are_cleaned(store, rgb_png):
    _, data = rgb_png
    assert store.put(data, "C:\\Users\\me\\scan\x07 01.png").name == "scan 01.png"


def test_thumbnail_and_display(store):
    arr = np.random.default_rng(3).integers(0, 256, (100, 400), dtype=np.uint8)
    record = store.put(png_bytes(arr), "wide.png")
    thumb = Image.open(io.BytesIO(store.thumbnail_png(record.id, 64)))
    assert thumb.size == (64, 16) and thumb.mode == "L"
    display = Image.open(io.BytesIO(store.display_png(record.id)))
    assert display.size == (400, 100)
    np.testing.assert_array_equal(np.asarray(display), arr)
    # Cached on disk and served again byte for byte.
    assert store.display_png(record.id) == store.display_png(record.id)


def test_pixel_stats(store, rgb_png):
    arr, data = rgb_png
    record = store.put(data, "photo.png")
    stats = store.pixel_stats(record.id)
    expected = arr / 255.0
    assert stats["shape"] == [24, 32, 3]
    assert stats["min"] == pytest.approx(expected.min(), abs=1e-6)
    assert stats["max"] == pytest.approx(expected.max(), abs=1e-6)
    assert stats["mean"] == pytest.approx(expected.mean(), abs=1e-5)
    assert stats["channel_means"] == pytest.approx(list(expected.reshape(-1, 3).mean(axis=0)), abs=1e-5)


def test_list_orders_samples_first_then_newest_uploads(store, monkeypatch):
    first = store.put(png_bytes(np.zeros((4, 4), np.uint8)), "first.png")
    monkeypatch.setattr(images_module, "_utc_now", lambda: "2999-01-01T00:00:00+00:00")
    second = store.put(png_bytes(np.ones((4, 4), np.uint8)), "second.png")
    monkeypatch.undo()
    samples = store.ensure_samples()
    listed = store.list_images()
    assert [r.id for r in listed] == [s.id for s in samples] + [second.id, first.id]
    assert [r.id for r in store.list_images(source="upload")] == [second.id, first.id]


def test_ensure_samples_registers_the_gallery_once(store):
    samples = store.ensure_samples()
    keys = [r.metadata["sample_key"] for r in samples]
    assert {
        "pydicom:CT_small",
        "pydicom:MR_small",
        "skimage:chelsea",
        "skimage:astronaut",
        "skimage:coffee",
        "skimage:rocket",
        "skimage:retina:512",
        "skimage:shepp_logan_phantom",
    } <= set(keys)
    assert all(r.source == "sample" and r.description for r in samples)
    assert len({r.name for r in samples}) == len(samples)
    by_key = {r.metadata["sample_key"]: r for r in samples}
    assert by_key["pydicom:CT_small"].kind == "dicom" and by_key["pydicom:CT_small"].mode == "L"
    assert "HU" in by_key["pydicom:CT_small"].conversion
    assert by_key["skimage:retina:512"].width == 512
    for record in samples:
        pixels = store.load(record.id)
        assert pixels.shape[:2] == (record.height, record.width)
        assert 0.0 <= float(pixels.min()) <= float(pixels.max()) <= 1.0
    again = ImageStore(store.settings).ensure_samples()
    assert [r.id for r in again] == [r.id for r in samples]
    assert len(store.list_images(source="sample")) == len(samples)


def test_synthetic_samples_are_included_when_the_generator_exists(store):
    pytest.importorskip("app.core.imaging.synthetic")
    keys = {r.metadata["sample_key"] for r in store.ensure_samples()}
    assert {"synthetic:ct_slice:v1", "synthetic:shapes:v1", "synthetic:digit3:v1"} <= keys


def test_a_broken_sample_source_is_skipped(store, monkeypatch):
    specs = sample_specs()

    def boom() -> tuple[bytes, str] | None:
        raise RuntimeError("generator exploded")

    broken = [images_module.SampleSpec("broken", "Broken", "never appears", boom), *specs[3:5]]
    monkeypatch.setattr(images_module, "sample_specs", lambda: broken)
    samples = store.ensure_samples()
    assert [r.metadata["sample_key"] for r in samples] == ["pydicom:CT_small", "pydicom:MR_small"]


def test_concurrent_identical_uploads_end_in_one_row(store, rgb_png):
    _, data = rgb_png
    results: list[str] = []

    def upload() -> None:
        results.append(store.put(data, "same.png").id)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 4
    assert len(store.list_images()) == 1


# ------------------------------------------------------------------ write failures (issue 9, defect 8)
# Tests run as root, where chmod does not stop a write; these force real failures root cannot bypass:
# a file where a directory must be, SQLite's query_only switch, and (where the filesystem has it)
# the immutable attribute.


def _block_dir(directory: Path) -> None:
    """Replace a directory by a plain file: every write below it then fails, for root too."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.write_bytes(b"not a directory")


def test_a_failed_cache_write_still_serves_the_picture(store, rgb_png, caplog):
    _, data = rgb_png
    record = store.put(data, "photo.png")
    _block_dir(store.derived_dir)
    display = store.display_png(record.id)
    thumb = store.thumbnail_png(record.id, 16)
    assert Image.open(io.BytesIO(display)).size == (32, 24)
    assert max(Image.open(io.BytesIO(thumb)).size) == 16
    # Served again (rebuilt from memory): still no error, and the failure was logged once.
    assert store.display_png(record.id) == display
    assert sum("cannot cache derived images" in r.getMessage() for r in caplog.records) == 1


def test_a_failed_upload_says_nothing_was_saved_and_the_store_keeps_serving(store, rgb_png):
    _, data = rgb_png
    kept = store.put(png_bytes(np.zeros((8, 8), dtype=np.uint8)), "kept.png")
    _block_dir(store.images_dir)
    with pytest.raises(StorageFailed, match="Nothing was saved") as info:
        store.put(data, "photo.png")
    assert info.value.status_code == 507 and info.value.field == "file"
    assert [r.id for r in store.list_images()] == [kept.id]
    assert store.get(kept.id) == kept  # metadata still served
    store.images_dir.unlink()
    assert store.put(data, "photo.png").name == "photo.png"  # writable again: works at once


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only")])
def test_a_full_or_read_only_disk_is_named(store, rgb_png, monkeypatch, code, words):
    _, data = rgb_png

    def failing_write(path: Path, payload: bytes) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(images_module, "_atomic_write", failing_write)
    with pytest.raises(StorageFailed, match=words):
        store.put(data, "photo.png")
    assert store.list_images() == []


def test_a_read_only_database_fails_the_upload_cleanly(store, rgb_png):
    _, data = rgb_png
    with store._connect() as conn:
        conn.execute("PRAGMA query_only = ON")  # every write now fails inside SQLite itself
    with pytest.raises(StorageFailed, match="Nothing was saved"):
        store.put(data, "photo.png")
    # The file written before the row is removed again: no orphan, nothing half-saved.
    assert not store.path_for(hashlib.sha256(data).hexdigest()).exists()
    with store._connect() as conn:
        conn.execute("PRAGMA query_only = OFF")
    assert store.put(data, "photo.png").width == 32


def _chattr(flag: str, *paths: Path) -> bool:
    try:
        done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    except FileNotFoundError:
        return False
    return done.returncode == 0


def test_a_read_only_data_dir_at_start_serves_what_it_has(store_settings, rgb_png):
    _, data = rgb_png
    first = ImageStore(store_settings)
    record = first.put(data, "photo.png")
    first.close()
    root = store_settings.data_dir
    locked = [root, root / "images", root / "images" / record.id[:2], root / DB_NAME]
    if not _chattr("+i", *locked):
        pytest.skip("the immutable attribute (chattr +i) is not available here")
    try:
        store = ImageStore(store_settings)  # no crash: read-only mode
        try:
            assert store.read_only
            assert store.get(record.id).name == "photo.png"
            assert store.display_png(record.id)  # served, though derived/ cannot even be created
            assert np.array_equal(store.load(record.id), first.load(record.id))
            with pytest.raises(StorageFailed, match="read-only"):
                store.put(png_bytes(np.zeros((4, 4), dtype=np.uint8)), "new.png")
            store.ensure_samples()  # the missing samples are skipped, not fatal
        finally:
            store.close()
    finally:
        _chattr("-i", *locked)


def test_an_unusable_data_dir_says_so(tmp_path):
    (tmp_path / "data").write_bytes(b"a file, not a folder")
    with pytest.raises(DataDirUnusable, match="CONVSCOPE_DATA_DIR"):
        ImageStore(Settings(data_dir=tmp_path / "data"))


# --------------------------------------------------------------------- aspect ratio (issue 9, defect 1)


def test_a_thin_strip_is_refused_before_decoding(store, monkeypatch):
    strip = png_bytes(np.zeros((1, 10_000), dtype=np.uint8))  # 10000 x 1: ~100 bytes

    def no_decode(*args: object) -> None:
        raise AssertionError("decoded although the header already showed the aspect ratio")

    monkeypatch.setattr(images_module.imageio, "decode_image", no_decode)
    with pytest.raises(OverLimit, match="max_aspect_ratio") as info:
        store.put(strip, "strip.png")
    assert info.value.status_code == 422
    assert info.value.extra["limit"] == "max_aspect_ratio"
    assert info.value.extra["estimate"] == 10_000 and info.value.extra["maximum"] == 50
    assert store.list_images() == []


def test_aspect_ratio_limit_is_inclusive_and_applies_to_both_orientations(store_settings):
    store = ImageStore(store_settings.model_copy(update={"max_aspect_ratio": 4.0}))
    try:
        assert store.put(png_bytes(np.zeros((2, 8), dtype=np.uint8)), "wide.png").width == 8
        assert store.put(png_bytes(np.zeros((8, 2), dtype=np.uint8)), "tall.png").height == 8
        with pytest.raises(OverLimit):
            store.put(png_bytes(np.zeros((9, 2), dtype=np.uint8)), "taller.png")
    finally:
        store.close()


def test_aspect_ratio_is_checked_after_decoding_when_the_header_is_not_pil(store, monkeypatch):
    strip = png_bytes(np.zeros((1, 100), dtype=np.uint8))
    monkeypatch.setattr(images_module, "_header_size", lambda data: None)  # e.g. a DICOM file
    with pytest.raises(OverLimit, match="max_aspect_ratio"):
        store.put(strip, "strip.png")


# ------------------------------------------------------------------ large images: the working copy (issue 9)


@pytest.fixture
def small_working_store(store_settings: Settings) -> Iterator[ImageStore]:
    """A store whose working copies are at most 16 px, so that small test images count as large."""
    image_store = ImageStore(
        store_settings.model_copy(update={"working_image_side": 16, "max_npy_values": 1000})
    )
    yield image_store
    image_store.close()


def test_load_gives_a_bounded_working_copy_and_load_full_every_pixel(small_working_store):
    arr = np.random.default_rng(4).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    record = small_working_store.put(png_bytes(arr), "big.png")
    assert (record.width, record.height, record.mode) == (60, 40, "RGB")
    working = small_working_store.load(record.id)
    assert working.shape == (10, 15, 3) and working.dtype == np.float32  # factor ceil(60 / 16) = 4
    reference = (arr / 255.0).reshape(10, 4, 15, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(working, reference, atol=1e-6)
    working[:] = 0  # a private copy
    assert small_working_store.load(record.id).max() > 0
    np.testing.assert_allclose(small_working_store.load_full(record.id), arr / 255.0, atol=1e-6)
    assert small_working_store.load(record.id, max_side=60).shape == (40, 60, 3)
    note = small_working_store.working_note(record.id)
    assert note is not None and "60 × 40 to 15 × 10" in note and "working_image_side = 16" in note
    assert small_working_store.working_note(record.id, max_side=60) is None


def test_pictures_come_from_the_working_copy(small_working_store):
    arr = np.random.default_rng(5).integers(0, 256, (40, 60), dtype=np.uint8)
    record = small_working_store.put(png_bytes(arr), "big.png")
    display = Image.open(io.BytesIO(small_working_store.display_png(record.id)))
    assert display.size == (15, 10) and display.mode == "L"
    thumb = Image.open(io.BytesIO(small_working_store.thumbnail_png(record.id, 16)))
    assert max(thumb.size) <= 16


def test_pixel_stats_are_of_every_pixel_even_after_a_restart(small_working_store, store_settings):
    arr = np.random.default_rng(6).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    record = small_working_store.put(png_bytes(arr), "big.png")
    expected = (arr / 255.0).astype(np.float32)
    first = small_working_store.pixel_stats(record.id)
    restarted = ImageStore(store_settings.model_copy(update={"working_image_side": 16}))
    try:
        again = restarted.pixel_stats(record.id)  # computed again from the file, strip by strip
    finally:
        restarted.close()
    for stats in (first, again):
        assert stats["shape"] == [40, 60, 3] and stats["dtype"] == "float32" and stats["mode"] == "RGB"
        assert stats["min"] == float(expected.min()) and stats["max"] == float(expected.max())
        assert stats["mean"] == pytest.approx(float(expected.mean()), rel=1e-5)
        assert stats["std"] == pytest.approx(float(expected.std()), rel=1e-5)
        assert stats["channel_means"] == pytest.approx(list(expected.reshape(-1, 3).mean(axis=0)), rel=1e-5)


def test_npy_pixels_are_bounded_by_max_npy_values(small_working_store):
    arr = np.random.default_rng(7).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    record = small_working_store.put(png_bytes(arr), "big.png")
    with pytest.raises(OverLimit, match="max_npy_values") as info:
        small_working_store.npy_pixels(record.id)
    assert "max_side=" in info.value.message
    assert info.value.extra["estimate"] == 40 * 60 * 3 and info.value.extra["maximum"] == 1000
    assert small_working_store.npy_pixels(record.id, max_side=16).shape == (10, 15, 3)
    with pytest.raises(OverLimit, match="max_npy_values"):
        small_working_store.npy_pixels(record.id, max_side=30)  # 20 x 30 x 3 = 1800 numbers


def test_decoded_images_are_kept_within_image_cache_bytes(tmp_path: Path) -> None:
    # Each 64 x 64 RGB working copy is 64 * 64 * 3 * 4 = 49,152 bytes; room for two, not three.
    settings = Settings(data_dir=tmp_path / "data", image_cache_bytes=100_000)
    store = ImageStore(settings)
    try:
        rng = np.random.default_rng(5)
        ids = [
            store.put(png_bytes(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), f"{i}.png").id
            for i in range(3)
        ]
        assert len(store._cache) == 2 and store._cache.nbytes == 2 * 49_152
        decodes: list[str] = []
        real = store._decode_stored

        def counting(record: Any, *args: Any, **kwargs: Any) -> Any:
            decodes.append(record.id)
            return real(record, *args, **kwargs)

        store._decode_stored = counting  # type: ignore[method-assign]
        store.load(ids[2])  # the most recent upload is cached
        assert decodes == []
        store.load(ids[0])  # the oldest was evicted: decoded again, and now the second oldest goes
        assert decodes == [ids[0]]
        store.load(ids[2])
        store.load(ids[1])
        assert decodes == [ids[0], ids[1]]
        assert store._cache.nbytes <= settings.image_cache_bytes
    finally:
        store.close()


def test_an_image_larger_than_the_cache_is_decoded_each_time_not_kept(tmp_path: Path) -> None:
    store = ImageStore(Settings(data_dir=tmp_path / "data", image_cache_bytes=10_000))
    try:
        image_id = store.put(png_bytes(np.zeros((64, 64), dtype=np.uint8)), "big.png").id  # 16 KB as float32
        assert store.load(image_id).shape == (64, 64)
        assert len(store._cache) == 0 and store._cache.nbytes == 0
    finally:
        store.close()


def test_pixel_statistics_are_kept_within_their_byte_budget(tmp_path: Path) -> None:
    store = ImageStore(Settings(data_dir=tmp_path / "data", image_stats_cache_bytes=600))
    try:
        rng = np.random.default_rng(6)
        ids = [
            store.put(png_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), f"{i}.png").id
            for i in range(4)
        ]
        one = images_module._stats_nbytes(store._stats[ids[-1]])
        assert 150 < one < 600
        assert store._stats.currsize <= 600 and len(store._stats) < 4  # the oldest made room
        # An evicted entry is computed again from the stored file, with the same numbers.
        first = store.pixel_stats(ids[0])
        assert first["shape"] == [8, 8, 3] and ids[0] in store._stats
    finally:
        store.close()
