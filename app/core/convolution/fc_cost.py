"""What a fully-connected layer costs next to a convolution on the same image.

Counts follow the lecture: weights are connections (biases listed separately), multiplications exclude
the sums. A fully-connected layer joins every input value to every output; a convolution applies a
``k x k x C`` kernel at every output position of every feature map.
"""

from __future__ import annotations

from dataclasses import dataclass


class CostError(ValueError):
    """A size the calculator cannot use; ``field`` names it."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def _group(n: int) -> str:
    return f"{n:,}"


@dataclass(frozen=True)
class CostComparison:
    """Weights and multiplications of an FC layer and a convolution on an ``H x W x C`` input."""

    height: int
    width: int
    channels: int
    fc_outputs: int
    filters: int
    kernel: int
    stride: int
    padding: int
    inputs: int
    fc_weights: int
    fc_biases: int
    fc_multiplications: int
    conv_out_height: int
    conv_out_width: int
    conv_outputs: int
    conv_weights: int
    conv_biases: int
    conv_multiplications: int

    @property
    def multiplication_ratio(self) -> float:
        """Convolution multiplications as a fraction of the FC layer's."""
        return self.conv_multiplications / self.fc_multiplications

    @property
    def weight_ratio(self) -> float:
        return self.conv_weights / self.fc_weights

    @property
    def percent(self) -> float:
        return 100.0 * self.multiplication_ratio

    @property
    def percent_text(self) -> str:
        """Rounded like the lecture (``0.01 %``) when that keeps a digit, else two significant figures."""
        p = self.percent
        return f"{p:.2f} %" if p >= 0.01 else f"{p:.2g} %"

    @property
    def times_text(self) -> str:
        """How many times more multiplications the larger of the two layers needs, said plainly (``7,282 times
        as many``): a percentage like 0.014 % is hard to picture, and a log-scaled bar misleads."""
        big, small = (
            max(self.fc_multiplications, self.conv_multiplications),
            min(self.fc_multiplications, self.conv_multiplications),
        )
        times = big / small
        number = f"{times:,.0f}" if times >= 10 else f"{times:.2g}"
        if self.fc_multiplications == self.conv_multiplications:
            return "the same number of multiplications as"
        return f"{number} times as many multiplications as"

    def lines(self) -> dict[str, str]:
        """The arithmetic written out with the current numbers."""
        k2c = self.kernel * self.kernel * self.channels
        return {
            "inputs": f"{self.height} x {self.width} x {self.channels} = {_group(self.inputs)} input values",
            "fc_weights": (
                f"{_group(self.inputs)} inputs x {_group(self.fc_outputs)} outputs = "
                f"{_group(self.fc_weights)} weights"
            ),
            "fc_multiplications": (
                f"{_group(self.inputs)} x {_group(self.fc_outputs)} = "
                f"{_group(self.fc_multiplications)} multiplications"
            ),
            "conv_weights": (
                f"{self.kernel} x {self.kernel} x {self.channels} x {self.filters} filter(s) = "
                f"{_group(self.conv_weights)} weights (shared across all positions)"
            ),
            "conv_outputs": (
                f"{self.conv_out_height} x {self.conv_out_width} x {self.filters} = "
                f"{_group(self.conv_outputs)} output values"
            ),
            "conv_multiplications": (
                f"{self.conv_out_height} x {self.conv_out_width} positions x {k2c} weights"
                f" x {self.filters} = "
                f"{_group(self.conv_multiplications)} multiplications"
            ),
            "ratio": (
                f"{_group(self.conv_multiplications)} / {_group(self.fc_multiplications)} = "
                f"{self.multiplication_ratio:.3g} ≈ {self.percent_text}"
            ),
        }

    def as_dict(self) -> dict[str, object]:
        return {
            "input": {
                "height": self.height,
                "width": self.width,
                "channels": self.channels,
                "values": self.inputs,
            },
            "fully_connected": {
                "outputs": self.fc_outputs,
                "weights": self.fc_weights,
                "biases": self.fc_biases,
                "multiplications": self.fc_multiplications,
            },
            "convolution": {
                "filters": self.filters,
                "kernel": self.kernel,
                "stride": self.stride,
                "padding": self.padding,
                "out_height": self.conv_out_height,
                "out_width": self.conv_out_width,
                "outputs": self.conv_outputs,
                "weights": self.conv_weights,
                "biases": self.conv_biases,
                "multiplications": self.conv_multiplications,
            },
            "multiplication_ratio": self.multiplication_ratio,
            "weight_ratio": self.weight_ratio,
            "percent": self.percent,
            "percent_text": self.percent_text,
            "fc_to_conv_multiplications": self.fc_multiplications / self.conv_multiplications,
            "lines": self.lines(),
        }


