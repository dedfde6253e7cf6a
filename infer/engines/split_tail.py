"""A network whose last layers work at the output's resolution, run with those layers in stripes: the body sees
a whole window, the enlarged tail only a few rows of it at a time."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Input pixels of features the tail takes at once. RRDBNet's x4 tail holds about 4 KB of activations per
# input pixel in bf16 (64 channels at 16 output pixels, twice): 16384 pixels keep a stripe near 64 MB,
# small beside the body's window and large enough that a stripe is not dominated by its halo.
STRIPE_PIXELS = 16384


def _grows(module: nn.Module, channels: int, like: torch.Tensor) -> tuple[bool, int]:
    """Whether `module` enlarges an 8x8 input, and the channels it gives (a probe on zeros in the number
    format and on the device of `like`)."""
    probe = torch.zeros(1, channels, 8, 8, dtype=like.dtype, device=like.device)
    with torch.inference_mode():
        out = module(probe)
    return out.shape[-1] > 8, out.shape[1]


def _halo(tail: nn.Sequential) -> int:
    """Input pixels of context the tail needs around a stripe: each convolution's reach, counted as if all
    worked at the input's resolution (an overestimate for those after the enlargement, which is safe)."""
    reach = 0
    for layer in tail.modules():
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0]
            reach += (k // 2) * layer.dilation[0]
    return max(1, reach)


class SplitTail(nn.Module):
    """RRDBNet (ESRGAN, Real-ESRGAN x4plus and x2plus) with its enlarged tail run in stripes of rows, each with
    `halo` rows of features around it: the result is the whole network's, and the tail's memory is bounded."""

    def __init__(self, net: nn.Module, split: int, stripe_pixels: int = STRIPE_PIXELS):
        super().__init__()
        self.net = net
        self.stripe_pixels = stripe_pixels
        layers = list(net.model.children())
        self.body = nn.Sequential(*layers[:split])
        self.tail = nn.Sequential(*layers[split:])
        self.halo = _halo(self.tail)

    def _tail(self, features: torch.Tensor) -> torch.Tensor:
        height, width = features.shape[-2:]
        rows = max(1, min(height, self.stripe_pixels // max(width, 1)))
        if rows >= height:
            return self.tail(features)
        parts = []
        for r0 in range(0, height, rows):
            r1 = min(height, r0 + rows)
            w0, w1 = max(0, r0 - self.halo), min(height, r1 + self.halo)
            window = features[:, :, w0:w1].contiguous(memory_format=torch.channels_last)
            out = self.tail(window)
            scale = out.shape[-2] // (w1 - w0)
            parts.append(out[:, :, (r0 - w0) * scale:(r1 - w0) * scale])
            del window, out
        return torch.cat(parts, dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        factor = getattr(net, "shuffle_factor", None)
        if factor:
            h, w = x.shape[-2:]
            pad_h, pad_w = (-h) % factor, (-w) % factor
            if pad_h or pad_w:
                x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            x = torch.pixel_unshuffle(x, downscale_factor=factor)
            true_scale = net.scale // factor
            return self._tail(self.body(x))[:, :, : h * true_scale, : w * true_scale]
        return self._tail(self.body(x))


def split_tail(net: Any, architecture: str, stripe_pixels: int = STRIPE_PIXELS) -> nn.Module | None:
    """`net` with its tail in stripes where the architecture has a tail at the output's resolution that only
    convolves (RRDBNet), else None."""
    if architecture != "ESRGAN" or not isinstance(getattr(net, "model", None), nn.Sequential):
        return None
    first = next(m for m in net.model.modules() if isinstance(m, nn.Conv2d))
    channels = first.in_channels
    for index, layer in enumerate(net.model.children()):
        grows, channels = _grows(layer, channels, first.weight)
        if grows:
            tail = list(net.model.children())[index:]
            if all(isinstance(m, (nn.Conv2d, nn.Upsample, nn.LeakyReLU, nn.ReLU, nn.PReLU, nn.Sequential,
                                  nn.PixelShuffle, nn.Identity))
                   for part in tail for m in part.modules()):
                return SplitTail(net, index, stripe_pixels)
            return None
    return None

