"""The convolution core against torch conv2d, numpy.pad and scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage, signal

from app.core.convolution.arithmetic import (
    FLIP_SENTENCE,
    PADDING_MODES,
    ConvolutionError,
    KernelInput,
    all_steps,
    apply_kernels,
    cell_step,
    convolve,
    format_number,
    output_size,
    pad_array,
    size_formula,
    to_grey,
)

TORCH_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}
SCIPY_NDIMAGE_MODES = {"zeros": "constant", "reflect": "mirror", "replicate": "nearest", "circular": "wrap"}


def torch_reference(
    x: np.ndarray, k: np.ndarray, padding: str, amount: int, stride: int, dilation: int
) -> np.ndarray:
    """conv2d with the padding applied explicitly by F.pad (conv2d's own padding is zeros only)."""
    xt = torch.from_numpy(x).double()
    xt = xt[None, None] if x.ndim == 2 else xt[None]
    kt = torch.tensor(k.tolist(), dtype=torch.float64)
    kt = kt[None, None] if k.ndim == 2 else kt[None]
    if padding != "none" and amount > 0:
        xt = F.pad(xt, (amount,) * 4, mode=TORCH_MODES[padding])
    return F.conv2d(xt, kt, stride=stride, dilation=dilation)[0, 0].numpy()


def test_random_cases_match_torch_conv2d() -> None:
    rng = np.random.default_rng(1234)
    checked = 0
    for _ in range(300):
        h, w = rng.integers(1, 12, size=2)
        kh, kw = rng.integers(1, 6, size=2)
        mode = str(rng.choice(PADDING_MODES))
        amount = int(rng.integers(0, 4))
        stride = int(rng.integers(1, 4))
        dilation = int(rng.integers(1, 3))
        depth = int(rng.choice([0, 0, 3]))
        x = rng.normal(size=(depth, h, w) if depth else (h, w))
        k = rng.normal(size=(depth, kh, kw) if depth else (kh, kw))
        flip = bool(rng.integers(0, 2))
        try:
            res = convolve(x, k, padding=mode, amount=amount, stride=stride, dilation=dilation, flip=flip)
        except ConvolutionError:
            # impossible combinations must also be impossible for torch
            with pytest.raises((RuntimeError, ValueError, NotImplementedError)):
                torch_reference(x, k, mode, amount, stride, dilation)
            continue
        kk = k[..., ::-1, ::-1] if flip else k
        ref = torch_reference(x, kk, mode, amount, stride, dilation)
        np.testing.assert_allclose(res.output, ref, rtol=1e-10, atol=1e-10)
        checked += 1
    assert checked > 150


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_matches_numpy_and_torch(mode: str) -> None:
    x = np.arange(20, dtype=np.float64).reshape(4, 5)
    numpy_mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    for amount in (1, 2, 3):
        got = pad_array(x, mode, amount)
        np.testing.assert_array_equal(got, np.pad(x, amount, mode=numpy_mode))  # type: ignore[call-overload]
        ref = F.pad(torch.from_numpy(x)[None, None], (amount,) * 4, mode=TORCH_MODES[mode])[0, 0].numpy()
        np.testing.assert_array_equal(got, ref)


def test_reflect_is_mirror_without_edge() -> None:
    row = np.array([[1.0, 2.0, 3.0]])
    padded = pad_array(np.repeat(row, 3, axis=0), "reflect", 2)
    assert padded[2].tolist() == [3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]


def test_valid_matches_scipy_correlate2d_and_convolve2d() -> None:
    rng = np.random.default_rng(7)
    for _ in range(30):
        x = rng.normal(size=tuple(rng.integers(3, 10, size=2)))
        k = rng.normal(size=tuple(rng.integers(1, 4, size=2)))
        np.testing.assert_allclose(convolve(x, k).output, signal.correlate2d(x, k, mode="valid"), atol=1e-12)
        np.testing.assert_allclose(
            convolve(x, k, flip=True).output, signal.convolve2d(x, k, mode="valid"), atol=1e-12
        )


def test_zero_same_padding_matches_scipy_full_slice() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(7, 9))
    k = rng.normal(size=(3, 3))
    np.testing.assert_allclose(
        convolve(x, k, padding="zeros", amount=1).output, signal.correlate2d(x, k, mode="same"), atol=1e-12
    )
    full = convolve(x, k, padding="zeros", amount=2).output
    np.testing.assert_allclose(full, signal.correlate2d(x, k, mode="full"), atol=1e-12)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_each_padding_mode_matches_scipy_ndimage(mode: str) -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(8, 6))
    for ksize in (3, 5):
        k = rng.normal(size=(ksize, ksize))
        res = convolve(x, k, padding=mode, amount=ksize // 2)
        ref = ndimage.correlate(x, k, mode=SCIPY_NDIMAGE_MODES[mode], cval=0.0)
        np.testing.assert_allclose(res.output, ref, atol=1e-12)
        res_flip = convolve(x, k, padding=mode, amount=ksize // 2, flip=True)
        ref_conv = ndimage.convolve(x, k, mode=SCIPY_NDIMAGE_MODES[mode], cval=0.0)
        np.testing.assert_allclose(res_flip.output, ref_conv, atol=1e-12)


def test_flip_differs_only_for_asymmetric_kernels() -> None:
    x = np.arange(25, dtype=np.float64).reshape(5, 5)
    sym = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=np.float64)
    edge = np.array([[1, 0, -1]] * 3, dtype=np.float64)
    assert np.array_equal(convolve(x, sym).output, convolve(x, sym, flip=True).output)
    assert np.array_equal(convolve(x, edge).output, -convolve(x, edge, flip=True).output)
    assert "flips" in FLIP_SENTENCE


def test_output_size_formula_with_numbers() -> None:
    assert output_size(6, 3, 0, 1, 1) == 4
    assert output_size(8, 3, 1, 1, 1) == 8
    assert output_size(7, 3, 0, 2, 2) == 2
    f = size_formula("rows", 6, 3, 0, 1, 1)
    assert f.result == 4
    assert f.substituted.endswith("= 4")
    assert "(6 + 2·0 − 1·(3−1) − 1)" in f.substituted
    res = convolve(np.zeros((9, 11)), np.ones((3, 3)), padding="zeros", amount=1, stride=2, dilation=2)
    assert res.output.shape == (res.formulas[0].result, res.formulas[1].result) == (4, 5)


def test_cell_step_writes_out_products_and_sum() -> None:
    x = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 2]], dtype=np.float64)
    k = np.array([[4, 0, 0], [0, 0, 0], [0, 0, -4]], dtype=np.float64)
    step = cell_step(convolve(x, k), 0, 0)
    assert (
        step.text
        == "(4 x 0) + (0 x 0) + (0 x 0) + (0 x 0) + (0 x 1) + (0 x 1) + (0 x 0) + (0 x 1) + (-4 x 2) = -8"
    )
    assert step.total == -8
    assert sum(step.products) == step.total
    assert len(step.cells) == 9


