"""DICOM display by the standard (PS3.3 C.11): modality LUT, then a VOI LUT or window, with pydicom as the oracle.

Every dataset is built here with pydicom, written to bytes, decoded by ConvScope, and compared with what
pydicom's own `apply_modality_lut` / `apply_voi_lut` give on the same dataset. The [0, 1] scaling is by the
output range the standard defines (the window's y_min..y_max, the VOI LUT's 0..2^n - 1), stated here.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from app.core.imaging.imageio import decode_image

MAX_PIXELS = 10_000_000


def ct_dataset(stored: np.ndarray, **extra: object) -> Dataset:
    """A CT slice with signed 16-bit stored values (12 bits used), slope 2 and intercept -1024 unless given."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 1
    ds.RescaleSlope = 2
    ds.RescaleIntercept = -1024
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    ds.preamble = b"\0" * 128
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def decode_ds(ds: Dataset):
    data = to_bytes(ds)
    # What pydicom reads back from the very bytes ConvScope decodes.
    return decode_image(data, "slice.dcm", MAX_PIXELS), pydicom.dcmread(io.BytesIO(data))


# Stored values covering the whole 12-bit signed range, and around the windows used below.
STORED = np.array(
    [[-2048, -600, 0, 400], [512, 530, 531, 532], [600, 700, 800, 1200], [1500, 2000, 2047, 1000]],
    dtype=np.int16,
)
# The window's output range for 12-bit signed stored values after slope 2 / intercept -1024 (PS3.3 C.11.2.1.2).
Y_MIN, Y_MAX = -2048 * 2 - 1024, 2047 * 2 - 1024


def test_ct_rescale_and_linear_window_follow_pydicom():
    ds = ct_dataset(STORED, WindowCenter=40, WindowWidth=400)
    decoded, read = decode_ds(ds)
    hu = apply_modality_lut(read.pixel_array, read)
    expected = (apply_voi_lut(hu, read) - Y_MIN) / (Y_MAX - Y_MIN)
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    # The standard's LINEAR window is ((x - (c - 0.5)) / (w - 1) + 0.5), not (x - (c - w/2)) / w: at HU 40
    # (stored 532) the two differ by 0.00125, which the tolerance above would catch.
    assert hu[1, 3] == 40
    assert decoded.pixels[1, 3] == pytest.approx((40 - 39.5) / 399 + 0.5, abs=1e-6)
    assert decoded.pixels[1, 3] != pytest.approx(0.5, abs=1e-4)
    assert decoded.metadata["units"] == "HU"
    assert decoded.metadata["window"]["function"] == "LINEAR"


def test_linear_exact_window_follows_pydicom():
    ds = ct_dataset(STORED, WindowCenter=40, WindowWidth=400, VOILUTFunction="LINEAR_EXACT")
    decoded, read = decode_ds(ds)
    expected = (apply_voi_lut(apply_modality_lut(read.pixel_array, read), read) - Y_MIN) / (Y_MAX - Y_MIN)
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    # LINEAR_EXACT is the plain formula: HU 40 is exactly the middle.
    assert decoded.pixels[1, 3] == pytest.approx(0.5, abs=1e-6)
    assert "(LINEAR_EXACT)" in decoded.conversion
    assert decoded.metadata["window"]["function"] == "LINEAR_EXACT"


def test_sigmoid_window_follows_pydicom():
    ds = ct_dataset(STORED, WindowCenter=40, WindowWidth=400, VOILUTFunction="SIGMOID")
    decoded, read = decode_ds(ds)
    expected = (apply_voi_lut(apply_modality_lut(read.pixel_array, read), read) - Y_MIN) / (Y_MAX - Y_MIN)
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    # A sigmoid never clips: values far outside the window are near, not at, 0 and 1; the centre is 0.5.
    assert decoded.pixels[1, 3] == pytest.approx(0.5, abs=1e-6)
    assert 0 < decoded.pixels[0, 1] < 0.01 and 0.99 < decoded.pixels[2, 3] < 1  # HU -2224 and 1376
    assert "(SIGMOID)" in decoded.conversion


def test_several_windows_use_the_first_and_list_the_others():
    ds = ct_dataset(
        STORED,
        WindowCenter=[40, 400],
        WindowWidth=[400, 1500],
        WindowCenterWidthExplanation=["SOFT TISSUE", "BONE"],
    )
    decoded, read = decode_ds(ds)
    expected = (apply_voi_lut(apply_modality_lut(read.pixel_array, read), read, index=0) - Y_MIN) / (
        Y_MAX - Y_MIN
    )
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    window = decoded.metadata["window"]
    assert window["centre"] == 40 and window["width"] == 400 and window["explanation"] == "SOFT TISSUE"
    assert window["alternatives"] == [{"centre": 400.0, "width": 1500.0, "explanation": "BONE"}]
    assert "first of 2 windows" in decoded.conversion and "400 / 1500 “BONE”" in decoded.conversion


def test_voi_lut_sequence_is_applied_before_any_window():
    # 8-bit LUT of 256 entries starting at stored value 500 (no rescale here: the LUT maps stored values).
    table = [min(255, (i * 7) % 256) for i in range(256)]  # deliberately non-monotonic: not a window
    item = Dataset()
    item.LUTDescriptor = [256, 500, 8]
    item.add_new(0x00283006, "US", table)  # LUT Data
    item.LUTExplanation = "TEST LUT"
    ds = ct_dataset(STORED, WindowCenter=40, WindowWidth=400, VOILUTSequence=Sequence([item]))
    del ds.RescaleSlope, ds.RescaleIntercept
    decoded, read = decode_ds(ds)
    expected = apply_voi_lut(read.pixel_array, read, prefer_lut=True) / 255.0
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert decoded.pixels[0, 0] == pytest.approx(table[0] / 255)  # below the first mapped value
    assert decoded.pixels[1, 1] == pytest.approx(table[30] / 255)  # stored 530
    assert "VOI LUT from the file applied (TEST LUT)" in decoded.conversion
    assert decoded.metadata["window"]["function"] == "LUT"


def test_voi_lut_after_rescale_maps_the_modality_output():
    table = list(range(0, 4096, 16))  # 256 entries, 12-bit output, linear ramp from HU -100
    item = Dataset()
    item.LUTDescriptor = [256, -100, 12]
    item.add_new(0x00283006, "US", table)
    ds = ct_dataset(STORED, VOILUTSequence=Sequence([item]))
    decoded, read = decode_ds(ds)
    hu = apply_modality_lut(read.pixel_array, read)
    expected = apply_voi_lut(hu.astype(np.int64), read) / (2**12 - 1)
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)


def test_a_window_the_standard_forbids_is_reported_not_guessed():
    ds = ct_dataset(STORED, WindowCenter=40, WindowWidth=0)  # LINEAR needs width >= 1
    decoded, read = decode_ds(ds)
    hu = apply_modality_lut(read.pixel_array, read)
    np.testing.assert_allclose(decoded.pixels, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)
    assert "cannot be applied" in decoded.conversion
    assert decoded.metadata["window"]["source"] == "data range"
    assert decoded.metadata["window"]["rejected"]["width"] == 0


def test_monochrome1_window_is_inverted_after_pydicom():
    ds = ct_dataset(STORED, WindowCenter=40, WindowWidth=400, PhotometricInterpretation="MONOCHROME1")
    decoded, read = decode_ds(ds)
    expected = (apply_voi_lut(apply_modality_lut(read.pixel_array, read), read) - Y_MIN) / (Y_MAX - Y_MIN)
    np.testing.assert_allclose(decoded.pixels, 1 - expected, atol=1e-6)
