"""Image decoding: every supported format, every deliberate conversion, every kind of bad input."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageOps
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from app.core.imaging import imageio as imageio_module
from app.core.imaging.imageio import DecodedImage, decode_image, pixels_to_png, pixels_to_uint8
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedMedia

MAX_PIXELS = 4_000_000


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rgb_array() -> np.ndarray:
    """A (20, 30, 3) uint8 image with random colours (seeded)."""
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def decode(data: bytes, name: str = "x.bin") -> DecodedImage:
    return decode_image(data, name, MAX_PIXELS)


# ---------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "kind", "kwargs"),
    [("PNG", "png", {}), ("BMP", "bmp", {}), ("WEBP", "webp", {"lossless": True}), ("TIFF", "tiff", {})],
)
def test_lossless_rgb_formats_round_trip_exactly(rgb_array, fmt, kind, kwargs):
    decoded = decode(encode(Image.fromarray(rgb_array), fmt, **kwargs))
    assert decoded.kind == kind
    assert decoded.pixels.dtype == np.float32
    assert decoded.pixels.shape == (20, 30, 3)
    assert decoded.mode == "RGB" and decoded.channels == 3
    np.testing.assert_allclose(decoded.pixels, rgb_array / 255.0, atol=1e-6)
    assert "8-bit RGB" in decoded.conversion and "[0, 255] to [0, 1]" in decoded.conversion


def test_jpeg_decodes_close_to_the_original():
    # Smooth content, so JPEG's loss stays small and the comparison is meaningful.
    ramp = np.linspace(0, 255, 64, dtype=np.float64)
    arr = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (64, 1)), np.full((64, 64), 128.0)], axis=2)
    arr_u8 = arr.astype(np.uint8)
    decoded = decode(encode(Image.fromarray(arr_u8), "JPEG", quality=95))
    assert decoded.kind == "jpeg" and decoded.pixels.shape == (64, 64, 3)
    assert np.abs(decoded.pixels - arr_u8 / 255.0).mean() < 0.02


def test_greyscale_stays_greyscale(rgb_array):
    grey = rgb_array[:, :, 0]
    decoded = decode(encode(Image.fromarray(grey, mode="L"), "PNG"))
    assert decoded.pixels.shape == (20, 30)
    assert decoded.mode == "L" and decoded.channels == 1
    assert decoded.source_mode == "L" and decoded.bit_depth == 8
    np.testing.assert_allclose(decoded.pixels, grey / 255.0, atol=1e-6)
    assert decoded.conversion == "8-bit greyscale PNG scaled from [0, 255] to [0, 1]."


def test_16_bit_tiff_scaled_from_its_value_range():
    values = np.arange(40 * 50, dtype=np.int64).reshape(40, 50) * 4095 // (40 * 50 - 1)
    arr16 = values.astype(np.uint16)
    decoded = decode(encode(Image.fromarray(arr16), "TIFF"), "scan.tif")
    assert decoded.kind == "tiff" and decoded.bit_depth == 16
    assert decoded.source_mode.startswith("I;16")
    assert decoded.pixels.shape == (40, 50)
    assert decoded.conversion == "16-bit greyscale TIFF scaled from [0, 4095] to [0, 1]."
    np.testing.assert_allclose(decoded.pixels, arr16 / 4095.0, atol=1e-6)


def test_16_bit_png_keeps_all_its_levels():
    arr16 = (np.arange(256 * 4, dtype=np.uint32).reshape(16, 64) * 37 % 65536).astype(np.uint16)
    decoded = decode(encode(Image.fromarray(arr16), "PNG"))
    lo, hi = int(arr16.min()), int(arr16.max())
    np.testing.assert_allclose(decoded.pixels, (arr16.astype(np.float64) - lo) / (hi - lo), atol=1e-6)
    # More distinct levels than 8 bits could hold: nothing was squeezed through uint8.
    assert len(np.unique(decoded.pixels)) > 256


def tiff_bytes(arr: np.ndarray, **kwargs: object) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, arr, **kwargs)
    return buffer.getvalue()


def test_16_bit_rgb_tiff_keeps_its_precision():
    rgb16 = np.random.default_rng(8).integers(0, 65536, (12, 10, 3)).astype(np.uint16)
    decoded = decode(tiff_bytes(rgb16, photometric="rgb"), "colour16.tif")
    lo, hi = int(rgb16.min()), int(rgb16.max())
    assert decoded.pixels.shape == (12, 10, 3) and decoded.bit_depth == 16
    # One range for all three channels keeps the colour balance.
    np.testing.assert_allclose(decoded.pixels, (rgb16.astype(np.float64) - lo) / (hi - lo), atol=1e-6)
    assert decoded.conversion == f"16-bit RGB TIFF scaled from [{lo}, {hi}] to [0, 1] (read with tifffile)."


def test_float_rgb_and_signed_tiffs():
    rgb = np.linspace(0.25, 0.75, 6 * 5 * 3, dtype=np.float32).reshape(6, 5, 3)
    decoded = decode(tiff_bytes(rgb, photometric="rgb"))
    np.testing.assert_allclose(decoded.pixels, (rgb - 0.25) / 0.5, atol=1e-5)
    assert "32-bit float RGB TIFF" in decoded.conversion
    signed = np.array([[-1000, 0], [500, 3000]], dtype=np.int16)
    grey = decode(tiff_bytes(signed))
    np.testing.assert_allclose(grey.pixels, (signed + 1000) / 4000.0, atol=1e-6)
    assert "16-bit signed greyscale TIFF scaled from [-1000, 3000]" in grey.conversion


def test_16_bit_rgba_tiff_alpha_is_a_fraction_of_full_scale():
    rgba = np.zeros((2, 2, 4), dtype=np.uint16)
    rgba[..., 0] = 40000
    rgba[..., 1] = 20000
    rgba[0, 0, 3] = 65535
    rgba[1, 1, 3] = 0
    decoded = decode(tiff_bytes(rgba, photometric="rgb", extrasamples=["unassalpha"]))
    assert decoded.pixels.shape == (2, 2, 3)
    # Colour range [0, 40000]; opaque keeps its colour, transparent turns white.
    np.testing.assert_allclose(decoded.pixels[0, 0], [1.0, 0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(decoded.pixels[1, 1], [1.0, 1.0, 1.0], atol=1e-6)
    assert "alpha composited on white" in decoded.conversion


def test_truncated_16_bit_rgb_tiff():
    data = tiff_bytes(np.ones((40, 40, 3), dtype=np.uint16), photometric="rgb")
    with pytest.raises(InvalidInput):
        decode(data[: len(data) // 2], "cut.tif")


def test_float_tiff_scaled_from_its_range():
    arr = np.linspace(-2.0, 6.0, 12 * 10, dtype=np.float32).reshape(12, 10)
    decoded = decode(encode(Image.fromarray(arr, mode="F"), "TIFF"))
    assert decoded.conversion == "32-bit float greyscale TIFF scaled from [-2, 6] to [0, 1]."
    np.testing.assert_allclose(decoded.pixels, (arr + 2.0) / 8.0, atol=1e-6)


def test_exif_orientation_6_rotates_clockwise():
    arr = np.zeros((20, 30, 3), dtype=np.uint8)
    arr[:10, :10] = (255, 0, 0)  # a red block at the top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode(encode(Image.fromarray(arr), "PNG", exif=exif))
    assert decoded.pixels.shape == (30, 20, 3)
    # Turning the picture 90° clockwise carries its top-left corner to the top-right.
    expected = np.rot90(arr, k=-1) / 255.0
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert "EXIF orientation 6 applied (rotated 90° clockwise)" in decoded.conversion
    assert decoded.metadata["exif_orientation"] == 6


def test_exif_orientation_in_jpeg_changes_shape():
    exif = Image.Exif()
    exif[0x0112] = 8
    decoded = decode(encode(Image.new("RGB", (48, 16), "white"), "JPEG", exif=exif))
    assert decoded.pixels.shape == (48, 16, 3)
    assert "rotated 90° counter-clockwise" in decoded.conversion


def test_palette_image_converted_to_rgb(rgb_array):
    palette_image = Image.fromarray(rgb_array).quantize(colors=16)
    decoded = decode(encode(palette_image, "PNG"))
    assert decoded.source_mode == "P"
    assert decoded.pixels.shape == (20, 30, 3)
    expected = np.asarray(palette_image.convert("RGB")) / 255.0
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert decoded.conversion == "Palette (P) PNG converted to RGB."


def test_grey_palette_becomes_greyscale(rgb_array):
    grey_palette = Image.fromarray(rgb_array[:, :, 1], mode="L").convert("P")
    decoded = decode(encode(grey_palette, "PNG"))
    assert decoded.pixels.shape == (20, 30)
    np.testing.assert_allclose(decoded.pixels, rgb_array[:, :, 1] / 255.0, atol=1e-6)
    assert "converted to greyscale" in decoded.conversion


def test_rgba_composited_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 0  # fully transparent -> white
    rgba[1, 1, 3] = 255  # opaque -> the colour itself
    rgba[2, 2, 3] = 128
    decoded = decode(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    assert decoded.pixels.shape == (4, 4, 3)
    np.testing.assert_allclose(decoded.pixels[0, 0], [1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(decoded.pixels[1, 1], [200 / 255, 0.0, 0.0], atol=1e-6)
    a = 128 / 255
    np.testing.assert_allclose(decoded.pixels[2, 2], [200 / 255 * a + 1 - a, 1 - a, 1 - a], atol=1e-6)
    assert decoded.conversion == "RGBA PNG composited on white, alpha dropped."


def test_greyscale_with_alpha_stays_greyscale():
    la = np.zeros((3, 3, 2), dtype=np.uint8)
    la[..., 0] = 100
    la[..., 1] = 255
    la[0, 0, 1] = 0
    decoded = decode(encode(Image.fromarray(la, mode="LA"), "PNG"))
    assert decoded.pixels.shape == (3, 3)
    assert decoded.pixels[0, 0] == pytest.approx(1.0)
    assert decoded.pixels[1, 1] == pytest.approx(100 / 255)
    assert "composited on white, alpha dropped" in decoded.conversion


def test_cmyk_jpeg_converted_to_rgb(rgb_array):
    cmyk = Image.fromarray(rgb_array).convert("CMYK")
    decoded = decode(encode(cmyk, "JPEG", quality=95))
    assert decoded.source_mode == "CMYK"
    assert decoded.pixels.shape == (20, 30, 3)
    assert "CMYK JPEG converted to RGB" in decoded.conversion


def test_cmyk_tiff_converted_exactly(rgb_array):
    cmyk = Image.fromarray(rgb_array).convert("CMYK")
    decoded = decode(encode(cmyk, "TIFF"))
    np.testing.assert_allclose(decoded.pixels, np.asarray(cmyk.convert("RGB")) / 255.0, atol=1e-6)


def test_gif_uses_the_first_frame():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (12, 8), c) for c in colours]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    decoded = decode(data)
    assert decoded.kind == "gif"
    assert decoded.pixels.shape == (8, 12, 3)
    np.testing.assert_allclose(decoded.pixels[..., 0], 1.0)
    np.testing.assert_allclose(decoded.pixels[..., 1:], 0.0)
    assert "first of 3 frames used" in decoded.conversion
    assert decoded.metadata["frames"] == 3


def test_bilevel_image_is_greyscale():
    arr = np.zeros((8, 8), dtype=bool)
    arr[:, 4:] = True
    decoded = decode(encode(Image.fromarray(arr), "PNG"))
    assert decoded.pixels.shape == (8, 8)
    assert decoded.pixels[:, :4].max() == 0.0 and decoded.pixels[:, 4:].min() == 1.0


def test_pixels_to_png_round_trip(rgb_array):
    grey = rgb_array[:, :, 2] / 255.0
    decoded = decode(pixels_to_png(grey.astype(np.float32)))
    assert decoded.pixels.shape == grey.shape
    np.testing.assert_allclose(decoded.pixels, grey, atol=1e-6)
    colour = decode(pixels_to_png((rgb_array / 255.0).astype(np.float32)))
    np.testing.assert_allclose(colour.pixels, rgb_array / 255.0, atol=1e-6)
    assert pixels_to_uint8(np.array([[-1.0, 2.0]])).tolist() == [[0, 255]]


# ------------------------------------------------------------------------------------------------ DICOM


def dicom_bytes(
    pixels: np.ndarray | None,
    *,
    frames: int | None = None,
    photometric: str = "MONOCHROME2",
    modality: str = "OT",
    preamble: bool = True,
    extra: dict[str, object] | None = None,
) -> bytes:
    """A minimal uncompressed 16-bit DICOM built with pydicom; pixels (H, W) or (F, H, W) uint16."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    shape = (4, 4) if pixels is None else pixels.shape[-2:]
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if frames is not None:
        ds.NumberOfFrames = frames
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    buffer = io.BytesIO()
    if preamble:
        ds.preamble = b"\0" * 128
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    else:
        ds.preamble = None
        pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


