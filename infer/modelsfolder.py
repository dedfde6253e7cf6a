"""The files a models folder holds: regular files inside it; a link that leads out of the folder is never followed."""

from __future__ import annotations

from pathlib import Path


def inside(folder: Path, path: Path) -> bool:
    """Whether `path`, with every link resolved, is a regular file within `folder` (itself resolved)."""
    try:
        return path.resolve().is_relative_to(Path(folder).resolve()) and path.is_file()
    except (OSError, RuntimeError):  # RuntimeError: a link loop
        return False


def files_in(folder: Path) -> list[Path]:
    """The folder's own regular files but hidden ones (partial downloads), sorted by name; links are kept only
    when they stay inside the folder."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return sorted((p for p in entries if not p.name.startswith(".") and inside(folder, p)), key=lambda p: p.name)


def links_out(folder: Path) -> list[Path]:
    """The folder's links that lead outside it (or nowhere): never listed, scanned or offered."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    return sorted((p for p in entries if p.is_symlink() and not inside(folder, p)), key=lambda p: p.name)
