"""Built-in models: architectures, deterministic quick training end to end, loading, and shipped weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from app.config import PROJECT_ROOT
from app.core.imaging import synthetic
from app.core.models.builtin_nets import BUILTIN_ARCHITECTURES, DigitNet, NoduleNet, count_parameters
from app.core.training.builtin import (
    BUILTIN_RECIPES,
    METADATA_KEYS,
    evaluate_accuracy,
    load_builtin,
    normalise,
    train_all_builtin,
    train_builtin,
)

SHIPPED = PROJECT_ROOT / "models"


@pytest.mark.parametrize(
    ("cls", "size", "classes"),
    [(NoduleNet, 128, 2), (NoduleNet, 64, 3), (DigitNet, 28, 10), (DigitNet, 56, 4)],
)
def test_architectures_shapes(cls: type[torch.nn.Module], size: int, classes: int) -> None:
    for in_channels in (1, 3):
        model = cls(num_classes=classes, in_channels=in_channels).eval()
        with torch.inference_mode():
            out = model(torch.zeros(2, in_channels, size, size))
        assert out.shape == (2, classes)


def test_architectures_are_registered_with_clear_layer_names() -> None:
    assert {"NoduleNet": NoduleNet, "DigitNet": DigitNet} == BUILTIN_ARCHITECTURES
    nodule = dict(NoduleNet(2).named_modules())
    for name in ("features.conv1", "features.conv4", "features.relu4", "classifier"):
        assert name in nodule
    digit = dict(DigitNet(10).named_modules())
    for name in ("features.conv1", "features.conv2", "classifier.fc1", "classifier.fc2"):
        assert name in digit
    assert digit["features.conv1"].kernel_size == (5, 5)  # type: ignore[union-attr]
    # Small enough to train in minutes on two cores and ship in well under 2 MB.
    assert count_parameters(NoduleNet(2)) < 100_000
    assert count_parameters(DigitNet(10)) < 100_000


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two independent quick trainings of every built-in model, into two directories."""
    first = tmp_path_factory.mktemp("first")
    second = tmp_path_factory.mktemp("second")
    lines: list[str] = []
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.random.get_rng_state()
    results = train_all_builtin(first, log=lines.append, quick=True)
    state_after = {
        "threads": torch.get_num_threads() == threads,
        "deterministic": torch.are_deterministic_algorithms_enabled() == deterministic,
        "rng": torch.equal(torch.random.get_rng_state(), rng_state),
    }
    again = {name: train_builtin(name, second, log=lambda _m: None, quick=True) for name in BUILTIN_RECIPES}
    return {
        "first": first,
        "second": second,
        "results": results,
        "again": again,
        "lines": lines,
        "state": state_after,
    }


def test_quick_training_writes_three_files_with_exact_metadata(quick_runs: dict[str, Any]) -> None:
    first: Path = quick_runs["first"]
    results = quick_runs["results"]
    assert set(results) == {"nodule-cnn", "digit-cnn"}
    for name, recipe in BUILTIN_RECIPES.items():
        meta = json.loads((first / f"{name}.json").read_text())
        assert tuple(meta) == METADATA_KEYS
        assert meta["name"] == name
        assert meta["architecture"] == recipe.architecture
        assert meta["categories"] == list(recipe.categories)
        assert meta["input_size"] == list(recipe.input_size)
        assert meta["in_channels"] == 1
        assert meta["train_size"] == recipe.quick_train_size
        assert meta["test_size"] == recipe.quick_test_size
        assert meta["epochs"] == 1
        assert meta["seed"] == recipe.seed
        assert meta["reproduce"].startswith("convscope train-builtin")
        assert 0.0 <= meta["test_accuracy"] <= 1.0
        assert len(meta["mean"]) == len(meta["std"]) == 1
        assert 0.0 < meta["mean"][0] < 1.0 and meta["std"][0] > 0.0
        result = results[name]
        assert {k: result[k] for k in METADATA_KEYS} == meta
        arch = BUILTIN_ARCHITECTURES[recipe.architecture]
        assert result["parameters"] == count_parameters(arch(len(recipe.categories)))
        assert result["seconds"] > 0.0
        card = (first / f"{name}.md").read_text()
        for needle in ("Intended use", "Not for diagnosis", "Data", "Architecture", "Accuracy", "Reproduce"):
            assert needle in card
        assert "features.conv1" in card
        weights = first / f"{name}.safetensors"
        assert 0 < weights.stat().st_size < 2_000_000
        for ext in ("safetensors", "json", "md"):
            assert (first / f"{name}.{ext}").stat().st_mode & 0o044 == 0o044  # readable by the server
    # No temporary files are left behind by the atomic writes.
    assert sorted(p.name for p in first.iterdir()) == sorted(
        f"{n}.{ext}" for n in BUILTIN_RECIPES for ext in ("json", "md", "safetensors")
    )
    assert any("epoch 1/1" in line for line in quick_runs["lines"])
    assert any("held-out test accuracy" in line for line in quick_runs["lines"])


