"""Walk a model's module tree: output shapes, parameters and multiply-accumulates per layer.

Public, stable API (also used by the CAM explanations, issue 5):

- ``layer_tree(model, example_input) -> LayerInfo``: the whole module hierarchy, from ONE forward pass.
- ``LayerInfo``: ``name`` (dotted module path, ``""`` for the root), ``type``, ``output_shape``
  (per sample, batch dimension dropped), ``params``, ``macs``, ``children``, ``order`` (first call index,
  ``-1`` if the module never ran), ``calls``; helpers ``walk()``, ``find(name)``, ``is_leaf``.
- ``flat_layers(tree)``: every module below the root, in pre-order (module-definition order).
- ``get_layer(model, name) -> nn.Module`` raising ``LayerNotFound`` (a ``KeyError``) that carries
  ``choices`` (every valid dotted name).
- ``layer_names(model)``, ``conv_layer_names(tree)`` (convolutions in execution order), ``totals(tree)``.
- ``forward_hooks(modules, hook)``: a context manager that always removes what it registered.
- ``eval_mode(model)``: a context manager that puts every submodule in eval mode and restores each
  submodule's own ``training`` flag afterwards.

MACs (multiply-accumulates) per sample are counted for the layer types that do arithmetic: convolutions
(``k_h * k_w * C_in / groups`` per output element), transposed convolutions, ``Linear``, normalisation
(one multiply-add per element, the affine scale and shift of eval mode), pooling (one accumulate or
comparison per window element). Element-wise activations, dropout and reshapes cost 0. Functional
arithmetic outside modules (the residual ``+``) is not a module and is not counted; torchvision's own
GFLOPS figures follow the same convention, so ``totals`` agrees with ``weights.meta["_ops"]``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Hook = Callable[[nn.Module, tuple[Any, ...], Any], Any]


class LayerNotFound(KeyError):
    """Unknown dotted layer name; ``choices`` lists every valid one."""

    def __init__(self, name: str, choices: list[str]) -> None:
        shown = ", ".join(choices[:20]) + (" ..." if len(choices) > 20 else "")
        super().__init__(f"no layer named {name!r}; choose one of: {shown}")
        self.name = name
        self.choices = choices

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0])


@dataclass
class LayerInfo:
    """One module of the tree. ``output_shape`` is per sample, e.g. ``(64, 56, 56)``."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    children: list[LayerInfo] = field(default_factory=list)
    kind: str = "other"  # see layer_kind(): conv, pool, norm, linear, activation, ..., container
    order: int = -1
    calls: int = 0
    depth: int = 0
    # Only set on the root: the example input's per-sample shape and leaf types whose MACs are unknown.
    input_shape: tuple[int, ...] | None = None
    uncounted_types: tuple[str, ...] = ()

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1] if self.name else "(model)"

    def walk(self) -> Iterator[LayerInfo]:
        """Pre-order traversal, self first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, name: str) -> LayerInfo:
        for info in self.walk():
            if info.name == name:
                return info
        raise LayerNotFound(name, [i.name for i in self.walk() if i.name])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "kind": self.kind,
            "output_shape": list(self.output_shape) if self.output_shape is not None else None,
            "params": self.params,
            "macs": self.macs,
            "order": self.order,
            "calls": self.calls,
            "children": [c.to_dict() for c in self.children],
        }


@dataclass(frozen=True)
class Totals:
    params: int
    trainable_params: int
    macs: int
    layers: int
    leaf_layers: int
    param_bytes: int
    output_shape: tuple[int, ...] | None
    input_shape: tuple[int, ...]
    uncounted_types: tuple[str, ...]


@contextlib.contextmanager
def forward_hooks(
    modules: Iterable[tuple[str, nn.Module]], make_hook: Callable[[str], Hook]
) -> Iterator[None]:
    """Register ``make_hook(name)`` as a forward hook on each module; always remove them on exit."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration; every submodule gets its own previous ``training`` flag back."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted path ``name`` (``""`` is the model itself).

    Raises ``LayerNotFound`` (a ``KeyError``) whose ``choices`` lists every valid name.
    """
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    raise LayerNotFound(name, [n for n in modules if n])


def layer_names(model: nn.Module) -> list[str]:
    """Every dotted submodule name, in definition order (root excluded)."""
    return [n for n, _ in model.named_modules() if n]


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)
_POOL_TYPES = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
)
_ADAPTIVE_POOL_TYPES = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
# Types that are known to cost no multiply-accumulates (element-wise or pure reshapes).
_ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Mish,
    nn.Softmax,
    nn.LogSoftmax,
)
_FREE_TYPES: tuple[type[nn.Module], ...] = (
    *_ACTIVATION_TYPES,
    nn.Dropout,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Upsample,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.ChannelShuffle,
    nn.PixelShuffle,
)

# Free types defined outside torch.nn (torchvision.ops), matched by name so core needs no import.
_FREE_TYPE_NAMES = {"StochasticDepth", "Permute", "Identity"}


def layer_kind(module: nn.Module) -> str:
    """A coarse family by ``isinstance``, so subclasses (TF-style "same"-padded convs) are recognised:
    ``conv``, ``conv_transpose``, ``linear``, ``norm``, ``pool``, ``activation``, ``dropout``,
    ``container`` (has children) or ``other``."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "conv_transpose"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        return "linear"
    if isinstance(module, _NORM_TYPES):
        return "norm"
    if isinstance(module, _POOL_TYPES + _ADAPTIVE_POOL_TYPES):
        return "pool"
    if isinstance(module, (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)):
        return "dropout"
    if any(True for _ in module.children()):
        return "container"
    if isinstance(module, _ACTIVATION_TYPES):
        return "activation"
    return "other"


