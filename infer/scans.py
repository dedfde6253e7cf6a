"""Scan records: what the worker side read from each checkpoint in a models folder, kept beside it as JSON.

The front end offers checkpoints from these records alone, so it never imports PyTorch or spandrel."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infer import REPO_ROOT
from infer.checkpoints import SERVED_PURPOSES, CheckpointInfo, LoaderMissing, info_from_json, is_checkpoint
from infer.digests import sha256_of
from infer.errors import ModelError
from infer.faces.options import FACE_ARCHITECTURE, FACE_PURPOSE, GFPGAN_FILE
from infer.modelsfolder import files_in

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
    return [p for p in files_in(folder) if is_checkpoint(p) and p.name != GFPGAN_FILE]


def face_file(folder: Path) -> list[Path]:
    """The face stage's GFPGAN file when the folder holds it (scanned like a checkpoint, never offered as one)."""
    return [p for p in files_in(folder) if p.name == GFPGAN_FILE]


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
    return [p for p in [*checkpoint_files(folder), *face_file(folder)] if read_scan(p) is None]


@dataclass(frozen=True)
class ScanLimits:
    """What reading one checkpoint may take in the reader process, beyond what that process maps already."""

    seconds: float = 120.0
    # Room for the file's tensors, the network spandrel builds from them (as large again) and the blend: a
    # 348 MB GFPGAN file peaks near 1 GB, so 1.5 GB plus three times the file is generous for real ones.
    memory_bytes: int = 1536 << 20
    memory_per_file_byte: int = 3
    # Starting the reader: importing PyTorch and spandrel takes 3.5-7 s, far more on a loaded machine.
    start_seconds: float = 180.0


class _Reader:
    """One `infer.scan_reader` child: a fresh interpreter (a fork of a process that has used PyTorch's thread
    pool can hang in its first parallel region), which answers each request or dies trying."""

    def __init__(self, limits: ScanLimits):
        import subprocess

        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))}
        self.limits = limits
        self.proc = subprocess.Popen([sys.executable, "-m", "infer.scan_reader"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO_ROOT)
        first = self._line(limits.start_seconds)
        if first is not None and "missing" in first:
            self.close()
            raise LoaderMissing(str(first["missing"]))
        if first is None or not first.get("ready"):
            self.close()
            raise ModelError(f"the checkpoint reader did not start within {limits.start_seconds:g} s "
                             f"({sys.executable} -m infer.scan_reader)")

    def _line(self, seconds: float) -> dict[str, Any] | None:
        import select

        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], seconds)[0]:
            return None
        line = self.proc.stdout.readline()
        try:
            return json.loads(line) if line else None
        except ValueError:
            return None

    def read(self, path: Path, purposes: tuple[str, ...]) -> tuple[CheckpointInfo | None, str]:
        """The file's facts, or why it is refused; after a refusal by time or a crash the reader is closed."""
        memory = self.limits.memory_bytes + self.limits.memory_per_file_byte * path.stat().st_size
        request = {"path": str(path), "purposes": list(purposes), "memory_bytes": memory}
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except OSError:
            pass
        answer = self._line(self.limits.seconds)
        if answer is not None and "info" in answer:
            return info_from_json(answer["info"]), ""
        if answer is not None and "reason" in answer:
            return None, str(answer["reason"])
        running = self.proc.poll() is None
        self.close()
        if running:
            return None, f"reading {path.name} took longer than {self.limits.seconds:g} s, so it was stopped and refused"
        return None, (f"reading {path.name} ended the reader (exit status {self.proc.returncode}, with "
                      f"{memory >> 20} MB of memory to spare); it is not a usable checkpoint")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def _refusal(path: Path, info: CheckpointInfo) -> str | None:
    """Why a described file is not offered: an upscaler's purpose and channels, or the face file's architecture."""
    if path.name != GFPGAN_FILE:
        return info.refusal()
    if info.architecture != FACE_ARCHITECTURE:
        return f"it holds a {info.architecture_name} network, not {FACE_ARCHITECTURE}; face restoration needs {GFPGAN_FILE}"
    return info.refusal((FACE_PURPOSE,))


def _write_record(path: Path, info: CheckpointInfo | None, reason: str | None, st: os.stat_result) -> Scan:
    scan = Scan(path.name, st.st_size, st.st_mtime_ns, sha256_of(path), info, reason or None)
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


def scan_files(paths: list[Path], limits: ScanLimits = ScanLimits()) -> list[Scan]:
    """Reads each checkpoint through the loader (which refuses code) in a child process, under an address-space
    cap and a time limit, and writes its record atomically: a file that exhausts memory, hangs or crashes the
    reader is that file's refusal, and the next file gets a new reader. The face stage's GFPGAN file is read
    for its own purpose and must hold GFPGAN."""
    out: list[Scan] = []
    reader: _Reader | None = None
    try:
        for path in paths:
            st = path.stat()
            if reader is None or not reader.alive:
                reader = _Reader(limits)
            info, reason = reader.read(path, (FACE_PURPOSE,) if path.name == GFPGAN_FILE else SERVED_PURPOSES)
            out.append(_write_record(path, info, _refusal(path, info) if info is not None else reason, st))
    finally:
        if reader is not None:
            reader.close()
    return out


def scan_file(path: Path, limits: ScanLimits = ScanLimits()) -> Scan:
    """One file's scan (see `scan_files`)."""
    return scan_files([path], limits)[0]


def scan_folder(folder: Path, *, only_new: bool = False) -> list[Scan]:
    """Scans every checkpoint in the folder and the face file (`only_new`: those without an up-to-date record)."""
    paths = [*checkpoint_files(folder), *face_file(folder)]
    current = {p: read_scan(p) for p in paths} if only_new else {}
    fresh = iter(scan_files([p for p in paths if current.get(p) is None]))
    return [current.get(p) or next(fresh) for p in paths]
