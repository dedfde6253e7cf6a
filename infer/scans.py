"""Scan records: what the worker side read from each checkpoint in a models folder, kept beside it as JSON.

The front end offers checkpoints from these records alone, so it never imports PyTorch or spandrel."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infer.checkpoints import CheckpointInfo, info_from_json, is_checkpoint
from infer.errors import ModelError
from infer.faces.options import GFPGAN_FILE

RECORD_SUFFIX = ".json"  # RealESRGAN_x4plus.pth -> RealESRGAN_x4plus.pth.json
SCAN_COMMAND = "sr-models scan"
_VERSION = 1


@dataclass(frozen=True)
class Scan:
    """One checkpoint's record: the file it describes (size and modification time), and whether it is offered."""

    file: str
    bytes: int
    mtime_ns: int
    sha256: str
    info: CheckpointInfo | None  # None when the file was refused before spandrel described it
    reason: str | None  # why it is not offered; None when it is

    @property
    def offered(self) -> bool:
        return self.reason is None and self.info is not None

    @property
    def label(self) -> str:
        """How people see it: the file name, architecture and scale."""
        stem = Path(self.file).stem
        return f"{stem} ({self.info.architecture_name} x{self.info.scale})" if self.info else stem

    def describes(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        return st.st_size == self.bytes and st.st_mtime_ns == self.mtime_ns

    def to_json(self) -> dict[str, Any]:
        return {"version": _VERSION, "file": self.file, "bytes": self.bytes, "mtime_ns": self.mtime_ns,
                "sha256": self.sha256, "offered": self.offered, "reason": self.reason, "label": self.label,
                **({"checkpoint": self.info.to_json()} if self.info else {})}


def record_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + RECORD_SUFFIX)


def checkpoint_files(folder: Path) -> list[Path]:
    """Every checkpoint-like file in the folder (TorchScript included, to be listed as refused), but the face
    stage's GFPGAN file: it is the face restorer, not an upscaler to scan or offer."""
    try:
        return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_checkpoint(p) and p.name != GFPGAN_FILE)
    except OSError:
        return []


def read_scan(checkpoint: Path) -> Scan | None:
    """The record of this very file; None when there is none, it is damaged, or the file changed since."""
    try:
        data = json.loads(record_path(checkpoint).read_text(encoding="utf-8"))
        scan = Scan(
            file=str(data["file"]), bytes=int(data["bytes"]), mtime_ns=int(data["mtime_ns"]), sha256=str(data["sha256"]),
            info=info_from_json(data["checkpoint"]) if "checkpoint" in data else None, reason=data.get("reason"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return scan if scan.file == checkpoint.name and scan.describes(checkpoint) else None


def unscanned(folder: Path) -> list[Path]:
    """Checkpoints with no up-to-date record: the front end cannot offer them until `sr-models scan` runs."""
    return [p for p in checkpoint_files(folder) if read_scan(p) is None]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def scan_file(path: Path) -> Scan:
    """Reads the checkpoint through the loader (which refuses code) and writes its record atomically."""
    from infer import checkpoints

    st = path.stat()
    info, reason = None, None
    try:
        info = checkpoints.load(path, served_only=False)[1]
        reason = info.refusal()
    except checkpoints.LoaderMissing:
        raise
    except ModelError as err:
        reason = err.message
    scan = Scan(path.name, st.st_size, st.st_mtime_ns, _sha256(path), info, reason)
    target = record_path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(scan.to_json(), fh, indent=2)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return scan


def scan_folder(folder: Path, *, only_new: bool = False) -> list[Scan]:
    """Scans every checkpoint in the folder (`only_new`: those without an up-to-date record)."""
    out = []
    for path in checkpoint_files(folder):
        existing = read_scan(path) if only_new else None
        out.append(existing or scan_file(path))
    return out
