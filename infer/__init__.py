"""Per-job super-resolution worker: decode, upscale in tiles, encode."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Run from a source checkout (or an editable install of one), its folder holds models/ and the service's data;
# an installed copy keeps them outside site-packages.
SOURCE_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()


def data_home() -> Path:
    """The default folder of `models/` (and of the service's `uploads/`, `results/`, `state/`): the checkout
    when running from one, else the current folder."""
    return REPO_ROOT if SOURCE_CHECKOUT else Path.cwd()
