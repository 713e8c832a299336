from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import get_model_weights

from app.core.imaging.preprocess import preprocess, topk
from app.core.models import zoo


def test_milestones_come_first_and_everything_else_is_there() -> None:
    names = zoo.classification_model_names()
    assert tuple(names[: len(zoo.MILESTONES)]) == zoo.MILESTONES
    assert {"resnet152", "convnext_tiny", "regnet_y_400mf"} <= set(names)


def test_torchvision_spec_is_read_from_weights_metadata() -> None:
    spec = zoo.torchvision_spec("resnet18")
    meta = get_model_weights("resnet18").DEFAULT.meta
    assert spec.params == meta["num_params"] == 11_689_512
    assert spec.top1 == meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert spec.gflops == meta["_ops"]
    assert spec.depth == 21  # 20 convolutions (incl. 3 downsample 1x1) + 1 fully-connected
    assert spec.input_size == (224, 224)
    assert spec.year == 2015 and "Residual" in spec.key_idea
    assert spec.weights_file is not None and spec.weights_file.startswith("resnet18-")


def test_inception_uses_its_own_input_size() -> None:
    spec = zoo.torchvision_spec("inception_v3")
    assert spec.input_size == (299, 299)
    assert spec.preprocessing is not None and spec.preprocessing.resize_size == 342


@pytest.mark.parametrize("name", ["resnet18", "inception_v3", "efficientnet_b0"])
def test_preprocessing_equals_torchvision_transforms(name: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((180, 260, 3)).astype(np.float32)
    spec = zoo.torchvision_spec(name)
    assert spec.preprocessing is not None
    ours = preprocess(image, spec.preprocessing).tensor
    reference = get_model_weights(name).DEFAULT.transforms()(
        torch.from_numpy(image.transpose(2, 0, 1).copy())
    )
    assert ours.shape == (1, *reference.shape)
    torch.testing.assert_close(ours[0], reference, atol=1e-5, rtol=1e-5)


def test_greyscale_is_copied_into_three_channels_and_said_so() -> None:
    spec = zoo.torchvision_spec("resnet18")
    assert spec.preprocessing is not None
    prepared = preprocess(np.full((50, 50), 0.5, np.float32), spec.preprocessing)
    assert prepared.tensor.shape == (1, 3, 224, 224)
    assert any("greyscale copied" in s for s in prepared.steps)
    assert prepared.shown.shape == (224, 224, 3)


def test_untrained_builds_are_seeded_and_identical() -> None:
    a = zoo.build_torchvision("squeezenet1_1", pretrained=False)
    b = zoo.build_torchvision("squeezenet1_1", pretrained=False)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_efficientnet_lite0_weights_ship_offline_and_classify_a_cat() -> None:
    from skimage import data

    spec = zoo.efficientnet_lite0_spec()
    assert spec.offline_weights and spec.num_classes == 1000
    model = zoo.build_efficientnet_lite0(pretrained=True).eval()
    assert spec.preprocessing is not None
    x = preprocess(data.chelsea().astype(np.float32) / 255, spec.preprocessing).tensor
    with torch.inference_mode():
        ranked = topk(model(x), zoo.imagenet_categories(), 3)
    assert ranked[0][1] in {"Egyptian cat", "tabby", "tiger cat"}
    assert ranked[0][2] > 0.3


def test_topk_probabilities_sum_over_all_classes() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    ranked = topk(logits, ["a", "b", "c", "d"], 2)
    probs = torch.softmax(logits, 1)[0]
    assert [r[0] for r in ranked] == [3, 2]
    assert ranked[0][2] == pytest.approx(float(probs[3]))


def test_builtin_specs_count_their_parameters_and_depth() -> None:
    # The zoo table showed "—" for the built-ins although their model cards give the numbers.
    metas = zoo.builtin_metadata(Path(__file__).resolve().parents[3] / "models")
    assert {"nodule-cnn", "digit-cnn"} <= set(metas)
    for name, meta in metas.items():
        spec = zoo.builtin_spec(meta)
        card = (Path(__file__).resolve().parents[3] / "models" / f"{name}.md").read_text()
        assert spec.params is not None and f"{spec.params:,} trainable parameters" in card
        assert spec.depth is not None and spec.depth >= 2
