"""Convolutions fused with their activation on the CPU: real RealESRGAN_x4plus weights give the same result in
fp32 and no worse in bf16, only what oneDNN can fuse is fused, and progress still counts every convolution."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from infer.engines.fused_convs import ConvActivation, fuse_conv_activations  # noqa: E402
from infer.engines.step_progress import ConvProgress  # noqa: E402


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def test_real_x4plus_fused_is_the_same_in_fp32_no_worse_in_bf16_and_tells_its_progress(realesrgan: dict[str, Path]):
    import spandrel

    net = spandrel.ModelLoader().load_from_file(realesrgan["x4plus"]).model.eval()
    fused = copy.deepcopy(net)
    # 23 blocks of 3 dense blocks, 4 convolutions with LeakyReLU each; the two enlargements and hr_conv0.
    assert fuse_conv_activations(fused) == 23 * 3 * 4 + 3
    assert sum(isinstance(m, nn.LeakyReLU) for m in fused.modules()) == 0
    assert sum(isinstance(m, nn.Conv2d) for m in fused.modules()) == sum(isinstance(m, nn.Conv2d) for m in net.modules())
    x = _channels_last(torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(3)))
    steps: list[float] = []
    with torch.inference_mode():
        reference = net(x)
        with ConvProgress(fused).watching(x, steps.append):
            same = fused(x)
        assert (same - reference).abs().max().item() <= 1e-5
        plain_bf16 = (copy.deepcopy(net).bfloat16()(x.bfloat16()).float() - reference).abs().max().item()
        fused_bf16 = (copy.deepcopy(fused).bfloat16()(x.bfloat16()).float() - reference).abs().max().item()
    assert fused_bf16 <= max(plain_bf16, 4 / 255), (fused_bf16, plain_bf16)
    convs = sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert len(steps) == convs and steps == sorted(steps) and 0 < steps[0] and steps[-1] == pytest.approx(1.0, abs=0.01)


def test_only_a_zero_padded_convolution_followed_by_relu_or_leaky_relu_is_fused():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.1),                          # fused
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(),          # reflect padding: not
        nn.Conv2d(8, 8, 3, padding=1), nn.PReLU(8),                                # per-channel slopes: not
        nn.Sequential(nn.Conv2d(8, 8, 3, padding="same"), nn.ReLU()),              # padding by name: not
        nn.Conv2d(8, 8, 1), nn.ReLU(),                                             # fused
        nn.Conv2d(8, 3, 3, padding=1),                                             # no activation after it
    ).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-0.5, 0.5)  # negative sums too, so that each slope is used
    fused = copy.deepcopy(net)
    weight = fused[0].weight
    assert fuse_conv_activations(fused) == 2
    kinds = [type(m).__name__ for m in fused]
    assert kinds == ["ConvActivation", "Identity", "Conv2d", "ReLU", "Conv2d", "PReLU", "Sequential",
                     "ConvActivation", "Identity", "Conv2d"]
    assert isinstance(fused[0], ConvActivation) and fused[0].scalars == [pytest.approx(0.1)]
    assert fused[0].weight is weight  # the module's own parameters, not a copy
    x = _channels_last(torch.rand(1, 3, 17, 23) * 2 - 1)
    with torch.inference_mode():
        assert (fused(x) - net(x)).abs().max().item() <= 1e-5
    assert fuse_conv_activations(fused) == 0  # already fused: nothing more


def test_a_network_off_the_cpu_or_in_half_precision_is_left_as_it_is():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).half()
    assert fuse_conv_activations(net) == 0 and type(net[0]) is nn.Conv2d
    if torch.cuda.is_available():
        gpu = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).cuda()
        assert fuse_conv_activations(gpu) == 0 and type(gpu[0]) is nn.Conv2d
