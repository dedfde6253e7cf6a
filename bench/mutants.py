"""Mutation check: one-line bugs planted one at a time in copies of the checkout, each against its tests."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.helpers import copy_checkout  # noqa: E402

FACES_OPTION = "tests/web/test_faces_option.py"
RESTORE = "tests/web/test_restore.py"
FACES = "tests/test_faces.py"
TILING = "tests/test_tiling.py"
LAUNCHER = "tests/web/test_launcher.py"
REPAIR = "tests/test_repair.py"
MASK_API = "tests/web/test_repair_mask.py"
PRECISION = "tests/test_precision.py"
HUGE_PAGES = "tests/test_huge_pages.py"
WINDOW_PROGRESS = "tests/test_window_progress.py"
FUSED = "tests/test_fused_convs.py"
EDSR_WINDOWS = ("tests/test_windows.py::test_an_edsr_photo_runs_in_one_window_that_tells_its_progress_and_in_windows_"
                "from_the_graph_under_a_cap")
REDUCED = "tests/test_checkpoints.py::test_a_reduced_scale_is_reached_tile_by_tile_without_seams_and_keeps_alpha"


@dataclass(frozen=True)
class Mutant:
    """One planted bug: `original` (found exactly once in `path`) replaced by `replacement`."""

    name: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]


MUTANTS = (
    # The seven bugs of issue 31.
    Mutant("cache key without the face fidelity", "web/jobs/cache.py",
           'parts.append(["faces", faces[0], float(faces[1])])', 'parts.append(["faces", faces[0]])',
           (f"{FACES_OPTION}::test_face_fidelity_is_taken_in_hundredths",)),
    Mutant("expired result reused before the sweep", "web/jobs/cache.py",
           "(other.finished_at or 0) > cutoff", "(other.finished_at or 0) > 0",
           ("tests/web/test_cache.py::test_an_expired_result_is_not_reused_before_the_sweep_removes_it",)),
    Mutant("alpha dropped when a x4 model writes 3x", "infer/upscale.py",
           "alpha = None if image.alpha is None else",
           "alpha = None if image.alpha is None or outscale != spec.scale else",
           (REDUCED,)),
    Mutant("no blur before a shrinking paste", "infer/faces/align.py",
           "source = cv2.GaussianBlur(face, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)", "source = face",
           (f"{FACES}::test_a_small_pasted_face_gets_its_average_grey_not_moire",)),
    Mutant("sign-in backoff never doubles", "web/guards/signins.py",
           "min(MAX_WAIT_S, 2.0 ** over)", "min(MAX_WAIT_S, 2.0)",
           ("tests/web/test_signins.py",)),
    Mutant("40 free sign-in failures", "web/guards/signins.py", "FREE_FAILURES = 3", "FREE_FAILURES = 40",
           ("tests/web/test_signins.py",)),
    Mutant("runner passes no face fidelity", "web/jobs/runner.py",
           "face_fidelity=job.face_fidelity,", "face_fidelity=None,",
           (f"{FACES_OPTION}::test_each_fidelity_is_its_own_result_as_the_worker_ran_it",)),
    # Web settings.
    Mutant("settings not on the 0.01 grid", "web/jobs/choice.py",
           "return round(round(value / SETTING_STEP) * SETTING_STEP, 2)", "return round(value, 4)",
           (f"{FACES_OPTION}::test_face_fidelity_is_taken_in_hundredths",)),
    Mutant("faces accepted without the face file", "web/http/form.py",
           "if faces == FaceMode.ON.value and not offered:", "if False:",
           (f"{FACES_OPTION}::test_faces_are_offered_only_when_the_gfpgan_file_is_installed",)),
    Mutant("default fidelity 1 instead of 0.5", "web/http/form.py",
           "if raw else DEFAULT_FIDELITY", "if raw else 1.0",
           (f"{FACES_OPTION}::test_face_settings_reach_the_worker_and_the_cache_key",)),
    Mutant("an unknown denoise level accepted", "web/http/form.py",
           "if denoise not in DENOISE_LEVELS:", "if False:",
           ("tests/web/test_choices.py::test_unknown_choices_are_400_listing_the_valid_ones",)),
    # The cache key.
    Mutant("cache key without the output format", "web/jobs/cache.py",
           "scale, denoise, output_format, PRECISION_CLASS", "scale, denoise, PRECISION_CLASS",
           ("tests/web/test_cache.py::test_the_same_photo_three_times_runs_one_worker",)),
    Mutant("cache key without the denoise strength", "web/jobs/cache.py",
           'parts.append(["denoise_strength", float(denoise_strength)])', 'parts.append(["denoise_strength"])',
           (f"{RESTORE}::test_denoise_strength_is_in_the_cache_key_and_the_command",)),
    # Tiling.
    Mutant("core cut from the wrong column of its window", "infer/tiling.py",
           "oy, ox = (cy0 - wy0) * scale, (cx0 - wx0) * scale", "oy, ox = (cy0 - wy0) * scale, (cx0 - wx0)",
           (TILING,)),
    Mutant("last window cut short at the edge", "infer/tiling.py",
           "w0 = min(max(c0 - pad, 0), length - win)", "w0 = max(c0 - pad, 0)",
           (TILING,)),
    Mutant("reduced core with width and height swapped", "infer/tiling.py",
           "core = reduce(core, (cx1 - cx0) * outscale, (cy1 - cy0) * outscale)",
           "core = reduce(core, (cy1 - cy0) * outscale, (cx1 - cx0) * outscale)",
           (REDUCED,)),
    # The face stage.
    Mutant("fidelity 0 still runs the restorer", "infer/faces/stage.py",
           "if not faces or self.settings.fidelity <= 0.0:", "if not faces:",
           (f"{FACES}::test_fidelity_zero_is_the_plain_upscale_and_runs_no_restorer",)),
    Mutant("fidelity blends the wrong way round", "infer/faces/align.py",
           "mixed = crop.astype(np.float32) + np.float32(fidelity) * (restored.astype(np.float32) - crop.astype(np.float32))",
           "mixed = restored.astype(np.float32) + np.float32(fidelity) * (crop.astype(np.float32) - restored.astype(np.float32))",
           (f"{FACES}::test_fidelity_mixes_the_restorer_into_the_face_area",)),
    Mutant("paste blur only for tiny faces", "infer/faces/align.py", "if shrink < 0.9:", "if shrink < 0.1:",
           (f"{FACES}::test_a_small_pasted_face_gets_its_average_grey_not_moire",)),
    # The preloaded launcher and the estimates (issue 25).
    Mutant("pid answered before the forked job leads its session", "infer/zygote.py",
           "        led.read(1)  # a byte, or the end when the child died before it", "        pass",
           (f"{LAUNCHER}::test_forked_job_writes_the_same_bytes_as_a_plain_one_and_accounts_for_its_time",)),
    Mutant("forked job keeps the launcher's environment", "infer/zygote.py",
           "        os.environ.update(request.env)\n", "        os.environ.update(before)\n",
           (f"{LAUNCHER}::test_forked_job_keeps_to_the_memory_limit_in_its_own_environment",)),
    Mutant("speed learned from the whole job", "web/jobs/choice.py",
           "    seconds = PRIOR_MEGAPIXELS * model.family.cpu_seconds_per_mp + sum(work for work, _ in samples)",
           "    seconds = PRIOR_MEGAPIXELS * model.family.cpu_seconds_per_mp + sum(work for work, _ in samples)"
           " + len(samples) * statistics.median(store.recent_overheads() or [0.0])",
           (f"{LAUNCHER}::test_a_tiny_job_hardly_moves_the_estimate",)),
    # Repair, colour and the measured precision (issues 27 and 29).
    # (OpenCV's inpaint itself keeps every unmasked pixel, so `fill` pasting only the masked ones is no mutant.)
    Mutant("network's output pasted over its whole box", "infer/repair_network.py",
           "region[inside] = filled[inside]", "region[:] = filled",
           ("tests/test_repair_network.py::test_the_network_fills_exactly_the_masked_pixels",)),
    Mutant("a mask marking every pixel accepted", "infer/repair.py",
           "if marked == mask.size:", "if marked > mask.size:",
           (f"{REPAIR}::test_an_all_white_mask_is_refused",)),
    Mutant("painted mask dropped when detection runs too", "infer/repair.py",
           "mask |= detected", "mask = detected",
           (f"{REPAIR}::test_a_painted_mask_and_the_detection_repair_together",)),
    Mutant("an opaque alpha channel read as the mask", "infer/repair.py",
           "if alpha is not None and int(alpha.min()) < 255:", "if alpha is not None:",
           (f"{REPAIR}::test_a_mask_with_transparency_marks_by_its_alpha",)),
    Mutant("worker checks the mask with width and height swapped", "infer/repair.py",
           "if im.size != (width, height):", "if im.size != (height, width):",
           (f"{REPAIR}::test_a_mask_of_another_size_is_a_usage_error",
            f"{REPAIR}::test_a_mask_repairs_its_pixels_and_the_events_say_so")),
    Mutant("front end checks the mask with width and height swapped", "web/jobs/uploads.py",
           "if (mask_width, mask_height) != (width, height):", "if (mask_width, mask_height) != (height, width):",
           (f"{MASK_API}::test_the_mask_limits",)),
    Mutant("cache key without the mask's digest", "web/jobs/cache.py",
           'parts.append(["repair_mask", repair_mask_sha256])', 'parts.append(["repair_mask", "sent"])',
           (f"{MASK_API}::test_the_cache_key_counts_the_mask_and_the_options",)),
    Mutant("mask kept when its upload is removed", "web/jobs/files.py",
           "self.mask.unlink(missing_ok=True)", "pass",
           (f"{MASK_API}::test_a_mask_travels_with_the_job_and_is_removed_with_its_upload",)),
    Mutant("colour restored in a photo whose blacks are deep", "infer/colour.py",
           "FADED_FROM = 18.0", "FADED_FROM = -10.0",
           (f"{REPAIR}::test_colour_restoration_leaves_a_good_photo_and_keeps_a_grey_one_grey",)),
    Mutant("a channel of little range stretched without limit", "infer/colour.py",
           "MAX_GAIN = 3.0", "MAX_GAIN = 1000.0",
           (f"{REPAIR}::test_a_channel_of_little_range_is_not_blown_up_into_noise",)),
    Mutant("bf16 chosen on a tie", "infer/engines/cpu_rates.py", "BF16_LEAD = 1.15", "BF16_LEAD = 1.0",
           (f"{PRECISION}::test_auto_follows_the_measured_rates_not_the_flag",)),
    Mutant("bf16 chosen where nothing was measured", "infer/engines/cpu_rates.py",
           "return self.fp32 > 0 and self.bf16", "return self.bf16",
           (f"{PRECISION}::test_auto_follows_the_measured_rates_not_the_flag",)),
    Mutant("another machine's cached rates used", "infer/engines/cpu_rates.py",
           "    entry = data.get(key)", "    entry = next(iter(data.values()), None)",
           (f"{PRECISION}::test_another_machines_rates_in_the_cache_are_not_used",)),
    Mutant("lines beside lines of the other polarity kept as damage", "infer/scratches.py",
           "PAIRED = 0.5  #", "PAIRED = 1.0  #",
           (f"{REPAIR}::test_automatic_repair_of_clean_photos_with_fine_detail_changes_little",
            f"{REPAIR}::test_automatic_detection_finds_grey_scratches_and_dust_but_not_hair")),
    Mutant("an operator's refusal of huge pages overridden", "infer/huge_pages.py",
           "if VARIABLE not in env and not capped(env):", "if not capped(env):",
           (f"{HUGE_PAGES}::test_the_setting_is_added_to_the_workers_environment_and_an_operators_choice_stands",)),
    Mutant("huge pages asked for under a memory cap", "infer/huge_pages.py",
           "if VARIABLE not in env and not capped(env):", "if VARIABLE not in env:",
           (f"{HUGE_PAGES}::test_a_worker_with_a_memory_cap_does_not_ask",
            f"{HUGE_PAGES}::test_a_worker_started_by_hand_asks_for_them_unless_capped_and_says_so")),
    Mutant("an address-space limit not counted as a cap", "infer/huge_pages.py",
           "resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY", "False",
           (f"{HUGE_PAGES}::test_a_worker_with_a_memory_cap_does_not_ask",)),
    Mutant("a worker started by hand without huge pages", "infer/sr_infer.py",
           "    huge_pages.ask(os.environ)", "    pass",
           (f"{HUGE_PAGES}::test_a_worker_started_by_hand_asks_for_them_unless_capped_and_says_so",)),
    Mutant("huge pages reported in use whenever the kernel has them", "infer/huge_pages.py",
           'mode == "madvise" and env.get(VARIABLE, "").strip() == ASK', 'mode == "madvise"',
           (f"{HUGE_PAGES}::test_they_are_in_use_where_the_kernel_gives_them_to_all_or_to_those_who_ask",
            f"{HUGE_PAGES}::test_a_worker_started_by_hand_asks_for_them_unless_capped_and_says_so")),
    Mutant("progress within a window never reaches the job's row", "web/jobs/finishing.py",
           "progress_fraction=event.fraction)", "progress_fraction=None)",
           ("tests/web/test_jobs_store.py::test_progress_within_a_tile_reaches_the_job_and_an_older_workers_whole_"
            "tiles_still_do",
            "tests/web/test_runner.py::test_a_photo_in_one_window_shows_its_progress_before_it_ends")),
    Mutant("a window's progress reaches its tile's end before the tile is pasted", "infer/tiling.py",
           "index + min(max(part, 0.0), _BEFORE_END)", "index + max(part, 0.0)",
           (f"{TILING}::test_a_window_that_says_how_far_it_is_moves_progress_within_its_tile_never_to_its_end",)),
    Mutant("a checkpoint's forward never learns its whole", "infer/engines/step_progress.py",
           "            self._whole = done", "            pass",
           (f"{WINDOW_PROGRESS}::test_a_checkpoint_says_how_far_it_is_and_knows_the_whole_after_one_window",)),
    Mutant("EDSR's window from the graph's count without the measured overhead", "infer/engines/torch.py",
           "self.activation_bytes_per_px(spec) * overhead", "self.activation_bytes_per_px(spec)",
           (EDSR_WINDOWS,)),
    Mutant("a LeakyReLU fused with the slope lost", "infer/engines/fused_convs.py",
           '"leaky_relu", [float(module.negative_slope)]', '"leaky_relu", [0.0]',
           (f"{FUSED}::test_only_a_zero_padded_convolution_followed_by_relu_or_leaky_relu_is_fused",
            f"{FUSED}::test_real_x4plus_fused_is_the_same_in_fp32_no_worse_in_bf16_and_tells_its_progress")),
    Mutant("a reflect-padded convolution fused as if zero-padded", "infer/engines/fused_convs.py",
           'conv.padding_mode == "zeros" and ', '',
           (f"{FUSED}::test_only_a_zero_padded_convolution_followed_by_relu_or_leaky_relu_is_fused",)),
    Mutant("the worker's peak read from getrusage", "infer/resident.py",
           'peak = _status_mb("VmHWM", status)', "peak = None",
           ("tests/test_resident.py::test_a_workers_peak_is_its_own_not_the_process_that_started_it",)),
)


def _copy(workdir: Path) -> Path:
    """A fresh checkout copy in `workdir`, with the shared test data beside it as the tests expect."""
    target = workdir / "repo"
    target.mkdir()
    copy_checkout(target)
    (workdir / "shared").symlink_to(REPO_ROOT.parent / "shared")
    return target


def _pytest(checkout: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SR_", "PYTHON"))}
    env.update(SR_TEST_STRICT="1", PYTHONPATH=str(checkout), PYTHONDONTWRITEBYTECODE="1")
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                              cwd=checkout, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = -1
    return code, time.monotonic() - started


def _plant(checkout: Path, mutant: Mutant) -> None:
    path = checkout / mutant.path
    text = path.read_text()
    if text.count(mutant.original) != 1:
        raise SystemExit(f"{mutant.name}: {mutant.original!r} is not in {mutant.path} exactly once")
    path.write_text(text.replace(mutant.original, mutant.replacement))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per test run")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if not args.only or any(part in m.name for part in args.only)]
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.path}: {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        # The unchanged copy first: a mutant counts as killed only when tests that pass without it fail with it.
        baseline_tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        baseline = Path(tmp) / "baseline"
        baseline.mkdir()
        code, seconds = _pytest(_copy(baseline), baseline_tests, args.timeout)
        if code != 0:
            print(f"the unchanged checkout fails its tests (pytest exit {code}); nothing to judge", file=sys.stderr)
            return 2
        print(f"baseline: {len(baseline_tests)} test selections pass ({seconds:.0f} s)")
        killed = 0
        for index, mutant in enumerate(mutants):
            workdir = Path(tmp) / f"m{index}"
            workdir.mkdir()
            checkout = _copy(workdir)
            _plant(checkout, mutant)
            code, seconds = _pytest(checkout, mutant.tests, args.timeout)
            verdict = {0: "SURVIVED", 1: "killed", -1: "timed out"}.get(code, f"error (pytest exit {code})")
            killed += code == 1
            print(f"{verdict:>9}  {mutant.name} ({mutant.path}, {seconds:.0f} s)", flush=True)
    print(f"kill rate: {killed}/{len(mutants)} ({100 * killed / len(mutants):.0f} %)")
    return 0 if killed == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