def test_dicom_ct_small_in_hounsfield_units():
    path = get_testdata_file("CT_small.dcm", download=False)
    data = Path(path).read_bytes()
    decoded = decode(data, "CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    assert decoded.kind == "dicom" and decoded.source_mode == "MONOCHROME2"
    assert decoded.pixels.shape == (128, 128) and decoded.bit_depth == 16
    np.testing.assert_allclose(decoded.pixels, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)
    assert "DICOM CT: rescale slope/intercept applied (HU)" in decoded.conversion
    assert f"[{int(hu.min())}, {int(hu.max())}]" in decoded.conversion
    assert decoded.metadata["modality"] == "CT"
    assert decoded.metadata["units"] == "HU"
    assert decoded.metadata["pixel_spacing_mm"] == pytest.approx([float(v) for v in ds.PixelSpacing])
    assert decoded.metadata["rows"] == 128 and decoded.metadata["columns"] == 128
    # No identifying data leaves the file.
    assert "PatientName" not in str(decoded.metadata) and str(ds.PatientName) not in str(decoded.metadata)


def test_dicom_ct_window_from_the_file():
    path = get_testdata_file("CT_small.dcm", download=False)
    ds = pydicom.dcmread(path)
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    buffer = io.BytesIO()
    ds.save_as(buffer)
    decoded = decode(buffer.getvalue(), "ct.dcm")
    # The oracle is pydicom: modality LUT, then the VOI window, scaled by the window's output range
    # (PS3.3 C.11.2.1.2: signed 16-bit stored values, rescaled like the pixels).
    hu = apply_modality_lut(ds.pixel_array, ds)
    shown = apply_voi_lut(hu, ds)
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    y_min, y_max = -32768 * slope + intercept, 32767 * slope + intercept
    np.testing.assert_allclose(decoded.pixels, (shown - y_min) / (y_max - y_min), atol=1e-6)
    assert decoded.conversion == (
        "DICOM CT: rescale slope/intercept applied (HU), window centre 40 / width 400 from the file."
    )
    assert decoded.metadata["window"] == {
        "centre": 40.0,
        "width": 400.0,
        "source": "file",
        "function": "LINEAR",
    }


def test_dicom_mr_small_uses_its_window():
    path = get_testdata_file("MR_small.dcm", download=False)
    decoded = decode(Path(path).read_bytes(), "MR_small.dcm")
    ds = pydicom.dcmread(path)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    # MR_small: signed 16-bit, no rescale, so the window's output range is [-32768, 32767].
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16 and "RescaleSlope" not in ds
    expected = (apply_voi_lut(ds.pixel_array, ds) + 32768) / 65535
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert decoded.pixels.shape == (64, 64)
    assert decoded.metadata["modality"] == "MR"
    assert f"window centre {centre:g} / width {width:g} from the file" in decoded.conversion


def test_dicom_monochrome1_is_inverted():
    arr = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    decoded = decode(dicom_bytes(arr, photometric="MONOCHROME1"), "m1.dcm")
    np.testing.assert_allclose(decoded.pixels, 1.0 - arr / 400.0, atol=1e-6)
    assert "MONOCHROME1 inverted" in decoded.conversion


def test_dicom_without_preamble_detected_by_extension():
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4) * 10
    data = dicom_bytes(arr, preamble=False)
    assert data[128:132] != b"DICM"
    decoded = decode(data, "slice.dcm")
    assert decoded.kind == "dicom"
    np.testing.assert_allclose(decoded.pixels, arr / 110.0, atol=1e-6)
    # The same bytes under another name are not guessed at.
    with pytest.raises(UnsupportedMedia):
        decode(data, "slice.bin")


