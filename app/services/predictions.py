"""Top-k predictions for an image and a model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

from app.core.imaging.preprocess import Fit, PreparedInput, topk
from app.errors import InvalidInput
from app.services.models import LoadedModel


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


def predict(
    loaded: LoadedModel, image: NDArray[np.floating], k: int = 5, fit: Fit = "crop"
) -> PredictionResult:
    """Run one image through one model; (H, W[, C]) [0, 1] image -> top-k classes with probabilities.

    k is validated where the request is read (schemas.common.PredictFields); here it is only clamped to the
    number of classes. fit: see LoadedModel.prepare.
    """
    prepared = loaded.prepare(image, fit)
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
