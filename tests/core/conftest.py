"""Tiny hand-built networks whose explanation is known in advance, as fixtures for the explanation tests.

Fixtures rather than an importable helper module: a bare ``from explain_models import ...`` only works when
pytest puts tests/core on sys.path (the default "prepend" import mode), not under ``--import-mode=importlib``.
Each fixture returns the class or function itself, so a test can build as many models/images as it needs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

BLOB_CENTRE: tuple[int, int] = (20, 9)  # (row, col) of the bright blob in :func:`blob_image`


class _BlobNet(nn.Module):
    """A CNN that says "class 1" when the image has a bright blob.

    Channel 0 of ``features`` is a positive 5x5 averaging kernel with a negative bias: it fires only on
    bright regions. Channel 1 is a constant (bias only) that carries no spatial information. Global
    average pooling and a linear layer make logit 1 grow with channel 0 and logit 0 with channel 1, so
    every explanation of class 1 must point at the blob.
    """

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 2, 5, padding=2), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            conv = self.features[0]
            assert isinstance(conv, nn.Conv2d)
            conv.weight.zero_()
            conv.weight[0].fill_(1.0 / (25 * in_channels))
            conv.bias.copy_(torch.tensor([-0.4, 0.5]))
            self.fc.weight.copy_(torch.tensor([[0.0, 1.0], [400.0, 0.0]]))
            self.fc.bias.zero_()
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _blob_image(size: int = 32, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """``(1, channels, size, size)``: faint noise plus one bright Gaussian blob at BLOB_CENTRE."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    blob = np.exp(-((yy - BLOB_CENTRE[0]) ** 2 + (xx - BLOB_CENTRE[1]) ** 2) / (2 * 2.5**2))
    img = 0.1 * rng.random((size, size)) + 0.9 * blob
    arr = np.repeat(img[None, None], channels, axis=1).astype(np.float32)
    return torch.from_numpy(arr)


def _small_cnn(seed: int = 0, in_channels: int = 3, classes: int = 5) -> nn.Module:
    """A seeded random 3-block CNN (ReLU'd last block ``features``) for agreement tests."""
    torch.manual_seed(seed)
    net = nn.Sequential()
    net.add_module(
        "features",
        nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        ),
    )
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(16, classes))
    # Make batch-norm statistics non-trivial so that eval mode matters.
    with torch.no_grad():
        bn = net.features[1]
        assert isinstance(bn, nn.BatchNorm2d)
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _assert_model_clean(model: nn.Module) -> None:
    """No hooks left on any module and no gradient stored on any parameter."""
    for name, m in model.named_modules():
        assert not m._forward_hooks, f"forward hook left on {name!r}"
        assert not m._forward_pre_hooks, f"forward pre-hook left on {name!r}"
        assert not m._backward_hooks, f"backward hook left on {name!r}"
    for name, p in model.named_parameters():
        assert p.grad is None, f".grad left on {name}"


@pytest.fixture
def blob_centre() -> tuple[int, int]:
    """(row, col) of the bright blob in ``blob_image``."""
    return BLOB_CENTRE


@pytest.fixture
def blob_net() -> type[_BlobNet]:
    """``blob_net(in_channels=1)``: the hand-built blob detector (see :class:`_BlobNet`)."""
    return _BlobNet


@pytest.fixture
def blob_image() -> Callable[..., torch.Tensor]:
    """``blob_image(size=32, channels=1, seed=0)``: faint noise plus one bright blob at ``blob_centre``."""
    return _blob_image


@pytest.fixture
def small_cnn() -> Callable[..., nn.Module]:
    """``small_cnn(seed=0, in_channels=3, classes=5)``: a seeded random 3-block CNN."""
    return _small_cnn


@pytest.fixture
def assert_model_clean() -> Callable[[nn.Module], None]:
    """``assert_model_clean(model)``: no hooks left on any module and no gradient on any parameter."""
    return _assert_model_clean
