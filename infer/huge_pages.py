"""PyTorch's large CPU tensors on transparent huge pages: the setting that asks for them, and whether they are in
use. Standard library only: the front end and Ray nodes put it in the workers' environment.

PyTorch allocates each layer's activations afresh on the CPU. glibc gives every allocation over 32 MB a mapping of
its own and returns it on free, so the kernel zeroes the next layer's memory again, one 4 KB page fault at a time:
some 2.3 million faults per forward of a Compact model on a 1024x1024 window. Where the kernel hands out huge pages
only to memory that asks for them (the `madvise` mode, the usual default), PyTorch asks for its tensors of 2 MB and
more when `THP_MEM_ALLOC_ENABLE` is 1: it aligns them to 2 MB and advises only their own memory, not the rest of the
heap (glibc's `glibc.malloc.hugetlb=1` advises all of it, which stays an operator's option: README). A Compact model
on a 2 MP photo ran 1.2-1.3x faster at the same peak memory (docs/benchmarks.md, "Huge pages").

A worker under a memory cap (SR_WORKER_MEMORY_MB, an address-space limit) does not ask: in a whole test run with
huge pages asked for everywhere, a capped EDSR job ran out of address space at every window size, which no run
without them has done; the 2 MB alignment is the likely cost the cap's plan leaves out, not confirmed.

PyTorch reads the variable at its first allocation, so setting it before the first tensor is enough: no restart.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Mapping, MutableMapping

from infer.memory_budget import CAP_VARIABLE

VARIABLE = "THP_MEM_ALLOC_ENABLE"
ASK = "1"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def ask(env: MutableMapping[str, str]) -> None:
    """Asks for huge pages in `env` (a process's own before its first tensor, or the one a worker will start with),
    unless VARIABLE is set already (an operator's `0` stands) or the worker's memory is capped."""
    if VARIABLE not in env and not capped(env):
        env[VARIABLE] = ASK


def capped(env: Mapping[str, str]) -> bool:
    """Whether a worker with this environment runs under a memory cap: CAP_VARIABLE more than 0, or an
    address-space limit on this process, which the worker inherits (`ulimit -v`)."""
    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        return True
    try:
        return int(env.get(CAP_VARIABLE, "0").strip() or "0") > 0
    except ValueError:
        return False  # the worker refuses such a value itself, with its own message


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
