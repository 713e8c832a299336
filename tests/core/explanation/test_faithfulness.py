"""Deletion/insertion scores: a map that points at the evidence beats a random map."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from app.core.explanation import cam, faithfulness
from app.core.explanation.occlusion import make_baseline


def test_ranks_are_a_permutation_led_by_the_peak() -> None:
    sal = np.zeros((4, 4), dtype=np.float32)
    sal[1, 2] = 5
    ranks = faithfulness.pixel_ranks(sal, (8, 8))
    assert sorted(ranks.ravel().tolist()) == list(range(64))
    top = np.unravel_index(int(ranks.argmin()), ranks.shape)
    assert top[0] in (2, 3) and top[1] in (4, 5)


def test_curve_end_points_are_the_clean_and_baseline_images(
    blob_net: Callable[..., nn.Module],
    blob_image: Callable[..., torch.Tensor],
    assert_model_clean: Callable[[nn.Module], None],
) -> None:
    model, x = blob_net(), blob_image()
    sal = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    res = faithfulness.deletion_insertion(model, x, sal, target=1, protocol="convscope", steps=8)

    def p(t: torch.Tensor) -> float:
        with torch.no_grad():
            return float(torch.softmax(model(t), 1)[0, 1])

    assert res.fractions[0] == 0 and res.fractions[-1] == 1 and len(res.fractions) == 9
    assert res.deletion[0] == pytest.approx(p(x), abs=1e-6)
    assert res.deletion[-1] == pytest.approx(p(torch.zeros_like(x)), abs=1e-6)
    assert res.insertion[0] == pytest.approx(p(make_baseline(x, "blur")), abs=1e-6)
    assert res.insertion[-1] == pytest.approx(p(x), abs=1e-6)
    assert_model_clean(model)


def test_grad_cam_beats_the_random_baseline(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    model, x = blob_net(), blob_image()
    maps = cam.compute_cams(model, x, ["gradcam", "random"], "features", target=1).maps
    maps_ = {k: v[0] for k, v in maps.items()}
    for protocol in ("rise", "convscope"):
        scores = faithfulness.evaluate_maps(model, x, maps_, target=1, protocol=protocol, steps=16)
        assert scores["gradcam"].deletion_auc < scores["random"].deletion_auc, protocol
        assert scores["gradcam"].insertion_auc > scores["random"].insertion_auc, protocol


def test_invalid_steps(blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]) -> None:
    with pytest.raises(ValueError):
        faithfulness.deletion_insertion(
            blob_net(), blob_image(), np.ones((4, 4)), 1, protocol="convscope", steps=0
        )
    with pytest.raises(ValueError):
        faithfulness.deletion_insertion(blob_net(), blob_image(), np.ones((4, 4)), 1, protocol="nope")  # type: ignore[arg-type]


def _trapezoid_by_hand(ys: list[float], xs: list[float]) -> float:
    return sum((ys[i] + ys[i + 1]) / 2 * (xs[i + 1] - xs[i]) for i in range(len(xs) - 1))


def test_curves_and_areas_match_a_pixel_by_pixel_reimplementation(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    """The oracle deletes/inserts pixels one image at a time in plain numpy, then integrates by hand."""
    model, x = blob_net(), blob_image()
    # A map at the input's size with distinct values: the order is plain argsort, no upsampling, no ties.
    sal = np.random.default_rng(1).permutation(32 * 32).reshape(32, 32).astype(np.float32)
    steps = 8
    res = faithfulness.deletion_insertion(model, x, sal, target=1, protocol="convscope", steps=steps)

    order = np.argsort(-sal.ravel())  # most salient first
    image = x[0].numpy()
    blurred = make_baseline(x, "blur")[0].numpy()

    def prob(arr: np.ndarray) -> float:
        with torch.no_grad():
            return float(torch.softmax(model(torch.from_numpy(arr)[None]), 1)[0, 1])

    fractions, deletion, insertion = [], [], []
    for k in range(steps + 1):
        n = k * 32 * 32 // steps  # 128 pixels a step
        chosen = np.zeros(32 * 32, bool)
        chosen[order[:n]] = True
        mask = chosen.reshape(32, 32)[None]
        fractions.append(n / (32 * 32))
        deletion.append(prob(np.where(mask, 0.0, image).astype(np.float32)))
        insertion.append(prob(np.where(mask, image, blurred).astype(np.float32)))

    np.testing.assert_allclose(res.fractions, fractions, atol=1e-7)
    np.testing.assert_allclose(res.deletion, deletion, atol=1e-5)
    np.testing.assert_allclose(res.insertion, insertion, atol=1e-5)
    assert res.deletion_auc == pytest.approx(_trapezoid_by_hand(deletion, fractions), abs=1e-5)
    assert res.insertion_auc == pytest.approx(_trapezoid_by_hand(insertion, fractions), abs=1e-5)


def test_area_of_a_known_curve() -> None:
    """A hand-computed area: a model whose probability is the mean pixel value, on an all-ones image.

    Deleting a fraction f of the pixels (to zero) leaves probability 1 - f: the area is exactly 1/2.
    Inserting them into the blurred all-ones image (still all ones) keeps it at 1: the area is 1.
    """

    class MeanPixel(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            p = t.mean(dim=(1, 2, 3))
            return torch.log(torch.stack([1 - p + 1e-12, p + 1e-12], dim=1))  # softmax gives (1 - p, p)

    x = torch.ones(1, 1, 16, 16)
    sal = np.random.default_rng(2).random((16, 16)).astype(np.float32)
    res = faithfulness.deletion_insertion(MeanPixel(), x, sal, target=1, protocol="convscope", steps=4)
    np.testing.assert_allclose(res.deletion, [1.0, 0.75, 0.5, 0.25, 0.0], atol=1e-5)
    assert res.deletion_auc == pytest.approx(0.5, abs=1e-5)
    assert res.insertion_auc == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------
# The RISE authors' protocol, checked against their published evaluation code's logic (eclique/RISE,
# evaluation.py: gkern, CausalMetric.single_run, auc), restated here one image at a time in numpy and
# written without the app's helpers.
# ---------------------------------------------------------------------------------------------------------


def _rise_gkern(klen: int, nsig: float, channels: int) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    k = gaussian_filter(inp, nsig)
    kern = np.zeros((channels, channels, klen, klen))
    for c in range(channels):
        kern[c, c] = k
    return torch.from_numpy(kern.astype("float32"))


def _rise_auc(arr: np.ndarray) -> float:
    return float((arr.sum() - arr[0] / 2 - arr[-1] / 2) / (arr.shape[0] - 1))


def _rise_single_run(
    model: nn.Module, img: torch.Tensor, explanation: np.ndarray, mode: str, step: int, target: int
) -> np.ndarray:
    _, c, h, w = img.shape
    hw = h * w
    kern = _rise_gkern(11, 5, c)
    if mode == "del":
        start, finish = img.clone(), torch.zeros_like(img)
    else:
        with torch.no_grad():
            start, finish = nn.functional.conv2d(img, kern, padding=11 // 2), img.clone()
    n_steps = (hw + step - 1) // step
    scores = np.empty(n_steps + 1)
    salient_order = np.flip(np.argsort(explanation.reshape(-1, hw), axis=1, kind="stable"), axis=-1)
    start_np = start.numpy().copy()
    finish_np = finish.numpy()
    for i in range(n_steps + 1):
        with torch.no_grad():
            pred = torch.softmax(model(torch.from_numpy(start_np)), 1)
        scores[i] = float(pred[0, target])
        if i < n_steps:
            coords = salient_order[:, step * i : step * (i + 1)]
            start_np.reshape(1, c, hw)[0, :, coords] = finish_np.reshape(1, c, hw)[0, :, coords]
    return scores


def test_rise_step_is_224_pixels_at_224_and_scales_with_the_area() -> None:
    assert faithfulness.rise_step_pixels((224, 224)) == 224
    assert faithfulness.protocol_steps("rise", (224, 224), 16) == 224
    assert faithfulness.rise_step_pixels((112, 112)) == 56
    assert faithfulness.rise_step_pixels((4, 4)) == 1
    assert faithfulness.protocol_steps("convscope", (224, 224), 16) == 16


@pytest.mark.parametrize("ties", [False, True])
def test_rise_protocol_matches_the_authors_code(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor], ties: bool
) -> None:
    """Curves and AUCs equal the RISE code's on a 3-channel 40x40 input, with and without tied map values."""
    model, x = blob_net(in_channels=3), blob_image(size=40, channels=3)
    rng = np.random.default_rng(3)
    sal = rng.random((40, 40)).astype(np.float32)
    if ties:  # a coarse map: whole blocks share one value, as with ReLU'd or Eigen-CAM maps
        sal = np.round(sal * 3) / 3
    res = faithfulness.deletion_insertion(model, x, sal, target=1, protocol="rise")
    step = max(1, round(224 * 40 * 40 / (224 * 224)))  # 224 px per step at 224x224, by area
    ref_del = _rise_single_run(model, x, sal, "del", step, 1)
    ref_ins = _rise_single_run(model, x, sal, "ins", step, 1)
    assert res.protocol == "rise" and res.step_pixels == step and res.steps == len(ref_del) - 1
    np.testing.assert_allclose(res.deletion, ref_del, atol=1e-5)
    np.testing.assert_allclose(res.insertion, ref_ins, atol=1e-5)
    assert res.deletion_auc == pytest.approx(_rise_auc(ref_del), abs=1e-5)
    assert res.insertion_auc == pytest.approx(_rise_auc(ref_ins), abs=1e-5)
    assert "raster order" in res.tie_break


