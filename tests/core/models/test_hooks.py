"""The hooks toolkit: one lock per model, state restored, and a module's output taken at the call asked for."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from app.core.models import hooks
from app.core.models.hooks import CallNotFound, LayerCapture, LayerNotFound, resolve_call


class Reused(nn.Module):
    """One ReLU module run twice on different inputs (as a ResNet block's relu and Lite0's _swish are)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_resolve_call_is_zero_based_with_negatives_from_the_end() -> None:
    assert resolve_call(None, 3) == 2
    assert resolve_call(0, 3) == 0
    assert resolve_call(-1, 3) == 2
    assert resolve_call(-3, 3) == 0
    for bad in (3, -4):
        with pytest.raises(CallNotFound) as info:
            resolve_call(bad, 3, "act")
        assert isinstance(info.value, ValueError)
        assert "runs 3 times" in str(info.value) and "0 to 2" in str(info.value)
    with pytest.raises(CallNotFound, match="was not called"):
        resolve_call(None, 0, "aux")


@pytest.mark.parametrize("mode", ["keep", "copy"])
def test_capture_takes_the_call_asked_for(mode: str) -> None:
    model = Reused().eval()
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first = torch.relu(model.conv1(x))
        second = torch.relu(model.conv2(first))
    for call, expected in ((0, first), (1, second), (-2, first), (-1, second), (None, second)):
        with torch.no_grad(), hooks.capture_layer(model, "act", call, mode=mode) as cap:  # type: ignore[arg-type]
            out = model(x)
        assert cap.calls == 2
        assert cap.index == (1 if call is None else call % 2)
        # Different calls have different shapes here, so a wrong call cannot pass by accident.
        assert cap.output.shape == expected.shape
        torch.testing.assert_close(cap.output, expected)
        torch.testing.assert_close(out, second)  # the network's own result is unchanged
    assert _no_hooks(model)
    with hooks.capture_layer(model, "act", 2) as cap, torch.no_grad():
        model(x)
    with pytest.raises(CallNotFound):
        _ = cap.output


def test_kept_output_survives_later_in_place_operations() -> None:
    # conv1's output is changed in place by the inplace ReLU right after it: the capture must not see that.
    model = Reused().eval()
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        raw = model.conv1(x)
    assert bool((raw < 0).any())
    for mode in ("keep", "copy"):
        with torch.no_grad(), hooks.capture_layer(model, "conv1", mode=mode) as cap:  # type: ignore[arg-type]
            model(x)
        torch.testing.assert_close(cap.output, raw)


def test_stop_and_replace_act_on_one_call_only() -> None:
    model = Reused().eval()
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with hooks.capture_layer(model, "act", 0, stop=True) as cap, pytest.raises(hooks.StopForward):
        model(x)
    assert cap.calls == 1
    zeros = torch.zeros(1, 3, 8, 8)
    with torch.no_grad(), hooks.capture_layer(model, "act", 0, replace=zeros):
        out = model(x)
    with torch.no_grad():
        torch.testing.assert_close(out, torch.relu(model.conv2(zeros)))
    with pytest.raises(ValueError, match="concrete call"):
        LayerCapture(None, stop=True)


def test_leaf_mode_gives_the_gradient_of_that_call() -> None:
    model = Reused().eval()
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with hooks.frozen_parameters(model), hooks.capture_layer(model, "act", 0, mode="leaf") as cap:
        out = model(x)
    (grad,) = torch.autograd.grad(out.sum(), cap.output)
    assert grad.shape == (1, 3, 8, 8)
    # d/d(first) of sum(relu(conv2(first))) computed independently.
    leaf = cap.output.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(torch.relu(model.conv2(leaf)).sum(), leaf)
    torch.testing.assert_close(grad, expected)
    assert all(p.requires_grad for p in model.parameters())


def test_get_layer_and_state_restored() -> None:
    model = Reused()
    assert hooks.get_layer(model, "conv2") is model.conv2
    with pytest.raises(LayerNotFound) as info:
        hooks.get_layer(model, "conv9")
    assert info.value.choices == ["conv1", "conv2", "act"]
    model.train()
    model.conv1.eval()
    model.conv2.weight.requires_grad_(False)
    with hooks.eval_mode(model), hooks.frozen_parameters(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert model.training and not model.conv1.training and model.conv2.training
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True]


def test_one_lock_per_model_shared_by_every_user() -> None:
    a, b = Reused(), Reused()
    assert hooks.model_lock(a) is hooks.model_lock(a)
    assert hooks.model_lock(a) is not hooks.model_lock(b)
    # The CAM helpers and the services use this same lock (not a second lock system).
    from app.core.explanation import cam

    assert cam.model_lock is hooks.model_lock
    seen: list[bool] = []
    with hooks.model_lock(a):
        t = threading.Thread(target=lambda: seen.append(hooks.model_lock(a).acquire(timeout=0.05)))
        t.start()
        t.join()
    assert seen == [False]


def test_forward_hooks_removed_even_when_the_forward_fails() -> None:
    model = Reused()
    with pytest.raises(RuntimeError), hooks.forward_hooks(model.named_modules(), lambda _n: lambda *a: None):
        model(torch.zeros(1, 4, 8, 8))  # wrong channel count
    assert _no_hooks(model)
