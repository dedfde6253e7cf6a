"""A TensorFlow super-resolution graph turned into a flat list of NCHW steps with PyTorch-layout weights."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from infer.errors import ModelError
from infer.tfgraph import Graph, Node, input_node_name

# Bumped whenever the plan's meaning changes, so stale weight caches are rebuilt.
PLAN_FORMAT = 3

_HINT = "use --engine opencv for this model"

_BINARY_OPS = {"Add": "add", "AddV2": "add", "BiasAdd": "add", "Sub": "sub", "Mul": "mul",
               "RealDiv": "div", "Maximum": "max", "Minimum": "min"}
_UNARY_OPS = {"Relu": "relu", "Relu6": "relu6", "Abs": "abs", "Neg": "neg", "Tanh": "tanh",
              "Sigmoid": "sigmoid", "Square": "square"}
_PASS_OPS = {"Identity", "StopGradient", "Snapshot"}
_CONST_OPS = {"Const", "Dequantize"}
# Transposing NHWC to NCHW is what the published graphs do last; this plan is NCHW throughout.
_NHWC_TO_NCHW = [0, 3, 1, 2]


@dataclass
class Step:
    """One operation: `kind` says what, `inputs` are value names, `params` hold numbers and constant names.

    kinds: conv, deconv (weights OIHW / IOHW, optional bias), unary (op), binary (op; with
    `const` the second operand is a constant, first when `const_first`), act (relu, leaky_relu
    with `slope`, prelu with `weight`), pixel_shuffle and depth_to_space (`block`).
    """

    kind: str
    out: str
    inputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class GraphPlan:
    """Everything needed to run a model: steps in execution order and their constant arrays (float32)."""

    input: str
    output: str
    in_channels: int
    scale: int
    steps: list[Step]
    consts: dict[str, np.ndarray]
    channels: dict[str, int]  # value -> channel count
    zoom: dict[str, float]  # value -> its size relative to the input

    def last_uses(self) -> dict[str, int]:
        """Index of the last step reading each value (the output lives to the end)."""
        last: dict[str, int] = {}
        for i, step in enumerate(self.steps):
            for name in step.inputs:
                last[name] = i
        last[self.output] = len(self.steps)
        return last

    def peak_values_per_pixel(self) -> float:
        """Largest number of activation values alive at once, per input pixel, when steps free inputs promptly."""
        last = self.last_uses()
        size = {name: self.channels[name] * self.zoom[name] ** 2 for name in self.channels}
        live = {self.input: size[self.input]}
        peak = live[self.input]
        for i, step in enumerate(self.steps):
            peak = max(peak, sum(live.values()) + size[step.out])
            for name in step.inputs:
                if last.get(name) == i:
                    live.pop(name, None)
            live[step.out] = size[step.out]
        return peak

    def weight_count(self) -> int:
        return int(sum(a.size for a in self.consts.values()))

    def macs_per_pixel(self) -> float:
        """Multiply-accumulates of the convolutions per input pixel (2 FLOP each)."""
        return sum(self.step_macs_per_pixel(step) for step in self.steps)

    def step_macs_per_pixel(self, step: Step) -> float:
        """One step's multiply-accumulates per input pixel: a convolution's; 0 for every other kind."""
        if step.kind not in ("conv", "deconv"):
            return 0.0
        w = self.consts[step.params["weight"]]
        zoom = self.zoom[step.out] if step.kind == "conv" else self.zoom[step.inputs[0]]
        return float(w.size * zoom**2)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, dicts, strings and numbers (arrays stay numpy): for the weight cache."""
        return {
            "format": PLAN_FORMAT,
            "input": self.input,
            "output": self.output,
            "in_channels": self.in_channels,
            "scale": self.scale,
            "steps": [{"kind": s.kind, "out": s.out, "inputs": list(s.inputs), "params": dict(s.params)} for s in self.steps],
            "consts": dict(self.consts),
            "channels": dict(self.channels),
            "zoom": dict(self.zoom),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphPlan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"plan format {data.get('format')!r}, expected {PLAN_FORMAT}")
        return cls(
            input=data["input"],
            output=data["output"],
            in_channels=int(data["in_channels"]),
            scale=int(data["scale"]),
            steps=[Step(s["kind"], s["out"], list(s["inputs"]), dict(s["params"])) for s in data["steps"]],
            consts={k: np.asarray(v, dtype=np.float32) for k, v in data["consts"].items()},
            channels={k: int(v) for k, v in data["channels"].items()},
            zoom={k: float(v) for k, v in data["zoom"].items()},
        )


