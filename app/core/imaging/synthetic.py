"""Synthetic images and datasets the project generates itself, so that it works offline.

Everything here is pure numpy (plus PIL for drawing digits and shapes) and deterministic given a seed or a
``numpy.random.Generator``:

* ``ct_slice`` / ``ct_phantom``: a chest-CT-like axial slice (body, subcutaneous fat, two dark lungs with
  small vessels, heart and mediastinum, aorta, vertebra, ribs and sternum, mild noise) with optional round
  lung nodules. The same generator state gives the same anatomy and noise whether or not nodules are
  added, so a slice can be shown "with and without" its nodule.
* ``render_digit``: a digit 0-9, white on black like MNIST, drawn either with PIL's bundled font or as
  jittered pen strokes, then distorted (rotation, scale, shear, translation, stroke width, blur, noise).
* ``sample_shapes``: a colour image of simple shapes for edge filters.
* ``nodule_dataset`` / ``digit_dataset``: labelled arrays for training the built-in models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage

__all__ = [
    "CTPhantom",
    "Nodule",
    "ct_phantom",
    "ct_slice",
    "digit_dataset",
    "nodule_dataset",
    "render_digit",
    "sample_ct_slice",
    "sample_digit",
    "sample_shapes",
]

# Grey levels of the phantom's tissues on a [0, 1] display scale (roughly a lung window).
_AIR = 0.0
_LUNG = 0.07
_FAT = 0.30
_SOFT = 0.46
_BLOOD = 0.55
_BONE = 0.92
_MARROW = 0.70

# Nodule radii are specified at this reference size and scaled with the image.
_REFERENCE_SIZE = 128
NODULE_RADIUS_RANGE: tuple[float, float] = (3.0, 12.0)


@dataclass(frozen=True)
class Nodule:
    """A round lung nodule in pixel coordinates of the slice it is drawn on.

    ``row``/``col`` is the centre, ``radius`` in pixels, ``lung`` is "right" (image left, patient right)
    or "left" (image right), or "" when the nodule was placed by the caller.
    """

    row: float
    col: float
    radius: float
    lung: str = ""


@dataclass(frozen=True)
class CTPhantom:
    """A synthetic slice and the ground truth behind it.

    ``image`` (H, W) float32 in [0, 1]; ``lung_mask`` (H, W) bool (both lungs, excluding heart and
    mediastinum); ``body_mask`` (H, W) bool; ``nodules`` the nodules drawn.
    """

    image: np.ndarray
    lung_mask: np.ndarray
    body_mask: np.ndarray
    nodules: tuple[Nodule, ...]


def _ellipse(
    u: np.ndarray, v: np.ndarray, cx: float, cy: float, ax: float, ay: float, angle: float = 0.0
) -> np.ndarray:
    """Level function of an ellipse on normalised coordinates: < 1 inside. (1, W), (H, 1) -> (H, W)."""
    du, dv = u - cx, v - cy
    if angle == 0.0:  # separable: the 1-D terms broadcast once, far cheaper than full-image arithmetic
        return np.asarray((du / ax) ** 2 + (dv / ay) ** 2)
    c, s = math.cos(angle), math.sin(angle)
    x = (c * du + s * dv) / ax
    y = (-s * du + c * dv) / ay
    return np.asarray(x * x + y * y)


def _soft(level: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator from an ellipse level (1 inside, 0 outside, a smooth rim of ``width``)."""
    # Partial-volume edges: a hard mask would give aliased staircase edges that look nothing like CT.
    return np.clip((1.0 - level) / width + 0.5, 0.0, 1.0)


def _paint(img: np.ndarray, weight: np.ndarray, value: float) -> None:
    """Blend ``value`` into ``img`` in place where ``weight`` (in [0, 1]) is set."""
    img *= 1.0 - weight
    img += weight * value


def _window(coords: np.ndarray, lo: float, hi: float) -> slice:
    """Index range of the sorted 1-D ``coords`` that covers [lo, hi] (small shapes touch few pixels)."""
    return slice(int(np.searchsorted(coords, lo)), int(np.searchsorted(coords, hi, side="right")))


