"""The lecture's worked examples, computed by the core, and where the slides print something else."""

from __future__ import annotations

import numpy as np

from app.core.convolution.arithmetic import cell_step
from app.core.convolution.lecture_presets import get_preset, list_presets
from app.core.convolution.pooling import flatten, pool


def test_vertical_edge_rows_of_0_30_30_0() -> None:
    p = get_preset("vertical_edge")
    assert p.output.tolist() == [[0, 30, 30, 0]] * 4
    assert not p.slide_is_wrong
    assert p.note is not None and "matches" in p.note


def test_multiply_and_sum_is_minus_8() -> None:
    p = get_preset("multiply_and_sum")
    step = cell_step(p.result, 0, 0)
    assert step.total == -8
    assert step.text.startswith("(4 x 0) + (0 x 0)")
    assert step.text.endswith("(-4 x 2) = -8")


def test_small_nodule_one_detection_large_four() -> None:
    small = get_preset("small_nodule").output
    large = get_preset("large_nodule").output
    assert int((small == small.max()).sum()) == 1
    assert int((large == large.max()).sum()) == 4
    # the cross kernel has five 1s, so a perfect fit sums to 5 (the slides print 4)
    assert small.max() == 5 and large.max() == 5


def test_wrong_slide_cells_are_reported_with_correct_arithmetic() -> None:
    small = get_preset("small_nodule")
    assert small.slide_is_wrong
    assert {(d.row, d.col, d.printed, d.computed) for d in small.differences} == {(0, 3, 2, 0), (2, 2, 4, 5)}
    centre = next(d for d in small.differences if (d.row, d.col) == (2, 2))
    assert centre.arithmetic.endswith("= 5")
    large = get_preset("large_nodule")
    assert {(d.row, d.col) for d in large.differences} == {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert large.note is not None and "correct 5" in large.note


def test_padding_keeps_8x8_and_pooling_merges_the_peaks() -> None:
    padded = get_preset("padded_nodule")
    assert padded.output.shape == (8, 8)
    assert padded.slide_is_wrong
    valid = get_preset("large_nodule_pooling")
    assert valid.output.shape == (6, 6)
    np.testing.assert_array_equal(padded.output[1:-1, 1:-1], valid.output)
    pooled = pool(valid.output, "max", 2).output
    assert int((pooled == pooled.max()).sum()) == 1
    assert valid.as_dict()["pooled"] == pooled.tolist()


def test_moved_nodule_moves_the_peak() -> None:
    small = get_preset("small_nodule").output
    moved = get_preset("moved_nodule").output
    assert np.unravel_index(np.argmax(moved), moved.shape) == (0, 4)
    assert np.unravel_index(np.argmax(small), small.shape) == (2, 2)
    assert moved.max() == small.max()


def test_flatten_and_relu_presets() -> None:
    assert flatten(get_preset("flatten").output).tolist() == [1, 4, 5, 3, 9, 3, 0, 0, 1]
    relu = get_preset("relu_dark_to_bright")
    assert relu.relu and relu.output.min() == -30
    assert get_preset("sobel_lecture").output.tolist() == [[0, 10, 10, 0]] * 4


def test_every_preset_serialises() -> None:
    for p in list_presets():
        d = p.as_dict()
        assert d["output"] == p.output.tolist()
        assert isinstance(d["title"], str)
