"""Huge pages for the worker's large allocations: the glibc setting in the workers' environment, an operator's own
setting kept, the restart of a worker started without it, and the page faults it saves in a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infer import huge_pages
from infer.huge_pages import ASK, TUNABLES, thp_mode, with_huge_pages
from infer.worker_process import worker_environment
from tests.helpers import REPO_ROOT, run_worker


def _expected(tunables: str | None) -> bool:
    """Whether a process with these glibc settings gets huge pages on this machine."""
    env = {} if tunables is None else {TUNABLES: tunables}
    return huge_pages.in_use(env)


def test_the_setting_is_added_to_what_the_environment_says_and_an_operators_choice_stands():
    assert with_huge_pages({})[TUNABLES] == ASK
    assert with_huge_pages({TUNABLES: "glibc.malloc.arena_max=2"})[TUNABLES] == f"glibc.malloc.arena_max=2:{ASK}"
    for own in ("glibc.malloc.hugetlb=0", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"):
        assert with_huge_pages({TUNABLES: own})[TUNABLES] == own
    env = worker_environment({"OMP_NUM_THREADS": "1"}, env={"PATH": "/usr/bin", "SR_AUTH_TOKEN": "secret"})
    assert env[TUNABLES] == ASK and "SR_AUTH_TOKEN" not in env


def test_the_kernels_mode_is_read_from_its_brackets(tmp_path: Path):
    setting = tmp_path / "enabled"
    for text, mode in (("always [madvise] never\n", "madvise"), ("[always] madvise never\n", "always"),
                       ("always madvise [never]\n", "never"), ("garbled\n", "")):
        setting.write_text(text)
        assert thp_mode(setting) == mode
    assert thp_mode(tmp_path / "missing") == ""


_FAULTS = """
import resource, sys, torch
torch.set_num_threads(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):  # as a network's layers do: large tensors made, written and freed
    torch.empty(64 * 2**20 // 4).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    return int(done.stdout.split()[-1])


def test_a_workers_large_tensors_take_hundreds_of_times_fewer_page_faults():
    """Four 64 MB tensors: 65 536 faults in 4 KB pages; in 2 MB pages, 128, and up to 512 small pages at each end
    of a tensor where its mapping is not aligned to 2 MB (4 224 at most)."""
    asked = _faults(worker_environment())
    plain = _faults(worker_environment({TUNABLES: "glibc.malloc.hugetlb=0"}))
    small_pages = 4 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert plain >= 0.9 * small_pages or thp_mode() == "always", plain
    if _expected(ASK):
        assert asked < small_pages / 10, (asked, plain)
    else:  # no huge pages on this kernel, or a glibc that cannot ask: the setting changes nothing
        assert asked >= 0.9 * small_pages, asked


def test_a_worker_started_without_the_setting_runs_itself_again_with_it(fsrcnn_model: Path, shared_photos: Path,
                                                                        tmp_path: Path):
    photo = shared_photos / "chelsea.png"
    env = {k: v for k, v in os.environ.items() if k != TUNABLES}
    args = ("--input", photo, "--output", tmp_path / "o.png", "--model", fsrcnn_model)
    code = ("import os, sys; sys.argv[0] = {worker!r}; print(os.getpid(), flush=True); "
            "from infer.sr_infer import main; sys.exit(main())").format(worker=str(REPO_ROOT / "infer" / "sr_infer.py"))
    for tunables in (None, "glibc.malloc.hugetlb=0"):
        started = dict(env, **({TUNABLES: tunables} if tunables else {}))
        run = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=started, capture_output=True,
                             text=True, timeout=300, cwd=REPO_ROOT)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        pids = {int(line) for line in lines if line.isdigit()}
        done = json.loads(lines[-1])
        restarted = tunables is None and thp_mode() == "madvise" and _expected(ASK)
        assert done["event"] == "done" and done["huge_pages"] is _expected(ASK if tunables is None else tunables)
        assert len(pids) == 1  # printed once, or twice by the same process run again: one pid either way
        assert lines.count(str(pids.pop())) == (2 if restarted else 1)
    # The service's own way of starting it: the setting is in its environment, so it runs once.
    run = run_worker(*args, env={TUNABLES: ASK})
    assert run.exit_code == 0 and run.last["huge_pages"] is _expected(ASK)