def _paint_ellipse(
    img: np.ndarray,
    coords: np.ndarray,
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    angle: float,
    value: float,
) -> None:
    """Paint a small soft-edged ellipse (normalised coordinates) into ``img`` (H, W), touching only its box."""
    reach = max(ax, ay) + 4.0 * float(coords[1] - coords[0])
    rows, cols = _window(coords, cy - reach, cy + reach), _window(coords, cx - reach, cx + reach)
    u, v = coords[None, cols], coords[rows, None]
    level = _ellipse(u, v, cx, cy, ax, ay, angle)
    edge = 2.0 * float(coords[1] - coords[0])
    _paint(img[rows, cols], _soft(level, edge / min(ax, ay)), value)


def _paint_disc(img: np.ndarray, row: float, col: float, radius: float, value: float) -> None:
    """Paint a disc (pixel coordinates) with a one-pixel soft rim into ``img`` (H, W), touching only its box."""
    h, w = img.shape
    r0, r1 = max(0, int(row - radius - 2)), min(h, int(row + radius + 3))
    c0, c1 = max(0, int(col - radius - 2)), min(w, int(col + radius + 3))
    if r0 >= r1 or c0 >= c1:
        return
    rr = np.arange(r0, r1, dtype=np.float64)[:, None]
    cc = np.arange(c0, c1, dtype=np.float64)[None, :]
    dist = np.sqrt((rr - row) ** 2 + (cc - col) ** 2)
    # Soft rim of about one pixel: round, partial-volumed edges rather than pixel staircases.
    _paint(img[r0:r1, c0:c1], np.clip(radius + 0.5 - dist, 0.0, 1.0), value)


