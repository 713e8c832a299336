"""fit="crop" (the model's own transform) against fit="fit" (the whole image, aspect kept, zero-padded).

Issue 10, item 10: a 448 x 224 composite of two pictures loses most of each half to the centre crop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from app.core.imaging.preprocess import preprocess
from app.core.models import zoo
from app.core.models.zoo import Preprocessing

LIMIT = 16_000_000


def _prep(name: str) -> Preprocessing:
    prep = zoo.torchvision_spec(name).preprocessing
    assert prep is not None
    return prep


def two_halves() -> np.ndarray:
    """448 x 224 RGB: a red left half and a blue right half, each with a white bar near its outer edge."""
    image = np.zeros((224, 448, 3), dtype=np.float32)
    image[:, :224, 0] = 0.8
    image[:, 224:, 2] = 0.8
    image[:, 8:24] = 1.0  # near the left edge of the left picture
    image[:, 424:440] = 1.0  # near the right edge of the right picture
    return image


def _shown(prepared) -> np.ndarray:
    return prepared.shown.astype(np.float32) / 255.0


def test_fit_keeps_both_halves_and_crop_loses_their_outer_parts():
    prep = _prep("resnet18")  # resize 256, centre crop 224
    cropped = preprocess(two_halves(), prep, LIMIT, fit="crop")
    fitted = preprocess(two_halves(), prep, LIMIT, fit="fit")
    assert cropped.fit == "crop" and fitted.fit == "fit"
    assert cropped.tensor.shape == fitted.tensor.shape == (1, 3, 224, 224)

    crop, fit = _shown(cropped), _shown(fitted)
    # crop: the 512 x 256 resize keeps columns 144..367, so neither white bar survives.
    assert crop.min(axis=2).max() < 0.5
    # fit: the image becomes 224 x 112, centred (rows 56..167), black padding above and below.
    assert fit[:56].max() == 0 and fit[168:].max() == 0
    band = fit[56:168]
    left, right = band[:, :112], band[:, 112:]
    # The left half is red, the right blue, and both white bars (at 4..12 and 212..220 px) are there.
    assert left[:, 20:100, 0].mean() > 0.7 and left[:, 20:100, 2].max() < 0.05
    assert right[:, 12:92, 2].mean() > 0.7 and right[:, 12:92, 0].max() < 0.05
    assert band[:, 5:11].min() > 0.95 and band[:, 213:219].min() > 0.95
    assert any(s.startswith("fit (not the model's own crop): resized to 224 x 112") for s in fitted.steps)
    assert any("zero padding" in s for s in fitted.steps)


def test_fit_equals_torchvision_resize_then_pad():
    """The independent recipe: resize the whole image to the fitted size with torchvision, pad, normalise."""
    prep = _prep("resnet18")
    image = np.random.default_rng(3).random((150, 400, 3)).astype(np.float32)
    prepared = preprocess(image, prep, LIMIT, fit="fit")
    x = torch.from_numpy(image.transpose(2, 0, 1).copy())
    new_h, new_w = round(150 * 224 / 400), 224
    x = TF.resize(x, [new_h, new_w], interpolation=InterpolationMode(prep.interpolation), antialias=True)
    top = (224 - new_h) // 2
    canvas = torch.zeros(3, 224, 224)
    canvas[:, top : top + new_h] = x
    expected = TF.normalize(canvas, list(prep.mean), list(prep.std))
    torch.testing.assert_close(prepared.tensor[0], expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(224, 224), (300, 100)])
def test_fit_of_a_square_model_input_on_direct_resize_models(shape: tuple[int, int]):
    # Built-in models resize straight to their input (aspect not kept); fit keeps it.
    prep = Preprocessing(
        resize_size=(64, 64), crop_size=(64, 64), mean=(0.5,), std=(0.25,), in_channels=1, direct_resize=True
    )
    image = np.ones(shape, dtype=np.float32)
    fitted = preprocess(image, prep, LIMIT, fit="fit")
    shown = fitted.shown[:, :, 0]
    if shape[0] == shape[1]:
        assert shown.min() == 255
    else:
        # 300 x 100 (H x W) -> 64 x 21 wide content in the middle columns, zero padding left and right.
        assert shown[:, :21].max() == 0 and shown[:, 43:].max() == 0 and shown[:, 22:42].min() == 255


def test_unknown_fit_is_refused():
    with pytest.raises(ValueError, match="fit must be one of"):
        preprocess(np.zeros((8, 8), dtype=np.float32), _prep("resnet18"), LIMIT, fit="stretch")  # type: ignore[arg-type]
