"""Kernel library, ReLU/pooling/flatten and the FC-vs-conv cost counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.core.convolution.fc_cost import COST_PRESETS, CostError, compare_costs
from app.core.convolution.kernels import get_kernel, list_kernels
from app.core.convolution.pooling import PoolingError, flatten, pool, pool_windows, relu


def test_library_has_every_named_kernel_with_a_line() -> None:
    names = {k.name for k in list_kernels()}
    wanted = {
        "identity", "box_blur", "gaussian_3", "gaussian_5", "sharpen", "vertical_edge", "horizontal_edge",
        "sobel_x", "sobel_y", "sobel_lecture", "prewitt_x", "prewitt_y", "scharr_x", "scharr_y",
        "laplacian", "emboss", "cross",
    }  # fmt: skip
    assert wanted <= names
    for k in list_kernels():
        assert k.description and k.weights.shape[0] == k.weights.shape[1] and k.size % 2 == 1
    assert get_kernel("sobel_lecture").weights.tolist() == [
        [0.25, 0, -0.25],
        [0.5, 0, -0.5],
        [0.25, 0, -0.25],
    ]
    assert get_kernel("vertical_edge").weights.tolist() == [[1, 0, -1]] * 3
    for blur in ("box_blur", "gaussian_3", "gaussian_5"):
        assert np.isclose(get_kernel(blur).weights.sum(), 1.0)
    for edge in ("sobel_x", "sobel_y", "prewitt_x", "scharr_x", "laplacian"):
        assert np.isclose(get_kernel(edge).weights.sum(), 0.0)
    with pytest.raises(KeyError):
        get_kernel("nope")


def test_relu_and_flatten() -> None:
    x = np.array([[-1.0, 2.0], [0.5, -3.0]])
    assert relu(x).tolist() == [[0.0, 2.0], [0.5, 0.0]]
    grid = np.array([[1, 4, 5], [3, 9, 3], [0, 0, 1]], dtype=np.float64)
    assert flatten(grid).tolist() == [1, 4, 5, 3, 9, 3, 0, 0, 1]
    assert np.array_equal(flatten(grid), torch.flatten(torch.from_numpy(grid)).numpy())


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_torch(kind: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        h, w = rng.integers(2, 14, size=2)
        size = int(rng.integers(1, min(h, w) + 1))
        stride = int(rng.integers(1, 4))
        x = rng.normal(size=(3, h, w))
        res = pool(x, kind, size, stride)
        xt = torch.from_numpy(x)[None]
        fn = F.max_pool2d if kind == "max" else F.avg_pool2d
        ref = fn(xt, size, stride)[0].numpy()
        np.testing.assert_allclose(res.output, ref, atol=1e-12)


def test_pool_windows_outline_and_winner() -> None:
    x = np.array([[1, 3, 0, 0], [2, 0, 0, 7], [0, 0, 1, 1], [5, 0, 1, 4]], dtype=np.float64)
    res = pool(x, "max", 2)
    assert res.output.tolist() == [[3, 7], [5, 4]]
    wins = pool_windows(x, res)
    assert [(w.r0, w.c0, w.r1, w.c1) for w in wins] == [
        (0, 0, 2, 2),
        (0, 2, 2, 4),
        (2, 0, 4, 2),
        (2, 2, 4, 4),
    ]
    assert [w.winner for w in wins] == [(0, 1), (1, 3), (3, 0), (3, 3)]
    avg = pool(x, "avg", 2)
    assert pool_windows(x, avg)[0].winner is None
    assert avg.output[0, 0] == 1.5


def test_pooling_errors() -> None:
    with pytest.raises(PoolingError) as err:
        pool(np.ones((3, 3)), "max", 4)
    assert err.value.field == "pool_size"
    with pytest.raises(PoolingError) as err:
        pool(np.ones((3, 3)), "max", 2, 0)
    assert err.value.field == "pool_stride"
    with pytest.raises(PoolingError):
        pool(np.ones((3, 3)), "median", 2)


def test_lecture_cost_figures() -> None:
    small = compare_costs(10, 10, 1, fc_outputs=3)
    assert small.fc_weights == 300
    big = compare_costs(256, 256, 1, fc_outputs=65536, filters=1, kernel=3)
    assert big.inputs == 65536
    assert big.conv_outputs == 65536
    assert big.conv_multiplications == 589_824
    assert big.fc_multiplications == 4_294_967_296
    assert big.percent_text == "0.01 %"
    assert big.conv_weights == 9
    assert "589,824" in big.lines()["conv_multiplications"]
    assert "4,294,967,296" in big.lines()["fc_multiplications"]
    ct = compare_costs(512, 512)
    assert ct.inputs == 262_144
    assert ct.conv_multiplications == 262_144 * 9
    assert ct.fc_multiplications == 262_144**2


def test_cost_presets_compute_and_errors() -> None:
    results = {p.name: p.compute() for p in COST_PRESETS}
    assert results["lecture_300"].fc_weights == 300
    assert results["lecture_256"].conv_multiplications == 589_824
    assert results["ct_512_64"].conv_multiplications == 64 * results["ct_512"].conv_multiplications
    strided = compare_costs(256, 256, 3, filters=8, kernel=5, stride=2, padding=0)
    assert (strided.conv_out_height, strided.conv_out_width) == (126, 126)
    assert strided.conv_multiplications == 126 * 126 * 25 * 3 * 8
    with pytest.raises(CostError) as err:
        compare_costs(0, 10)
    assert err.value.field == "height"
    with pytest.raises(CostError) as err:
        compare_costs(4, 4, kernel=7, padding=0)
    assert err.value.field == "kernel"
