"""The training engine: seeded and reproducible, stoppable within one batch, keeps the best checkpoint, and
really learns (a small CNN on the built-in digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from app.core.training.datasets import load_dataset
from app.core.training.engine import (
    TrainConfig,
    TrainingData,
    TrainingDiverged,
    TrainProgress,
    evaluate,
    evaluate_accuracy,
    normalise,
    train,
)


class Stop(Exception):
    pass


def _tiny_data(seed: int = 0, n: int = 96, val: int = 32) -> TrainingData:
    """Two classes a CNN separates easily: a bright top half or a bright bottom half, noised."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n + val) % 2).astype(np.int64)
    x = rng.uniform(0.0, 0.4, size=(n + val, 1, 12, 12)).astype(np.float32)
    x[y == 0, :, :6] += 0.5
    x[y == 1, :, 6:] += 0.5
    return TrainingData(x[:n], y[:n], x[n:], y[n:], ["top", "bottom"], [0.45], [0.3])


def _tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 2),
    )


def _digit_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
    )


def _history(result: object) -> list[dict[str, float | int]]:
    return [r.to_dict() for r in result.history]  # type: ignore[attr-defined]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_same_seed_same_history_and_weights_different_seed_differs(optimizer: str) -> None:
    data = _tiny_data()
    config = TrainConfig(epochs=2, seed=5, batch_size=16, optimizer=optimizer, lr=0.05)  # type: ignore[arg-type]
    first = train(_tiny_net, data, config)
    second = train(_tiny_net, data, config)
    assert _history(first) == _history(second)
    assert first.best_state.keys() == second.best_state.keys()
    for key, value in first.best_state.items():
        assert torch.equal(value, second.best_state[key]), key
    other = train(_tiny_net, data, TrainConfig(epochs=2, seed=6, batch_size=16, optimizer=optimizer, lr=0.05))  # type: ignore[arg-type]
    assert any(not torch.equal(v, other.best_state[k]) for k, v in first.best_state.items())


def test_training_leaves_the_callers_torch_state_alone() -> None:
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(_tiny_net, _tiny_data(), TrainConfig(epochs=1, seed=1, batch_size=32))
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_cancel_stops_within_one_batch() -> None:
    data = _tiny_data(n=160)
    batches_run = 0
    stop_requested_at: int | None = None

    def progress(p: TrainProgress) -> None:
        nonlocal stop_requested_at
        if stop_requested_at is None and p.epoch == 1 and p.batch >= 3:
            stop_requested_at = batches_run

    def checkpoint() -> None:
        nonlocal batches_run
        if stop_requested_at is not None:
            raise Stop()
        batches_run += 1

    with pytest.raises(Stop):
        train(
            _tiny_net, data, TrainConfig(epochs=3, seed=1, batch_size=8, report_every=3), progress, checkpoint
        )
    assert stop_requested_at == 3
    # The checkpoint before the very next batch stopped it: no batch ran after the request.
    assert batches_run == 3


def test_progress_every_few_batches_and_every_epoch() -> None:
    seen: list[TrainProgress] = []
    train(
        _tiny_net, _tiny_data(n=96), TrainConfig(epochs=2, seed=1, batch_size=8, report_every=4), seen.append
    )
    # 12 batches an epoch: reports after batches 4 and 8, then the epoch's end; twice.
    assert [(p.epoch, p.batch, p.epoch_done) for p in seen] == [
        (1, 4, False),
        (1, 8, False),
        (1, 12, True),
        (2, 4, False),
        (2, 8, False),
        (2, 12, True),
    ]
    assert [len(p.history) for p in seen] == [0, 0, 1, 1, 1, 2]
    assert seen[-1].fraction == 1.0
    assert 0 < seen[0].fraction < seen[1].fraction < seen[2].fraction
    assert set(seen[-1].to_dict()["history"][0]) == {  # type: ignore[index]
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
    }


