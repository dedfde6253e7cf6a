"""The worker's large allocations on transparent huge pages: the glibc setting that asks for them, and the restart
that applies it. Standard library only: the front end and Ray nodes put it in the workers' environment.

PyTorch allocates each layer's activations afresh on the CPU. glibc gives every allocation over 32 MB a mapping of
its own and returns it on free, so the kernel zeroes the next layer's memory again, one 4 KB page fault at a time:
some 2.3 million faults per forward of a Compact model on a 1024x1024 window. Where the kernel hands out huge pages
only to memory that asks for them (the `madvise` mode, the usual default), glibc 2.35 and later asks for them when
its `glibc.malloc.hugetlb` setting is 1: 2 MB pages, a hundredth of the faults, and a Compact model or
RealESRGAN_x4plus on a 2 MP photo ran 1.29x faster at the same peak memory (docs/benchmarks.md, "Huge pages").
The setting is read once, when a process starts, so a worker started without it runs itself again with it
(`restart_with_huge_pages`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

TUNABLES = "GLIBC_TUNABLES"
SETTING = "glibc.malloc.hugetlb"
ASK = f"{SETTING}=1"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_FIRST_GLIBC = (2, 35)  # the first glibc that reads SETTING


def with_huge_pages(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with ASK added to its glibc settings, unless they say something about huge pages already (an
    operator's `glibc.malloc.hugetlb=0` or `=2` stands)."""
    out = dict(env)
    tunables = out.get(TUNABLES, "")
    if _value(tunables) is None:
        out[TUNABLES] = f"{tunables}:{ASK}" if tunables else ASK
    return out


def _value(tunables: str) -> str | None:
    for item in tunables.split(":"):
        name, sep, value = item.partition("=")
        if sep and name.strip() == SETTING:
            return value.strip()
    return None


def thp_mode(path: Path = THP_MODE_FILE) -> str:
    """The kernel's transparent huge page mode, `always`, `madvise` or `never`; "" where it has none (not Linux)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else ""


def _glibc_reads_setting() -> bool:
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
        return name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= _FIRST_GLIBC
    except (ValueError, OSError, AttributeError):  # musl, or no confstr at all
        return False


def in_use(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process's large allocations go on huge pages: the kernel gives them to all memory, or to
    memory that asks and glibc was told to ask."""
    mode = thp_mode()
    return mode == "always" or (mode == "madvise" and _glibc_reads_setting() and _value(env.get(TUNABLES, "")) == "1")


def restart_with_huge_pages() -> None:
    """Runs this process again in place (the same pid, arguments and open files) with huge pages asked for, where
    that would change something: the kernel gives them only when asked, glibc can ask, and nothing in the
    environment says yes or no yet. Call it first thing in a process's entry point, before any work."""
    if thp_mode() != "madvise" or not _glibc_reads_setting() or not sys.executable:
        return
    env = with_huge_pages(os.environ)
    if env.get(TUNABLES) == os.environ.get(TUNABLES):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
