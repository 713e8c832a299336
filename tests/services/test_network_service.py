"""NetworkService caching: one forward per image, bounded by entries and bytes; depth picks a conv."""

from __future__ import annotations

from typing import Any

import pytest

from app.errors import InvalidInput
from app.services.network import _LRU, NetworkService

MODEL = "resnet18"


def test_lru_bounded_by_count_and_bytes() -> None:
    lru = _LRU(3, max_bytes=10, weigh=lambda v: v)
    for key, size in [("a", 4), ("b", 4), ("c", 4)]:
        lru.get_or_make(key, lambda s=size: s)
    # 12 bytes > 10: the oldest entry goes even though 3 entries are allowed.
    assert list(lru) == ["b", "c"]
    assert lru.get_or_make("b", lambda: 99) == 4  # a hit does not rebuild
    assert list(lru) == ["c", "b"]
    lru.get_or_make("huge", lambda: 50)
    assert list(lru) == ["huge"]  # always keeps the newest, however big


def test_activation_cache_per_image(
    registry: Any, image_store: Any, sample_image_id: str, gray_image_id: str
) -> None:
    service = NetworkService(registry, image_store, cache_size=1)
    loaded = service.model(MODEL, "untrained")
    service.features(MODEL, "untrained", sample_image_id, "layer1")
    service.features(MODEL, "untrained", sample_image_id, "layer4")
    assert service.forward_passes == 1
    service.features(MODEL, "untrained", gray_image_id, "layer1")
    assert service.forward_passes == 2
    service.features(MODEL, "untrained", sample_image_id, "layer1")  # evicted (cache_size=1): runs again
    assert service.forward_passes == 3
    structure = service.structure(loaded, sample_image_id)
    assert service.default_layer(structure, 0.0) == "conv1"
    assert service.default_layer(structure, 1.0) == structure.conv_layers[-1]
    with pytest.raises(InvalidInput):
        service.features(MODEL, "untrained", sample_image_id, "layer1", sort="median")


def test_probe_on_a_layer_without_a_map_says_why(
    registry: Any, image_store: Any, sample_image_id: str
) -> None:
    service = NetworkService(registry, image_store)
    with pytest.raises(InvalidInput) as err:
        service.rf_probe(MODEL, "untrained", sample_image_id, "avgpool", 0, 0)
    assert "see the whole image" in err.value.message and "layer4" in err.value.extra["choices"]
    # Swin's patch embedding ends channels-last (56, 56, 96): its units are local, not global.
    with pytest.raises(InvalidInput) as err:
        service.rf_probe("swin_t", "untrained", sample_image_id, "features.0", 0, 0)
    assert err.value.field == "layer" and "whole image" not in err.value.message
    assert "features.0.0" in err.value.extra["choices"]
