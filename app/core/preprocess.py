"""Image -> the exact tensor a model sees, with a human account of every step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from numpy.typing import NDArray
from torchvision.transforms import InterpolationMode

from app.core.zoo import Preprocessing

# ITU-R BT.601 luma, the weights PIL uses for RGB -> L.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass
class PreparedInput:
    """The network's input and what to show about it."""

    tensor: torch.Tensor  # (1, C, H, W) float32, normalised
    shown: NDArray[np.uint8]  # (H, W, 3): the tensor de-normalised back to [0, 255] for display
    steps: list[str]


def image_to_tensor(image: NDArray[np.floating]) -> torch.Tensor:
    """(H, W) or (H, W, C) floats in [0, 1] -> (C, H, W) float32 tensor."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def match_channels(tensor: torch.Tensor, channels: int) -> tuple[torch.Tensor, str | None]:
    """Make a (C, H, W) tensor have `channels` channels; say what was done (None if nothing)."""
    have = tensor.shape[0]
    if have == channels:
        return tensor, None
    if have == 1 and channels == 3:
        return tensor.expand(3, -1, -1).clone(), "greyscale copied into the 3 colour channels (R = G = B)"
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=tensor.dtype).view(3, 1, 1)
        return (tensor * weights).sum(
            0, keepdim=True
        ), "colour converted to greyscale (0.299 R + 0.587 G + 0.114 B)"
    raise ValueError(f"cannot turn {have} channels into {channels}")


def preprocess(image: NDArray[np.floating], prep: Preprocessing) -> PreparedInput:
    """Apply a model's preprocessing to an (H, W) or (H, W, C) [0, 1] image -> PreparedInput.

    For torchvision models this equals `weights.transforms()` applied to the float tensor (a test checks it).
    """
    x = image_to_tensor(image)
    height, width = x.shape[1:]
    steps = [
        f"input: {width} x {height} px, {x.shape[0]} channel{'s' if x.shape[0] > 1 else ''}, values in [0, 1]"
    ]
    x, converted = match_channels(x, prep.in_channels)
    if converted:
        steps.append(converted)
    mode = InterpolationMode(prep.interpolation)
    crop_h, crop_w = prep.crop_size
    if prep.direct_resize:
        x = TF.resize(x, [crop_h, crop_w], interpolation=mode, antialias=True)
        steps.append(f"resized to {crop_w} x {crop_h} ({prep.interpolation}, aspect ratio not kept)")
    else:
        if isinstance(prep.resize_size, int):
            x = TF.resize(x, [prep.resize_size], interpolation=mode, antialias=True)
            steps.append(
                f"resized so the shorter side is {prep.resize_size} px ({prep.interpolation}) "
                f"-> {x.shape[2]} x {x.shape[1]}"
            )
        else:
            x = TF.resize(x, list(prep.resize_size), interpolation=mode, antialias=True)
            steps.append(f"resized to {prep.resize_size[1]} x {prep.resize_size[0]} ({prep.interpolation})")
        x = TF.center_crop(x, [crop_h, crop_w])
        steps.append(f"centre-cropped to {crop_w} x {crop_h}")
    shown_tensor = x.clamp(0, 1)
    x = TF.normalize(x, mean=list(prep.mean), std=list(prep.std))
    steps.append(
        "normalised per channel: (value - mean) / std with mean "
        + ", ".join(f"{m:g}" for m in prep.mean)
        + " and std "
        + ", ".join(f"{s:g}" for s in prep.std)
    )
    shown = np.round(shown_tensor.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    if shown.shape[2] == 1:
        shown = np.repeat(shown, 3, axis=2)
    return PreparedInput(tensor=x.unsqueeze(0).contiguous(), shown=shown, steps=steps)


def topk(logits: torch.Tensor, categories: list[str], k: int) -> list[tuple[int, str, float]]:
    """(1, K) logits -> the k most probable (index, label, probability), softmax over all classes."""
    probs = torch.softmax(logits.detach().float().reshape(-1), dim=0)
    k = max(1, min(k, probs.numel()))
    values, indices = probs.topk(k)
    out = []
    for p, i in zip(values.tolist(), indices.tolist(), strict=True):
        label = categories[i] if i < len(categories) else str(i)
        out.append((int(i), label, float(p)))
    return out
