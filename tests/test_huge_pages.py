"""Huge pages for PyTorch's large tensors, an operator's option: off unless asked for, passed to the workers when
asked, reported in the done event, and the page faults they save in a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from infer import huge_pages
from infer.huge_pages import ASK, VARIABLE, thp_mode
from infer.worker_process import worker_environment
from tests.helpers import run_worker


def test_they_are_not_asked_for_by_default_and_an_operators_choice_reaches_the_worker():
    env = worker_environment({"OMP_NUM_THREADS": "1"}, env={"PATH": "/usr/bin", "SR_AUTH_TOKEN": "secret"})
    assert VARIABLE not in env and "SR_AUTH_TOKEN" not in env
    assert worker_environment(env={"PATH": "/usr/bin", VARIABLE: ASK})[VARIABLE] == ASK


def test_the_kernels_mode_is_read_from_its_brackets(tmp_path: Path):
    setting = tmp_path / "enabled"
    for text, mode in (("always [madvise] never\n", "madvise"), ("[always] madvise never\n", "always"),
                       ("always madvise [never]\n", "never"), ("garbled\n", "")):
        setting.write_text(text)
        assert thp_mode(setting) == mode
    assert thp_mode(tmp_path / "missing") == ""


def test_they_are_in_use_where_the_kernel_gives_them_to_all_or_to_those_who_ask():
    asked, not_asked, refused = {VARIABLE: ASK}, {}, {VARIABLE: "0"}
    assert huge_pages.in_use(asked, "madvise") and huge_pages.in_use({VARIABLE: " 1\n"}, "madvise")
    assert not huge_pages.in_use(not_asked, "madvise") and not huge_pages.in_use(refused, "madvise")
    assert all(huge_pages.in_use(env, "always") for env in (asked, not_asked, refused))
    assert not any(huge_pages.in_use(env, mode) for env in (asked, not_asked) for mode in ("never", ""))


_FAULTS = """
import resource, torch
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


def test_asked_for_large_tensors_take_hundreds_of_times_fewer_page_faults():
    """Four 64 MB tensors: 65 536 faults in 4 KB pages; on 2 MB pages 128 (PyTorch aligns them to 2 MB)."""
    asked = _faults(worker_environment({VARIABLE: ASK}))
    plain = _faults(worker_environment())
    small_pages = 4 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert plain >= 0.9 * small_pages or thp_mode() == "always", plain
    if huge_pages.in_use({VARIABLE: ASK}):
        assert asked < small_pages / 10, (asked, plain)
    else:  # no huge pages on this kernel: the setting changes nothing
        assert asked >= 0.9 * small_pages, asked


def test_the_done_event_says_whether_they_are_in_use(fsrcnn_model: Path, shared_photos: Path, tmp_path: Path):
    args = ("--input", shared_photos / "chelsea.png", "--output", tmp_path / "o.png", "--model", fsrcnn_model, "--json")
    for setting in (ASK, "0"):
        run = run_worker(*args, env={VARIABLE: setting})
        assert run.exit_code == 0, run.stderr
        assert run.last["huge_pages"] is huge_pages.in_use({VARIABLE: setting})
    without = {k: v for k, v in os.environ.items() if k != VARIABLE}
    done = subprocess.run([sys.executable, "-m", "infer.sr_infer", *map(str, args)], env=without,
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["huge_pages"] is huge_pages.in_use({})