def test_steps_cover_every_cell_and_sum_to_output() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(-5, 5, size=(6, 7)).astype(np.float64)
    k = rng.integers(-2, 3, size=(3, 3)).astype(np.float64)
    for mode in PADDING_MODES:
        res = convolve(x, k, padding=mode, amount=2, stride=2, dilation=2)
        steps = all_steps(res)
        assert len(steps) == res.output.size
        for st in steps:
            assert np.isclose(sum(st.products), res.output[st.row, st.col])
            for (_, pr, pc), src, val in zip(st.cells, st.source, st.values, strict=True):
                assert res.padded[pr, pc] == val
                if src is None:
                    assert mode == "zeros" and val == 0
                else:
                    assert x[src] == val


def test_3d_kernel_sums_over_channels() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 6, 6))
    k = rng.normal(size=(3, 3, 3))
    res = convolve(x, k)
    expected = sum(signal.correlate2d(x[c], k[c], mode="valid") for c in range(3))
    np.testing.assert_allclose(res.output, expected, atol=1e-12)
    assert len(cell_step(res, 1, 1).products) == 27


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"stride": 0}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"padding": "mirror"}, "padding"),
        ({"padding": "reflect", "amount": 4}, "amount"),
        ({"padding": "circular", "amount": 5}, "amount"),
        ({"padding": "zeros", "amount": -1}, "amount"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConvolutionError) as err:
        convolve(np.ones((4, 4)), np.ones((3, 3)), **kwargs)  # type: ignore[arg-type]
    assert err.value.field == field


