"""Per-job super-resolution worker: decode, upscale in tiles, encode."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
