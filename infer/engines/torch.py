"""PyTorch engine: the .pb model's own weights on CUDA or the CPU in fp32, bf16 or fp16, tiles sized to free memory."""

from __future__ import annotations

import gc
import math
import time
from typing import Any

_T_IMPORT = time.perf_counter()
import torch  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _T_IMPORT

import numpy as np  # noqa: E402

from infer.engines import cpu_rates  # noqa: E402
from infer.engines.cpu_rates import ConvRates  # noqa: E402
from infer.engines.graph_plan import GraphPlan  # noqa: E402
from infer.engines.torch_net import PlanNet  # noqa: E402
from infer.engines.weight_cache import load_plan  # noqa: E402
from infer import precision as precision_policy  # noqa: E402
from infer.errors import ModelError, OutOfMemoryError, UsageError  # noqa: E402
from infer.memory_budget import tile_for_budget  # noqa: E402
from infer.modelspec import ModelSpec  # noqa: E402
from infer.precision import Precision  # noqa: E402
from infer.tiling import StepFn, run_tiled  # noqa: E402

_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
# Never split below this window edge: a tile this small that still does not fit means the GPU is full.
MIN_WINDOW = 64
# Device memory kept free for cuDNN workspaces and the allocator's rounding, beyond the estimate.
_RESERVE_BYTES = 768 << 20
# Headroom over the plan's activation estimate (convolution workspaces, fragmentation).
_ACTIVATION_OVERHEAD = 1.5
# Tensors beyond 2**31 elements fall off cuDNN's fast paths; keep every activation below that.
_MAX_TENSOR_ELEMENTS = 2**31 - 1
_MAX_TILE = 2048

_OOM_TEXT = (
    "out of memory",
    "can't allocate memory",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
    # oneDNN (CPU convolutions) says only this when its JIT buffers or scratchpad cannot be allocated.
    "could not create a primitive",
)


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OOM, the CPU allocator's failure, or cuDNN/cuBLAS/oneDNN failing to allocate."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _OOM_TEXT)


# What PyTorch says when a network mixes number formats (a buffer or mask it builds in fp32 beside half weights)
# or has an operator without a half-precision kernel on this device: a fact of the architecture, not of the photo.
_PRECISION_TEXT = ("same dtype", "scalar type", "should be the same", "not implemented for 'BFloat16'",
                   "not implemented for 'Half'", "must have the same dtype")


def is_precision_error(err: BaseException) -> bool:
    """A half-precision forward that failed on its number formats (never an out-of-memory one)."""
    return isinstance(err, RuntimeError) and not is_out_of_memory(err) and any(t in str(err) for t in _PRECISION_TEXT)


def usable(device: str) -> bool:
    """PyTorch runs everywhere on the CPU; on CUDA only where it sees a GPU."""
    return device == "cpu" or bool(torch.cuda.is_available())


def _cuda_native_bf16() -> bool:
    # Ampere (compute capability 8.0) and later have bf16 tensor cores.
    return torch.cuda.get_device_capability()[0] >= 8


