"""One combined pass gives exactly what the three separate passes give."""

from __future__ import annotations

import torch
import torchvision

from app.core.inspection.analysis import analyse
from app.core.inspection.features import capture
from app.core.inspection.receptive_field import receptive_fields
from app.core.models.layers import layer_tree


def test_analyse_equals_separate_passes() -> None:
    torch.manual_seed(0)
    model = torchvision.models.get_model("squeezenet1_1", weights=None)
    model.train()
    x = torch.rand(1, 3, 64, 64)
    result = analyse(model, x)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    assert result.tree == layer_tree(model, x)
    assert result.rf == receptive_fields(model, x)
    separate = capture(model, x)
    assert result.capture.activations.keys() == separate.activations.keys()
    for name, value in separate.activations.items():
        assert torch.equal(result.capture.activations[name], value), name
    assert result.capture.output is not None and separate.output is not None
    assert torch.equal(result.capture.output, separate.output)
