"""The registry's offline behaviour: cached weights load, missing ones give a clear message, never a hang."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import get_model

from app.config import Settings
from app.errors import InvalidInput, NotFound, WeightsUnavailable
from app.services.models import ModelRegistry


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(Settings(data_dir=tmp_path / "data", model_cache_size=2))


def test_weights_file_placed_in_the_cache_is_loaded(registry: ModelRegistry, empty_cache: Path) -> None:
    spec = registry.spec("squeezenet1_1")
    torch.manual_seed(123)
    reference = get_model("squeezenet1_1", weights=None)
    empty_cache.mkdir(parents=True)
    assert spec.weights_file is not None
    torch.save(reference.state_dict(), empty_cache / spec.weights_file)

    assert registry.pretrained_available(spec)
    loaded = registry.get("squeezenet1_1", "pretrained")
    assert loaded.weights_status == "pretrained" and not loaded.untrained
    for ours, theirs in zip(
        loaded.module.state_dict().values(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs)
    assert not loaded.module.training
    assert len(loaded.categories) == 1000


def test_missing_weights_say_which_file_and_how_to_get_it(registry: ModelRegistry, empty_cache: Path) -> None:
    with pytest.raises(WeightsUnavailable) as info:
        registry.get("resnet18", "pretrained")
    message = info.value.message
    assert "resnet18-f37072fd.pth" in message
    assert "convscope weights download resnet18" in message
    assert str(empty_cache) in message


def test_auto_falls_back_to_labelled_untrained(registry: ModelRegistry, empty_cache: Path) -> None:
    loaded = registry.get("squeezenet1_1", "auto")
    assert loaded.untrained and loaded.weights_status == "untrained"
    assert loaded.weights_note is not None and "random weights" in loaded.weights_note
    assert "untrained" in loaded.weights_label


def test_lru_is_bounded_and_reuses_loaded_models(registry: ModelRegistry, empty_cache: Path) -> None:
    first = registry.get("squeezenet1_1", "untrained")
    assert registry.get("squeezenet1_1", "untrained") is first
    registry.get("mobilenet_v3_small", "untrained")
    registry.get("shufflenet_v2_x0_5", "untrained")
    assert len(registry.loaded_keys()) == 2
    assert ("squeezenet1_1", "untrained") not in registry.loaded_keys()


def test_unknown_model_lists_the_choices(registry: ModelRegistry) -> None:
    with pytest.raises(NotFound) as info:
        registry.get("resnet19")
    assert info.value.field == "model"
    assert "resnet18" in info.value.extra["choices"]


def test_bad_weights_choice(registry: ModelRegistry) -> None:
    with pytest.raises(InvalidInput):
        registry.get("resnet18", "imagenet")


def test_efficientnet_lite0_is_pretrained_offline(registry: ModelRegistry, empty_cache: Path) -> None:
    loaded = registry.get("efficientnet_lite0")
    assert loaded.weights_status == "pretrained"


def test_builtin_models_are_listed_first_and_load(registry: ModelRegistry) -> None:
    names = registry.names()
    assert names[:2] == ["digit-cnn", "nodule-cnn"] or set(names[:2]) == {"digit-cnn", "nodule-cnn"}
    assert registry.default_model() == "nodule-cnn"
    loaded = registry.get("nodule-cnn")
    assert loaded.weights_status == "pretrained" and loaded.spec.builtin
    assert loaded.in_channels == 1
    untrained = registry.get("nodule-cnn", "untrained")
    assert untrained.untrained
    different = [
        not torch.equal(a, b)
        for a, b in zip(loaded.module.parameters(), untrained.module.parameters(), strict=True)
    ]
    assert any(different)


def test_loaded_models_are_bounded_in_bytes_too(tmp_path: Path, empty_cache: Path) -> None:
    """model_cache_size counts models; max_loaded_model_bytes bounds what they hold (QA: seven VGG-sized models
    left 4.5 GB). The newest stays even when it alone is past the budget."""
    squeeze = ModelRegistry(Settings(data_dir=tmp_path / "d", model_cache_size=10)).get(
        "squeezenet1_1", "untrained"
    )
    budget = int(squeeze.nbytes * 2.5)  # room for two SqueezeNets (4.9 MB each), not three
    assert squeeze.nbytes == sum(p.numel() * 4 for p in squeeze.module.parameters()) + sum(
        b.numel() * b.element_size() for b in squeeze.module.buffers()
    )
    registry = ModelRegistry(
        Settings(data_dir=tmp_path / "data", model_cache_size=10, max_loaded_model_bytes=budget)
    )
    registry.get("squeezenet1_1", "untrained")
    registry.get("squeezenet1_0", "untrained")
    assert len(registry.loaded_keys()) == 2
    registry.get("mobilenet_v3_small", "untrained")  # 2.5 M params: past the budget with both SqueezeNets
    keys = registry.loaded_keys()
    assert keys[-1] == ("mobilenet_v3_small", "untrained")
    assert ("squeezenet1_1", "untrained") not in keys  # the least recently used went first
    assert sum(registry.get(*k).nbytes for k in keys) <= budget or len(keys) == 1
