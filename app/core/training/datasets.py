"""Built-in training datasets, generated offline from a seed: ``nodules``, ``digits`` and ``shapes``.

``load_dataset("digits", input_size=(32, 32), in_channels=3, seed=7)`` draws the images
(app/core/imaging/synthetic.py for nodules and digits, :func:`shape_dataset` here for shapes), splits them into
training and validation sets with a seeded permutation, resizes them to the model's input size and converts
them to its channel count, and returns a :class:`~app.core.training.engine.TrainingData` whose ``note`` says
what was done, e.g. "28x28 greyscale -> 32x32, 1 channel -> 3 channels (copied)". The normalisation statistics
are those of the training split.

Generated sets are kept in a small LRU (read-only arrays), so repeated runs on the same data (a lesson's
experiments, a comparison of optimisers) do not draw them again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.nn import functional as F

from app.core.imaging import synthetic
from app.core.training.engine import TrainingData, channel_statistics

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "convert_images",
    "load_dataset",
    "shape_dataset",
    "split_indices",
]

# Luminance weights (ITU-R BT.601) for RGB -> greyscale, as PIL's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# The split's permutation is drawn from seed + this, so that it does not repeat the generator's first draws.
_SPLIT_OFFSET = 7919
# Images converted at a time (bounds the float32 working copies of a resize).
_CHUNK = 256


@dataclass(frozen=True)
class DatasetSpec:
    """One built-in dataset: its classes, how its images are drawn, and its default sizes."""

    name: str
    description: str
    categories: tuple[str, ...]
    channels: int  # as generated: 1 (greyscale) or 3 (RGB)
    side: int  # as generated (square), unless ``scalable`` and the model is square
    scalable: bool  # drawn at any size (a CT slice), rather than drawn small and resized
    make: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]  # (n, seed, side) -> X (n,C,s,s), y (n,)
    train_size: int
    val_size: int
    seconds_per_image: float  # measured generation time on the 2-core reference machine (for estimates)


# ---------------------------------------------------------------------------------------------- shapes

SHAPES = ("circle", "square", "triangle")
_SHAPES_SIDE = 32
_AREA_SCALE = (1.0, math.sqrt(math.pi / 2), math.sqrt(math.pi / (3 * math.sqrt(3) / 4)))


def _draw_shape(kind: int, rng: np.random.Generator, side: int) -> np.ndarray:
    """One shape of class ``kind`` (0 circle, 1 square, 2 triangle) in a random colour, size, place and
    rotation on a dim, tinted, noisy background: ``(3, side, side)`` float32 in [0, 1]."""
    ss = 4  # supersampled, then box-downsampled: antialiased edges
    n = side * ss
    background = rng.uniform(0.05, 0.3, size=3)
    canvas = Image.new("RGB", (n, n), tuple(int(v * 255) for v in background))
    draw = ImageDraw.Draw(canvas)
    # A bright colour, clearly apart from the background, so colour never gives the class away.
    colour = rng.uniform(0.45, 1.0, size=3)
    fill = tuple(int(v * 255) for v in colour)
    # Circumradius per class chosen so that the three shapes cover the same area on average: a square
    # inscribed in a circle of radius r covers 2 r^2, a triangle 1.3 r^2, the circle pi r^2. Size, like
    # colour, must not give the class away.
    radius = rng.uniform(0.14, 0.3) * n * _AREA_SCALE[kind]
    cx = rng.uniform(radius, n - radius)
    cy = rng.uniform(radius, n - radius)
    angle = rng.uniform(0, 2 * math.pi)
    if kind == 0:
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)
    else:
        corners = 4 if kind == 1 else 3
        points = [
            (
                cx + radius * math.cos(angle + 2 * math.pi * i / corners),
                cy + radius * math.sin(angle + 2 * math.pi * i / corners),
            )
            for i in range(corners)
        ]
        draw.polygon(points, fill=fill)
    small = np.asarray(canvas.resize((side, side), Image.Resampling.BOX), dtype=np.float32) / 255.0
    small = small + rng.normal(0.0, 0.03, size=small.shape).astype(np.float32)
    return np.clip(small, 0.0, 1.0).transpose(2, 0, 1)


def shape_dataset(n: int, seed: int, size: int = _SHAPES_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Circles, squares and triangles in balanced classes: X ``(n, 3, size, size)`` float32 in [0, 1], y
    ``(n,)`` int64 (0 circle, 1 square, 2 triangle). Deterministic given ``seed``."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if size < 8:
        raise ValueError("size must be at least 8 pixels")
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % len(SHAPES)).astype(np.int64)
    y = y[rng.permutation(n)]
    x = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        x[i] = _draw_shape(int(y[i]), rng, size)
    return x, y


DATASETS: dict[str, DatasetSpec] = {
    "nodules": DatasetSpec(
        name="nodules",
        description="CT-like axial chest slices, half with one or two round lung nodules, half without",
        categories=("no nodule", "nodule"),
        channels=1,
        side=128,
        scalable=True,
        make=lambda n, seed, side: synthetic.nodule_dataset(n, seed, side),
        train_size=600,
        val_size=200,
        seconds_per_image=0.012,
    ),
    "digits": DatasetSpec(
        name="digits",
        description="digits 0-9, white on black, font or pen strokes, randomly rotated, scaled, sheared and noised",
        categories=tuple(str(d) for d in range(10)),
        channels=1,
        side=28,
        scalable=False,
        make=lambda n, seed, side: synthetic.digit_dataset(n, seed, side),
        train_size=2000,
        val_size=500,
        seconds_per_image=0.003,
    ),
    "shapes": DatasetSpec(
        name="shapes",
        description="a circle, a square or a triangle in a random colour, size, place and rotation",
        categories=SHAPES,
        channels=3,
        side=_SHAPES_SIDE,
        scalable=False,
        make=shape_dataset,
        train_size=1200,
        val_size=300,
        seconds_per_image=0.001,
    ),
}


@lru_cache(maxsize=4)
def _generated(name: str, n: int, seed: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The drawn set, kept read-only in a small LRU (nodules at 128 px: 64 KiB an image)."""
    x, y = DATASETS[name].make(n, seed, side)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) indices of ``n`` items: a seeded permutation, validation first, each sorted."""
    if not 0 < val_size < n:
        raise ValueError(
            "the validation set must hold at least one image and leave at least one for training"
        )
    order = np.random.default_rng(seed + _SPLIT_OFFSET).permutation(n)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def _channel_words(c: int) -> str:
    return "1 channel" if c == 1 else f"{c} channels"


def convert_images(
    x: np.ndarray, input_size: tuple[int, int], in_channels: int
) -> tuple[np.ndarray, list[str]]:
    """Resize ``x (N, C, h, w)`` [0, 1] to ``input_size`` (bilinear, antialiased) and convert its channels
    (1 -> 3: copied; 3 -> 1: luminance 0.299 R + 0.587 G + 0.114 B). Returns the float32 ``(N, c, H, W)``
    result and the steps in words (empty when nothing changed)."""
    n, c, h, w = x.shape
    steps: list[str] = []
    if (h, w) != tuple(input_size):
        steps.append(f"{h}x{w} → {input_size[0]}x{input_size[1]} (bilinear, antialiased)")
    if c != in_channels:
        how = "copied" if in_channels == 3 else "luminance 0.299 R + 0.587 G + 0.114 B"
        steps.append(f"{_channel_words(c)} → {_channel_words(in_channels)} ({how})")
    if not steps:
        return np.ascontiguousarray(x, dtype=np.float32), steps
    out = np.empty((n, in_channels, *input_size), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        chunk = torch.from_numpy(np.array(x[start : start + _CHUNK], dtype=np.float32))
        if (h, w) != tuple(input_size):
            chunk = F.interpolate(
                chunk, size=input_size, mode="bilinear", align_corners=False, antialias=True
            )
            chunk = chunk.clamp(0.0, 1.0)
        if c == 1 and in_channels == 3:
            chunk = chunk.expand(-1, 3, -1, -1)
        elif c == 3 and in_channels == 1:
            chunk = (chunk * torch.from_numpy(_LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
        out[start : start + len(chunk)] = chunk.numpy()
    return out, steps


def generation_side(spec: DatasetSpec, input_size: tuple[int, int]) -> int:
    """The side the images are drawn at: a scalable set (CT slices) is drawn at a square model's own size
    (32..256 px) rather than resized; the others at their native size."""
    if spec.scalable and input_size[0] == input_size[1] and 32 <= input_size[0] <= 256:
        return input_size[0]
    return spec.side


def load_dataset(
    name: str,
    input_size: tuple[int, int],
    in_channels: int,
    seed: int,
    train_size: int | None = None,
    val_size: int | None = None,
) -> TrainingData:
    """The built-in dataset ``name``, split with ``seed`` and fitted to a model taking ``in_channels`` x
    ``input_size`` images. KeyError for an unknown name, ValueError for sizes below one image."""
    spec = DATASETS[name]
    n_train = spec.train_size if train_size is None else train_size
    n_val = spec.val_size if val_size is None else val_size
    if n_train < 1 or n_val < 1:
        raise ValueError("train_size and val_size must each be at least 1")
    if in_channels not in (1, 3):
        raise ValueError("in_channels must be 1 or 3")
    side = generation_side(spec, input_size)
    x, y = _generated(name, n_train + n_val, seed, side)
    train_idx, val_idx = split_indices(len(x), n_val, seed)
    x_train, steps = convert_images(x[train_idx], input_size, in_channels)
    x_val, _ = convert_images(x[val_idx], input_size, in_channels)
    mean, std = channel_statistics(x_train)
    kind = "greyscale" if spec.channels == 1 else "RGB"
    drawn = f"{side}x{side} {kind}"
    how = ", ".join(steps) if steps else "as generated, no conversion"
    note = (
        f"{spec.name}: {spec.description}. {n_train + n_val} images drawn from seed {seed} at {drawn}; "
        f"seeded split: {n_train} training / {n_val} validation. Fitted to the model: {how}. "
        f"Normalised with the training split's mean {mean} and std {std}."
    )
    return TrainingData(
        x_train=x_train,
        y_train=np.ascontiguousarray(y[train_idx]),
        x_val=x_val,
        y_val=np.ascontiguousarray(y[val_idx]),
        categories=list(spec.categories),
        mean=mean,
        std=std,
        note=note,
    )
