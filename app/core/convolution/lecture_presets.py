"""The lecture's worked examples, computed by :mod:`app.core.convolution.arithmetic` (never copied from the slides).

Each preset holds the *inputs* the slides show (input grid, kernel, padding) and computes the output.
Where a slide prints an output grid, that printed grid is kept as ``slide_grid`` only so it can be
compared with the computed one: the nodule/cross-kernel slides print grids that do not match their
kernel (the centre weight and the cells under the kernel's arms are miscounted), and the preset's
``note`` lists every cell that differs with the correct multiply-and-sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from app.core.convolution.arithmetic import ConvResult, cell_step, convolve, format_number
from app.core.convolution.kernels import get_kernel
from app.core.convolution.pooling import pool


@dataclass(frozen=True)
class CellDifference:
    """One output cell where the slide's printed number differs from the computed one."""

    row: int
    col: int
    printed: float
    computed: float
    arithmetic: str

    def as_dict(self) -> dict[str, object]:
        return {
            "row": self.row,
            "col": self.col,
            "printed": self.printed,
            "computed": self.computed,
            "arithmetic": self.arithmetic,
        }


@dataclass(frozen=True)
class LecturePreset:
    """A lecture example ready for the playground: inputs, settings and the computed result."""

    name: str
    title: str
    slide: str
    description: str
    input: NDArray[np.float64]
    kernel: NDArray[np.float64]
    padding: str = "none"
    amount: int = 0
    stride: int = 1
    dilation: int = 1
    flip: bool = False
    relu: bool = False
    pool: str | None = None
    pool_size: int = 2
    flatten: bool = False
    focus: tuple[int, int] = (0, 0)
    slide_grid: NDArray[np.float64] | None = None
    result: ConvResult = field(init=False, repr=False)
    differences: list[CellDifference] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        res = convolve(
            self.input,
            self.kernel,
            padding=self.padding,
            amount=self.amount,
            stride=self.stride,
            dilation=self.dilation,
            flip=self.flip,
        )
        object.__setattr__(self, "result", res)
        diffs: list[CellDifference] = []
        if self.slide_grid is not None:
            if self.slide_grid.shape != res.output.shape:
                raise ValueError(f"preset {self.name}: slide grid shape differs from the computed output")
            for r, c in np.argwhere(~np.isclose(self.slide_grid, res.output)):
                step = cell_step(res, int(r), int(c))
                diffs.append(
                    CellDifference(
                        int(r), int(c), float(self.slide_grid[r, c]), float(res.output[r, c]), step.text
                    )
                )
        object.__setattr__(self, "differences", diffs)

    @property
    def output(self) -> NDArray[np.float64]:
        return self.result.output

    @property
    def slide_is_wrong(self) -> bool:
        return bool(self.differences)

    @property
    def note(self) -> str | None:
        """A plain sentence on where the printed slide grid is wrong, or None when it matches."""
        if self.slide_grid is None:
            return None
        if not self.differences:
            return "The grid printed on the slide matches the computed output."
        cells = "; ".join(
            f"row {d.row + 1}, column {d.col + 1}: slide {format_number(d.printed)}, "
            f"correct {format_number(d.computed)}"
            for d in self.differences
        )
        return (
            f"The slide's printed output differs from the kernel's arithmetic in "
            f"{len(self.differences)} cell(s) "
            f"({cells}). The grid shown here is the correct one."
        )

    def as_dict(self) -> dict[str, object]:
        pooled = None
        if self.pool is not None:
            source = np.maximum(self.output, 0) if self.relu else self.output
            pooled = pool(source, self.pool, self.pool_size).output.tolist()
        return {
            "name": self.name,
            "title": self.title,
            "slide": self.slide,
            "description": self.description,
            "input": self.input.tolist(),
            "kernel": self.kernel.tolist(),
            "padding": self.padding,
            "amount": self.amount,
            "stride": self.stride,
            "dilation": self.dilation,
            "flip": self.flip,
            "relu": self.relu,
            "pool": self.pool,
            "pool_size": self.pool_size,
            "flatten": self.flatten,
            "focus": list(self.focus),
            "output": self.output.tolist(),
            "pooled": pooled,
            "slide_grid": self.slide_grid.tolist() if self.slide_grid is not None else None,
            "slide_is_wrong": self.slide_is_wrong,
            "differences": [d.as_dict() for d in self.differences],
            "note": self.note,
        }


