"""Request and response models of the training API (/api/v1/train)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.schemas.common import STRICT_REQUEST

DatasetName = Literal["nodules", "digits", "shapes"]
OptimizerName = Literal["sgd", "adam"]
# Hard bounds of the request itself; the server's own (lower) limits are Settings (max_train_epochs, ...).
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 4096
MAX_IMAGES = 1_000_000


class TrainRequest(BaseModel):
    """POST /api/v1/train: what to train (an architecture, or a model trained here before), on what, how."""

    model_config = STRICT_REQUEST

    architecture: dict[str, Any] | None = Field(
        default=None, description="a new model: the same JSON as POST /api/v1/models (layers or torchvision)"
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="train further a model uploaded or trained here (custom-...), starting from its weights",
    )
    dataset: DatasetName = Field(description="a built-in dataset, generated from the seed")
    epochs: int = Field(ge=1, le=MAX_EPOCHS, description="passes over the training set (max_train_epochs)")
    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="seeds the data, the split, the initial weights and the order",
    )
    batch_size: int = Field(
        default=32, ge=1, le=MAX_BATCH_SIZE, description="images per step (max_train_batch_size)"
    )
    optimizer: OptimizerName = Field(default="adam", description="sgd (momentum 0.9) or adam")
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="learning rate")
    train_size: int | None = Field(
        default=None, ge=1, le=MAX_IMAGES, description="training images; the dataset's default when omitted"
    )
    val_size: int | None = Field(
        default=None, ge=1, le=MAX_IMAGES, description="validation images; the dataset's default when omitted"
    )
    name: str | None = Field(
        default=None, min_length=1, max_length=80, description="the trained model's display name"
    )


class DatasetOut(BaseModel):
    name: str
    description: str
    categories: list[str]
    channels: int
    side: int
    train_size: int
    val_size: int
