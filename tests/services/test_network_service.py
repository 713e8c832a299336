"""NetworkService caching: one forward per image, bounded by entries and bytes; depth picks a conv."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.errors import InvalidInput
from app.services.network import _LRU, NetworkService, rf_larger_than_image

MODEL = "resnet18"


def test_lru_bounded_by_count_and_bytes() -> None:
    lru = _LRU(3, max_bytes=10, weigh=lambda v: v)
    for key, size in [("a", 4), ("b", 4), ("c", 4)]:
        lru.get_or_make(key, lambda s=size: s)
    # 12 bytes > 10: the oldest entry goes even though 3 entries are allowed.
    assert [lru.lookup(k) for k in "abc"] == [None, 4, 4]
    assert lru.get_or_make("b", lambda: 99) == 4  # a hit does not rebuild
    lru.get_or_make("d", lambda: 4)  # over the budget again: c is now the least recently used
    assert [lru.lookup(k) for k in "bcd"] == [4, None, 4]
    lru.get_or_make("huge", lambda: 50)
    assert [lru.lookup(k) for k in ("b", "d", "huge")] == [None, None, 50]  # keeps the newest, however big


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
    # depth counts convolutions; past the last one is the user's mistake, named by its field.
    assert (
        service.features(MODEL, "untrained", sample_image_id, None, depth=1).layer == structure.conv_layers[1]
    )
    with pytest.raises(InvalidInput) as err:
        service.features(MODEL, "untrained", sample_image_id, None, depth=len(structure.conv_layers))
    assert err.value.field == "depth"


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


def test_bars_for_layers_without_a_map(registry: Any, image_store: Any, sample_image_id: str) -> None:
    service = NetworkService(registry, image_store)
    fc = service.features(MODEL, "untrained", sample_image_id, "fc", sort="max", per_page=5)
    assert not fc.spatial and fc.logits
    output = service.activations(fc.loaded, sample_image_id).capture.output.reshape(-1).numpy()
    top5 = np.argsort(-output)[:5]
    assert [b.index for b in fc.bars or []] == top5.tolist()
    assert [b.label for b in fc.bars or []] == [fc.loaded.categories[i] for i in top5]
    biggest = float(np.abs(output).max())
    assert [b.percent for b in fc.bars or []] == pytest.approx(100 * np.abs(output[top5]) / biggest, abs=0.01)
    pooled = service.features(MODEL, "untrained", sample_image_id, "avgpool", per_page=3)
    assert not pooled.logits and [b.label for b in pooled.bars or []] == ["unit 0", "unit 1", "unit 2"]
    conv = service.features(MODEL, "untrained", sample_image_id, "layer4", per_page=3)
    assert conv.spatial and conv.bars is None


def test_rf_probe_defaults_and_fields_larger_than_the_image(
    registry: Any, image_store: Any, sample_image_id: str
) -> None:
    service = NetworkService(registry, image_store)
    loaded = service.model(MODEL, "untrained")
    structure = service.structure(loaded, sample_image_id)
    probe = service.rf_probe(MODEL, "untrained", sample_image_id, None, None, None)
    assert probe.layer.name == service.rf_default_layer(structure)
    _, height, width = probe.layer.output_shape or (0, 0, 0)
    assert (probe.y, probe.x) == (height // 2, width // 2)
    net_input = service.net_input(loaded, sample_image_id)
    # ResNet-18 on 224 px: conv1 sees 7 px, layer4 435 px (padding fills what lies outside the image).
    assert not rf_larger_than_image(structure.rf["conv1"], net_input)
    assert structure.rf["layer4"].size > 224 and rf_larger_than_image(structure.rf["layer4"], net_input)
    deep = service.rf_probe(MODEL, "untrained", sample_image_id, "layer4", 0, 0)
    assert deep.larger_than_image and not probe.larger_than_image
    # The ERF picture: the input under the normalised gradient, with the clipped theoretical box outlined.
    picture = deep.erf_image()
    assert picture.shape == (*net_input.shown.shape[:2], 3)
    assert tuple(picture[0, 0]) == (255, 212, 0)  # the box's corner at the image's corner


def test_the_service_lru_is_bounded_by_count_and_bytes_and_keeps_an_oversized_newest_alone() -> None:
    from app.services.network import _LRU

    by_count = _LRU(2)
    for i in range(3):
        by_count.put(i, str(i))
    assert by_count.lookup(0) is None and by_count.lookup(2) == "2"
    by_count.lookup(1)  # 1 becomes the most recently used
    by_count.put(3, "3")
    assert by_count.lookup(1) == "1" and by_count.lookup(2) is None

    by_bytes = _LRU(10, max_bytes=100, weigh=len)
    for key in "abc":
        by_bytes.put(key, "x" * 40)  # 120 bytes in all: the oldest goes
    assert by_bytes.lookup("a") is None and by_bytes.lookup("c") is not None
    by_bytes.put("huge", "x" * 500)  # larger than the budget: kept alone
    assert by_bytes.lookup("huge") == "x" * 500 and by_bytes.lookup("c") is None
    by_bytes.put("d", "x" * 10)  # the next put replaces it
    assert by_bytes.lookup("huge") is None and by_bytes.lookup("d") == "x" * 10
    assert by_bytes.get_or_make("e", lambda: "made") == "made"
    assert by_bytes.get_or_make("e", lambda: "again") == "made"
