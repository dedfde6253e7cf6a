"""PyTorch checkpoints (.pth, .safetensors, .ckpt) through spandrel: refuse code, read what the weights say."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from infer.errors import ModelError
from infer.families import Colour, Family

# In order of preference: safetensors cannot hold code at all; the others are pickles, read only by
# PyTorch's weights-only unpickler (`_read_weights`).
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".ckpt")
TORCHSCRIPT_SUFFIX = ".pt"
# The torch engine's own caches of converted .pb weights (infer/engines/weight_cache.py), not models.
_CACHE_SUFFIX = ".torch.pt"
# Purposes the worker serves: one photo in, a larger or cleaner photo out.
SERVED_PURPOSES = ("SR", "Restoration")
INPAINT_PURPOSE = "Inpainting"  # spandrel's purpose for inpainting networks (LaMa): what `--repair-model` loads
# Models whose denoising can be dialled (Real-ESRGAN's `dni`): the weights blend with the twin's, `strength`
# of this model's and the rest of the twin's (1: this model as it is, 0: the twin, which keeps the noise).
DENOISE_TWINS = {"realesr-general-x4v3": "realesr-general-wdn-x4v3"}
CHECKPOINT_HINT = (
    "use a single-image super-resolution or restoration checkpoint that spandrel recognises "
    "(.safetensors preferred, or .pth/.ckpt), such as RealESRGAN_x4plus.pth (`sr-models fetch RealESRGAN_x4plus`)"
)


class LoaderMissing(ModelError):
    """spandrel (the worker's install) is not here: a fact of this machine, not of the checkpoint."""


class Tiling(str, Enum):
    """spandrel's tiling hint for an architecture."""

    SUPPORTED = "supported"
    DISCOURAGED = "discouraged"  # tiles change the result (global attention, normalisation): run whole
    INTERNAL = "internal"  # the network tiles itself: always give it the whole photo


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's weights say about it (spandrel's descriptor); never guessed from its file name."""

    architecture: str  # spandrel's architecture id, e.g. "ESRGAN", "RealESRGAN Compact" -> "Compact"
    architecture_name: str
    scale: int
    input_channels: int
    output_channels: int
    purpose: str  # "SR", "Restoration", "FaceSR", "Inpainting", ...
    size_minimum: int
    size_multiple_of: int
    size_square: bool
    tiling: Tiling
    supports_fp16: bool
    supports_bf16: bool
    tags: tuple[str, ...] = ()

    @property
    def half_formats(self) -> tuple[str, ...]:
        """The half-precision formats the architecture is safe in, as the precision policy takes them."""
        return tuple(f for f, ok in (("bf16", self.supports_bf16), ("fp16", self.supports_fp16)) if ok)

    def refusal(self, purposes: tuple[str, ...] = SERVED_PURPOSES) -> str | None:
        """Why the worker does not serve this checkpoint for one of `purposes`, or None when it does."""
        if self.purpose not in purposes:
            return f"it is a {self.purpose} model ({self.architecture_name}), not single-image super-resolution or restoration"
        if self.purpose == INPAINT_PURPOSE:
            # Its input is the photo and the mask together; what counts is that it gives colour back.
            return None if self.output_channels == 3 else f"it gives {self.output_channels} channels, not colour"
        if self.input_channels != 3 or self.output_channels != 3:
            return f"it takes {self.input_channels} and gives {self.output_channels} channels; only 3-channel colour models are served"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture, "architecture_name": self.architecture_name, "scale": self.scale,
            "input_channels": self.input_channels, "output_channels": self.output_channels, "purpose": self.purpose,
            "size_requirements": {"minimum": self.size_minimum, "multiple_of": self.size_multiple_of, "square": self.size_square},
            "tiling": self.tiling.value, "supports_fp16": self.supports_fp16, "supports_bf16": self.supports_bf16,
            "tags": list(self.tags),
        }


def is_checkpoint(path: Path) -> bool:
    """A file the checkpoint loader takes (or refuses with a reason): .pth, .safetensors, .ckpt and TorchScript .pt."""
    name = path.name.lower()
    return name.endswith(CHECKPOINT_SUFFIXES) or (name.endswith(TORCHSCRIPT_SUFFIX) and not name.endswith(_CACHE_SUFFIX))


def _is_torchscript_zip(path: Path) -> bool:
    # A first, friendlier refusal only: Python's zipfile and PyTorch's zip reader disagree on irregular archives
    # (bytes before the end record, a zero central-directory size), so this can answer "no" for a file that
    # torch.load would take for TorchScript. `_read_weights` is what keeps such a file from running.
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _refuse_code(path: Path) -> None:
    if path.suffix.lower() == TORCHSCRIPT_SUFFIX or _is_torchscript_zip(path):
        raise ModelError(
            f"{path.name} is a TorchScript file, which runs code when loaded, so it is refused; "
            "use the model's weights as .safetensors or .pth instead"
        )
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ModelError(f"{path.name} is not a checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}); {CHECKPOINT_HINT}")


def require_loader(what: str = "PyTorch checkpoints") -> Any:
    """spandrel, imported; LoaderMissing when this machine lacks the worker's install."""
    try:
        import spandrel
    except ImportError as err:
        raise LoaderMissing(f"reading {what} needs spandrel ({err}); install the worker with `pip install -e '.[worker]'`") from err
    return spandrel