def test_dicom_without_pixel_data_is_rejected():
    with pytest.raises(InvalidInput) as info:
        decode(dicom_bytes(None), "report.dcm")
    assert "without pixel data" in info.value.message
    assert info.value.field == "file"


def test_multi_frame_dicom_is_rejected():
    volume = np.zeros((3, 8, 8), dtype=np.uint16)
    with pytest.raises(UnsupportedMedia) as info:
        decode(dicom_bytes(volume, frames=3), "volume.dcm")
    assert "volumes are not supported yet, upload one slice" in info.value.message
    assert info.value.extra["frames"] == 3


def test_dicom_with_too_many_pixels_is_rejected_before_decoding():
    arr = np.zeros((40, 50), dtype=np.uint16)
    with pytest.raises(PayloadTooLarge):
        decode_image(dicom_bytes(arr), "big.dcm", max_pixels=1000)


def test_compressed_dicom_without_a_decoder_is_rejected():
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here, so this file would decode")
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False)
    with pytest.raises(UnsupportedMedia) as info:
        decode(Path(path).read_bytes(), "jls.dcm")
    assert "JPEG-LS" in info.value.message and "cannot be decoded" in info.value.message


@pytest.mark.parametrize(
    ("module", "expected"), [("pydicom", "pydicom"), ("pydicom.pixels", "pydicom.pixels")]
)
def test_dicom_without_pydicom_3_names_the_package_not_a_damaged_file(monkeypatch, module, expected):
    # None in sys.modules makes the import fail as it would without pydicom, or with pydicom 2 (no .pixels).
    monkeypatch.setitem(sys.modules, module, None)
    data = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
    with pytest.raises(UnsupportedMedia) as info:
        decode(data, "ct.dcm")
    message = info.value.message
    assert "damaged" not in message
    assert "pydicom" in message and "version 3" in message and expected in message
    assert info.value.field == "file"


