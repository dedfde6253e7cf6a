"""sr-infer for people: folder batches, skipping finished photos, the terminal/JSON switch, --scale/--quality."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import WORKER, read, run_worker


@pytest.fixture
def photo_folder(shared_photos: Path, tmp_path: Path) -> Path:
    """Three real photo crops (PNG, JPEG, BMP) and a broken JPEG in one folder, plus a subfolder and a text file."""
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.open(shared_photos / "chelsea.png").convert("RGB").crop((150, 60, 214, 108)).save(folder / "cat.png")
    Image.open(shared_photos / "coffee.png").convert("RGB").crop((200, 100, 264, 148)).save(folder / "cup.jpg", quality=90)
    Image.open(shared_photos / "astronaut.png").convert("RGB").crop((180, 60, 244, 108)).save(folder / "face.bmp")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "older").mkdir()
    Image.open(folder / "cat.png").save(folder / "older" / "nested.png")
    return folder


@pytest.fixture
def models_folder(shared_models: Path, edsr_model: Path, tmp_path: Path) -> Path:
    """An installed-models folder: FSRCNN x2 and x3, ESPCN x3 and a small EDSR x3."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("FSRCNN_x2.pb", "FSRCNN_x3.pb", "ESPCN_x3.pb"):
        shutil.copy(shared_models / name, folder)
    shutil.copy(edsr_model, folder / "EDSR_x3.pb")
    return folder


def _by_event(events: list[dict], name: str) -> list[dict]:
    return [e for e in events if e["event"] == name]


def test_folder_batch_goes_on_past_a_broken_photo(shared_models: Path, photo_folder: Path, tmp_path: Path):
    out = tmp_path / "results" / "x3"  # created, parents too
    code, events, err = run_worker("--input", photo_folder, "--output", out, "--model", shared_models / "FSRCNN_x3.pb")
    # Documented: 0 when every photo is done, else the exit code of the first failure (3: unreadable input).
    assert code == 3, err
    assert sorted(p.name for p in out.iterdir()) == ["cat_x3.png", "cup_x3.jpg", "face_x3.png"]
    assert read(out / "cat_x3.png").shape == (144, 192, 3)
    assert read(out / "face_x3.png").shape == (144, 192, 3)  # BMP in, PNG out
    errors = _by_event(events, "error")
    assert len(errors) == 1 and errors[0]["input"].endswith("broken.jpg") and errors[0]["exit_code"] == 3
    assert len(_by_event(events, "done")) == 3
    summary = events[-1]
    assert summary["event"] == "batch_done"
    assert (summary["done"], summary["skipped"], summary["failed"], summary["exit_code"]) == (3, 0, 1, 3)
    # One model load for the whole batch.
    assert sum("load" in e["seconds"] for e in _by_event(events, "done")) == 1


def test_a_batch_that_all_succeeds_exits_0_and_format_sets_the_extension(shared_models: Path, photo_folder: Path,
                                                                          tmp_path: Path):
    out = tmp_path / "out"
    code, events, err = run_worker("--input", photo_folder / "cat.png", photo_folder / "cup.jpg", "--output", out,
                                   "--model", shared_models / "FSRCNN_x2.pb", "--format", "webp")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["cat_x2.webp", "cup_x2.webp"]
    assert Image.open(out / "cup_x2.webp").size == (128, 96)


def test_finished_photos_are_skipped_unless_overwrite(shared_models: Path, photo_folder: Path, tmp_path: Path):
    (photo_folder / "broken.jpg").unlink()
    out = tmp_path / "out"
    model = shared_models / "FSRCNN_x2.pb"
    code, _, err = run_worker("--input", photo_folder, "--output", out, "--model", model)
    assert code == 0, err
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "cup_x2.jpg").unlink()

    code, events, err = run_worker("--input", photo_folder, "--output", out, "--model", model)
    assert code == 0, err
    assert sorted(Path(e["output"]).name for e in _by_event(events, "skipped")) == ["cat_x2.png", "face_x2.png"]
    assert [Path(e["output"]).name for e in _by_event(events, "done")] == ["cup_x2.jpg"]
    assert (out / "cat_x2.png").stat().st_mtime_ns == first["cat_x2.png"]

    code, events, err = run_worker("--input", photo_folder, "--output", out, "--model", model, "--overwrite")
    assert code == 0, err
    assert not _by_event(events, "skipped") and len(_by_event(events, "done")) == 3


def test_an_unwritable_result_leaves_no_partial_file(shared_models: Path, photo_folder: Path, tmp_path: Path):
    if os.geteuid() == 0:
        # root writes anywhere; a result too large for WebP fails at the same late point instead.
        big = photo_folder / "wide.png"
        Image.new("RGB", (6000, 8), "gray").save(big)
        out = tmp_path / "out"
        code, events, _ = run_worker("--input", big, photo_folder / "cat.png", "--output", out,
                                     "--model", shared_models / "FSRCNN_x3.pb", "--format", "webp")
        assert code == 7
        assert sorted(p.name for p in out.iterdir()) == ["cat_x3.webp"]
    else:
        out = tmp_path / "out"
        out.mkdir()
        out.chmod(0o500)
        try:
            code, _, _ = run_worker("--input", photo_folder / "cat.png", photo_folder / "cup.jpg", "--output", out,
                                    "--model", shared_models / "FSRCNN_x3.pb")
            assert code == 7
            assert list(out.iterdir()) == []
        finally:
            out.chmod(0o700)