class TorchEngine:
    """Runs a GraphPlan with PyTorch; on CUDA it keeps the accelerator only from load() to close().

    In half precision (bf16, fp16) every tile's output is checked: one with a non-finite value
    (fp16 overflows past 65504) is run again in fp32 and counted in `precision_fallbacks`. A half-precision
    forward that fails on its number formats switches the engine to fp32 for good, its reason in `precision_switch`."""

    name = "torch"

    def __init__(self, device: str = "auto", precision: str = "auto", auto_half: tuple[str, ...] = ("bf16", "fp16")):
        if device not in ("auto", "cpu", "cuda"):
            raise UsageError("--device must be auto, cpu or cuda")
        precision_policy.parse(precision)
        has_cuda = torch.cuda.is_available()
        if device == "cuda" and not has_cuda:
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ModelError(
                f"--device cuda was asked for but PyTorch {torch.__version__} ({build}) sees no CUDA GPU; "
                "install the NVIDIA driver and a CUDA build of PyTorch (`pip install -e '.[gpu]'`), or use --device cpu"
            )
        self.device = "cuda" if device == "cuda" or (device == "auto" and has_cuda) else "cpu"
        self.note = "no CUDA GPU found; the torch engine runs on the CPU" if device == "auto" and not has_cuda else None
        self._cpu_rates: ConvRates | None = None
        if self.device == "cuda":
            native_bf16 = _cuda_native_bf16()
        elif precision_policy.parse(precision) is Precision.AUTO and "bf16" in auto_half:
            native_bf16, self._cpu_rates = cpu_rates.bf16_pays()
        else:
            native_bf16 = precision_policy.cpu_has_native_bf16()
        chosen = precision_policy.choose(precision, self.device, native_bf16=native_bf16, auto_half=auto_half)
        self.precision = chosen.value
        self._dtype = _DTYPES[chosen]
        self._spec: ModelSpec | None = None
        self._plan: GraphPlan | None = None
        self._plan_source = ""
        self._net: PlanNet | None = None
        self._fp32_net: PlanNet | None = None
        self._window_limit: int | None = None
        self._split_pad = 16
        self._tile_retries = 0
        self._tiles = 0
        self._fallbacks = 0
        self._switch: dict[str, Any] | None = None
        self._seconds = {"import": round(IMPORT_SECONDS, 4), "weights": 0.0, "cuda_init": 0.0, "to_device": 0.0, "inference": 0.0}
        self._cuda_started: float | None = None
        self._cuda_released: float | None = None
        self._memory: dict[str, float] = {}

    # ---- model

    def _plan_for(self, spec: ModelSpec) -> GraphPlan:
        """CPU-side conversion (or cache read); done before any CUDA call so it never counts as GPU time."""
        if self._plan is not None and self._spec == spec:
            return self._plan
        t = time.perf_counter()
        loaded = load_plan(spec.path)
        plan = loaded.plan
        if plan.in_channels != spec.channels:
            raise ModelError(
                f"{spec.path.name} takes {plan.in_channels}-channel input but {spec.algo} models take {spec.channels}; "
                "check --algo or the file name"
            )
        if plan.scale != spec.scale:
            raise ModelError(
                f"{spec.path.name} upscales x{plan.scale}, not x{spec.scale}; "
                "pass the model's real factor with --scale or rename the file (e.g. EDSR_x3.pb)"
            )
        self._seconds["weights"] = round(time.perf_counter() - t, 4)
        self._spec, self._plan, self._plan_source = spec, plan, loaded.source
        self._split_pad = spec.family.tile_pad
        return plan

    def _start_cuda(self) -> None:
        if self._cuda_started is not None:
            return
        self._cuda_started = time.perf_counter()
        torch.cuda.init()
        torch.empty(1, device="cuda")  # creates the context now, so its cost is not billed to the first tile
        torch.cuda.reset_peak_memory_stats()
        if self.precision == "fp32":
            # fp32 means fp32: no TF32 tensor-core rounding on Ampere and later.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self._seconds["cuda_init"] = round(time.perf_counter() - self._cuda_started, 4)

    def load(self, spec: ModelSpec) -> None:
        plan = self._plan_for(spec)
        if self.device == "cuda":
            self._start_cuda()
        t = time.perf_counter()
        self._net = self._build(plan, self._dtype)
        self._seconds["to_device"] = round(time.perf_counter() - t, 4)

    def _build(self, plan: GraphPlan, dtype: torch.dtype) -> PlanNet:
        return self._place(PlanNet(plan), dtype)

    def _place(self, net: torch.nn.Module, dtype: torch.dtype) -> Any:
        """The network in eval mode on the device in `dtype`; OutOfMemoryError when its weights do not fit."""
        try:
            # Channels-last suits cuDNN's tensor-core kernels and oneDNN on the CPU alike (measured, docs/benchmarks.md).
            net = net.eval().to(device=self.device, dtype=dtype).to(memory_format=torch.channels_last)
            if self.device == "cuda":
                torch.cuda.synchronize()
        except Exception as err:
            if is_out_of_memory(err):
                raise OutOfMemoryError(f"the model's weights do not fit in the {self.device.upper()}'s free memory") from err
            raise
        return net

    def activation_bytes_per_px(self, spec: ModelSpec) -> float:
        """The graph's own peak of live activation values per window pixel, in bytes at the precision that runs."""
        return self._plan_for(spec).peak_values_per_pixel() * self._dtype.itemsize

    def preferred_tile(self, spec: ModelSpec, budget: int | None = None) -> int | None:
        """On CUDA, the largest tile whose activations fit in free device memory. On the CPU, the largest window
        `budget` allows at the graph's own count of live activations times the family's measured overhead; None
        (the family's tile) without a budget or a measured overhead."""
        if self.device == "cuda":
            plan = self._plan_for(spec)
            self._start_cuda()
            free, _total = torch.cuda.mem_get_info()
            return tile_for_memory(plan, free, self._dtype.itemsize, self._split_pad)
        overhead = spec.family.window_overhead
        if budget is None or overhead <= 0:
            return None
        plan = self._plan_for(spec)
        tile = tile_for_budget(budget, self.activation_bytes_per_px(spec) * overhead, self._split_pad)
        return min(tile, _widest_window(plan) - 2 * self._split_pad)

    # ---- inference

    def run(self, tile: np.ndarray, on_step: StepFn | None = None) -> np.ndarray:
        if self._net is None or self._spec is None:
            raise RuntimeError("load() a model before run()")
        while True:
            h, w = tile.shape[:2]
            limit = self._window_limit
            if limit is not None and max(h, w) > limit:
                # An earlier tile ran out of memory: cut this one into windows that fit.
                core = max(limit - 2 * self._split_pad, 1)
                parts = None if on_step is None else (lambda done, count: on_step(done / count))
                return run_tiled(tile, self.run, self._spec.scale, core, self._split_pad, parts)
            try:
                return self._forward(tile, on_step)
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
            # Outside the except block: the traceback no longer pins the failed tile's tensors.
            self._release_cached()
            new_limit = max(h, w) // 2
            # A window must hold its context on both sides and a core: a smaller one could never be cut to fit.
            if new_limit < max(MIN_WINDOW, 2 * self._split_pad + 16):
                advice = "free the GPU (other jobs?) or use --device cpu" if self.device == "cuda" else "free some memory or use a smaller photo"
                raise OutOfMemoryError(f"the {self.device.upper()} ran out of memory even on a {h}x{w} tile; {advice}")
            self._window_limit = new_limit
            self._tile_retries += 1

    def _forward(self, tile: np.ndarray, on_step: StepFn | None = None) -> np.ndarray:
        assert self._net is not None
        t = time.perf_counter()
        try:
            out = self._infer(self._net, tile, self._dtype, on_step)
        except RuntimeError as err:
            if self._dtype == torch.float32 or not is_precision_error(err):
                raise
            reason = str(err).splitlines()[0]
            # Outside the except block, so the traceback does not pin the failed forward's tensors.
        else:
            reason = None
        if reason is not None:
            self._switch_to_fp32(reason)
            out = self._infer(self._net, tile, torch.float32)
        elif self._dtype != torch.float32 and not np.isfinite(out).all():
            # The half-precision activations overflowed (black or NaN patches): this tile again in fp32.
            out = self._infer(self._fp32(), tile, torch.float32)
            self._fallbacks += 1
        self._tiles += 1
        self._seconds["inference"] = round(self._seconds["inference"] + time.perf_counter() - t, 4)
        return out

    def _fp32(self) -> Any:
        if self._fp32_net is None:
            assert self._plan is not None
            self._fp32_net = self._build(self._plan, torch.float32)
        return self._fp32_net

    def _switch_to_fp32(self, reason: str) -> None:
        """The rest of the run in fp32: the half-precision network cannot run at all, tile after tile."""
        self._switch = {"from": self.precision, "to": "fp32", "after_tiles": self._tiles,
                        "reason": f"the {self.precision} forward failed ({reason}); running in fp32 instead"}
        self._net = self._fp32()
        self._fp32_net = None
        self._dtype = torch.float32
        self.precision = "fp32"
        self._release_cached()

    def _infer(self, net: Any, tile: np.ndarray, dtype: torch.dtype, on_step: StepFn | None = None) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1), dtype=np.float32)[None])
        x = x.to(self.device).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self._run_net(net, x, on_step)
            del x
            out = y[0].permute(1, 2, 0).float().cpu().numpy()
            del y
        return np.ascontiguousarray(out)

    def _run_net(self, net: PlanNet, x: torch.Tensor, on_step: StepFn | None) -> torch.Tensor:
        """The network's output for `x`: a plan says how far it is itself."""
        return net(x, on_step)

    def _release_cached(self) -> None:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()

    # ---- accounting

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "precision_fallbacks": self._fallbacks,
            **({"precision_switch": dict(self._switch)} if self._switch is not None else {}),
            "weights": self._plan_source,
            "tiles_run": self._tiles,
            "tile_retries": self._tile_retries,
            "tile_limit": self._window_limit,
            "torch_seconds": dict(self._seconds),
        }
        if self._cpu_rates is not None:
            out["cpu_rates"] = {**self._cpu_rates.to_json(), "cached": self._cpu_rates.cached}
        if self.device == "cuda" and self._cuda_started is not None:
            end = self._cuda_released if self._cuda_released is not None else time.perf_counter()
            out["gpu_seconds"] = round(end - self._cuda_started, 4)
            out["gpu_released"] = self._cuda_released is not None
            out["device_memory_mb"] = dict(self._memory) or self._memory_now()
            out["gpu_name"] = torch.cuda.get_device_name()
        return out

    def _memory_now(self) -> dict[str, float]:
        mb = 1 << 20
        return {
            "peak_allocated": round(torch.cuda.max_memory_allocated() / mb, 1),
            "peak_reserved": round(torch.cuda.max_memory_reserved() / mb, 1),
            "reserved": round(torch.cuda.memory_reserved() / mb, 1),
        }

    def close(self) -> None:
        """Drop the model; on CUDA wait for the device, return every cached block and stop the GPU clock."""
        self._net = None
        self._fp32_net = None
        gc.collect()
        if self.device == "cuda" and self._cuda_started is not None and self._cuda_released is None:
            torch.cuda.synchronize()
            memory = self._memory_now()
            torch.cuda.empty_cache()
            memory["reserved_after_release"] = round(torch.cuda.memory_reserved() / (1 << 20), 1)
            del memory["reserved"]
            self._memory = memory
            self._cuda_released = time.perf_counter()


def tile_for_memory(plan: GraphPlan, free_bytes: int, itemsize: int, pad: int) -> int:
    """Input tile edge whose window (tile + 2*pad) fits the activation estimate into `free_bytes`."""
    weights = plan.weight_count() * itemsize
    per_pixel = plan.peak_values_per_pixel() * itemsize * _ACTIVATION_OVERHEAD
    budget = free_bytes * 0.9 - weights - _RESERVE_BYTES
    if budget <= 0:
        return MIN_WINDOW
    window = min(math.sqrt(budget / per_pixel), _widest_window(plan))
    tile = int(window) - 2 * pad
    return int(max(MIN_WINDOW, min(_MAX_TILE, tile // 16 * 16)))


def _widest_window(plan: GraphPlan) -> int:
    """The largest window edge whose every activation stays below `_MAX_TENSOR_ELEMENTS`."""
    widest = max(plan.channels[v] * plan.zoom[v] ** 2 for v in plan.channels)
    return int(math.sqrt(_MAX_TENSOR_ELEMENTS / widest))
