"""Walk a model's module tree: output shapes, parameters, MACs and other operations per layer.

Public, stable API (also used by the CAM explanations, feature maps and the work-cost estimates):

- ``layer_tree(model, example_input) -> LayerInfo``: the whole module hierarchy, from ONE forward pass.
- ``LayerInfo``: ``name`` (dotted module path, ``""`` for the root), ``type``, ``output_shape``
  (per sample, batch dimension dropped, of the module's LAST call), ``params``, ``macs``, ``other_ops``,
  ``children``, ``order`` (first call index, ``-1`` if the module never ran), ``calls`` (how many times it ran
  in the forward pass) and ``call_shapes`` (the output shape of each call, 0-based); helpers ``walk()``,
  ``find(name)``, ``is_leaf``.
- ``flat_layers(tree)``: every module below the root, in pre-order (module-definition order).
- ``layer_names(model)``, ``get_layer(model, name)`` and ``LayerNotFound`` come from
  ``app.core.models.hooks`` (re-exported here), as do ``eval_mode`` and ``forward_hooks``.
- ``conv_layer_names(tree)`` (convolutions in execution order), ``totals(model, tree)``.

What is counted (per sample)
----------------------------
``macs``: multiply-accumulates of convolutions (``k_h * k_w * C_in / groups`` per output element), transposed
convolutions, ``Linear`` / ``Bilinear`` layers, and the matrix products of attention (the query/key/value and
output projections, ``Q K^T`` and ``softmax(.) V``) and of any other matrix product a module makes with
``torch`` functions (``F.linear``, ``matmul``, ``@``, ``bmm``, ``einsum``, ``scaled_dot_product_attention``,
functional convolutions). This is the figure torchvision's ``weights.meta["_ops"]``, fvcore and ptflops report
(they call it GFLOPS, meaning GMACs).

``other_ops``: the rest of the arithmetic, counted separately and never added to ``macs``: normalisation (one
multiply-add per output element, the affine scale and shift of eval mode), pooling (one accumulate or
comparison per window element; adaptive pooling one per input element), element-wise activations (one per
output element, softmax included) and attention's softmax (one per attention score). Dropout, reshapes and
padding cost 0. Functional element-wise arithmetic outside modules (the residual ``+``, a squeeze-and-excitation
gate's ``*``) is in neither figure.

``uncounted_types`` (on the root and in ``totals``) lists the module types whose arithmetic is not known: leaf
types this file has no rule for, and modules that make a matrix product this file cannot size. Their share is
counted as 0, so a non-empty list means the totals are a lower bound.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from app.core.models.hooks import (
    Hook,
    LayerNotFound,
    eval_mode,
    first_tensor,
    forward_hooks,
    get_layer,
    layer_names,
    model_lock,
)

__all__ = [
    "Cost",
    "Hook",
    "LayerInfo",
    "LayerNotFound",
    "Totals",
    "TreeRecorder",
    "conv_layer_names",
    "eval_mode",
    "executed_order",
    "flat_layers",
    "forward_hooks",
    "get_layer",
    "layer_cost",
    "layer_kind",
    "layer_names",
    "layer_tree",
    "leaf_macs",
    "spatial_layer_names",
    "totals",
]


@dataclass
class LayerInfo:
    """One module of the tree. ``output_shape`` is per sample, e.g. ``(64, 56, 56)``."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    children: list[LayerInfo] = field(default_factory=list)
    kind: str = "other"  # see layer_kind(): conv, pool, norm, linear, attention, activation, ..., container
    order: int = -1
    calls: int = 0
    depth: int = 0
    other_ops: int = 0
    # Output shape of each call, in call order (call index 0, 1, ...); () for a module that never ran.
    call_shapes: tuple[tuple[int, ...] | None, ...] = ()
    # Only set on the root: the example input's per-sample shape and types whose arithmetic is unknown.
    input_shape: tuple[int, ...] | None = None
    uncounted_types: tuple[str, ...] = ()

    @property
    def is_leaf(self) -> bool:
        return not self.children

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1] if self.name else "(model)"

    @property
    def label(self) -> str:
        """``name`` plus "(called N times)" for a module that runs more than once, for layer pickers."""
        return self.name if self.calls <= 1 else f"{self.name} (called {self.calls} times)"

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
            "other_ops": self.other_ops,
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
    other_ops: int = 0


@dataclass(frozen=True)
class Cost:
    """Arithmetic of one call: ``macs`` (conv, linear, matrix products) and ``other_ops`` (see the module doc)."""

    macs: int = 0
    other_ops: int = 0


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
_FREE_TYPE_NAMES = {
    "StochasticDepth",
    "Permute",
    "Identity",
    "SwapAxes",
    "WindowPartition",
    "WindowDepartition",
}