def depth_to_space_order(channels: int, block: int) -> np.ndarray:
    """Output-channel permutation making `pixel_shuffle` of the reordered tensor equal TF's DepthToSpace.

    DepthToSpace reads channel `(dy*b + dx)*C + c` for output pixel offset (dy, dx) and channel c;
    pixel_shuffle reads `c*b*b + dy*b + dx`. New channel j must therefore hold old channel order[j].
    """
    if channels % (block * block):
        raise ModelError(f"DepthToSpace with block {block} needs a multiple of {block * block} channels, got {channels}")
    c_out = channels // (block * block)
    return np.arange(channels).reshape(block * block, c_out).T.reshape(-1)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _spatial(attr: Any, name: str, node: Node) -> tuple[int, int]:
    values = [int(v) for v in (attr if attr is not None else [1, 1, 1, 1])]
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise ModelError(f"{node.op} node {node.name!r} has {name} {values}; only NHWC [1, h, w, 1] is supported; {_HINT}")
    return values[1], values[2]


def _same_pads(kernel: int, dilation: int) -> tuple[int, int]:
    total = (kernel - 1) * dilation
    return total // 2, total - total // 2


class _Builder:
    """Walks the graph from its output back to its input and emits steps in execution order."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.steps: list[Step] = []
        self.consts: dict[str, np.ndarray] = {}
        self.channels: dict[str, int] = {}
        self.zoom: dict[str, float] = {}
        self.value_of: dict[str, str] = {}  # node name -> value name (pass-through ops alias)
        self._const_memo: dict[str, bool] = {}

    # ---- constants

    def is_const(self, name: str) -> bool:
        name = input_node_name(name)
        if name not in self._const_memo:
            node = self.graph.node(name)
            if node.op in _CONST_OPS:
                self._const_memo[name] = True
            elif node.op in _PASS_OPS and node.inputs:
                self._const_memo[name] = self.is_const(node.inputs[0])
            else:
                self._const_memo[name] = False
        return self._const_memo[name]

    def const(self, name: str) -> np.ndarray:
        return np.asarray(self.graph.const(input_node_name(name)))

    def add_const(self, key: str, value: np.ndarray) -> str:
        self.consts[key] = np.ascontiguousarray(value, dtype=np.float32)
        return key

    # ---- traversal

    def data_inputs(self, node: Node) -> list[str]:
        refs = [r for r in node.inputs if not r.startswith("^")]
        if node.op == "Conv2DBackpropInput":
            refs = refs[1:]  # input_sizes only says how big the output is: SAME means in * stride
        if node.op == "Transpose":
            refs = refs[:1]
        return [input_node_name(r) for r in refs]

    def order(self, output: str) -> list[Node]:
        """Non-constant nodes the output depends on, each after its inputs."""
        ordered: list[Node] = []
        state: dict[str, int] = {}
        stack: list[tuple[str, bool]] = [(output, False)]
        while stack:
            name, expanded = stack.pop()
            if expanded:
                state[name] = 2
                ordered.append(self.graph.node(name))
                continue
            if state.get(name) or self.is_const(name):
                continue
            state[name] = 1
            stack.append((name, True))
            for dep in reversed(self.data_inputs(self.graph.node(name))):
                if state.get(dep) == 1:
                    raise ModelError(f"the model's graph has a cycle through {dep!r}; {_HINT}")
                if not state.get(dep):
                    stack.append((dep, False))
        return ordered

    # ---- translation

    def emit(self, node: Node, kind: str, inputs: list[str], channels: int, zoom: float, **params: Any) -> None:
        self.steps.append(Step(kind, node.name, inputs, params))
        self.channels[node.name] = channels
        self.zoom[node.name] = zoom
        self.value_of[node.name] = node.name

    def value(self, ref: str) -> str:
        name = input_node_name(ref)
        if name not in self.value_of:
            raise ModelError(f"node {name!r} is used before it is computed; {_HINT}")
        return self.value_of[name]

    def translate(self, node: Node, in_channels_hint: int | None) -> None:
        op = node.op
        refs = [r for r in node.inputs if not r.startswith("^")]
        if op == "Placeholder":
            shape = node.attrs.get("shape")
            known = shape is not None and not getattr(shape, "unknown_rank", False) and len(shape) == 4 and shape[3] > 0
            channels = int(shape[3]) if known else (in_channels_hint or 0)
            self.channels[node.name] = channels
            self.zoom[node.name] = 1.0
            self.value_of[node.name] = node.name
        elif op in _PASS_OPS:
            self.value_of[node.name] = self.value(refs[0])
        elif op == "Transpose":
            perm = [int(v) for v in np.asarray(self.const(refs[1])).reshape(-1)]
            if perm != _NHWC_TO_NCHW:
                raise ModelError(f"Transpose node {node.name!r} with permutation {perm} is not supported; {_HINT}")
            self.value_of[node.name] = self.value(refs[0])
        elif op == "Conv2D":
            self.conv(node, refs)
        elif op == "Conv2DBackpropInput":
            self.deconv(node, refs)
        elif op == "DepthToSpace":
            src = self.value(refs[0])
            if _text(node.attrs.get("data_format", "NHWC")) != "NHWC":
                raise ModelError(f"DepthToSpace node {node.name!r} is not NHWC; {_HINT}")
            block = int(node.attrs["block_size"])
            depth_to_space_order(self.channels[src], block)  # validates the channel count
            self.emit(node, "depth_to_space", [src], self.channels[src] // block**2, self.zoom[src] * block, block=block)
        elif op in _UNARY_OPS:
            src = self.value(refs[0])
            self.emit(node, "unary", [src], self.channels[src], self.zoom[src], op=_UNARY_OPS[op])
        elif op in _BINARY_OPS:
            self.binary(node, refs)
        else:
            raise ModelError(f"the model uses the TensorFlow op {op!r} (node {node.name!r}), which the torch engine does not support; {_HINT}")

    def conv(self, node: Node, refs: list[str]) -> None:
        src = self.value(refs[0])
        if not self.is_const(refs[1]):
            raise ModelError(f"Conv2D node {node.name!r} has computed weights; {_HINT}")
        if _text(node.attrs.get("data_format", "NHWC")) != "NHWC":
            raise ModelError(f"Conv2D node {node.name!r} is not NHWC; {_HINT}")
        hwio = self.const(refs[1])
        if hwio.ndim != 4:
            raise ModelError(f"Conv2D node {node.name!r} has weights of shape {hwio.shape}; {_HINT}")
        kh, kw, cin, cout = hwio.shape
        in_ch = self.channels[src] or cin
        if in_ch % cin:
            raise ModelError(f"Conv2D node {node.name!r} takes {cin} channels but gets {in_ch}; {_HINT}")
        if not self.channels[src]:
            self.channels[src] = in_ch
        sh, sw = _spatial(node.attrs.get("strides"), "strides", node)
        dh, dw = _spatial(node.attrs.get("dilations"), "dilations", node)
        if sh != sw:
            raise ModelError(f"Conv2D node {node.name!r} has unequal strides {sh}x{sw}; {_HINT}")
        padding = _text(node.attrs.get("padding", "SAME"))
        params: dict[str, Any] = {"stride": sh, "dilation": [dh, dw], "groups": in_ch // cin}
        if padding == "VALID":
            params["pads"] = [0, 0, 0, 0]
        elif padding == "SAME" and sh == 1:
            params["pads"] = [*_same_pads(kh, dh), *_same_pads(kw, dw)]
        elif padding == "SAME":
            params["same"] = [(kh - 1) * dh + 1, (kw - 1) * dw + 1]  # padding depends on the input size
        elif padding == "EXPLICIT":
            ep = [int(v) for v in node.attrs.get("explicit_paddings", [])]
            if len(ep) != 8:
                raise ModelError(f"Conv2D node {node.name!r} has explicit paddings {ep}; {_HINT}")
            params["pads"] = ep[2:6]
        else:
            raise ModelError(f"Conv2D node {node.name!r} has padding {padding!r}; {_HINT}")
        params["weight"] = self.add_const(f"{node.name}/weight", hwio.transpose(3, 2, 0, 1))
        params["bias"] = None
        self.emit(node, "conv", [src], cout, self.zoom[src] / sh, **params)

    def deconv(self, node: Node, refs: list[str]) -> None:
        if len(refs) != 3 or not self.is_const(refs[1]):
            raise ModelError(f"Conv2DBackpropInput node {node.name!r} needs constant weights; {_HINT}")
        src = self.value(refs[2])
        hwoi = self.const(refs[1])  # TF stores transposed-conv filters as [h, w, out, in]
        if hwoi.ndim != 4 or (self.channels[src] and self.channels[src] != hwoi.shape[3]):
            raise ModelError(f"Conv2DBackpropInput node {node.name!r} has weights {hwoi.shape}; {_HINT}")
        sh, sw = _spatial(node.attrs.get("strides"), "strides", node)
        dh, dw = _spatial(node.attrs.get("dilations"), "dilations", node)
        padding = _text(node.attrs.get("padding", "SAME"))
        if sh != sw or (dh, dw) != (1, 1) or padding not in ("SAME", "VALID"):
            raise ModelError(
                f"Conv2DBackpropInput node {node.name!r} (strides {sh}x{sw}, dilations {dh}x{dw}, {padding}) is not supported; {_HINT}"
            )
        weight = self.add_const(f"{node.name}/weight", hwoi.transpose(3, 2, 0, 1))  # -> [in, out, h, w]
        self.emit(node, "deconv", [src], hwoi.shape[2], self.zoom[src] * sh,
                  weight=weight, bias=None, stride=sh, same=padding == "SAME")

    def binary(self, node: Node, refs: list[str]) -> None:
        op = _BINARY_OPS[node.op]
        if len(refs) != 2:
            raise ModelError(f"{node.op} node {node.name!r} has {len(refs)} inputs; {_HINT}")
        a_const, b_const = self.is_const(refs[0]), self.is_const(refs[1])
        if a_const and b_const:
            raise ModelError(f"{node.op} node {node.name!r} combines two constants; {_HINT}")
        if a_const or b_const:
            ci, vi = (0, 1) if a_const else (1, 0)
            src = self.value(refs[vi])
            value = self.const(refs[ci]).astype(np.float32)
            channels = self.channels[src]
            if value.size == 1:
                value = value.reshape(())
            elif value.ndim >= 1 and value.shape[-1] == value.size:
                # A per-channel vector broadcast over NHWC's last axis becomes C x 1 x 1 in NCHW.
                channels = max(channels, value.size)
                value = value.reshape(-1, 1, 1)
            else:
                raise ModelError(f"{node.op} node {node.name!r} uses a constant of shape {value.shape}; {_HINT}")
            key = self.add_const(f"{node.name}/const", value)
            self.emit(node, "binary", [src], channels, self.zoom[src], op=op, const=key, const_first=a_const)
            return
        a, b = self.value(refs[0]), self.value(refs[1])
        if self.zoom[a] != self.zoom[b]:
            raise ModelError(f"{node.op} node {node.name!r} combines tensors of different sizes; {_HINT}")
        self.emit(node, "binary", [a, b], max(self.channels[a], self.channels[b]), self.zoom[a], op=op)


def _find_output(graph: Graph) -> str:
    # dnn_superres reads the layer named NCHW_output (LapSRN graphs also end in _2x/_4x side outputs).
    if "NCHW_output" in graph:
        return "NCHW_output"
    used = {input_node_name(r) for n in graph.nodes for r in n.inputs}
    sinks = [n.name for n in graph.nodes if n.name not in used and n.op not in _CONST_OPS]
    if len(sinks) != 1:
        raise ModelError(f"cannot tell the model's output among {sinks[:5]}; name it NCHW_output; {_HINT}")
    return sinks[0]


def build_plan(graph: Graph) -> GraphPlan:
    """Translate the graph, then fold biases into convolutions, DepthToSpace into pixel_shuffle, and activations."""
    builder = _Builder(graph)
    output = _find_output(graph)
    nodes = builder.order(output)
    placeholders = [n for n in nodes if n.op == "Placeholder"]
    if len(placeholders) != 1:
        raise ModelError(f"the model has {len(placeholders)} inputs; a super-resolution model has one; {_HINT}")
    first_conv = next((n for n in nodes if n.op == "Conv2D"), None)
    hint = int(builder.const(first_conv.inputs[1]).shape[2]) if first_conv is not None else None
    for node in nodes:
        builder.translate(node, hint)
    input_name = placeholders[0].name
    out_value = builder.value(output)
    zoom = builder.zoom[out_value]
    if zoom != int(zoom) or zoom < 1:
        raise ModelError(f"the model scales its input by {zoom:g}, not a whole factor; {_HINT}")
    plan = GraphPlan(
        input=input_name,
        output=out_value,
        in_channels=builder.channels[input_name],
        scale=int(zoom),
        steps=builder.steps,
        consts=builder.consts,
        channels=builder.channels,
        zoom=builder.zoom,
    )
    _fold_biases(plan)
    _fold_depth_to_space(plan)
    _fuse_activations(plan)
    _drop_unused_consts(plan)
    return plan


# ---------------------------------------------------------------- folding passes


def _consumers(plan: GraphPlan) -> dict[str, list[int]]:
    uses: dict[str, list[int]] = defaultdict(list)
    for i, step in enumerate(plan.steps):
        for name in step.inputs:
            uses[name].append(i)
    return uses


def _rename(plan: GraphPlan, old: str, new: str) -> None:
    """Make every reader of `old` read `new` instead."""
    for step in plan.steps:
        step.inputs = [new if n == old else n for n in step.inputs]
    if plan.output == old:
        plan.output = new


def _fold_biases(plan: GraphPlan) -> None:
    """conv -> Add(per-channel constant) becomes one conv with a bias."""
    changed = True
    while changed:
        changed = False
        uses = _consumers(plan)
        for i, step in enumerate(plan.steps):
            if step.kind not in ("conv", "deconv") or step.params.get("bias") is not None:
                continue
            readers = uses.get(step.out, [])
            if len(readers) != 1 or step.out == plan.output:
                continue
            nxt = plan.steps[readers[0]]
            if nxt.kind != "binary" or nxt.params["op"] != "add" or "const" not in nxt.params:
                continue
            value = plan.consts[nxt.params["const"]].reshape(-1)
            out_ch = plan.channels[step.out]
            if value.size not in (1, out_ch):
                continue
            step.params["bias"] = _put(plan, f"{step.out}/bias", np.broadcast_to(value, (out_ch,)).copy())
            # The add's output name now comes straight from the conv.
            del plan.steps[readers[0]]
            _rename(plan, nxt.out, step.out)
            plan.channels.pop(nxt.out, None)
            plan.zoom.pop(nxt.out, None)
            changed = True
            break


def _put(plan: GraphPlan, key: str, value: np.ndarray) -> str:
    plan.consts[key] = np.ascontiguousarray(value, dtype=np.float32)
    return key


def _fold_depth_to_space(plan: GraphPlan) -> None:
    """A convolution read only by a DepthToSpace gets its output channels reordered for pixel_shuffle."""
    uses = _consumers(plan)
    producer = {s.out: s for s in plan.steps}
    for step in plan.steps:
        if step.kind != "depth_to_space":
            continue
        src = producer.get(step.inputs[0])
        if src is None or src.kind not in ("conv", "deconv") or len(uses[src.out]) != 1 or src.out == plan.output:
            continue
        order = depth_to_space_order(plan.channels[src.out], step.params["block"])
        axis = 0 if src.kind == "conv" else 1
        weight = plan.consts[src.params["weight"]]
        plan.consts[src.params["weight"]] = np.ascontiguousarray(np.take(weight, order, axis=axis))
        if src.params.get("bias") is not None:
            plan.consts[src.params["bias"]] = np.ascontiguousarray(plan.consts[src.params["bias"]][order])
        step.kind = "pixel_shuffle"


_ELEMENTWISE = ("unary", "binary")


def _apply_np(step: Step, args: list[np.ndarray], consts: dict[str, np.ndarray]) -> np.ndarray:
    """numpy twin of the executor's elementwise ops, on (points, channels) arrays."""
    if step.kind == "unary":
        x = args[0]
        return {
            "relu": lambda: np.maximum(x, np.float32(0)),
            "relu6": lambda: np.clip(x, np.float32(0), np.float32(6)),
            "abs": lambda: np.abs(x),
            "neg": lambda: -x,
            "tanh": lambda: np.tanh(x),
            "sigmoid": lambda: np.float32(1) / (np.float32(1) + np.exp(-x)),
            "square": lambda: x * x,
        }[step.params["op"]]()
    if "const" in step.params:
        c = consts[step.params["const"]].reshape(-1)
        a, b = (c, args[0]) if step.params["const_first"] else (args[0], c)
    else:
        a, b = args
    fns: dict[str, Callable[[], np.ndarray]] = {
        "add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b,
        "max": lambda: np.maximum(a, b), "min": lambda: np.minimum(a, b),
    }
    return fns[step.params["op"]]().astype(np.float32)


