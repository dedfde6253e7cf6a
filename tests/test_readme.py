"""The README's command-line examples, run as written from a folder laid out like the repository."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from infer import REPO_ROOT
from infer.models import find_entry, load_manifest

SECTIONS = ("Upscaling from the command line", "Models")
FIXTURE_EDSR = REPO_ROOT / "tests" / "fixtures" / "EDSR_x3_trained.pb"


def readme_commands(sections: tuple[str, ...] = SECTIONS) -> list[str]:
    """The lines of the `sh` code blocks in the README's sections with these titles, comments stripped."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for title in sections:
        match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
        assert match, f"README has no section {title!r}"
        for block in re.findall(r"^```sh\n(.*?)^```", match.group(1), re.S | re.M):
            for line in block.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    return commands


@pytest.fixture
def checkout(shared_models: Path, shared_photos: Path, tmp_path: Path) -> Path:
    """A folder where the examples find what they name: `.venv` (this interpreter's), an empty `models/`
    and the photos (`holiday.jpg`, `scan.png`, `old-scan.jpg`, `scans/`), cut from real photos."""
    root = tmp_path / "checkout"
    root.mkdir()
    venv = Path(sys.prefix)
    assert (venv / "bin" / "sr-infer").is_file(), "run the tests from the project's virtualenv (make setup)"
    (root / ".venv").symlink_to(venv)
    (root / "models").mkdir()
    (root / "scans").mkdir()
    crops = {
        "holiday.jpg": ("chelsea.png", (150, 60, 246, 124)),
        "scan.png": ("coffee.png", (200, 100, 296, 164)),
        "old-scan.jpg": ("astronaut.png", (180, 60, 276, 124)),
        "scans/one.png": ("coffee.png", (300, 200, 364, 248)),
        "scans/two.jpg": ("chelsea.png", (50, 50, 114, 98)),
    }
    for name, (source, box) in crops.items():
        image = Image.open(shared_photos / source).convert("RGB").crop(box)
        image.save(root / name, quality=25 if name == "old-scan.jpg" else 90)
    return root


def _fetch_from_shared(command: str, models: Path, shared_models: Path) -> None:
    """`sr-models fetch NAME...` cannot download here: copies each named model from the shared folder instead
    (EDSR weights are not there; the small trained EDSR fixture stands in as the default model)."""
    names = shlex.split(command)[2:]
    entries = load_manifest()
    for name in names:
        entry = find_entry(name, entries)  # the README only names models that exist
        if entry.algo == "edsr":
            continue
        if entry.file.endswith(".pth"):
            # Real-ESRGAN's releases cannot be downloaded here either: real weights of the same architecture
            # and scale, converted from the ncnn exports, stand in.
            from tests.fixtures.ncnn_realesrgan import ANIMEVIDEOV3, X4PLUS, write_checkpoint

            write_checkpoint(X4PLUS if entry.algo == "esrgan" else ANIMEVIDEOV3, models / entry.file)
            continue
        shutil.copy(shared_models / entry.file, models / entry.file)


def test_readme_command_line_examples_work_as_written(checkout: Path, shared_models: Path):
    commands = readme_commands()
    assert sum(c.startswith(".venv/bin/sr-infer") for c in commands) >= 5, commands
    assert any("--denoise" in c for c in commands) and any("--scale" in c for c in commands)
    models = checkout / "models"
    shutil.copy(FIXTURE_EDSR, models / FIXTURE_EDSR.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SR_")}
    env.update(SR_MODELS_DIR=str(models), SR_MODEL_PATH=str(models / FIXTURE_EDSR.name))

    fetched = False
    for command in commands:
        if command.startswith(".venv/bin/sr-models fetch"):
            _fetch_from_shared(command, models, shared_models)
            fetched = True
            continue
        assert fetched, f"{command!r} comes before any `sr-models fetch`: it would fail on a fresh machine"
        result = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"

    # What the sr-infer examples should have written.
    assert Image.open(checkout / "holiday_x3.png").size == (288, 192)
    assert sorted(p.name for p in (checkout / "scans_x3").iterdir()) == ["one_x3.png", "two_x3.jpg"]
    assert sorted(p.name for p in (checkout / "big").iterdir()) == ["holiday_x2.jpg", "one_x2.jpg", "two_x2.jpg"]
    assert Image.open(checkout / "old-scan_x3.png").size == (288, 192)
    assert Image.open(checkout / "scan_x3.webp").size == (288, 192)
    assert Image.open(checkout / "holiday_x4.png").size == Image.open(checkout / "holiday_best_x4.png").size == (384, 256)


def test_the_exit_code_table_is_the_contracts() -> None:
    from infer.contract import Failure

    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (\d{3}) \|", text, re.M)
    assert rows, "README has no exit-code table"
    assert [(int(e), c, int(s)) for e, c, s in rows] == [(f.exit_code, f.code, f.http_status) for f in Failure]


def test_the_readme_and_help_list_the_same_engines() -> None:
    from infer.engines import ENGINE_CHOICES

    shown = subprocess.run([sys.executable, str(REPO_ROOT / "infer" / "sr_infer.py"), "--help"], capture_output=True,
                           text=True, check=True).stdout
    in_help = re.search(r"--engine \{([^}]+)\}", shown).group(1).split(",")
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    in_readme = re.search(r"^\| `--engine ([^`]+)` \|", text, re.M).group(1).split("\\|")
    assert in_help == in_readme == list(ENGINE_CHOICES), (in_help, in_readme)