def ct_phantom(
    rng: np.random.Generator,
    size: int = 128,
    nodules: int | Sequence[Nodule] = 0,
    *,
    noise: float = 0.02,
    radius_range: tuple[float, float] = NODULE_RADIUS_RANGE,
) -> CTPhantom:
    """Draw a synthetic chest-CT-like axial slice, returning the image with its masks and nodules.

    ``nodules`` is either a count (each placed at a random position fully inside a randomly chosen lung,
    radius uniform in ``radius_range`` pixels at 128 px, scaled with ``size``) or explicit ``Nodule``s in
    pixel coordinates (drawn into lung tissue only: any part outside the lungs stays hidden, as the chest
    wall and mediastinum would hide it). The anatomy, vessels and noise depend only on the generator state, not on
    ``nodules``, so the same seed gives the same slice with and without nodules.
    Returns a ``CTPhantom`` whose ``image`` is (size, size) float32 in [0, 1].
    """
    if size < 32:
        raise ValueError("size must be at least 32 pixels")
    scale = size / _REFERENCE_SIZE
    coords = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    u, v = coords[None, :], coords[:, None]  # u: columns, v: rows (anterior at the top)
    edge = 4.0 / size  # rim width of soft edges in level units, about one pixel

    # Anatomy parameters, all drawn first and in a fixed order (keeps slices reproducible).
    body_ax = 0.86 + rng.uniform(-0.05, 0.04)
    body_ay = 0.64 + rng.uniform(-0.05, 0.05)
    body_cy = 0.04 + rng.uniform(-0.03, 0.03)
    fat = rng.uniform(0.06, 0.11)
    lung_params = []
    for side in (-1.0, 1.0):
        lung_params.append(
            (
                side * (0.37 + rng.uniform(-0.03, 0.03)),  # cx
                -0.02 + rng.uniform(-0.04, 0.04),  # cy
                0.25 + rng.uniform(-0.03, 0.02),  # ax
                0.47 + rng.uniform(-0.05, 0.04),  # ay
                side * rng.uniform(-0.12, 0.05),  # tilt: apices lean inwards or outwards
            )
        )
    heart_cx = 0.10 + rng.uniform(-0.04, 0.05)
    heart_cy = 0.10 + rng.uniform(-0.04, 0.05)
    heart_a = 0.25 + rng.uniform(-0.03, 0.03)
    heart_b = 0.23 + rng.uniform(-0.03, 0.03)
    heart_angle = rng.uniform(-0.5, -0.1)
    spine_cy = body_cy + body_ay - 0.32 + rng.uniform(-0.02, 0.02)
    n_ribs = int(rng.integers(6, 9))
    rib_jitter = rng.uniform(-0.04, 0.04, size=(2, n_ribs))
    lung_tone = rng.uniform(-0.02, 0.02)

    img = np.zeros((size, size), dtype=np.float64) + _AIR
    body_level = _ellipse(u, v, 0.0, body_cy, body_ax, body_ay)
    _paint(img, _soft(body_level, edge / body_ax), _FAT)
    muscle_level = _ellipse(u, v, 0.0, body_cy, body_ax - fat, body_ay - fat)
    _paint(img, _soft(muscle_level, edge / body_ax), _SOFT)

    # Ribs: small bright ovals on an ellipse just inside the muscle, skipping the front and the spine.
    for side in (-1.0, 1.0):
        for k in range(n_ribs):
            t = math.radians(-75.0 + 150.0 * k / max(n_ribs - 1, 1)) + rib_jitter[0, k]
            rx = side * (body_ax - fat - 0.05) * math.cos(t)
            ry = body_cy + (body_ay - fat - 0.05) * math.sin(t) + rib_jitter[1, k]
            _paint_ellipse(img, coords, rx, ry, 0.045, 0.028, t, _BONE)
    _paint_ellipse(img, coords, 0.0, body_cy - body_ay + fat + 0.05, 0.06, 0.035, 0.0, _BONE)

    # Lungs, dependent parts a little denser (brighter) as in a supine patient.
    lung_soft = np.zeros_like(img)
    for cx, cy, ax, ay, tilt in lung_params:
        lung_soft = np.maximum(lung_soft, _soft(_ellipse(u, v, cx, cy, ax, ay, tilt), edge / ax))
    gradient = np.broadcast_to(_LUNG + lung_tone + 0.04 * np.clip(v + 0.4, 0.0, 1.2), (size, size))

    # Mediastinum (heart, aorta, spine) is drawn over the lungs' medial edges.
    medi_soft = np.maximum(
        _soft(_ellipse(u, v, heart_cx, heart_cy, heart_a, heart_b, heart_angle), edge / heart_a),
        _soft(_ellipse(u, v, 0.0, -0.15, 0.11, 0.30), edge / 0.11),
    )
    aorta_soft = _soft(_ellipse(u, v, 0.13, spine_cy - 0.16, 0.07, 0.07), edge / 0.07)
    spine_soft = _soft(_ellipse(u, v, 0.0, spine_cy, 0.12, 0.10), edge / 0.1)
    process_soft = _soft(_ellipse(u, v, 0.0, spine_cy + 0.15, 0.03, 0.07), edge / 0.03)
    canal_soft = _soft(_ellipse(u, v, 0.0, spine_cy + 0.13, 0.045, 0.04), edge / 0.04)
    occluders = np.maximum.reduce([medi_soft, aorta_soft, spine_soft, process_soft])
    lung_weight = lung_soft * (1.0 - occluders)

    # Pulmonary vessels: small bright dots inside the lungs, the distractors a nodule detector must ignore.
    n_vessels = int(rng.integers(18, 30))
    vessel_rc = rng.uniform(0.0, 1.0, size=(n_vessels, 2))
    vessel_r = rng.uniform(0.5, 1.5, size=n_vessels) * scale
    vessel_value = rng.uniform(0.22, 0.38, size=n_vessels)
    noise_field = rng.normal(0.0, 1.0, size=(size, size))
    nodule_seed = int(rng.integers(0, 2**62))

    lung_img = gradient.copy()
    lung_mask = lung_weight > 0.5
    lung_rows, lung_cols = np.nonzero(lung_mask)
    if lung_rows.size:
        idx = (vessel_rc[:, 0] * lung_rows.size).astype(int)
        for i, j in enumerate(idx):
            col = float(lung_cols[j]) - vessel_rc[i, 1] + 0.5
            _paint_disc(lung_img, float(lung_rows[j]), col, float(vessel_r[i]), float(vessel_value[i]))

    placed = _place_nodules(nodules, lung_mask, u, size, scale, radius_range, nodule_seed)
    for nod, value in placed:
        _paint_disc(lung_img, nod.row, nod.col, nod.radius, value)

    _paint(img, lung_weight, 0.0)
    img += lung_weight * lung_img
    _paint(img, medi_soft * (body_level < 1.0), _BLOOD)
    _paint(img, aorta_soft, _BLOOD + 0.04)
    _paint(img, spine_soft, _BONE)
    _paint_ellipse(img, coords, 0.0, spine_cy - 0.005, 0.085, 0.07, 0.0, _MARROW)
    _paint(img, process_soft, _BONE)
    _paint(img, canal_soft, _SOFT - 0.06)

    img = ndimage.gaussian_filter(img, sigma=0.6 * scale, mode="nearest")
    img += noise * noise_field
    body_mask = body_level < 1.0
    return CTPhantom(
        image=np.clip(img, 0.0, 1.0).astype(np.float32),
        lung_mask=lung_mask,
        body_mask=body_mask,
        nodules=tuple(n for n, _ in placed),
    )


