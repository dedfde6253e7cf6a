"""A PyTorch module that runs a GraphPlan step by step, freeing each activation as soon as it is last read."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from infer.engines.graph_plan import GraphPlan, Step
from infer.tiling import StepFn

_UNARY = {
    "relu": torch.relu,
    "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    "abs": torch.abs,
    "neg": torch.neg,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "square": torch.square,
}
_UNARY_INPLACE = {
    "relu": torch.relu_,
    "relu6": lambda x: x.clamp_(0.0, 6.0),
    "abs": torch.abs_,
    "neg": torch.neg_,
    "tanh": torch.tanh_,
    "sigmoid": torch.sigmoid_,
    "square": lambda x: x.mul_(x),
}
_BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
           "max": torch.maximum, "min": torch.minimum}
_BINARY_INPLACE = {"add": "add_", "sub": "sub_", "mul": "mul_", "div": "div_"}


def _same_pad(size: int, stride: int, span: int) -> tuple[int, int]:
    """TensorFlow SAME padding for a strided convolution: more on the bottom/right when odd."""
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


class PlanNet(torch.nn.Module):
    """Runs the plan's steps in order on an N x C x H x W tensor; constants are buffers, so .to() moves them."""

    def __init__(self, plan: GraphPlan):
        super().__init__()
        self.plan = plan
        self._keys: dict[str, str] = {}
        for i, (name, value) in enumerate(plan.consts.items()):
            key = f"c{i}"
            self._keys[name] = key
            self.register_buffer(key, torch.from_numpy(value.copy()), persistent=False)
        last = plan.last_uses()
        self._free: list[list[str]] = [[] for _ in plan.steps]
        for name, index in last.items():
            if index < len(plan.steps):
                self._free[index].append(name)
        # An op may overwrite an input that nothing reads later (never the caller's tensor): index or None.
        self._inplace: list[int | None] = [self._reusable(s, i, last) for i, s in enumerate(plan.steps)]
        self._done_after: list[float | None] = self._fractions(plan)

    @staticmethod
    def _fractions(plan: GraphPlan) -> list[float | None]:
        """The share of the forward's convolution work done once each convolution step has run; None elsewhere."""
        whole = plan.macs_per_pixel()
        done, out = 0.0, []
        for step in plan.steps:
            macs = plan.step_macs_per_pixel(step)
            done += macs
            out.append(done / whole if macs > 0 and whole > 0 else None)
        return out

    def _reusable(self, step: Step, index: int, last: dict[str, int]) -> int | None:
        def dead(name: str) -> bool:
            return name != self.plan.input and last.get(name) == index and step.inputs.count(name) == 1

        if step.kind in ("unary", "act"):
            return 0 if dead(step.inputs[0]) else None
        if step.kind == "binary" and "const" in step.params:
            ok = dead(step.inputs[0]) and not step.params["const_first"] and step.params["op"] in _BINARY_INPLACE
            return 0 if ok else None
        if step.kind == "binary" and len(step.inputs) == 2:
            if dead(step.inputs[0]) and step.params["op"] in _BINARY_INPLACE:
                return 0
            if dead(step.inputs[1]) and step.params["op"] in ("add", "mul"):
                return 1
        return None

    def const(self, name: str) -> torch.Tensor:
        return getattr(self, self._keys[name])

    def forward(self, x: torch.Tensor, on_step: StepFn | None = None) -> torch.Tensor:
        """The plan's output for `x`; `on_step` hears the share of the convolution work done after each one."""
        env: dict[str, torch.Tensor] = {self.plan.input: x}
        for i, step in enumerate(self.plan.steps):
            args = [env[n] for n in step.inputs]
            out = self._step(step, args, self._inplace[i])
            del args
            for name in self._free[i]:
                del env[name]
            env[step.out] = out
            done = self._done_after[i]
            if on_step is not None and done is not None:
                on_step(done)
        return env[self.plan.output]

    def _step(self, step: Step, args: list[torch.Tensor], inplace: int | None) -> torch.Tensor:
        p: dict[str, Any] = step.params
        kind = step.kind
        if kind == "conv":
            return self._conv(args[0], p)
        if kind == "deconv":
            return self._deconv(args[0], p)
        if kind == "pixel_shuffle":
            return F.pixel_shuffle(args[0], p["block"])
        if kind == "depth_to_space":
            x, b = args[0], p["block"]
            n, c, h, w = x.shape
            # TF reads channel (dy*b + dx)*C + c for offset (dy, dx).
            return x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // (b * b), h * b, w * b)
        if kind == "act":
            op = p["op"]
            if op == "relu":
                return torch.relu(args[0]) if inplace is None else torch.relu_(args[0])
            if op == "leaky_relu":
                return F.leaky_relu(args[0], p["slope"], inplace=inplace is not None)
            weight = self.const(p["weight"])
            return F.prelu(args[0], weight)
        if kind == "unary":
            return (_UNARY if inplace is None else _UNARY_INPLACE)[p["op"]](args[0])
        if kind == "binary":
            if "const" in p:
                c = self.const(p["const"])
                a, b = (c, args[0]) if p["const_first"] else (args[0], c)
            else:
                a, b = args
            op = p["op"]
            if inplace is not None:
                # Overwrite the dead operand when the result has its shape; add and mul commute.
                target, other = (a, b) if inplace == 0 else (b, a)
                if target.shape == torch.broadcast_shapes(a.shape, b.shape):
                    return getattr(target, _BINARY_INPLACE[op])(other)
            return _BINARY[op](a, b)
        raise ValueError(f"unknown step kind {kind!r}")

    def _conv(self, x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        weight = self.const(p["weight"])
        bias = self.const(p["bias"]) if p.get("bias") is not None else None
        stride, dilation, groups = p["stride"], p["dilation"], p["groups"]
        if "same" in p:
            top, bottom = _same_pad(x.shape[2], stride, p["same"][0])
            left, right = _same_pad(x.shape[3], stride, p["same"][1])
        else:
            top, bottom, left, right = p["pads"]
        if top == bottom and left == right:
            return F.conv2d(x, weight, bias, stride, (top, left), dilation, groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, weight, bias, stride, 0, dilation, groups)

    def _deconv(self, x: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
        weight = self.const(p["weight"])
        bias = self.const(p["bias"]) if p.get("bias") is not None else None
        s = p["stride"]
        full = F.conv_transpose2d(x, weight, None, s)
        if p["same"]:
            # TF's SAME output is exactly in*stride, cropped from the full result (extra on the bottom/right).
            kh, kw = weight.shape[2], weight.shape[3]
            oh, ow = x.shape[2] * s, x.shape[3] * s
            top, left = max(kh - s, 0) // 2, max(kw - s, 0) // 2
            full = full[:, :, top : top + oh, left : left + ow]
            if full.shape[2] < oh or full.shape[3] < ow:
                full = F.pad(full, (0, ow - full.shape[3], 0, oh - full.shape[2]))
        if bias is not None:
            full = full + bias.view(1, -1, 1, 1)
        return full