def test_kernel_larger_than_input_and_non_finite() -> None:
    with pytest.raises(ConvolutionError) as err:
        convolve(np.ones((3, 3)), np.ones((5, 5)))
    assert err.value.field == "kernel"
    # padding makes it fit
    assert convolve(np.ones((3, 3)), np.ones((5, 5)), padding="zeros", amount=1).output.shape == (1, 1)
    with pytest.raises(ConvolutionError) as err:
        convolve(np.array([[1.0, np.nan], [0.0, 1.0]]), np.ones((1, 1)))
    assert err.value.field == "input.0.1"
    with pytest.raises(ConvolutionError) as err:
        convolve(np.ones((3, 3)), [[1.0, float("inf")]])
    assert err.value.field == "kernel.0.1"


def test_format_number() -> None:
    assert format_number(30.0) == "30"
    assert format_number(-0.0) == "0"
    assert format_number(-0.25) == "-0.25"
    assert format_number(1 / 3) == "0.3333"


def _image(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("padding", ["zeros", "reflect", "replicate", "circular", "none"])
def test_apply_kernels_grey_matches_playground_core(padding: str) -> None:
    img = _image(0, (12, 10))
    k = np.random.default_rng(1).normal(size=(5, 5))
    res = apply_kernels(img, [KernelInput("k", k)], mode="grey", padding=padding)
    amount = 0 if padding == "none" else 2
    ref = convolve(img.astype(np.float64), k, padding=padding, amount=amount).output
    assert len(res.maps) == 1
    np.testing.assert_allclose(res.maps[0], ref, rtol=1e-4, atol=1e-4)


def test_apply_kernels_per_channel_and_3d() -> None:
    img = _image(2, (9, 9, 3))
    k = np.random.default_rng(3).normal(size=(3, 3))
    per = apply_kernels(img, [KernelInput("k", k)], mode="per_channel")
    assert per.labels == ["k · R", "k · G", "k · B"]
    for c in range(3):
        ref = convolve(img[..., c].astype(np.float64), k, padding="zeros", amount=1).output
        np.testing.assert_allclose(per.maps[c], ref, atol=1e-5)
    k3 = np.random.default_rng(4).normal(size=(3, 3, 3))
    three = apply_kernels(img, [KernelInput("k3", k3), KernelInput("k", k)], mode="3d", stride=2)
    ref3 = convolve(
        np.moveaxis(img, -1, 0).astype(np.float64), k3, padding="zeros", amount=1, stride=2
    ).output
    np.testing.assert_allclose(three.maps[0], ref3, atol=1e-5)
    # a 2-D kernel in 3-D mode is the same kernel on every channel, summed
    np.testing.assert_allclose(three.maps[1], sum(per.maps)[::2, ::2], atol=1e-5)
    grey = apply_kernels(img, [KernelInput("k", k)], mode="grey")
    np.testing.assert_allclose(
        grey.maps[0],
        convolve(to_grey(img).astype(np.float64), k, padding="zeros", amount=1).output,
        atol=1e-5,
    )


def test_apply_kernels_errors() -> None:
    img = _image(5, (6, 6, 3))
    with pytest.raises(ConvolutionError) as err:
        apply_kernels(img, [KernelInput("big", np.ones((9, 9)))], padding="none")
    assert err.value.field == "kernels.0"
    with pytest.raises(ConvolutionError) as err:
        apply_kernels(
            img, [KernelInput("k", np.ones((3, 3))), KernelInput("d2", np.ones((2, 3, 3)))], mode="3d"
        )
    assert err.value.field == "kernels.1"
    with pytest.raises(ConvolutionError) as err:
        apply_kernels(img, [KernelInput("d3", np.ones((3, 3, 3)))], mode="grey")
    assert err.value.field == "kernels.0"
    with pytest.raises(ConvolutionError):
        apply_kernels(img, [], mode="grey")


def test_to_grey_uses_bt601_luma() -> None:
    img = _image(6, (5, 7, 3))
    expected = img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114
    np.testing.assert_allclose(to_grey(img), expected, atol=1e-6)
    assert to_grey(img[..., 0]) is not None and to_grey(img[..., 0]).shape == (5, 7)


def test_overflow_is_an_error_not_inf() -> None:
    with pytest.raises(ConvolutionError) as err:
        convolve([[1e308, 1e308]], [[10.0, 10.0]])
    assert err.value.field == "kernel"
    with pytest.raises(ConvolutionError) as err:
        apply_kernels(_image(1, (6, 6)), [KernelInput("huge", np.full((3, 3), 1e38))])
    assert err.value.field == "kernels.0"


# --------------------------------------------------------------------------- output-size plan (issue 9)


@pytest.mark.parametrize("mode", ["grey", "per_channel", "3d"])
@pytest.mark.parametrize("padding", ["none", "zeros", "reflect"])
@pytest.mark.parametrize(
    ("stride", "pool", "pool_stride"), [(1, None, None), (2, 2, None), (3, 3, 1), (1, 4, 3)]
)
def test_plan_filter_matches_the_real_output_shapes(
    mode: str, padding: str, stride: int, pool: int | None, pool_stride: int | None
) -> None:
    from app.core.convolution.arithmetic import plan_filter
    from app.core.convolution.pooling import pool as pool_fn

    rng = np.random.default_rng(7)
    image = rng.random((23, 30, 3), dtype=np.float32)
    kernels = [
        KernelInput("a", np.ones((3, 3))),
        KernelInput("b", np.ones((5, 5))),
        KernelInput("c", np.ones((1, 1))),
    ]
    res = apply_kernels(image, kernels, mode=mode, padding=padding, stride=stride)
    real = [pool_fn(m, "max", pool, pool_stride).output.shape if pool else m.shape for m in res.maps]
    plan = plan_filter(
        23, 30, 3, [k.weights.shape for k in kernels], mode=mode, padding=padding, stride=stride,
        pool_size=pool, pool_stride=pool_stride,
    )  # fmt: skip
    assert plan.map_shapes == real
    assert plan.conv_shapes == [m.shape for m in res.maps]
    assert plan.output_values == sum(h * w for h, w in real)
    assert plan.maps_per_kernel == [3 if mode == "per_channel" else 1] * 3


def test_plan_filter_counts_the_issue_case_without_any_pixels() -> None:
    from app.core.convolution.arithmetic import plan_filter

    # 6000x6000, eight 3x3 kernels per channel: 24 maps of 36 M pixels (the issue's ~70 GB request)
    plan = plan_filter(6000, 6000, 3, [(3, 3)] * 8, mode="per_channel")
    assert plan.output_values == 24 * 6000 * 6000
    assert plan.working_bytes(3) > 24 * 6000 * 6000 * 4
    # a greyscale image in per_channel mode gives one map per kernel, as apply_kernels does
    assert plan_filter(10, 10, 1, [(3, 3)] * 2, mode="per_channel").output_values == 200


def test_banded_conv2d_equals_one_conv2d(monkeypatch: pytest.MonkeyPatch) -> None:
    import app.core.convolution.arithmetic as conv

    monkeypatch.setattr(conv, "BAND_OUTPUT_PIXELS", 50)  # many bands, ragged last one
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((1, 3, 41, 29), dtype=np.float32))
    for stride in (1, 2, 3):
        w = torch.from_numpy(rng.random((3, 1, 5, 5), dtype=np.float32))
        got = conv._banded_conv2d(x, w, stride, groups=3)
        np.testing.assert_allclose(
            got, F.conv2d(x, w, stride=stride, groups=3)[0].numpy(), rtol=1e-5, atol=1e-5
        )
        w1 = torch.from_numpy(rng.random((1, 3, 3, 3), dtype=np.float32))
        got1 = conv._banded_conv2d(x, w1, stride, groups=1)
        np.testing.assert_allclose(got1, F.conv2d(x, w1, stride=stride)[0].numpy(), rtol=1e-5, atol=1e-5)