def _describe(descriptor: Any) -> CheckpointInfo:
    size = descriptor.size_requirements
    return CheckpointInfo(
        architecture=str(descriptor.architecture.id),
        architecture_name=str(descriptor.architecture.name),
        scale=int(descriptor.scale),
        input_channels=int(descriptor.input_channels),
        output_channels=int(descriptor.output_channels),
        purpose=str(descriptor.purpose),
        size_minimum=int(size.minimum),
        size_multiple_of=int(size.multiple_of),
        size_square=bool(size.square),
        tiling=Tiling(descriptor.tiling.name.lower()),
        supports_fp16=bool(descriptor.supports_half),
        supports_bf16=bool(descriptor.supports_bfloat16),
        tags=tuple(str(t) for t in descriptor.tags),
    )


def denoise_twin(path: Path) -> Path | None:
    """The twin a checkpoint's denoise strength blends with (beside it), or None when it has none."""
    twin = DENOISE_TWINS.get(path.stem)
    return path.with_name(twin + path.suffix) if twin else None


def _refused_global(err: Exception) -> str:
    """What PyTorch's weights-only reader refused, in its own words (`GLOBAL posix.system ...`)."""
    text = str(err)
    named = re.search(r"GLOBAL ([\w.]+)", text)
    if named:
        return f"it names {named.group(1)}"
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip()
    return "something PyTorch's weights-only reader does not allow"


def _read_weights(path: Path) -> Any:
    """The file's tensors, read without running any of its code: `.safetensors` by safetensors, every pickle
    only by `torch.load(..., weights_only=True)`. PyTorch's weights-only reader allows tensors, storages and
    plain containers, nothing else, and refuses a TorchScript archive however its zip is dressed up, so the
    safety rests on it alone, not on `_refuse_code`'s friendlier look at the file."""
    import pickle
    import warnings

    import torch

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        with warnings.catch_warnings():  # its warning that a TorchScript archive is being dispatched is untrue here
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(
            f"{path.name} was refused: it asks for more than weights while loading ({_refused_global(err)}); "
            f"a checkpoint should hold only weights; {CHECKPOINT_HINT}"
        ) from None
    except RuntimeError as err:
        if "TorchScript" in str(err):
            raise ModelError(f"{path.name} is a TorchScript file, which runs code when loaded, so it is refused; "
                             "use the model's weights as .safetensors or .pth instead") from None
        raise


def _state_dict(path: Path) -> dict[str, Any]:
    """The checkpoint's state dict, unwrapped as spandrel expects it (`params_ema`, `module.` prefixes)."""
    from spandrel import canonicalize_state_dict

    _refuse_code(path)
    try:
        state = _read_weights(path)
    except ModelError:
        raise
    except Exception as err:  # torch, zipfile and safetensors each raise their own kinds for a damaged file
        raise ModelError(f"{path.name} cannot be read as a checkpoint ({type(err).__name__}: {err}); {CHECKPOINT_HINT}") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path.name} holds a {type(state).__name__}, not a dictionary of weights; {CHECKPOINT_HINT}")
    return canonicalize_state_dict(state)