def test_tiff_without_tifffile_names_the_package(monkeypatch):
    data = tiff_bytes(np.full((4, 5, 3), 1000, dtype=np.uint16), photometric="rgb")
    monkeypatch.setitem(sys.modules, "tifffile", None)
    with pytest.raises(UnsupportedMedia) as info:
        decode(data, "rgb16.tif")
    assert "tifffile" in info.value.message and "damaged" not in info.value.message


def test_an_import_error_inside_a_decoder_is_not_a_damaged_file(monkeypatch):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'olefile'", name="olefile")

    monkeypatch.setattr(imageio_module, "_decode_pil", missing)
    with pytest.raises(UnsupportedMedia) as info:
        decode(encode(Image.fromarray(np.zeros((4, 4), dtype=np.uint8)), "PNG"), "a.png")
    assert "olefile" in info.value.message and "damaged" not in info.value.message


def test_truncated_dicom_is_rejected():
    arr = np.arange(64, dtype=np.uint16).reshape(8, 8)
    data = dicom_bytes(arr)
    with pytest.raises(InvalidInput):
        decode(data[:-40], "cut.dcm")


# -------------------------------------------------------------------------------------------- bad input


def test_empty_file():
    with pytest.raises(InvalidInput) as info:
        decode(b"", "nothing.png")
    assert "empty" in info.value.message and info.value.field == "file"