def _grid(text: str) -> NDArray[np.float64]:
    """Rows of whitespace-separated numbers, as the slides print them."""
    return np.array(
        [[float(v) for v in line.split()] for line in text.strip().splitlines()], dtype=np.float64
    )


def vertical_edge_input() -> NDArray[np.float64]:
    """The lecture's 6x6 image: three columns of 10 then three of 0."""
    return np.where(np.arange(6)[None, :] < 3, 10.0, 0.0).repeat(6, axis=0)


def small_nodule() -> NDArray[np.float64]:
    """7x7 with a plus-shaped nodule of five 1s centred at (3, 3) (slide "1 detection!")."""
    return _grid(
        """
        0 0 0 0 0 0 0
        0 0 0 0 0 0 0
        0 0 0 1 0 0 0
        0 0 1 1 1 0 0
        0 0 0 1 0 0 0
        0 0 0 0 0 0 0
        0 0 0 0 0 0 0
        """
    )


def large_nodule(size: int = 7) -> NDArray[np.float64]:
    """The larger, 4x4 rounded nodule (slide "4 detections!"), in a 7x7 or the pooling slides' 8x8 grid."""
    if size == 7:
        return _grid(
            """
            0 0 0 0 0 0 0
            0 0 1 1 0 0 0
            0 1 1 1 1 0 0
            0 1 1 1 1 0 0
            0 0 1 1 0 0 0
            0 0 0 0 0 0 0
            0 0 0 0 0 0 0
            """
        )
    return _grid(
        """
        0 0 0 0 0 0 0 0
        0 0 0 0 0 0 0 0
        0 0 0 1 1 0 0 0
        0 0 1 1 1 1 0 0
        0 0 1 1 1 1 0 0
        0 0 0 1 1 0 0 0
        0 0 0 0 0 0 0 0
        0 0 0 0 0 0 0 0
        """
    )