def _prod(values: Iterable[int]) -> int:
    return math.prod(int(v) for v in values)


def leaf_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int | None:
    """Multiply-accumulates of one call of a leaf module, per sample; ``None`` if the type is unknown."""
    out = _first_tensor(output)
    inp = _first_tensor(inputs)
    if out is None:
        return 0
    batch = out.shape[0] if out.dim() > 1 else 1
    per_sample_out = out.numel() // max(batch, 1)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        if inp is None:
            return 0
        per_sample_in = inp.numel() // max(inp.shape[0], 1)
        # Each input element is multiplied into a (C_out / groups) x kernel patch.
        return per_sample_in * (module.out_channels // module.groups) * _prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvNd):
        return per_sample_out * (module.in_channels // module.groups) * _prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return (
            (out.numel() // module.out_features) // max(batch, 1) * module.in_features * module.out_features
        )
    if isinstance(module, nn.Bilinear):
        return per_sample_out * module.in1_features * module.in2_features
    if isinstance(module, _NORM_TYPES):
        return per_sample_out
    if isinstance(module, _POOL_TYPES):
        kernel = module.kernel_size
        window = _prod(kernel) if isinstance(kernel, (tuple, list)) else int(kernel) ** max(out.dim() - 2, 1)
        return per_sample_out * window
    if isinstance(module, _ADAPTIVE_POOL_TYPES):
        # Every input element is read once into some window.
        return inp.numel() // max(inp.shape[0], 1) if inp is not None else 0
    if isinstance(module, _FREE_TYPES) or type(module).__name__ in _FREE_TYPE_NAMES:
        return 0
    return None


def _count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class TreeRecorder:
    """Forward hooks that record shapes, calls, order and MACs; ``build`` turns them into the tree.

    Used by ``layer_tree`` and, together with other recorders, by ``app.core.inspection.analysis.analyse`` so that
    one forward pass can serve several views.
    """

    def __init__(self, model: nn.Module) -> None:
        self.named = list(model.named_modules())
        self.leaves = {name for name, m in self.named if not any(True for _ in m.children())}
        self.shapes: dict[str, tuple[int, ...] | None] = {}
        self.macs: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.order: dict[str, int] = {}
        self.uncounted: set[str] = set()

    def make_hook(self, name: str) -> Hook:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            out = _first_tensor(output)
            self.shapes[name] = tuple(int(s) for s in out.shape[1:]) if out is not None else None
            self.calls[name] = self.calls.get(name, 0) + 1
            if name not in self.order:
                self.order[name] = len(self.order)
            # Own arithmetic of leaves, and of known layer types that happen to have children (a
            # TF-"same" conv that owns its padding module); containers otherwise just sum their children.
            own = name in self.leaves or layer_kind(module) != "container"
            cost = leaf_macs(module, inputs, output) if own else 0
            if cost is None:
                self.uncounted.add(type(module).__name__)
                cost = 0
            self.macs[name] = self.macs.get(name, 0) + cost

        return hook

    def build(self, model: nn.Module, example_input: torch.Tensor) -> LayerInfo:
        # Forward hooks fire when a module *finishes*, so a parent's index lands after its children's;
        # containers take the position of their first child instead.
        def build(name: str, module: nn.Module, depth: int) -> LayerInfo:
            children = [
                build(f"{name}.{child_name}" if name else child_name, child, depth + 1)
                for child_name, child in module.named_children()
            ]
            child_orders = [c.order for c in children if c.order >= 0]
            own_order = min(child_orders) if child_orders else self.order.get(name, -1)
            return LayerInfo(
                name=name,
                type=type(module).__name__,
                output_shape=self.shapes.get(name),
                params=_count_params(module),
                macs=self.macs.get(name, 0) + sum(c.macs for c in children),
                children=children,
                kind=layer_kind(module),
                order=own_order,
                calls=self.calls.get(name, 0),
                depth=depth,
            )

        tree = build("", model, 0)
        tree.uncounted_types = tuple(sorted(self.uncounted))
        tree.input_shape = tuple(int(s) for s in example_input.shape[1:])
        return tree


def layer_tree(model: nn.Module, example_input: torch.Tensor) -> LayerInfo:
    """The module hierarchy with per-layer output shape, parameters and MACs, from one forward pass.

    ``example_input`` is a batch ``(N, C, H, W)`` (N may be 1); shapes and MACs are per sample. The model
    runs in eval mode without gradients; hooks are removed and every ``training`` flag restored even if
    the forward pass fails. A module called several times (a ReLU reused inside a ResNet block) keeps the
    shape of its last call and the sum of the MACs of all calls. A container's MACs are the sum of its
    children's; its params count every parameter below it once.
    """
    recorder = TreeRecorder(model)
    with eval_mode(model), torch.no_grad(), forward_hooks(recorder.named, recorder.make_hook):
        model(example_input)
    return recorder.build(model, example_input)


def flat_layers(tree: LayerInfo) -> list[LayerInfo]:
    """Every module below the root in pre-order (definition order)."""
    return [info for info in tree.walk() if info.name]


def executed_order(tree: LayerInfo, leaves_only: bool = True) -> list[LayerInfo]:
    """Modules that ran, in the order they were first called."""
    infos = [i for i in flat_layers(tree) if i.order >= 0 and (i.is_leaf or not leaves_only)]
    return sorted(infos, key=lambda i: i.order)


def conv_layer_names(tree: LayerInfo) -> list[str]:
    """Convolutions that ran and produced spatial maps, in execution order (for the depth slider)."""
    return [
        i.name
        for i in executed_order(tree, leaves_only=False)
        if i.kind == "conv" and i.output_shape is not None and len(i.output_shape) == 3
    ]


def spatial_layer_names(tree: LayerInfo) -> list[str]:
    """Every module (leaf or block) whose output is a ``(C, H, W)`` map, in execution order."""
    infos = [i for i in flat_layers(tree) if i.order >= 0 and i.output_shape is not None]
    return [i.name for i in sorted(infos, key=lambda i: i.order) if len(i.output_shape or ()) == 3]


def totals(model: nn.Module, tree: LayerInfo) -> Totals:
    """Whole-model figures; shared parameters are counted once."""
    unique = {id(p): p for p in model.parameters()}
    flat = flat_layers(tree)
    return Totals(
        params=sum(p.numel() for p in unique.values()),
        trainable_params=sum(p.numel() for p in unique.values() if p.requires_grad),
        macs=tree.macs,
        layers=len(flat),
        leaf_layers=sum(1 for i in flat if i.is_leaf),
        param_bytes=sum(p.numel() * p.element_size() for p in unique.values()),
        output_shape=tree.output_shape,
        input_shape=tree.input_shape or (),
        uncounted_types=tree.uncounted_types,
    )
