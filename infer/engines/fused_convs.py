"""A network's convolutions fused with the activation after them on the CPU: oneDNN applies a ReLU or LeakyReLU as
it writes each output, instead of a second pass over it.

An activation reads and writes a whole layer's output once more. On a CPU whose matrix units are fast, that pass is
a visible share of a forward: RealESRGAN_x4plus's 279 LeakyReLUs fused, its bf16 forward ran 1.03-1.07x faster
on a 316-pixel window and 1.16x on a 200-pixel one, fp32 1.01x (docs/benchmarks.md, "Convolutions fused with their
activation"). In fp32 the result is the same; in bf16 the activation works on the convolution's fp32 sum before
the one rounding.

Only a `Conv2d` (zero padding, given in numbers) followed directly by a `ReLU` or `LeakyReLU` in the same
`nn.Sequential` is fused; the activation becomes an `nn.Identity`. The fused module is still a `Conv2d` (its
weights, hooks and reach unchanged), so progress and the tail's stripes see it as before. PReLU, whose slopes are
per channel, has no such fusion in oneDNN and stays as it is.
"""

from __future__ import annotations

import torch
from torch import nn


def _fusion_works() -> bool:
    """Whether this PyTorch has oneDNN's fused convolution (not a build without oneDNN) and it gives a plain
    convolution's result on a small probe: the operator is PyTorch's own, not a public API."""
    if not torch.backends.mkldnn.is_available():
        return False
    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    if op is None:
        return False
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, 6, generator=generator).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(4, 4, 3, 3, generator=generator), torch.randn(4, generator=generator)
    try:
        with torch.inference_mode():
            fused = op(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "leaky_relu", [0.2], "")
            plain = torch.nn.functional.leaky_relu(torch.nn.functional.conv2d(x, weight, bias, padding=1), 0.2)
    except (RuntimeError, TypeError):
        return False
    return torch.allclose(fused, plain, atol=1e-5)


class ConvActivation(nn.Conv2d):
    """A 2-D convolution whose output goes through `activation` ("relu" or "leaky_relu" with `scalars`) as oneDNN
    writes it. CPU tensors only."""

    activation: str
    scalars: list[float]

    @classmethod
    def of(cls, conv: nn.Conv2d, activation: str, scalars: list[float]) -> "ConvActivation":
        fused = cls.__new__(cls)
        fused.__dict__.update(conv.__dict__)  # the same parameters, hooks and settings: no copy of the weights
        fused.activation, fused.scalars = activation, scalars
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, self.padding, self.stride,
                                                        self.dilation, self.groups, self.activation, self.scalars, "")


def _activation(module: nn.Module) -> tuple[str, list[float]] | None:
    if type(module) is nn.ReLU:
        return "relu", []
    if type(module) is nn.LeakyReLU:
        return "leaky_relu", [float(module.negative_slope)]
    return None


def _fusable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and conv.weight.device.type == "cpu" and conv.weight.dtype in (torch.float32, torch.bfloat16))


def fuse_conv_activations(net: nn.Module) -> int:
    """Fuses, in place, each convolution of `net` with the ReLU or LeakyReLU after it in the same `nn.Sequential`;
    the number fused. Nothing changes where this PyTorch cannot run the fusion, or the network is not on the CPU."""
    if not _fusion_works():
        return 0
    fused = 0
    for sequence in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        for index in range(len(sequence) - 1):
            conv, act = sequence[index], _activation(sequence[index + 1])
            if act is not None and _fusable(conv):
                sequence[index] = ConvActivation.of(conv, *act)
                sequence[index + 1] = nn.Identity()
                fused += 1
    return fused
