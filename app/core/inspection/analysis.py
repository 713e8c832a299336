"""One forward pass that serves the whole "inside the network" view: tree, receptive fields, activations.

``analyse(model, x)`` runs ``model(x)`` once with three recorders attached (``layers.TreeRecorder``,
``receptive_field.RFRecorder`` and ``features.CaptureRecorder``) instead of three separate passes. Each
result equals what ``layer_tree``, ``receptive_fields`` and ``capture`` return on their own (a test
checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from app.core.inspection.features import Capture, CaptureRecorder
from app.core.inspection.receptive_field import LayerRF, RFRecorder
from app.core.models.hooks import Hook, eval_mode, forward_hooks, model_lock
from app.core.models.layers import LayerInfo, TreeRecorder


@dataclass(frozen=True)
class Analysis:
    tree: LayerInfo
    rf: dict[str, LayerRF]
    capture: Capture
    # Modules that run more than once: the RF of every call (``rf`` holds each module's last call).
    rf_calls: dict[str, list[LayerRF]] = field(default_factory=dict)


def analyse(model: nn.Module, x: torch.Tensor) -> Analysis:
    """``x (1, C, H, W)`` -> layer tree, RF of every module and every module's output, in one pass.

    Eval mode, no gradients; hooks removed and ``training`` flags restored whatever happens.
    """
    tree_rec = TreeRecorder(model)
    rf_rec = RFRecorder()
    cap_rec = CaptureRecorder()

    def make_hook(name: str) -> Hook:
        tree_hook = tree_rec.make_hook(name)
        rf_hook = rf_rec.make_hook(name)
        cap_hook = cap_rec.make_hook(name) if name else None

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            tree_hook(module, inputs, output)
            rf_hook(module, inputs, output)
            if cap_hook is not None:
                # The copies are not part of the network: keep them out of the RF bookkeeping.
                rf_rec.tracker.paused = True
                try:
                    cap_hook(module, inputs, output)
                finally:
                    rf_rec.tracker.paused = False

        return hook

    inp = x.detach().clone()
    with (
        model_lock(model),
        eval_mode(model),
        torch.no_grad(),
        forward_hooks(tree_rec.named, make_hook),
        tree_rec.tracking(inp),
        rf_rec.tracker,
    ):
        rf_rec.start(inp)
        result = model(inp)
    return Analysis(
        tree=tree_rec.build(model, inp),
        rf=rf_rec.result(),
        capture=cap_rec.result(result),
        rf_calls=rf_rec.result_calls(),
    )