def _place_nodules(
    nodules: int | Sequence[Nodule],
    lung_mask: np.ndarray,
    u: np.ndarray,
    size: int,
    scale: float,
    radius_range: tuple[float, float],
    seed: int,
) -> list[tuple[Nodule, float]]:
    """Choose nodule positions (each fully inside one lung) and grey levels."""
    rng = np.random.default_rng(seed)
    if not isinstance(nodules, int):
        return [(n, float(rng.uniform(0.45, 0.62))) for n in nodules]
    if nodules < 0:
        raise ValueError("nodules must be >= 0")
    placed: list[tuple[Nodule, float]] = []
    if nodules == 0:
        return placed
    # Distance to the lung border tells where a disc of radius r fits entirely inside the lung.
    depth = ndimage.distance_transform_edt(lung_mask)
    lo, hi = radius_range
    rr, cc = np.ogrid[:size, :size]
    for _ in range(nodules):
        first = int(rng.integers(0, 2))
        radius = float(rng.uniform(lo, hi)) * scale
        candidates = np.empty(0, dtype=np.int64)
        side = first
        # Prefer the drawn lung; if it is full, try the other one, then a smaller nodule.
        for attempt in range(12):
            side = first if attempt % 2 == 0 else 1 - first
            in_side = np.broadcast_to((u < 0) if side == 0 else (u >= 0), lung_mask.shape)
            ok = in_side & (depth >= radius + 1.5)
            for prev, _ in placed:  # keep nodules apart so they stay countable
                ok &= (rr - prev.row) ** 2 + (cc - prev.col) ** 2 > (prev.radius + radius + 2.0) ** 2
            candidates = np.flatnonzero(ok)
            if candidates.size:
                break
            if attempt % 2 == 1:
                radius *= 0.8
        if candidates.size == 0:
            raise ValueError("no room for another nodule in the lungs at this size")
        pick = int(candidates[rng.integers(0, candidates.size)])
        r, c = divmod(pick, size)
        jitter = rng.uniform(-0.5, 0.5, size=2)
        nod = Nodule(
            row=r + float(jitter[0]),
            col=c + float(jitter[1]),
            radius=radius,
            lung="right" if side == 0 else "left",
        )
        placed.append((nod, float(rng.uniform(0.45, 0.62))))
    return placed


def ct_slice(
    rng: np.random.Generator,
    size: int = 128,
    nodules: int | Sequence[Nodule] = 0,
    *,
    noise: float = 0.02,
) -> np.ndarray:
    """A synthetic chest-CT-like slice, ``(size, size)`` float32 in [0, 1]; see ``ct_phantom``."""
    return ct_phantom(rng, size, nodules, noise=noise).image


def sample_ct_slice(seed: int = 7, size: int = 256) -> np.ndarray:
    """The gallery's CT-like sample: a slice with two lung nodules, (size, size) float32 in [0, 1]."""
    return ct_slice(np.random.default_rng(seed), size, nodules=2)


# ---------------------------------------------------------------------------------------------- digits


def _arc(
    cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 16
) -> list[tuple[float, float]]:
    """Points on an elliptical arc (angles in degrees, 0 = right, 90 = down, as on screen)."""
    t = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in t]