def _classify(chain: list[Step], src: str, plan: GraphPlan) -> tuple[str, Any] | None:
    """What a single-input elementwise chain computes, if it is relu, leaky relu or PReLU; else None."""
    width = max([1] + [plan.consts[s.params["const"]].size for s in chain if "const" in s.params])
    probes = np.array([0.0, 0.25, 1.0, 3.5, 117.0, -0.25, -1.0, -3.5, -117.0], dtype=np.float32)
    x = np.repeat(probes[:, None], width, axis=1)
    env = {src: x}
    for step in chain:
        env[step.out] = _apply_np(step, [env[n] for n in step.inputs], plan.consts)
    y = np.broadcast_to(env[chain[-1].out], x.shape)
    pos, neg = probes >= 0, probes < 0
    if not np.array_equal(y[pos], x[pos]):
        return None
    slope = y[neg] / x[neg]
    if not np.allclose(slope, slope[:1], rtol=1e-6, atol=0):
        return None
    slope = slope[0]
    if np.all(slope == 0):
        return ("relu", None)
    if np.all(slope == slope[0]):
        return ("leaky_relu", float(slope[0]))
    return ("prelu", slope.astype(np.float32))


def _fuse_activations(plan: GraphPlan) -> None:
    """Replace chains like Relu(x) + alpha*(x - |x|)*0.5 (PReLU) or Relu(x) - 0.2*Relu(-x) by one activation."""
    while True:
        uses = _consumers(plan)
        fused = False
        for src in [plan.input] + [s.out for s in plan.steps]:
            members: dict[int, Step] = {}
            reached = {src}
            queue = [src]
            while queue:
                name = queue.pop()
                for i in uses.get(name, []):
                    step = plan.steps[i]
                    if i in members or step.kind not in _ELEMENTWISE or not all(n in reached for n in step.inputs):
                        continue
                    members[i] = step
                    reached.add(step.out)
                    queue.append(step.out)
            if len(members) < 2:
                continue
            exits = [i for i, s in members.items() if s.out == plan.output or any(j not in members for j in uses.get(s.out, []))]
            if len(exits) != 1:
                continue
            chain = [members[i] for i in sorted(members)]
            kind = _classify(chain, src, plan)
            if kind is None:
                continue
            exit_step = members[exits[0]]
            name, arg = kind
            params: dict[str, Any] = {"op": name}
            if name == "leaky_relu":
                params["slope"] = arg
            elif name == "prelu":
                params["weight"] = _put(plan, f"{exit_step.out}/prelu", arg)
            act = Step("act", exit_step.out, [src], params)
            plan.channels[act.out] = plan.channels[src]
            keep = exits[0]
            plan.steps = [act if i == keep else s for i, s in enumerate(plan.steps) if i == keep or i not in members]
            for s in chain:
                if s.out != act.out:
                    plan.channels.pop(s.out, None)
                    plan.zoom.pop(s.out, None)
            fused = True
            break
        if not fused:
            return


def _drop_unused_consts(plan: GraphPlan) -> None:
    used = set()
    for step in plan.steps:
        for key in ("weight", "bias", "const"):
            if step.params.get(key) is not None:
                used.add(step.params[key])
    plan.consts = {k: v for k, v in plan.consts.items() if k in used}