# Modules whose own formula (below) already counts the matrix products they make through torch functions.
_FORMULA_KINDS = ("conv", "conv_transpose", "linear")


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def layer_kind(module: nn.Module) -> str:
    """A coarse family by ``isinstance``, so subclasses (TF-style "same"-padded convs) are recognised:
    ``conv``, ``conv_transpose``, ``linear``, ``attention`` (``nn.MultiheadAttention`` and any type whose name
    ends in ``Attention``, e.g. torchvision's Swin and MaxViT attention), ``norm``, ``pool``, ``activation``,
    ``dropout``, ``container`` (has children) or ``other``."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "conv_transpose"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.Linear, nn.Bilinear)):
        return "linear"
    if _is_attention(module):
        return "attention"
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


def layer_cost(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Cost | None:
    """Arithmetic of one call of a module by its own formula, per sample; ``None`` if the type is unknown.

    Attention modules get ``Cost()`` here: their matrix products are counted from the torch functions they
    call (see ``TreeRecorder``).
    """
    out = first_tensor(output)
    inp = first_tensor(inputs)
    if out is None:
        return Cost()
    batch = out.shape[0] if out.dim() > 1 else 1
    per_sample_out = out.numel() // max(batch, 1)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        if inp is None:
            return Cost()
        per_sample_in = inp.numel() // max(inp.shape[0], 1)
        # Each input element is multiplied into a (C_out / groups) x kernel patch.
        return Cost(macs=per_sample_in * (module.out_channels // module.groups) * _prod(module.kernel_size))
    if isinstance(module, nn.modules.conv._ConvNd):
        return Cost(macs=per_sample_out * (module.in_channels // module.groups) * _prod(module.kernel_size))
    if isinstance(module, nn.Linear):
        rows = (out.numel() // module.out_features) // max(batch, 1)
        return Cost(macs=rows * module.in_features * module.out_features)
    if isinstance(module, nn.Bilinear):
        return Cost(macs=per_sample_out * module.in1_features * module.in2_features)
    if _is_attention(module):
        return Cost()
    if isinstance(module, _NORM_TYPES):
        return Cost(other_ops=per_sample_out)
    if isinstance(module, _POOL_TYPES):
        kernel = module.kernel_size
        window = _prod(kernel) if isinstance(kernel, (tuple, list)) else int(kernel) ** max(out.dim() - 2, 1)
        return Cost(other_ops=per_sample_out * window)
    if isinstance(module, _ADAPTIVE_POOL_TYPES):
        # Every input element is read once into some window.
        return Cost(other_ops=inp.numel() // max(inp.shape[0], 1) if inp is not None else 0)
    if isinstance(module, _ACTIVATION_TYPES):
        return Cost(other_ops=per_sample_out)
    if isinstance(module, _FREE_TYPES) or type(module).__name__ in _FREE_TYPE_NAMES:
        return Cost()
    return None


def leaf_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int | None:
    """MACs (conv + linear) of one call of a module by its own formula, per sample; ``None`` if unknown."""
    cost = layer_cost(module, inputs, output)
    return None if cost is None else cost.macs


_EINSUM_LETTERS = re.compile(r"[A-Za-z]")


def _einsum_macs(args: tuple[Any, ...]) -> int | None:
    """Multiply-adds of ``einsum(equation, *operands)``: the product of every index's size (two operands)."""
    if not args or not isinstance(args[0], str):
        return None
    equation = args[0].replace(" ", "")
    operands = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    inputs = equation.split("->")[0].split(",")
    if "." in equation or len(inputs) != len(operands) or len(operands) < 2:
        return None if "." in equation else 0
    sizes: dict[str, int] = {}
    for letters, operand in zip(inputs, operands, strict=True):
        if not isinstance(operand, torch.Tensor) or len(letters) != operand.dim():
            return None
        for letter, size in zip(letters, operand.shape, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), int(size))
    return _prod(sizes[c] for c in sizes if _EINSUM_LETTERS.match(c))


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else None