def test_text_is_not_an_image():
    with pytest.raises(UnsupportedMedia) as info:
        decode(b"hello, this is a text file\n" * 10, "notes.txt")
    assert info.value.message.startswith("“notes.txt” is not an image ConvScope can read; supported:")
    assert "DICOM" in info.value.message and info.value.field == "file"


def test_truncated_png(rgb_array):
    data = encode(Image.fromarray(rgb_array), "PNG")
    with pytest.raises(InvalidInput) as info:
        decode(data[: len(data) // 2], "cut.png")
    assert "truncated" in info.value.message


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's calling card)."""
    data = encode(Image.new("L", (1, 1)), "PNG")
    ihdr_start = 8 + 8  # signature, then chunk length + type
    body = struct.pack(">II", width, height) + data[ihdr_start + 8 : ihdr_start + 13]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    return data[:ihdr_start] + body + crc + data[ihdr_start + 17 :]


@pytest.mark.parametrize("side", [5_000, 100_000])
def test_decompression_bomb_rejected_from_the_header(side):
    data = png_declaring(side, side)
    assert len(data) < 200
    with pytest.raises(PayloadTooLarge) as info:
        decode(data, "bomb.png")
    assert info.value.field == "file"
    # The limit quoted is ConvScope's own (the one the upload page states), never PIL's internal one.
    assert f"the limit is {MAX_PIXELS:,} pixels" in info.value.message
    assert "178956970" not in info.value.message


def test_pixel_limit_is_inclusive():
    data = encode(Image.new("L", (10, 10)), "PNG")
    assert decode_image(data, "ok.png", max_pixels=100).pixels.shape == (10, 10)
    with pytest.raises(PayloadTooLarge) as info:
        decode_image(data, "ok.png", max_pixels=99)
    assert "10 × 10 = 100 pixels" in info.value.message


def test_filename_is_cleaned_in_messages():
    with pytest.raises(UnsupportedMedia) as info:
        decode(b"not an image at all", "../../etc/\x00passwd")
    assert "“passwd”" in info.value.message


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "TIFF16", "DICOM"])
def test_mangled_files_give_domain_errors_only(fmt, rgb_array):
    """Truncations and byte flips (seeded) either decode to valid pixels or raise a ConvScope error."""
    from app.errors import ConvScopeError

    if fmt == "DICOM":
        data, name = Path(get_testdata_file("MR_small.dcm", download=False)).read_bytes(), "m.dcm"
    elif fmt == "TIFF16":
        data, name = tiff_bytes(rgb_array.astype(np.uint16) * 200, photometric="rgb"), "t.tif"
    else:
        data, name = encode(Image.fromarray(rgb_array), fmt), f"x.{fmt.lower()}"
    rng = np.random.default_rng(sum(map(ord, fmt)))
    outcomes = {"decoded": 0, "rejected": 0}
    for _ in range(60):
        mangled = bytearray(data)
        if rng.random() < 0.5:
            mangled = mangled[: int(rng.integers(1, len(mangled)))]
        else:
            for _ in range(int(rng.integers(1, 8))):
                mangled[int(rng.integers(0, min(len(mangled), 400)))] = int(rng.integers(0, 256))
        try:
            decoded = decode(bytes(mangled), name)
        except ConvScopeError as exc:
            assert exc.field == "file" and exc.message
            outcomes["rejected"] += 1
        else:
            assert decoded.pixels.dtype == np.float32 and decoded.pixels.ndim in (2, 3)
            assert float(decoded.pixels.min()) >= 0.0 and float(decoded.pixels.max()) <= 1.0
            outcomes["decoded"] += 1
    assert outcomes["rejected"] > 0


