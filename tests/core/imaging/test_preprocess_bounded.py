"""Preprocessing resizes only what survives the centre crop, equals the plain resize-then-crop, and is bounded.

Issue 9, defect 1: a 10000 x 1 image was resized to 256 x 2,560,000 (7.5 GB) before the crop kept 224 x 224.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from app.core.imaging.preprocess import plan, preprocess
from app.core.models import zoo
from app.core.models.zoo import Preprocessing
from app.errors import OverLimit

LIMIT = 16_000_000


def _plain(image: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """The literal recipe: the whole image resized, then centre-cropped, then normalised (torchvision's)."""
    x = torch.from_numpy(np.ascontiguousarray(np.atleast_3d(image).transpose(2, 0, 1))).float()
    mode = InterpolationMode(prep.interpolation)
    if prep.direct_resize:
        x = TF.resize(x, list(prep.crop_size), interpolation=mode, antialias=True)
    else:
        size = [prep.resize_size] if isinstance(prep.resize_size, int) else list(prep.resize_size)
        x = TF.center_crop(TF.resize(x, size, interpolation=mode, antialias=True), list(prep.crop_size))
    return TF.normalize(x, list(prep.mean), list(prep.std))


def _short_side(prep: Preprocessing) -> int:
    assert isinstance(prep.resize_size, int)
    return prep.resize_size


def _prep(name: str) -> Preprocessing:
    prep = zoo.torchvision_spec(name).preprocessing
    assert prep is not None
    return prep


@pytest.mark.parametrize("name", ["resnet18", "inception_v3", "efficientnet_b0", "vit_b_16"])
@pytest.mark.parametrize("shape", [(40, 700), (700, 40), (1, 300)])
def test_pre_cropped_path_matches_the_plain_path_on_elongated_images(
    name: str, shape: tuple[int, int]
) -> None:
    image = np.random.default_rng(1).random((*shape, 3)).astype(np.float32)
    prep = _prep(name)
    prepared = preprocess(image, prep, LIMIT)
    # Only part of the input was read, and the steps say so.
    assert any(s.startswith("cropped first to") and "survives the centre crop" in s for s in prepared.steps)
    torch.testing.assert_close(prepared.tensor[0], _plain(image, prep), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "prep",
    [
        Preprocessing((300, 200), (224, 224), (0.5,) * 3, (0.25,) * 3, 3, "bilinear"),  # zero padding
        Preprocessing((28, 28), (28, 28), (0.5,) * 3, (0.25,) * 3, 3, "bilinear", direct_resize=True),
        Preprocessing((64, 48), (64, 48), (0.5,) * 3, (0.25,) * 3, 3, "bicubic", direct_resize=True),
        Preprocessing(256, (224, 224), (0.5,) * 3, (0.25,) * 3, 3, "nearest"),
    ],
    ids=["pad", "direct-bilinear", "direct-bicubic", "nearest"],
)
@pytest.mark.parametrize("shape", [(180, 260), (7, 5), (900, 40)])
def test_every_kind_of_preprocessing_matches_the_plain_path(
    prep: Preprocessing, shape: tuple[int, int]
) -> None:
    image = np.random.default_rng(2).random((*shape, 3)).astype(np.float32)
    torch.testing.assert_close(
        preprocess(image, prep, LIMIT).tensor[0], _plain(image, prep), atol=2e-5, rtol=1e-5
    )


def test_greyscale_is_resized_first_and_then_copied_into_three_channels() -> None:
    grey = np.random.default_rng(3).random((90, 130)).astype(np.float32)
    prep = _prep("resnet18")
    prepared = preprocess(grey, prep, LIMIT)
    reference = _plain(np.repeat(grey[:, :, None], 3, axis=2), prep)
    torch.testing.assert_close(prepared.tensor[0], reference, atol=2e-5, rtol=1e-5)
    assert any("greyscale copied" in s for s in prepared.steps)


@pytest.mark.parametrize("name", ["resnet18", "inception_v3"])
@pytest.mark.parametrize("shape", [(1, 10000), (10000, 1), (1, 25000), (1, 36_000_000)])
def test_extreme_strips_stay_model_sized(name: str, shape: tuple[int, int]) -> None:
    # A broadcast view: the 36-megapixel strip costs no memory here, only what preprocessing builds does.
    image = np.broadcast_to(np.float32(0.5), (*shape, 3))
    prep = _prep(name)
    the_plan = plan(shape[0], shape[1], 3, prep, LIMIT)
    crop = prep.crop_size[0]
    assert the_plan.largest <= 3 * crop * crop  # nothing larger than the model input itself
    prepared = preprocess(image, prep, LIMIT)
    assert prepared.tensor.shape == (1, 3, crop, crop)
    long_side = int(prep.resize_size * max(shape) / min(shape))  # type: ignore[operator]
    steps = " ".join(prepared.steps)
    assert (
        f"the whole image {long_side} x" in steps
        or f"the whole image {_short_side(prep)} x {long_side}" in steps
    )
    assert any(s.startswith("cropped first") for s in prepared.steps)
    # A uniform image stays uniform: the weights of every output pixel sum to one.
    torch.testing.assert_close(
        prepared.shown.astype(np.float32), np.full_like(prepared.shown, 128, np.float32)
    )


def test_over_the_limit_is_refused_before_anything_is_built_and_names_the_setting() -> None:
    image = np.random.default_rng(4).random((300, 400, 3)).astype(np.float32)
    with pytest.raises(OverLimit) as info:
        preprocess(image, _prep("resnet18"), limit=10_000)
    error = info.value
    assert error.extra["limit"] == "max_preprocess_elements"
    assert error.extra["maximum"] == 10_000 and error.extra["estimate"] > 10_000
    assert "max_preprocess_elements" in error.message and "10,000" in error.message
    assert error.field == "image_id"


def test_long_filters_of_a_huge_downscale_are_sized_before_they_are_built() -> None:
    # A 36-megapixel row squeezed into 28 columns would need 28 x 2.6 M filter weights: refused from shapes.
    image = np.broadcast_to(np.float32(0.5), (1, 36_000_000))
    prep = Preprocessing((28, 28), (28, 28), (0.5,), (0.25,), 1, "bilinear", direct_resize=True)
    with pytest.raises(OverLimit) as info:
        preprocess(image, prep, limit=LIMIT)
    assert "resize weights" in info.value.message
    assert info.value.extra["estimate"] > LIMIT


def test_ordinary_images_are_unchanged_and_not_said_to_be_cropped() -> None:
    # A built-in's direct resize reads the whole image: no "cropped first" step.
    image = np.random.default_rng(5).random((64, 64)).astype(np.float32)
    prep = Preprocessing((28, 28), (28, 28), (0.5,), (0.25,), 1, "bilinear", direct_resize=True)
    prepared = preprocess(image, prep, LIMIT)
    assert not any(s.startswith("cropped first") for s in prepared.steps)
    torch.testing.assert_close(prepared.tensor[0], _plain(image, prep), atol=2e-5, rtol=1e-5)