def test_best_checkpoint_is_kept_not_the_last() -> None:
    """After epoch 1 the convolution gets zero weights and a bias of -1000: its ReLU then passes no signal and
    no gradient (momentum cannot bring it back), so the model is stuck at one class (50 %) for good. The best
    state is epoch 1's, scores what the history says, and is a copy (untouched by the breakage), while the
    last weights score worse."""
    data = _tiny_data(n=96)
    model = _tiny_net()
    states: list[dict[str, torch.Tensor]] = []

    def progress(p: TrainProgress) -> None:
        if p.epoch_done:
            states.append({k: v.clone() for k, v in model.state_dict().items()})
            if p.epoch == 1:
                conv = model[0]
                assert isinstance(conv, nn.Conv2d)
                with torch.no_grad():
                    conv.weight.zero_()
                    conv.bias.fill_(-1000.0)

    config = TrainConfig(epochs=3, seed=2, batch_size=16, optimizer="sgd", lr=0.1)
    result = train(model, data, config, progress)
    accs = [r.val_accuracy for r in result.history]
    assert accs[0] > 0.9 and accs[1:] == [0.5, 0.5]
    assert result.best_epoch == 1 and result.best_val_accuracy == accs[0]
    best = _tiny_net()
    best.load_state_dict(result.best_state)
    assert evaluate_accuracy(best, data.x_val, data.y_val, data.mean, data.std) == result.best_val_accuracy
    for key, value in result.best_state.items():
        assert torch.equal(value, states[0][key])
    assert evaluate_accuracy(model, data.x_val, data.y_val, data.mean, data.std) == 0.5


def test_evaluate_gives_loss_and_accuracy_and_restores_the_mode() -> None:
    data = _tiny_data()
    model = _tiny_net().train()
    loss, acc = evaluate(model, data.x_val, data.y_val, data.mean, data.std, batch_size=5)
    assert model.training
    with torch.inference_mode():
        logits = model.eval()(normalise(data.x_val, data.mean, data.std))
    expected = float(nn.functional.cross_entropy(logits, torch.as_tensor(data.y_val)))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert acc == float((logits.argmax(1).numpy() == data.y_val).mean())


def test_bad_configs_are_refused() -> None:
    for bad in (
        {"epochs": 0},
        {"epochs": 1, "batch_size": 0},
        {"epochs": 1, "lr": 0.0},
        {"epochs": 1, "optimizer": "rmsprop"},
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TrainingData(
            np.zeros((2, 1, 4, 4), np.float32),
            np.zeros(2, np.int64),
            np.zeros((0, 1, 4, 4), np.float32),
            np.zeros(0, np.int64),
            ["a", "b"],
            [0.0],
            [1.0],
        )


def test_a_small_cnn_learns_the_digits() -> None:
    """>= 90 % validation accuracy on the built-in digits, one thread, in seconds (seeds 1, 2, 3 give 94.7,
    96.3 and 95.0 %; bench/bench_training.py runs all three and the bare-loop comparison)."""
    data = load_dataset("digits", (28, 28), 1, seed=1, train_size=1500, val_size=300)
    result = train(_digit_net, data, TrainConfig(epochs=5, seed=1, batch_size=32, optimizer="adam", lr=3e-3))
    assert result.best_val_accuracy >= 0.9
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_a_diverging_run_stops_and_says_the_learning_rate() -> None:
    data = _tiny_data()
    with pytest.raises(TrainingDiverged, match="learning rate") as caught:
        train(_tiny_net, data, TrainConfig(epochs=3, seed=1, batch_size=8, optimizer="sgd", lr=1e12))
    assert caught.value.epoch == 1


def test_deterministic_with_two_threads_too() -> None:
    data = _tiny_data()
    config = TrainConfig(epochs=2, seed=5, batch_size=16, threads=2)
    first, second = train(_tiny_net, data, config), train(_tiny_net, data, config)
    assert first.threads == 2
    assert _history(first) == _history(second)
    assert all(torch.equal(v, second.best_state[k]) for k, v in first.best_state.items())