def test_the_two_protocols_differ_on_insertion(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    """The RISE blur (gkern 11, 5) is milder than sigma 8: the insertion curves start from different images."""
    model, x = blob_net(), blob_image(size=40)
    sal = np.random.default_rng(4).random((40, 40)).astype(np.float32)
    rise = faithfulness.deletion_insertion(model, x, sal, target=1, protocol="rise")
    ours = faithfulness.deletion_insertion(model, x, sal, target=1, protocol="convscope", steps=16)
    assert rise.steps == 40 * 40 // 7 + 1 and ours.steps == 16  # 7 px a step at 40x40
    # The RISE blur keeps far more of the image than sigma 8 (about 2 px wide against 8).
    blob = x[0, 0].numpy()
    err_rise = float(np.abs(faithfulness.rise_blur(x)[0, 0].numpy() - blob).mean())
    err_ours = float(np.abs(make_baseline(x, "blur")[0, 0].numpy() - blob).mean())
    assert err_rise < err_ours


# ---------------------------------------------------------------------------------------------------------
# Equal images are evaluated once: fewer forwards, the same numbers as one image at a time.
# ---------------------------------------------------------------------------------------------------------


def _one_at_a_time(
    model: nn.Module, x: torch.Tensor, sal: np.ndarray, target: int, protocol: str
) -> tuple[np.ndarray, np.ndarray]:
    """The oracle: every step's image built and evaluated alone, the RISE code's order and counts."""
    _, _, h, w = x.shape
    order = np.flip(np.argsort(sal.ravel(), kind="stable")) if protocol == "rise" else None
    assert order is not None
    step = faithfulness.rise_step_pixels((h, w))
    n = (h * w + step - 1) // step
    blurred = faithfulness.rise_blur(x)[0].numpy()
    image = x[0].numpy()
    dele, ins = [], []
    for k in range(n + 1):
        chosen = np.zeros(h * w, bool)
        chosen[order[: min(k * step, h * w)]] = True
        mask = chosen.reshape(h, w)[None]
        for arr, out in ((np.where(mask, 0.0, image), dele), (np.where(mask, image, blurred), ins)):
            with torch.no_grad():
                out.append(
                    float(torch.softmax(model(torch.from_numpy(arr.astype(np.float32))[None]), 1)[0, target])
                )
    return np.array(dele), np.array(ins)


class _Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.images = inner, 0

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        self.images += int(t.shape[0])
        out: torch.Tensor = self.inner(t)
        return out


def test_equal_images_are_evaluated_once_with_the_same_numbers(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    """A black border (deleted to zero: no change) and two maps with the same order: fewer forwards, and every
    curve still equals the one-image-at-a-time oracle."""
    model = _Counting(blob_net())
    x = blob_image()
    x[..., :, :10] = 0.0  # a black band: deleting its pixels changes nothing
    rng = np.random.default_rng(3)
    sal = rng.permutation(32 * 32).reshape(32, 32).astype(np.float32)
    sal[:, :10] += 5000  # ranked first: the first deletion steps only zero pixels already zero
    maps = {"a": sal, "same order": sal * 2 + 1, "other": rng.random((32, 32)).astype(np.float32)}
    res = faithfulness.evaluate_maps(model, x, maps, target=1, protocol="rise", batch_size=7)
    n = res["a"].steps
    naive = len(maps) * 2 * (n + 1)
    assert model.images < naive - (n + 1) * 2  # "same order" costs nothing, the black band saves more
    for name, m in maps.items():
        dele, ins = _one_at_a_time(model.inner, x, m, 1, "rise")
        np.testing.assert_allclose(res[name].deletion, dele, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(res[name].insertion, ins, atol=1e-5, err_msg=name)
        single = faithfulness.deletion_insertion(model.inner, x, m, 1, protocol="rise")
        assert res[name].deletion_auc == pytest.approx(single.deletion_auc, abs=1e-6)
        assert res[name].insertion_auc == pytest.approx(single.insertion_auc, abs=1e-6)
    # The black band's deletion steps are flat: the same image, hence exactly the same score.
    band_steps = 10 * 32 // faithfulness.rise_step_pixels((32, 32))
    assert len(set(res["a"].deletion[: band_steps + 1].tolist())) == 1


def test_progress_and_cancellation_between_batches(
    blob_net: Callable[..., nn.Module], blob_image: Callable[..., torch.Tensor]
) -> None:
    seen: list[float] = []
    faithfulness.evaluate_maps(
        blob_net(), blob_image(), {"m": np.ones((4, 4))}, 1, protocol="convscope", steps=8, batch_size=3,
        progress=seen.append,
    )  # fmt: skip
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 1

    class Stop(Exception):
        pass

    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        faithfulness.evaluate_maps(
            blob_net(), blob_image(), {"m": np.ones((4, 4))}, 1, protocol="rise", batch_size=4, check=check
        )
