"""A library of named kernels, each with one line on what it detects.

Weights are written for *cross-correlation* (how conv2d applies them): e.g. the lecture's vertical-edge
kernel ``[[1, 0, -1]] x 3`` answers positive where the left side is brighter than the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class NamedKernel:
    """A kernel ``(k, k)`` with a short name, a title and one sentence on what it does."""

    name: str
    title: str
    description: str
    category: str
    weights: NDArray[np.float64]
    from_lecture: bool = False

    @property
    def size(self) -> int:
        return int(self.weights.shape[0])

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "category": self.category,
            "size": self.size,
            "weights": self.weights.tolist(),
            "from_lecture": self.from_lecture,
        }


def gaussian_kernel(size: int, sigma: float) -> NDArray[np.float64]:
    """A normalised ``(size, size)`` Gaussian (weights sum to 1, so brightness is kept)."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return k / k.sum()


def _k(rows: list[list[float]]) -> NDArray[np.float64]:
    return np.array(rows, dtype=np.float64)


def _build() -> list[NamedKernel]:
    sobel_x = _k([[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    prewitt_x = _k([[1, 0, -1], [1, 0, -1], [1, 0, -1]])
    scharr_x = _k([[3, 0, -3], [10, 0, -10], [3, 0, -3]])
    return [
        NamedKernel(
            "identity",
            "Identity",
            "Copies the input unchanged: a 1 in the centre, 0 elsewhere.",
            "basic",
            _k([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
        ),
        NamedKernel(
            "box_blur",
            "Box blur 3x3",
            "Averages each 3x3 neighbourhood: smooths noise and fine detail.",
            "blur",
            np.full((3, 3), 1.0 / 9.0),
        ),
        NamedKernel(
            "gaussian_3",
            "Gaussian blur 3x3",
            "A weighted average that favours the centre: gentle smoothing without the box's blockiness.",
            "blur",
            _k([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0,
        ),
        NamedKernel(
            "gaussian_5",
            "Gaussian blur 5x5 (σ=1)",
            "Wider Gaussian smoothing: removes more noise, blurs more edges.",
            "blur",
            gaussian_kernel(5, 1.0),
        ),
        NamedKernel(
            "sharpen",
            "Sharpen",
            "Centre minus its four neighbours added to itself: boosts edges and fine detail.",
            "basic",
            _k([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
        ),
        NamedKernel(
            "vertical_edge",
            "Vertical edge (lecture)",
            "The lecture's [[1, 0, −1]] x 3: positive where "
            "the left is brighter than the right, negative for the opposite.",
            "edge",
            prewitt_x.copy(),
            from_lecture=True,
        ),
        NamedKernel(
            "horizontal_edge",
            "Horizontal edge",
            "The vertical-edge kernel turned 90°: responds where the top differs from the bottom.",
            "edge",
            prewitt_x.T.copy(),
        ),
        NamedKernel(
            "sobel_x",
            "Sobel x",
            "Vertical edges (left–right change) with the middle row weighted "
            "twice: a little smoothing along the edge.",
            "edge",
            sobel_x,
        ),
        NamedKernel(
            "sobel_y",
            "Sobel y",
            "Horizontal edges (top–bottom change), Sobel's 1-2-1 weighting.",
            "edge",
            sobel_x.T.copy(),
        ),
        NamedKernel(
            "sobel_lecture",
            "Sobel-like 0.25/0.5 (lecture)",
            "The lecture's animated kernel: Sobel x divided by 4, so a step of 1 gives a response of 1.",
            "edge",
            sobel_x / 4.0,
            from_lecture=True,
        ),
        NamedKernel(
            "prewitt_x",
            "Prewitt x",
            "Vertical edges with equal row weights (same as the lecture's vertical-edge kernel).",
            "edge",
            prewitt_x.copy(),
        ),
        NamedKernel(
            "prewitt_y",
            "Prewitt y",
            "Horizontal edges with equal column weights.",
            "edge",
            prewitt_x.T.copy(),
        ),
        NamedKernel(
            "scharr_x",
            "Scharr x",
            "Vertical edges with 3-10-3 weights: better rotational accuracy than Sobel.",
            "edge",
            scharr_x,
        ),
        NamedKernel(
            "scharr_y",
            "Scharr y",
            "Horizontal edges with Scharr's 3-10-3 weights.",
            "edge",
            scharr_x.T.copy(),
        ),
        NamedKernel(
            "laplacian",
            "Laplacian",
            "Second derivative: answers at edges in every direction and at "
            "spots; zero on flat areas and even ramps.",
            "edge",
            _k([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
        ),
        NamedKernel(
            "laplacian_8",
            "Laplacian (8-neighbour)",
            "Laplacian that also counts diagonals: more isotropic spot and edge response.",
            "edge",
            _k([[1, 1, 1], [1, -8, 1], [1, 1, 1]]),
        ),
        NamedKernel(
            "emboss",
            "Emboss",
            "Top-left minus bottom-right: a relief look, as if lit from the top-left.",
            "basic",
            _k([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
        ),
        NamedKernel(
            "cross",
            "Cross / nodule detector (lecture)",
            "The lecture's plus-shaped kernel: sums a pixel "
            "and its four neighbours, so it answers most strongly to small round blobs.",
            "blob",
            _k([[0, 1, 0], [1, 1, 1], [0, 1, 0]]),
            from_lecture=True,
        ),
    ]


KERNELS: dict[str, NamedKernel] = {k.name: k for k in _build()}


def list_kernels() -> list[NamedKernel]:
    """Every library kernel in display order."""
    return list(KERNELS.values())


def get_kernel(name: str) -> NamedKernel:
    """The kernel called ``name``; ``KeyError`` if there is none."""
    return KERNELS[name]
