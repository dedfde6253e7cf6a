"""How far a PyTorch forward is: its convolutions' work done over the whole network's, said as it runs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from infer.tiling import StepFn

_CONVS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)


class ConvProgress:
    """Counts a network's convolution work through hooks on its convolution modules while a forward runs.

    A call's work is its weights times its output pixels, per pixel of the window. Before any forward has run the
    whole is taken as each convolution run once at the window's size, which an enlarged tail exceeds: the first
    window's fraction then reaches its end early (and stops short of it). A finished forward measures the whole,
    for the windows after it. On CUDA the hooks fire as kernels are queued, a little ahead of the device."""

    def __init__(self, net: torch.nn.Module):
        self._convs = [m for m in net.modules() if isinstance(m, _CONVS)]
        self._whole = float(sum(m.weight.numel() for m in self._convs))

    @contextmanager
    def watching(self, x: torch.Tensor, on_step: StepFn | None) -> Iterator[None]:
        """Calls `on_step` with the fraction done after each convolution of the forward run inside."""
        if on_step is None or not self._convs or self._whole <= 0:
            yield
            return
        pixels = float(x.shape[-2] * x.shape[-1])
        done = 0.0

        def hook(module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
            nonlocal done
            done += module.weight.numel() * output.shape[-2] * output.shape[-1] / pixels
            on_step(min(done / self._whole, 1.0))

        handles = [m.register_forward_hook(hook) for m in self._convs]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        if done > 0:
            self._whole = done
