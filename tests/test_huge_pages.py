"""Huge pages for PyTorch's large tensors: asked for in the workers' environment unless an operator says otherwise
or the worker's memory is capped, asked for by a worker started by hand, reported in the done event, and the page
faults they save in a real process."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from infer import huge_pages
from infer.huge_pages import ASK, VARIABLE, thp_mode
from infer.memory_budget import CAP_VARIABLE
from infer.worker_process import worker_environment
from tests.helpers import REPO_ROOT, run_worker


def test_the_setting_is_added_to_the_workers_environment_and_an_operators_choice_stands():
    env = worker_environment({"OMP_NUM_THREADS": "1"}, env={"PATH": "/usr/bin", "SR_AUTH_TOKEN": "secret"})
    assert env[VARIABLE] == ASK and "SR_AUTH_TOKEN" not in env
    assert worker_environment(env={"PATH": "/usr/bin", VARIABLE: "0"})[VARIABLE] == "0"
    assert worker_environment({VARIABLE: "0"}, env={"PATH": "/usr/bin"})[VARIABLE] == "0"


def test_a_worker_with_a_memory_cap_does_not_ask():
    """A cap is an address-space limit, which the 2 MB alignment spends: in the service's settings, in the node's
    environment, or as a limit on the process that starts the worker."""
    assert VARIABLE not in worker_environment({CAP_VARIABLE: "900"}, env={"PATH": "/usr/bin"})
    assert VARIABLE not in worker_environment(env={"PATH": "/usr/bin", CAP_VARIABLE: " 900\n"})
    assert worker_environment({CAP_VARIABLE: "0"}, env={"PATH": "/usr/bin"})[VARIABLE] == ASK
    assert worker_environment({CAP_VARIABLE: "900", VARIABLE: ASK}, env={})[VARIABLE] == ASK  # an operator's own
    limited = subprocess.run(
        [sys.executable, "-c", "import json; from infer.worker_process import worker_environment as w; "
                               "print(json.dumps(w(env={'PATH': '/usr/bin'})))"],
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, resource.RLIM_INFINITY)),
        capture_output=True, text=True, timeout=60, check=True, cwd=REPO_ROOT)
    assert VARIABLE not in json.loads(limited.stdout)


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


def test_a_workers_large_tensors_take_hundreds_of_times_fewer_page_faults():
    """Four 64 MB tensors: 65 536 faults in 4 KB pages; on 2 MB pages 128 (PyTorch aligns them to 2 MB)."""
    asked = _faults(worker_environment())
    plain = _faults(worker_environment({VARIABLE: "0"}))
    small_pages = 4 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert plain >= 0.9 * small_pages or thp_mode() == "always", plain
    if huge_pages.in_use({VARIABLE: ASK}):
        assert asked < small_pages / 10, (asked, plain)
    else:  # no huge pages on this kernel: the setting changes nothing
        assert asked >= 0.9 * small_pages, asked


def test_a_worker_started_by_hand_asks_for_them_unless_capped_and_says_so(fsrcnn_model: Path, shared_photos: Path,
                                                                          tmp_path: Path):
    photo = shared_photos / "chelsea.png"
    args = ("--input", photo, "--output", tmp_path / "o.png", "--model", fsrcnn_model, "--json")
    without = {k: v for k, v in os.environ.items() if k != VARIABLE and k != CAP_VARIABLE}
    cases = ((None, None, huge_pages.in_use({VARIABLE: ASK})), ("0", None, huge_pages.in_use({})),
             (None, "3000", huge_pages.in_use({})))
    for setting, cap, expected in cases:
        env = dict(without, **({VARIABLE: setting} if setting else {}), **({CAP_VARIABLE: cap} if cap else {}))
        done = subprocess.run([sys.executable, "-m", "infer.sr_infer", *map(str, args)], env=env,
                              capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1])["huge_pages"] is expected, (setting, cap, done.stdout[-400:])
    run = run_worker(*args, env={VARIABLE: ASK})
    assert run.exit_code == 0 and run.last["huge_pages"] is huge_pages.in_use({VARIABLE: ASK})