MAX_SIDE = 100_000


def compare_costs(
    height: int,
    width: int,
    channels: int = 1,
    fc_outputs: int | None = None,
    filters: int = 1,
    kernel: int = 3,
    stride: int = 1,
    padding: int | None = None,
) -> CostComparison:
    """Count both layers. ``fc_outputs`` defaults to one output per input pixel (the lecture's 65,536);
    ``padding`` defaults to ``kernel // 2`` ("same"), so a stride-1 feature map is as large as the image.
    """
    checks = {
        "height": height,
        "width": width,
        "channels": channels,
        "filters": filters,
        "kernel": kernel,
        "stride": stride,
    }
    for name, value in checks.items():
        if value < 1:
            raise CostError(f"{name} must be at least 1", name)
        if value > MAX_SIDE:
            raise CostError(f"{name} must be at most {MAX_SIDE:,}", name)
    outs = height * width if fc_outputs is None else fc_outputs
    if outs < 1:
        raise CostError("fc_outputs must be at least 1", "fc_outputs")
    pad = kernel // 2 if padding is None else padding
    if pad < 0:
        raise CostError("padding must be 0 or more", "padding")
    oh = (height + 2 * pad - kernel) // stride + 1
    ow = (width + 2 * pad - kernel) // stride + 1
    if oh < 1 or ow < 1:
        raise CostError(
            f"a {kernel}x{kernel} kernel does not fit a {height}x{width} input padded by {pad}", "kernel"
        )
    inputs = height * width * channels
    return CostComparison(
        height=height,
        width=width,
        channels=channels,
        fc_outputs=outs,
        filters=filters,
        kernel=kernel,
        stride=stride,
        padding=pad,
        inputs=inputs,
        fc_weights=inputs * outs,
        fc_biases=outs,
        fc_multiplications=inputs * outs,
        conv_out_height=oh,
        conv_out_width=ow,
        conv_outputs=oh * ow * filters,
        conv_weights=kernel * kernel * channels * filters,
        conv_biases=filters,
        conv_multiplications=oh * ow * kernel * kernel * channels * filters,
    )


@dataclass(frozen=True)
class CostPreset:
    """A named set of calculator inputs taken from the lecture (or its CT sizes)."""

    name: str
    title: str
    note: str
    params: dict[str, int]

    def compute(self) -> CostComparison:
        return compare_costs(**self.params)  # type: ignore[arg-type]


COST_PRESETS: list[CostPreset] = [
    CostPreset(
        "lecture_300",
        "10x10 pixels x 3 connections (lecture)",
        "The lecture's first attempt: every pixel of a 10x10 image connected to 3 neurons.",
        {"height": 10, "width": 10, "channels": 1, "fc_outputs": 3, "filters": 1, "kernel": 3},
    ),
    CostPreset(
        "lecture_256",
        "256x256 image, one 3x3 feature map (lecture)",
        "The lecture's comparison: 589,824 vs 4,294,967,296 multiplications, about 0.01 %.",
        {"height": 256, "width": 256, "channels": 1, "fc_outputs": 65536, "filters": 1, "kernel": 3},
    ),
    CostPreset(
        "ct_512",
        "512x512 CT slice, one 3x3 feature map",
        "A typical CT matrix: 262,144 pixels.",
        {"height": 512, "width": 512, "channels": 1, "fc_outputs": 262144, "filters": 1, "kernel": 3},
    ),
    CostPreset(
        "ct_512_64",
        "512x512 CT slice, 64 filters of 3x3",
        "A realistic first layer: 64 feature maps still cost far less than one FC layer.",
        {"height": 512, "width": 512, "channels": 1, "fc_outputs": 262144, "filters": 64, "kernel": 3},
    ),
]