# Pen strokes of each digit in a unit box (x right, y down): a "handwritten" style next to the font.
_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_arc(0.5, 0.5, 0.28, 0.40, -90, 270, 28)],
    1: [[(0.34, 0.26), (0.52, 0.1), (0.52, 0.9)]],
    2: [[*_arc(0.5, 0.32, 0.26, 0.22, -165, 20), (0.22, 0.9), (0.8, 0.9)]],
    3: [_arc(0.5, 0.3, 0.24, 0.2, -160, 90) + _arc(0.5, 0.7, 0.27, 0.2, -90, 160)],
    4: [[(0.66, 0.9), (0.66, 0.1), (0.2, 0.64), (0.84, 0.64)]],
    5: [[(0.76, 0.1), (0.33, 0.1), (0.3, 0.45), *_arc(0.5, 0.66, 0.27, 0.24, -125, 145)]],
    6: [[(0.7, 0.1), (0.46, 0.25), (0.3, 0.48), *_arc(0.5, 0.68, 0.23, 0.21, 180, 540, 28)]],
    7: [[(0.2, 0.1), (0.8, 0.1), (0.42, 0.9)]],
    8: [_arc(0.5, 0.3, 0.2, 0.18, 90, 450, 24), _arc(0.5, 0.7, 0.25, 0.2, -90, 270, 24)],
    9: [[*_arc(0.5, 0.32, 0.23, 0.21, 0, 360, 28), (0.7, 0.6), (0.42, 0.9)]],
}

_CANVAS = 112  # digits are drawn at 4x of 28 px and downsampled, so strokes are antialiased