def _attention_cost(query: Any, key: Any, value: Any, heads: Any, batch_first: bool) -> Cost | None:
    """``multi_head_attention_forward`` (sequence first) and ``_native_multi_head_attention`` (batch first):
    Q, K, V and output projections plus ``Q K^T`` and ``softmax(.) V``; softmax as other operations."""
    if not all(isinstance(t, torch.Tensor) for t in (query, key, value)):
        return None
    if query.dim() == 2:  # unbatched (L, E)
        n, length, embed = 1, int(query.shape[0]), int(query.shape[1])
        source = int(key.shape[0])
    elif batch_first:
        n, length, embed = int(query.shape[0]), int(query.shape[1]), int(query.shape[2])
        source = int(key.shape[1])
    else:
        length, n, embed = int(query.shape[0]), int(query.shape[1]), int(query.shape[2])
        source = int(key.shape[0])
    kdim, vdim = int(key.shape[-1]), int(value.shape[-1])
    macs = n * (2 * length * embed * embed + source * (kdim + vdim) * embed + 2 * length * source * embed)
    return Cost(macs=macs, other_ops=n * int(heads or 1) * length * source)


def functional_cost(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], result: Any
) -> Cost | None:
    """Matrix products made through torch functions, for the whole batch; ``Cost()`` for any other function,
    ``None`` for a matrix product that cannot be sized (an einsum with ``...``)."""
    name = getattr(func, "__name__", "")
    out = first_tensor(result)
    if name in ("linear", "bilinear"):
        weight = _arg(args, kwargs, 2 if name == "bilinear" else 1, "weight")
        if out is None or not isinstance(weight, torch.Tensor):
            return None
        inner = _prod(weight.shape[1:]) if name == "bilinear" else int(weight.shape[-1])
        return Cost(macs=out.numel() * inner)
    if name in ("conv1d", "conv2d", "conv3d"):
        weight = _arg(args, kwargs, 1, "weight")
        if out is None or not isinstance(weight, torch.Tensor):
            return None
        return Cost(macs=out.numel() * _prod(weight.shape[1:]))
    if name in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        inp, weight = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
        if not isinstance(inp, torch.Tensor) or not isinstance(weight, torch.Tensor):
            return None
        return Cost(macs=inp.numel() * _prod(weight.shape[1:]))
    if name in ("matmul", "__matmul__", "mm", "bmm", "__rmatmul__"):
        left = args[1] if name == "__rmatmul__" and len(args) > 1 else (args[0] if args else None)
        if out is None or not isinstance(left, torch.Tensor):
            return None
        return Cost(macs=out.numel() * int(left.shape[-1]))
    if name in ("baddbmm", "addmm"):
        left = _arg(args, kwargs, 1, "batch1" if name == "baddbmm" else "mat1")
        if out is None or not isinstance(left, torch.Tensor):
            return None
        return Cost(macs=out.numel() * int(left.shape[-1]))
    if name == "einsum":
        macs = _einsum_macs(args)
        return None if macs is None else Cost(macs=macs)
    if name == "scaled_dot_product_attention":
        q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
        if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
            return None
        scores = _prod(q.shape[:-1]) * int(k.shape[-2])
        return Cost(macs=scores * (int(q.shape[-1]) + int(v.shape[-1])), other_ops=scores)
    if name == "multi_head_attention_forward":
        heads = _arg(args, kwargs, 4, "num_heads")
        return _attention_cost(args[0], args[1], args[2], heads, batch_first=False)
    if name == "_native_multi_head_attention":
        heads = _arg(args, kwargs, 4, "num_head")
        return _attention_cost(args[0], args[1], args[2], heads, batch_first=True)
    return Cost()


