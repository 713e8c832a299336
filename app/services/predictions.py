"""Top-k predictions for an image and a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from app.core.imaging.preprocess import PreparedInput, topk
from app.errors import InvalidInput
from app.services.models import LoadedModel

MAX_TOP_K = 20


@dataclass
class Prediction:
    index: int
    label: str
    probability: float


@dataclass
class PredictionResult:
    model: LoadedModel
    predictions: list[Prediction]
    prepared: PreparedInput


def predict(loaded: LoadedModel, image: NDArray[np.floating], k: int = 5) -> PredictionResult:
    """Run one image through one model; (H, W[, C]) [0, 1] image -> top-k classes with probabilities."""
    if not 1 <= k <= MAX_TOP_K:
        raise InvalidInput(f"k must be between 1 and {MAX_TOP_K}.", field="k")
    prepared = loaded.prepare(image)
    # The lock keeps this forward pass out of another request's hooks on the same cached module.
    with loaded.lock, torch.inference_mode():
        logits = loaded.module(prepared.tensor)
    if not bool(torch.isfinite(logits).all()):
        # e.g. an uploaded model with huge weights: softmax would turn this into NaN "probabilities".
        raise InvalidInput(
            f"{loaded.display_name} gives outputs that are not finite numbers (overflow to infinity or NaN), "
            "so it has no probabilities to show; check its weights and normalisation.",
            field="model",
        )
    ranked = topk(logits, loaded.categories, k)
    return PredictionResult(
        model=loaded,
        predictions=[Prediction(i, label, p) for i, label, p in ranked],
        prepared=prepared,
    )
