"""Whether PyTorch's large CPU tensors are on transparent huge pages, for the `done` event: an operator's option
(README, "Engines and precision"), not the default. Standard library only.

PyTorch allocates each layer's activations afresh on the CPU. glibc gives every allocation over 32 MB a mapping of
its own and returns it on free, so the kernel zeroes the next layer's memory again, one 4 KB page fault at a time:
some 2.3 million faults per forward of a Compact model on a 1024x1024 window. With `THP_MEM_ALLOC_ENABLE=1` PyTorch
aligns its tensors of 2 MB and more to 2 MB and asks for huge pages for them, where the kernel gives them only to
memory that asks (`madvise`, the usual default): a Compact model on a 2 MP photo ran 1.2-1.3x faster. It is not
the default: in a whole test run with it, a job under a tight memory cap (an address-space limit) ran out of memory
at every window size, perhaps from the 2 MB alignment, which the cap does not plan for (docs/benchmarks.md, "Huge
pages").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

VARIABLE = "THP_MEM_ALLOC_ENABLE"
ASK = "1"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_MODE_FILE) -> str:
    """The kernel's transparent huge page mode, `always`, `madvise` or `never`; "" where it has none (not Linux)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else ""


def in_use(env: Mapping[str, str] = os.environ, mode: str | None = None) -> bool:
    """Whether this process's large tensors go on huge pages: the kernel gives them to all memory, or to memory
    that asks and PyTorch was told to ask."""
    mode = thp_mode() if mode is None else mode
    return mode == "always" or (mode == "madvise" and env.get(VARIABLE, "").strip() == ASK)