def _blend(path: Path, state: Any, twin: Path, twin_state: Any, strength: float) -> Any:
    if state.keys() != twin_state.keys() or any(state[k].shape != twin_state[k].shape for k in state):
        raise ModelError(f"{twin.name} does not have the same architecture as {path.name}, so they cannot be blended")
    return {k: state[k] * strength + twin_state[k] * (1.0 - strength) for k in state}


def load(
    path: str | Path,
    *,
    served_only: bool = True,
    purposes: tuple[str, ...] = SERVED_PURPOSES,
    denoise_strength: float | None = None,
) -> tuple[Any, CheckpointInfo]:
    """The spandrel descriptor (fp32, on the CPU, in eval mode) and its facts; ModelError (exit 5) for a file
    that would run code, that spandrel refuses or does not recognise, or (`served_only`) that is not a
    3-channel model of one of `purposes` (spandrel's purpose names: upscalers by default, "FaceSR" for the
    face restorer). `denoise_strength` blends the weights with the checkpoint's denoise twin."""
    path = Path(path)
    _refuse_code(path)
    spandrel = require_loader(path.name)

    state = _state_dict(path)
    if denoise_strength is not None:
        twin = denoise_twin(path)
        if twin is None:
            raise ModelError(f"{path.name} has no denoise twin to blend with; denoise strength applies to {', '.join(DENOISE_TWINS)}")
        if not twin.is_file():
            raise ModelError(f"denoise strength needs {twin.name} beside {path.name}; fetch it with `sr-models fetch {twin.stem}`")
        state = _blend(path, state, twin, _state_dict(twin), denoise_strength)
    try:
        descriptor = spandrel.ModelLoader("cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise ModelError(f"{path.name} is not an architecture spandrel recognises; {CHECKPOINT_HINT}") from None
    except (RuntimeError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise ModelError(f"{path.name} does not match its architecture ({type(err).__name__}: {err}); {CHECKPOINT_HINT}") from None
    info = _describe(descriptor)
    reason = info.refusal(purposes)
    if reason is not None and served_only:
        raise ModelError(f"{path.name} is not served: {reason}")
    descriptor.model.eval()
    return descriptor, info


def inspect(path: str | Path) -> CheckpointInfo:
    """The facts of a checkpoint the worker serves (see `load`)."""
    return load(path)[1]


@dataclass(frozen=True)
class CpuFacts:
    """What the service knows of an architecture on the CPU: its time estimate, its tile, and what tiling costs."""

    seconds_per_mp: float  # wall seconds per input megapixel in bf16, until the service has its own
    tile: int  # input tile edge
    tile_pad: int  # context pixels around each tile
    # Tiled against the whole photo at `tile_pad` on a real photo, the bound a run keeps to: the largest difference
    # in grey levels (8-bit) and the lowest PSNR. Convolutions with enough context, and window attention on tiles
    # aligned to its windows (`align`), stay within 2 levels; OmniSR's grid attention spans the whole input, so
    # any tile changes it a little.
    tiled_max_diff: int = 2
    tiled_psnr_db: float = 50.0
    # Peak resident memory one window's forward adds, in bytes per window pixel in bf16 (0: not measured): the
    # window edge a memory budget allows is sqrt(budget / window_bytes_per_px).
    window_bytes_per_px: float = 0.0
    # The same in fp32 where measured; else twice the bf16 figure (every activation twice the bytes).
    window_bytes_per_px_fp32: float = 0.0
    align: int = 1  # the attention window edge tiles are aligned to (Family.tile_align); 1 for convolutions
    # True where `tile` is the window measured fastest, which a memory budget may shrink but never grow
    # (attention); False where a larger window only saves the context computed twice (convolutions).
    fastest_tile: bool = False


# Tile and context measured (docs/benchmarks.md "Tile and context per architecture"): RRDBNet sees far past
# 16 pixels (10 grey levels at a seam with 16, 1 with 32) and its fp32 window of 256 stays near 1.45 GB RSS;
# Compact's small receptive field needs 16, and its whole 384 window ran fastest. Seconds per MP:
# docs/benchmarks.md "PyTorch checkpoints on the CPU", this project's 2-core machine (RealESRGAN_x4plus
# 848.5 s, realesr-animevideov3 16.5 s; an AMX Xeon does 28 s and 0.9 s, issue 17).
# Bytes per window pixel: bench/bench_windows.py at a 512 window (docs/benchmarks.md "Windows from memory"):
# RRDBNet with its tail in stripes (split_tail) 1154 in bf16 and 2360 in fp32; Compact 543 and 574 (oneDNN's
# fp32 convolutions work in place where its bf16 ones reorder, so fp32 adds only 6%).
# The community architectures, random weights at their published sizes (docs/benchmarks.md "Community
# architectures on the CPU", bench/bench_architectures.py): seconds per MP are CPU seconds over 2 threads at the
# default precision (bf16 on AVX512_BF16; SwinIR switches to fp32), the tile the fastest per input pixel of the
# measured windows (96-256) within 2 GB, the pad the smallest within 2 grey levels of the whole photo. OmniSR's
# grid attention and DAT's channel attention span the whole input, so no context makes them equal: OmniSR's 48
# keeps it within 4 levels (52.6 dB), DAT's 32 (its alignment) within 3 (53.9 dB).
_CPU_FACTS = {
    "ESRGAN": CpuFacts(850.0, 192, 32, window_bytes_per_px=1154, window_bytes_per_px_fp32=2360),
    "Compact": CpuFacts(17.0, 384, 16, window_bytes_per_px=543, window_bytes_per_px_fp32=574),
    "PLKSR": CpuFacts(185.0, 240, 8, window_bytes_per_px=1649),
    "SPAN": CpuFacts(22.0, 240, 8, window_bytes_per_px=2802),
    "OmniSR": CpuFacts(257.0, 160, 48, tiled_max_diff=4, tiled_psnr_db=52.0, window_bytes_per_px=3952, align=8,
                       fastest_tile=True),
    "SwinIR": CpuFacts(598.0, 144, 8, window_bytes_per_px=15524, align=8, fastest_tile=True),
    "HAT": CpuFacts(1102.0, 128, 16, window_bytes_per_px=22651, align=16, fastest_tile=True),
    "DAT": CpuFacts(2214.0, 96, 32, tiled_max_diff=3, tiled_psnr_db=53.0, window_bytes_per_px=9742, align=32,
                    fastest_tile=True),
}
UNMEASURED = CpuFacts(60.0, 256, 16)  # Real-ESRGAN's own script pads tiles by 10


def cpu_facts(info: CheckpointInfo) -> CpuFacts:
    """The architecture's measured CPU facts, or UNMEASURED."""
    return _CPU_FACTS.get(info.architecture, UNMEASURED)


def family_of(info: CheckpointInfo) -> Family:
    """The colour pipeline, tiling and half formats of a checkpoint, all from its descriptor."""
    facts = cpu_facts(info)
    # spandrel discourages tiling SwinIR because unaligned tiles cut its attention windows elsewhere than the whole
    # photo does; aligned tiles with the measured context match it (docs/benchmarks.md), while a whole photo's
    # attention would need tens of GB on the CPU. Unmeasured architectures keep spandrel's hint.
    whole = info.tiling is Tiling.INTERNAL or (info.tiling is Tiling.DISCOURAGED and facts is UNMEASURED)
    return Family(
        name=info.architecture.lower(), file_stem="", scales=(info.scale,), colour=Colour.RGB,
        tile=0 if whole else facts.tile, tile_pad=0 if whole else facts.tile_pad, cpu_engines=("spandrel",),
        auto_half=info.half_formats, label=f"{info.architecture_name} x{info.scale}", quality_rank=2, kind="restore",
        cpu_seconds_per_mp=facts.seconds_per_mp, tile_align=facts.align,
    )


def info_from_json(data: dict[str, Any]) -> CheckpointInfo:
    """The inverse of `CheckpointInfo.to_json` (scan records); KeyError/ValueError/TypeError on a damaged one."""
    size = data["size_requirements"]
    return CheckpointInfo(
        architecture=str(data["architecture"]), architecture_name=str(data["architecture_name"]), scale=int(data["scale"]),
        input_channels=int(data["input_channels"]), output_channels=int(data["output_channels"]), purpose=str(data["purpose"]),
        size_minimum=int(size["minimum"]), size_multiple_of=int(size["multiple_of"]), size_square=bool(size["square"]),
        tiling=Tiling(data["tiling"]), supports_fp16=bool(data["supports_fp16"]), supports_bf16=bool(data["supports_bf16"]),
        tags=tuple(str(t) for t in data.get("tags", ())),
    )