@lru_cache(maxsize=8)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's bundled font (needs no system fonts; a bitmap fallback if FreeType is missing)."""
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, ImportError, OSError):  # old Pillow or no FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _draw_font_digit(digit: int, rng: np.random.Generator) -> Image.Image:
    """White digit from the bundled font on a black (_CANVAS, _CANVAS) canvas, glyph about 80 px tall."""
    glyph = Image.new("L", (_CANVAS * 2, _CANVAS * 2), 0)
    draw = ImageDraw.Draw(glyph)
    font = _font(96)
    stroke = int(rng.integers(0, 7))
    draw.text(
        (_CANVAS // 2, _CANVAS // 2), str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255
    )
    box = glyph.getbbox()
    if box is None:  # cannot happen with a real font; keep a defined result anyway
        return Image.new("L", (_CANVAS, _CANVAS), 0)
    crop = glyph.crop(box)
    target_h = 80
    target_w = max(1, round(crop.width * target_h / crop.height))
    crop = crop.resize((target_w, target_h), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    canvas.paste(crop, ((_CANVAS - target_w) // 2, (_CANVAS - target_h) // 2))
    return canvas


def _draw_stroke_digit(digit: int, rng: np.random.Generator) -> Image.Image:
    """White pen-stroke digit with jittered control points on a black (_CANVAS, _CANVAS) canvas."""
    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    width = int(rng.integers(7, 15))
    margin, span = 16.0, _CANVAS - 32.0
    # A shared low-frequency wobble keeps curves smooth; independent jitter would make them jagged.
    wobble = rng.normal(0.0, 0.025, size=(3, 2))
    for stroke in _STROKES[digit]:
        pts = []
        for x, y in stroke:
            dx = wobble[0, 0] * x + wobble[1, 0] * y + wobble[2, 0]
            dy = wobble[0, 1] * x + wobble[1, 1] * y + wobble[2, 1]
            pts.append((margin + span * (x + dx), margin + span * (y + dy)))
        draw.line(pts, fill=255, width=width, joint="curve")
        r = width / 2.0
        for px, py in (pts[0], pts[-1]):  # round pen tips
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
    return canvas


def render_digit(digit: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A distorted digit, white on black like MNIST: ``(size, size)`` float32 in [0, 1].

    Half the digits come from PIL's bundled font, half are pen strokes; then a random affine map
    (rotation +-15 deg, scale 0.75-1.1, shear, translation), blur, contrast and noise.
    """
    if not 0 <= digit <= 9:
        raise ValueError("digit must be in 0..9")
    style = rng.uniform()
    img = _draw_font_digit(digit, rng) if style < 0.5 else _draw_stroke_digit(digit, rng)

    angle = math.radians(rng.uniform(-15.0, 15.0))
    zoom = rng.uniform(0.75, 1.1)
    aspect = rng.uniform(0.85, 1.15)
    shear = rng.uniform(-0.3, 0.3)
    shift = rng.uniform(-0.08, 0.08, size=2) * _CANVAS
    c, s = math.cos(angle), math.sin(angle)
    # Forward map (about the centre): rotate @ shear @ scale; PIL wants the inverse (output -> input).
    fwd = np.array([[c, -s], [s, c]]) @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([zoom * aspect, zoom])
    inv = np.linalg.inv(fwd)
    centre = np.array([_CANVAS / 2.0, _CANVAS / 2.0])
    offset = centre - inv @ (centre + shift)
    img = img.transform(
        (_CANVAS, _CANVAS),
        Image.Transform.AFFINE,
        (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1]),
        resample=Image.Resampling.BILINEAR,
    )
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 3.0))))
    img = img.resize((size, size), Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    peak = float(arr.max())
    if peak > 0:
        arr = arr / peak * rng.uniform(0.75, 1.0)
    arr = arr + rng.normal(0.0, rng.uniform(0.0, 0.06), size=arr.shape).astype(np.float32)
    return np.clip(arr, 0.0, 1.0).astype(np.float32)


def sample_digit(digit: int = 3, size: int = 112) -> np.ndarray:
    """The gallery's digit: a clean font digit, white on black, ``(size, size)`` float32 in [0, 1]."""
    if not 0 <= digit <= 9:
        raise ValueError("digit must be in 0..9")
    canvas = _draw_font_digit(digit, np.random.default_rng(0))
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=1.0))
    img = canvas.resize((size, size), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(img, dtype=np.float32) / 255.0, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- shapes


def sample_shapes(size: int = 256) -> np.ndarray:
    """Coloured square, circle, triangle and a tilted bar on dark grey: ``(size, size, 3)`` float32 [0, 1].

    Flat colours and straight edges in several orientations make edge and Sobel filters easy to read.
    """
    if size < 16:
        raise ValueError("size must be at least 16 pixels")
    ss = 4  # supersampling gives antialiased, but still sharp, edges
    n = size * ss
    canvas = Image.new("RGB", (n, n), (30, 30, 36))
    draw = ImageDraw.Draw(canvas)

    def box(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (x0 * n, y0 * n, x1 * n, y1 * n)

    draw.rectangle(box(0.08, 0.08, 0.42, 0.42), fill=(220, 50, 47))
    draw.ellipse(box(0.56, 0.08, 0.92, 0.44), fill=(60, 180, 75))
    draw.polygon([(0.25 * n, 0.55 * n), (0.44 * n, 0.92 * n), (0.06 * n, 0.92 * n)], fill=(66, 110, 230))
    bar = [(0.55, 0.62), (0.88, 0.52), (0.92, 0.64), (0.59, 0.74)]
    draw.polygon([(x * n, y * n) for x, y in bar], fill=(245, 245, 245))
    draw.ellipse(box(0.70, 0.80, 0.80, 0.90), fill=(250, 200, 40))
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# -------------------------------------------------------------------------------------------- datasets


def nodule_dataset(n: int, seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Balanced nodule / no-nodule slices: X ``(n, 1, size, size)`` float32 in [0, 1], y ``(n,)`` int64.

    Label 1 ("nodule") slices hold one nodule (70 %) or two (30 %); order is shuffled.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int64)
    y[: n // 2 + n % 2 * int(rng.integers(0, 2))] = 1
    y = y[rng.permutation(n)]
    x = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        count = 0 if y[i] == 0 else (1 if rng.uniform() < 0.7 else 2)
        x[i, 0] = ct_slice(rng, size, nodules=count)
    return x, y


def digit_dataset(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Distorted digits with balanced classes: X ``(n, 1, size, size)`` float32 in [0, 1], y ``(n,)`` int64."""
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.int64)
    y = y[rng.permutation(n)]
    x = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        x[i, 0] = render_digit(int(y[i]), rng, size)
    return x, y
