"""MACs against torchvision's own figures, attention counted, and counts that say when they are incomplete.

torchvision publishes ``weights.meta["_ops"]`` for every classification model: called GFLOPS, it is GMACs of
convolutions, linear layers and attention's matrix products, rounded to 3 decimals. Our ``macs`` use the same
definition, so they must agree for every zoo model. Tolerance: 0.0005 G (half a unit of the last published
decimal, i.e. the rounding) plus 0.2 % (the largest disagreement found is alexnet's 0.03 %). Models are built
and run on the meta device (shapes only, no memory, no arithmetic): the whole zoo takes about 30 s on 1 thread.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from app.core.models import zoo
from app.core.models.custom_models import _MetaExceptSizes
from app.core.models.layers import layer_tree, totals

ABS_TOLERANCE_G = 0.0005
REL_TOLERANCE = 0.002


def _published(name: str) -> float | None:
    ops = get_model_weights(name).DEFAULT.meta.get("_ops")
    return float(ops) if ops is not None else None


def _meta_model(name: str) -> nn.Module:
    try:
        with torch.device("meta"):
            return get_model(name, weights=None, **zoo._arch_kwargs(name))
    except Exception:  # RegNet computes its widths from tensor data while building
        with _MetaExceptSizes("meta"):
            return get_model(name, weights=None, **zoo._arch_kwargs(name))


ZOO_WITH_OPS = [n for n in zoo.classification_model_names() if _published(n) is not None]


def test_every_zoo_model_has_a_published_figure() -> None:
    # If torchvision ever drops "_ops", the test below would silently test nothing.
    assert len(ZOO_WITH_OPS) == len(zoo.classification_model_names()) > 70


@pytest.mark.parametrize("name", ZOO_WITH_OPS)
def test_macs_agree_with_torchvision_ops(name: str) -> None:
    model = _meta_model(name)
    height, width = zoo.torchvision_spec(name).input_size
    tree = layer_tree(model, torch.zeros(1, 3, height, width, device="meta"))
    published = _published(name)
    assert published is not None
    ours = tree.macs / 1e9
    assert abs(ours - published) <= ABS_TOLERANCE_G + REL_TOLERANCE * published, (name, ours, published)
    # Complete, and saying so.
    assert tree.uncounted_types == ()


def test_vit_attention_is_counted() -> None:
    """ViT-B/32 counted 2.95 G (the MLPs and the patch embedding only) while claiming to be complete."""
    model = _meta_model("vit_b_32")
    tree = layer_tree(model, torch.zeros(1, 3, 224, 224, device="meta"))
    attention = tree.find("encoder.layers.encoder_layer_0.self_attention")
    assert attention.kind == "attention"
    # 50 tokens (49 patches + class token) of width 768: Q, K, V and output projections, Q K^T and A V.
    tokens, width = 50, 768
    assert attention.macs == 4 * tokens * width * width + 2 * tokens * tokens * width
    assert attention.other_ops == 12 * tokens * tokens  # softmax, one per score of each of the 12 heads
    assert totals(model, tree).macs / 1e9 == pytest.approx(4.409, abs=0.0005)


def test_multihead_attention_by_hand_with_different_key_length() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=4)

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = mha

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q = x.flatten(2).permute(2, 0, 1)[:5, :, :8]  # (L=5, N, 8)
            k = torch.ones(7, x.shape[0], 6)  # (S=7, N, 6)
            v = torch.ones(7, x.shape[0], 4)
            return self.attn(q, k, v, need_weights=False)[0]

    tree = layer_tree(Cross(), torch.zeros(2, 8, 3, 3))
    length, source, embed = 5, 7, 8
    expected = length * embed * embed * 2 + source * (6 + 4) * embed + 2 * length * source * embed
    assert tree.find("attn").macs == expected
    assert tree.find("attn").other_ops == 2 * length * source


class MatmulInForward(nn.Module):
    """Arithmetic that is not a module: a weight used with ``@`` in the model's own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.w = nn.Parameter(torch.zeros(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3)) @ self.w


def test_matrix_products_outside_modules_are_counted() -> None:
    tree = layer_tree(MatmulInForward(), torch.zeros(2, 1, 6, 6))
    conv = 4 * 4 * 4 * 9
    assert tree.find("conv").macs == conv
    assert tree.macs == conv + 4 * 3  # per sample: (1, 4) @ (4, 3)
    assert tree.uncounted_types == ()


class Unsizable(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...ij,...jk->...ik", x, x)


def test_a_product_that_cannot_be_sized_is_listed_as_uncounted() -> None:
    tree = layer_tree(nn.Sequential(Unsizable()), torch.zeros(1, 2, 3, 3))
    assert tree.uncounted_types == ("Unsizable",)