def _count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _FunctionalCounter(TorchFunctionMode):
    """Sees every torch call of the forward pass and gives matrix products to the innermost running module."""

    def __init__(self, recorder: TreeRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        stack = self.recorder.stack
        if stack and stack[-1][0] not in self.recorder.formula:
            name, module = stack[-1]
            cost = functional_cost(func, args, kwargs, result)
            if cost is None:
                self.recorder.uncounted.add(type(module).__name__)
            elif cost.macs or cost.other_ops:
                self.recorder.functional_macs[name] = self.recorder.functional_macs.get(name, 0) + cost.macs
                self.recorder.functional_other[name] = (
                    self.recorder.functional_other.get(name, 0) + cost.other_ops
                )
        return result


class TreeRecorder:
    """Forward hooks that record shapes, calls, order, MACs and other operations; ``build`` makes the tree.

    Used by ``layer_tree`` and, together with other recorders, by ``app.core.inspection.analysis.analyse`` so
    that one forward pass can serve several views: register ``make_hook`` on ``named`` with
    ``forward_hooks`` and run the forward inside ``tracking()`` (forward pre-hooks that keep the stack of
    running modules, and the torch-function mode that counts matrix products made through torch functions).
    """

    def __init__(self, model: nn.Module) -> None:
        self.named = list(model.named_modules())
        self.leaves = {name for name, m in self.named if not any(True for _ in m.children())}
        self.kinds = {name: layer_kind(m) for name, m in self.named}
        # Modules whose own formula counts the matrix products they make (their torch calls are not counted).
        self.formula = {name for name, kind in self.kinds.items() if kind in _FORMULA_KINDS}
        self.call_shapes: dict[str, list[tuple[int, ...] | None]] = {}
        self.macs: dict[str, int] = {}
        self.other: dict[str, int] = {}
        self.order: dict[str, int] = {}
        self.uncounted: set[str] = set()
        self.stack: list[tuple[str, nn.Module]] = []
        # Matrix products made through torch functions (attention), per module, for the whole batch.
        self.functional_macs: dict[str, int] = {}
        self.functional_other: dict[str, int] = {}
        self.batch = 1

    def _pre_hook(self, name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def pre_hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            self.stack.append((name, module))

        return pre_hook

    def tracking(self, example_input: torch.Tensor) -> contextlib.ExitStack[bool | None]:
        """Context manager around the forward pass (see the class doc)."""
        self.batch = max(int(example_input.shape[0]), 1) if example_input.dim() > 0 else 1
        stack = contextlib.ExitStack()
        stack.enter_context(forward_hooks(self.named, self._pre_hook, pre=True))
        stack.enter_context(_FunctionalCounter(self))
        return stack

    def make_hook(self, name: str) -> Hook:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if self.stack and self.stack[-1][0] == name:
                self.stack.pop()
            out = first_tensor(output)
            shape = tuple(int(s) for s in out.shape[1:]) if out is not None else None
            self.call_shapes.setdefault(name, []).append(shape)
            if name not in self.order:
                self.order[name] = len(self.order)
            # Own arithmetic of leaves, and of known layer types that happen to have children (a
            # TF-"same" conv that owns its padding module); containers otherwise just sum their children.
            own = name in self.leaves or self.kinds[name] != "container"
            cost = layer_cost(module, inputs, output) if own else Cost()
            if cost is None:
                if name not in self.functional_macs:
                    self.uncounted.add(type(module).__name__)
                cost = Cost()
            self.macs[name] = self.macs.get(name, 0) + cost.macs
            self.other[name] = self.other.get(name, 0) + cost.other_ops

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
            shapes = self.call_shapes.get(name, [])
            own_macs = self.macs.get(name, 0) + self.functional_macs.get(name, 0) // self.batch
            own_other = self.other.get(name, 0) + self.functional_other.get(name, 0) // self.batch
            return LayerInfo(
                name=name,
                type=type(module).__name__,
                output_shape=shapes[-1] if shapes else None,
                params=_count_params(module),
                macs=own_macs + sum(c.macs for c in children),
                other_ops=own_other + sum(c.other_ops for c in children),
                children=children,
                kind=self.kinds.get(name) or layer_kind(module),
                order=own_order,
                calls=len(shapes),
                call_shapes=tuple(shapes),
                depth=depth,
            )

        tree = build("", model, 0)
        tree.uncounted_types = tuple(sorted(self.uncounted))
        tree.input_shape = tuple(int(s) for s in example_input.shape[1:])
        return tree


def layer_tree(model: nn.Module, example_input: torch.Tensor) -> LayerInfo:
    """The module hierarchy with per-layer output shape, parameters, MACs and other operations, from one
    forward pass.

    ``example_input`` is a batch ``(N, C, H, W)`` (N may be 1); shapes and counts are per sample. The model
    runs in eval mode without gradients; hooks are removed and every ``training`` flag restored even if
    the forward pass fails. A module called several times (a ReLU reused inside a ResNet block) has
    ``calls > 1``, the shape of each call in ``call_shapes``, ``output_shape`` of its last call and the sum of
    the counts of all calls. A container's counts are the sum of its children's (plus matrix products it
    makes itself through torch functions); its params count every parameter below it once.
    """
    recorder = TreeRecorder(model)
    with (
        model_lock(model),
        eval_mode(model),
        torch.no_grad(),
        forward_hooks(recorder.named, recorder.make_hook),
        recorder.tracking(example_input),
    ):
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
        other_ops=tree.other_ops,
        layers=len(flat),
        leaf_layers=sum(1 for i in flat if i.is_leaf),
        param_bytes=sum(p.numel() * p.element_size() for p in unique.values()),
        output_shape=tree.output_shape,
        input_shape=tree.input_shape or (),
        uncounted_types=tree.uncounted_types,
    )