def _build() -> list[LecturePreset]:
    cross = get_kernel("cross").weights
    edge = get_kernel("vertical_edge").weights
    moved = np.roll(np.roll(small_nodule(), -2, axis=0), 2, axis=1)
    return [
        LecturePreset(
            name="multiply_and_sum",
            title="Multiply and sum: one output cell = −8",
            slide="Mathematical intuition — multiply and sum",
            description=(
                "The lecture's localized dot product: a 3x3 window of the input times the kernel, nine "
                "products summed. The slide lists (kernel x input) pairs; the kernel is the first number of "
                "each pair, the input window the second."
            ),
            input=_grid("0 0 0\n0 1 1\n0 1 2"),
            kernel=_grid("4 0 0\n0 0 0\n0 0 -4"),
        ),
        LecturePreset(
            name="vertical_edge",
            title="Detecting a vertical edge (6x6)",
            slide="“Practical” example — detecting a vertical edge in an image",
            description="Columns of 10 then 0, kernel [[1, 0, −1]] x 3: the edge shows as rows of 0 30 30 0.",
            input=vertical_edge_input(),
            kernel=edge,
            focus=(0, 1),
            slide_grid=_grid("0 30 30 0\n0 30 30 0\n0 30 30 0\n0 30 30 0"),
        ),
        LecturePreset(
            name="sobel_lecture",
            title="The Sobel-like 0.25/0.5 kernel on the edge",
            slide="Animated examples (kernel 0.25 0 −0.25 / 0.50 0 −0.50 / 0.25 0 −0.25)",
            description=(
                "The lecture's animated kernel on the same 6x6 edge image (the slide animates it on a "
                "photo): weights sum to 1 per side, so the step of 10 gives 10."
            ),
            input=vertical_edge_input(),
            kernel=get_kernel("sobel_lecture").weights,
            focus=(0, 1),
        ),
        LecturePreset(
            name="relu_dark_to_bright",
            title="ReLU on a negative edge",
            slide="ReLU — map negative values to zero",
            description=(
                "The same edge with the kernel mirrored ([[−1, 0, 1]] x 3) answers −30; ReLU turns those "
                "negatives into 0."
            ),
            input=vertical_edge_input(),
            kernel=-edge,
            relu=True,
            focus=(0, 1),
        ),
        LecturePreset(
            name="small_nodule",
            title="Small nodule, cross kernel: 1 detection",
            slide="Why not? (Some) filters are not scale equivariant — “1 detection!”",
            description="A plus-shaped nodule matching the cross kernel: a single peak of 5 in the centre.",
            input=small_nodule(),
            kernel=cross,
            focus=(2, 2),
            slide_grid=_grid(
                """
                0 0 1 2 0
                0 2 2 2 0
                1 2 4 2 1
                0 2 2 2 0
                0 0 1 0 0
                """
            ),
        ),
        LecturePreset(
            name="moved_nodule",
            title="Move the nodule: the feature map moves too",
            slide="Translation equivariance — move nodule",
            description=(
                "The small nodule moved two rows up and two columns right: the peak of 5 moves by the same "
                "amount (translation equivariance)."
            ),
            input=moved,
            kernel=cross,
            focus=(0, 4),
        ),
        LecturePreset(
            name="large_nodule",
            title="Large nodule, cross kernel: 4 detections",
            slide="Why not? (Some) filters are not scale equivariant — “4 detections!”",
            description="A bigger nodule: the cross fits inside it at four places: the peak shows 4 times.",
            input=large_nodule(7),
            kernel=cross,
            focus=(1, 1),
            slide_grid=_grid(
                """
                2 3 3 2 0
                3 4 4 3 1
                3 4 4 3 1
                2 3 3 2 0
                0 1 1 0 0
                """
            ),
        ),
        LecturePreset(
            name="large_nodule_pooling",
            title="Large nodule 8x8, then 2x2 max pooling",
            slide="Pooling enables scale equivariance",
            description=(
                "The 8x8 large nodule gives a 6x6 map with four peaks; 2x2 max pooling merges them into one "
                "peak, as the small nodule had."
            ),
            input=large_nodule(8),
            kernel=cross,
            pool="max",
            pool_size=2,
            focus=(2, 2),
            slide_grid=_grid(
                """
                0 0 0 0 0 0
                0 2 3 3 2 0
                1 3 4 4 3 1
                1 3 4 4 3 1
                0 2 3 3 2 0
                0 0 1 1 0 0
                """
            ),
        ),
        LecturePreset(
            name="padded_nodule",
            title="Zero padding keeps the 8x8 size",
            slide="One loose end — padding to solve",
            description="A ring of zeros around the 8x8 input lets the 3x3 kernel visit every pixel: 8x8 out",
            input=large_nodule(8),
            kernel=cross,
            padding="zeros",
            amount=1,
            focus=(3, 3),
            slide_grid=_grid(
                """
                0 0 0 0 0 0 0 0
                0 0 0 0 0 0 0 0
                0 0 2 3 3 2 0 0
                0 1 3 4 4 3 1 0
                0 1 3 4 4 3 1 0
                0 0 2 3 3 2 0 0
                0 0 0 1 1 0 0 0
                0 0 0 0 0 0 0 0
                """
            ),
        ),
        LecturePreset(
            name="flatten",
            title="Flattening a 3x3 map into 9 values",
            slide="Flattening — reshape your feature maps",
            description="The slide's 3x3 map (identity 1x1 kernel) read row by row into a vector of 9.",
            input=_grid("1 4 5\n3 9 3\n0 0 1"),
            kernel=_grid("1"),
            flatten=True,
        ),
    ]


PRESETS: dict[str, LecturePreset] = {p.name: p for p in _build()}


def list_presets() -> list[LecturePreset]:
    """Every lecture preset in lecture order."""
    return list(PRESETS.values())


def get_preset(name: str) -> LecturePreset:
    """The preset called ``name``; ``KeyError`` if there is none."""
    return PRESETS[name]