# ------------------------------------------------------------- large images: strips, working copy, stats


def _reference_reduce(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Area average over factor x factor blocks, partial blocks at the edges, the obvious (slow) way."""
    height, width = pixels.shape[:2]
    rows = [pixels[y : y + factor] for y in range(0, height, factor)]
    return np.stack(
        [
            np.stack([row[:, x : x + factor].mean(axis=(0, 1)) for x in range(0, width, factor)])
            for row in rows
        ]
    )


def _samples() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, (37, 53), dtype=np.uint8)])
    grey16 = rng.integers(300, 60000, (37, 53), dtype=np.uint16)
    palette_grey = Image.fromarray(rng.integers(0, 256, (37, 53), dtype=np.uint8)).convert("P")
    palette = Image.fromarray(rgb).quantize(16)
    palette.info["transparency"] = 3
    return {
        "L": encode(Image.fromarray(rgb[..., 0]), "PNG"),
        "RGB": encode(Image.fromarray(rgb), "PNG"),
        "RGBA": encode(Image.fromarray(rgba), "PNG"),
        "LA": encode(Image.fromarray(rgba[..., 2:]), "PNG"),
        "I;16": encode(Image.fromarray(grey16), "PNG"),
        "P grey": encode(palette_grey, "PNG"),
        "P alpha": encode(palette, "PNG", transparency=3),
        "CMYK": encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95),
    }


@pytest.mark.parametrize("name", list(_samples()))
def test_strip_wise_conversion_equals_whole_image_conversion(monkeypatch, name):
    data = _samples()[name]
    whole = decode(data)  # one strip: the image is far smaller than STRIP_PIXELS
    monkeypatch.setattr(imageio_module, "STRIP_PIXELS", 7)  # a strip per row
    strips = decode(data)
    assert strips.conversion == whole.conversion
    np.testing.assert_array_equal(strips.pixels, whole.pixels)


@pytest.mark.parametrize("name", list(_samples()))
def test_max_side_gives_an_area_average_of_the_full_decode(monkeypatch, name):
    data = _samples()[name]
    full = decode(data)
    monkeypatch.setattr(imageio_module, "STRIP_PIXELS", 200)
    small = decode_image(data, "x.bin", MAX_PIXELS, max_side=20, with_stats=True)
    # The record's facts are the image's: size and sentence are those of the full-resolution decode.
    assert (small.width, small.height) == (53, 37) and small.reduced
    assert small.conversion == full.conversion and small.mode == full.mode
    assert max(small.pixels.shape[:2]) <= 20 and small.pixels.dtype == np.float32
    assert small.pixels.shape[:2] == (13, 18)  # factor ceil(53 / 20) = 3
    np.testing.assert_allclose(small.pixels, _reference_reduce(full.pixels.astype(np.float64), 3), atol=1e-6)


def test_statistics_match_the_float_computation(monkeypatch):
    data = _samples()["RGB"]
    full = decode(data).pixels
    monkeypatch.setattr(imageio_module, "STRIP_PIXELS", 11)
    stats = decode_image(data, "x.png", MAX_PIXELS, max_side=8, with_stats=True).stats
    assert stats is not None
    assert stats["shape"] == [37, 53, 3] and stats["dtype"] == "float32"
    assert stats["min"] == float(full.min()) and stats["max"] == float(full.max())
    assert stats["mean"] == pytest.approx(float(full.mean()), rel=1e-6)
    assert stats["std"] == pytest.approx(float(full.std()), rel=1e-6)
    assert stats["channel_means"] == pytest.approx(
        [float(v) for v in full.reshape(-1, 3).mean(axis=0)], rel=1e-5
    )
    grey = imageio_module.pixel_statistics(full[..., 0])
    assert "channel_means" not in grey and grey["std"] == pytest.approx(float(full[..., 0].std()), rel=1e-6)


def test_dicom_is_reduced_after_decoding():
    arr = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 3).astype(np.uint16)
    decoded = decode_image(dicom_bytes(arr), "slice.dcm", MAX_PIXELS, max_side=10, with_stats=True)
    full = decode_image(dicom_bytes(arr), "slice.dcm", MAX_PIXELS)
    assert (decoded.width, decoded.height) == (30, 40) and decoded.pixels.shape == (10, 8)
    np.testing.assert_allclose(
        decoded.pixels, _reference_reduce(full.pixels.astype(np.float64), 4), atol=1e-6
    )
    assert decoded.stats is not None and decoded.stats["shape"] == [40, 30]


def test_npy_chunks_load_back():
    arr = np.random.default_rng(2).random((33, 7, 3)).astype(np.float32)
    data = b"".join(imageio_module.npy_chunks(arr, chunk_bytes=100))
    assert len(data) == imageio_module.npy_size(arr)
    np.testing.assert_array_equal(np.load(io.BytesIO(data), allow_pickle=False), arr)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_to_the_pixels_matches_pil(monkeypatch, orientation):
    rgb = np.random.default_rng(9).integers(0, 256, (21, 34, 3), dtype=np.uint8)
    picture = Image.fromarray(rgb)
    exif = picture.getexif()
    exif[0x0112] = orientation
    data = encode(picture, "PNG", exif=exif.tobytes())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))), dtype=np.float32) / 255.0
    monkeypatch.setattr(imageio_module, "STRIP_PIXELS", 50)
    decoded = decode(data)
    np.testing.assert_array_equal(decoded.pixels, upright)
    assert (decoded.height, decoded.width) == upright.shape[:2]
    small = decode_image(data, "x.png", MAX_PIXELS, max_side=12, with_stats=True)
    assert (small.height, small.width) == upright.shape[:2] and max(small.pixels.shape) <= 12
    assert small.stats is not None and small.stats["shape"] == list(upright.shape)
    if orientation > 1:
        assert "EXIF orientation" in decoded.conversion