def test_training_is_deterministic_and_restores_torch_state(quick_runs: dict[str, Any]) -> None:
    assert quick_runs["state"] == {"threads": True, "deterministic": True, "rng": True}
    for name in BUILTIN_RECIPES:
        a = load_file(str(quick_runs["first"] / f"{name}.safetensors"))
        b = load_file(str(quick_runs["second"] / f"{name}.safetensors"))
        assert set(a) == set(b)
        for key in a:
            assert torch.equal(a[key], b[key]), key
        # Byte-identical files too: reproducible artefacts diff cleanly in git.
        for ext in ("safetensors", "json", "md"):
            first_bytes = (quick_runs["first"] / f"{name}.{ext}").read_bytes()
            assert first_bytes == (quick_runs["second"] / f"{name}.{ext}").read_bytes(), ext
        assert quick_runs["results"][name]["test_accuracy"] == quick_runs["again"][name]["test_accuracy"]


def test_load_builtin_round_trips(quick_runs: dict[str, Any]) -> None:
    first: Path = quick_runs["first"]
    for name, recipe in BUILTIN_RECIPES.items():
        model, meta = load_builtin(name, first)
        assert not model.training
        assert meta["name"] == name
        stored = load_file(str(first / f"{name}.safetensors"))
        state = model.state_dict()
        assert set(stored) == set(state)
        for key, value in stored.items():
            assert torch.equal(state[key], value), key
        # The loaded network reproduces the accuracy measured at training time on the same test set.
        x, y = recipe.make_data(recipe.quick_test_size, recipe.seed + 1000, recipe.input_size[0])
        assert evaluate_accuracy(model, x, y, meta["mean"], meta["std"]) == pytest.approx(
            meta["test_accuracy"]
        )
        other, _ = load_builtin(name, quick_runs["second"])
        probe = torch.rand(3, 1, *recipe.input_size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            assert torch.equal(model(probe), other(probe))


def test_load_builtin_errors(quick_runs: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_builtin("nodule-cnn", tmp_path)
    with pytest.raises(ValueError):
        load_builtin("../nodule-cnn", quick_runs["first"])
    first: Path = quick_runs["first"]
    meta = json.loads((first / "nodule-cnn.json").read_text())
    # Unknown architecture in the json.
    (tmp_path / "nodule-cnn.json").write_text(json.dumps({**meta, "architecture": "Nope"}))
    (tmp_path / "nodule-cnn.safetensors").write_bytes((first / "nodule-cnn.safetensors").read_bytes())
    with pytest.raises(ValueError, match="unknown architecture"):
        load_builtin("nodule-cnn", tmp_path)
    # Weights that do not match the architecture are refused (strict loading).
    (tmp_path / "nodule-cnn.json").write_text(json.dumps(meta))
    (tmp_path / "nodule-cnn.safetensors").write_bytes((first / "digit-cnn.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not match"):
        load_builtin("nodule-cnn", tmp_path)
    with pytest.raises(ValueError, match="unknown built-in model"):
        train_builtin("no-such-model", tmp_path, quick=True)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W) float32 -> (size, size) float32, bilinear, as the app does before a built-in model."""
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def test_shipped_models_recognise_the_gallery_samples() -> None:
    nodule, meta = load_builtin("nodule-cnn", SHIPPED)
    size = meta["input_size"][0]
    with_nodules = _resize(synthetic.sample_ct_slice(), size)
    without = _resize(synthetic.ct_slice(np.random.default_rng(7), 256, nodules=0), size)
    x = np.stack([with_nodules, without])[:, None]
    with torch.inference_mode():
        probs = nodule(normalise(x, meta["mean"], meta["std"])).softmax(dim=1)
    assert meta["categories"][int(probs[0].argmax())] == "nodule"
    assert meta["categories"][int(probs[1].argmax())] == "no nodule"

    digit, meta = load_builtin("digit-cnn", SHIPPED)
    size = meta["input_size"][0]
    x = np.stack([_resize(synthetic.sample_digit(d, 112), size) for d in range(10)])[:, None]
    with torch.inference_mode():
        predicted = digit(normalise(x, meta["mean"], meta["std"])).argmax(dim=1)
    assert [meta["categories"][int(i)] for i in predicted] == [str(d) for d in range(10)]


# Fresh held-out sets from seeds the training never used.
@pytest.mark.parametrize(("name", "n"), [("nodule-cnn", 200), ("digit-cnn", 500)])
def test_shipped_models_reach_their_claimed_accuracy(name: str, n: int) -> None:
    model, meta = load_builtin(name, SHIPPED)
    assert (SHIPPED / f"{name}.safetensors").stat().st_size < 2_000_000
    assert (SHIPPED / f"{name}.md").is_file()
    assert tuple(meta) == METADATA_KEYS
    assert meta["reproduce"] == "convscope train-builtin"
    assert meta["test_accuracy"] > 0.95
    size = meta["input_size"][0]
    if name == "nodule-cnn":
        x, y = synthetic.nodule_dataset(n, seed=97_531, size=size)
    else:
        x, y = synthetic.digit_dataset(n, seed=97_531, size=size)
    accuracy = evaluate_accuracy(model, x, y, meta["mean"], meta["std"])
    # Binomial standard error at n=200 and p=0.97 is about 1.2 %; allow a few of them.
    assert accuracy >= meta["test_accuracy"] - 0.05
    assert np.isfinite(accuracy)