def test_two_inputs_for_one_result_are_refused_before_any_work(shared_models: Path, photo_folder: Path, tmp_path: Path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photo_folder / "cat.png", other / "cat.png")
    out = tmp_path / "out"
    code, events, _ = run_worker("--input", photo_folder / "cat.png", other / "cat.png", "--output", out,
                                 "--model", shared_models / "FSRCNN_x3.pb")
    assert code == 2 and "cat_x3.png" in events[-1]["message"]
    assert not out.exists()


def test_one_file_and_one_output_name_behave_as_before(shared_models: Path, photo_folder: Path, tmp_path: Path):
    out = tmp_path / "exact-name.jpg"
    out.write_bytes(b"old")
    code, events, err = run_worker("--input", photo_folder / "cat.png", "--output", out,
                                   "--model", shared_models / "FSRCNN_x3.pb")
    assert code == 0, err
    assert [e["event"] for e in events if e["event"] != "progress"] == ["start", "done"]
    assert Image.open(out).size == (192, 144)  # an existing single output is replaced, as the service expects


# --- terminal or JSON ------------------------------------------------------------------------------


def _run_on_terminal(*args: str | Path, timeout: float = 120, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Runs the worker with stdout and stderr on a pseudo-terminal; returns its exit code and everything it drew."""
    master, slave = pty.openpty()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SR_")}, **(env or {})}
    proc = subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_gets_progress_bars_and_readable_lines(shared_models: Path, photo_folder: Path, tmp_path: Path):
    (photo_folder / "broken.jpg").unlink()
    code, screen = _run_on_terminal("--input", photo_folder, "--output", tmp_path / "out",
                                    "--model", shared_models / "FSRCNN_x3.pb", "--tile", "16")
    assert code == 0, screen
    assert '"event"' not in screen  # no JSON for people
    assert re.search(r"all photos:\s+\d+%\|", screen), screen  # the batch bar
    assert re.search(r"cat\.png:\s+\d+%\|.*tile", screen), screen  # a photo's bar, counting tiles
    assert re.search(r"<(\d\d:\d\d|\?)", screen)  # tqdm's time left
    assert "cat.png: 64x48 -> 192x144 with fsrcnn x3" in screen
    assert "done: 3 upscaled, 0 skipped, 0 failed" in screen


def test_json_flag_on_a_terminal_and_a_pipe_both_give_json_lines(shared_models: Path, photo_folder: Path, tmp_path: Path):
    import json

    args = ("--input", photo_folder / "cat.png", "--output", tmp_path / "a.png", "--model", shared_models / "FSRCNN_x3.pb")
    code, screen = _run_on_terminal(*args, "--json")
    assert code == 0, screen
    lines = [json.loads(line) for line in screen.splitlines() if line.startswith("{")]
    assert [e["event"] for e in lines][0] == "start" and lines[-1]["event"] == "done"
    assert "%|" not in screen
    code, events, err = run_worker(*args)  # a pipe
    assert code == 0 and events[0]["event"] == "start" and events[-1]["event"] == "done", err


def test_errors_on_a_terminal_are_one_readable_line(shared_models: Path, tmp_path: Path):
    code, screen = _run_on_terminal("--input", tmp_path / "missing.jpg", "--output", tmp_path / "x.png",
                                    "--model", shared_models / "FSRCNN_x3.pb")
    assert code == 3
    assert '"event"' not in screen
    assert screen.count("sr-infer: error:") == 1 and "missing.jpg not found" in screen, screen


# --- choosing the model by scale and quality --------------------------------------------------------


def _model_used(models_folder: Path, src: Path, out: Path, *flags: str) -> tuple[int, list[dict]]:
    code, events, _ = run_worker("--input", src, "--output", out, *flags, env={"SR_MODELS_DIR": str(models_folder)})
    return code, events


def test_scale_and_quality_pick_an_installed_model_and_say_why(models_folder: Path, photo: Path, tmp_path: Path):
    cases = {
        ("--scale", "3", "--quality", "fast"): ("FSRCNN_x3.pb", "the fastest at x3"),  # of the fastest tier, the best ranked
        ("--scale", "3", "--quality", "best"): ("EDSR_x3.pb", "the best at x3"),
        ("--scale", "2"): ("FSRCNN_x2.pb", "the best at x2"),
        ("--quality", "fast"): ("FSRCNN_x3.pb", "the fastest at x3, the default model's scale"),
        (): ("EDSR_x3.pb", "the default"),
    }
    for flags, (expected, why) in cases.items():
        code, events = _model_used(models_folder, photo, tmp_path / "out.png", *flags)
        assert code == 0, (flags, events[-1])
        assert Path(events[0]["model"]).name == expected, flags
        assert events[0]["scale"] == int(expected[-4])
        assert events[0]["why"] == why, flags


def test_a_stand_in_for_a_missing_default_says_so(models_folder: Path, photo: Path, tmp_path: Path):
    (models_folder / "EDSR_x3.pb").unlink()
    code, events = _model_used(models_folder, photo, tmp_path / "out.png")
    assert code == 0, events[-1]
    assert events[0]["why"] == "standing in for the default EDSR_x3.pb, which is not installed", events[0]


def test_a_terminal_is_told_once_which_model_was_chosen_and_why(models_folder: Path, photo_folder: Path, tmp_path: Path):
    (photo_folder / "broken.jpg").unlink()
    code, screen = _run_on_terminal("--input", photo_folder, "--output", tmp_path / "out", "--quality", "fast",
                                    env={"SR_MODELS_DIR": str(models_folder)})
    assert code == 0, screen
    said = "model FSRCNN_x3.pb: the fastest at x3, the default model's scale (--model names another)"
    assert screen.count(said) == 1, screen
    # A named model needs no reason.
    code, screen = _run_on_terminal("--input", photo_folder / "cat.png", "--output", tmp_path / "named.png",
                                    "--model", models_folder / "FSRCNN_x3.pb")
    assert code == 0 and "model FSRCNN_x3.pb:" not in screen, screen


@pytest.mark.parametrize("scale,words", [("2", "use --outscale 2 for a 2x result from this x3 model"),
                                         ("4", "drop --scale, or choose a x4 model")])
def test_a_scale_a_pb_model_does_not_have_is_refused_before_anything_is_said(
        models_folder: Path, photo_folder: Path, tmp_path: Path, scale: str, words: str):
    args = ("--input", photo_folder / "cat.png", "--output", tmp_path / "out.png", "--model",
            models_folder / "FSRCNN_x3.pb", "--scale", scale)
    code, events, _ = run_worker(*args)
    assert code == 2 and [e["event"] for e in events] == ["error"], events
    assert "FSRCNN_x3.pb upscales x3 (read from its name), not x" in events[0]["message"]
    assert words in events[0]["message"]
    code, screen = _run_on_terminal(*args)
    assert code == 2 and "->" not in screen and words in screen, screen
    assert not (tmp_path / "out.png").exists()


def test_model_path_wins_over_scale_and_quality(models_folder: Path, shared_models: Path, photo: Path, tmp_path: Path):
    code, events = _model_used(models_folder, photo, tmp_path / "out.png", "--model", shared_models / "FSRCNN_x3.pb",
                               "--quality", "best")
    assert code == 0
    assert events[0]["model"] == str(shared_models / "FSRCNN_x3.pb") and "why" not in events[0]


def test_unknown_scale_or_quality_is_exit_2_listing_the_valid_ones(models_folder: Path, photo: Path, tmp_path: Path):
    code, events = _model_used(models_folder, photo, tmp_path / "out.png", "--scale", "8")
    assert code == 2 and "x2, x3" in events[-1]["message"]
    code, events = _model_used(models_folder, photo, tmp_path / "out.png", "--quality", "medium")
    assert code == 2 and "best, fast" in events[-1]["message"]
    assert not (tmp_path / "out.png").exists()


def test_no_installed_model_says_what_to_fetch(photo: Path, tmp_path: Path):
    empty = tmp_path / "models"
    empty.mkdir()
    code, events = _model_used(empty, photo, tmp_path / "out.png", "--scale", "3")
    assert code == 5 and "sr-models fetch" in events[-1]["message"]


def test_sigterm_mid_batch_stops_it_and_leaves_only_finished_results(edsr_model_slow: Path, shared_photos: Path,
                                                                      tmp_path: Path):
    import json
    import signal

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.open(shared_photos / "coffee.png").convert("RGB").crop((0, 0, 200, 150)).save(folder / name)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    proc = subprocess.Popen([sys.executable, str(WORKER), "--input", str(folder), "--output", str(out),
                             "--model", str(edsr_model_slow), "--tile", "32"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    events = []
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "progress" and sum(e["event"] == "done" for e in events) == 1:
                proc.send_signal(signal.SIGTERM)  # b.png is under way (or, on a slow reader, a later photo)
                break
        rest = proc.stdout.read()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += [json.loads(line) for line in rest.splitlines()]
    assert code == 1
    finished = sorted(Path(e["output"]).name for e in events if e["event"] == "done")
    assert finished and "c_x3.png" not in finished
    assert sorted(p.name for p in out.iterdir()) == finished  # no partial file of the stopped photo
    errors = [e for e in events if e["event"] == "error"]
    assert len(errors) == 1 and "SIGTERM" in errors[0]["message"]
    assert events[-1]["event"] == "batch_done" and events[-1]["failed"] == 1 and events[-1]["exit_code"] == 1
