"""A zip of result files written straight onto the response as it is built, never held whole."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

_CHUNK = 1024 * 1024


class _Pipe(io.RawIOBase):
    """A write-only, non-seekable stream whose bytes are taken out as they come (zipfile then writes
    data descriptors instead of seeking back)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def unique_names(names: Iterable[str]) -> list[str]:
    """`a.jpg, a.jpg, a.jpg` -> `a.jpg, a (2).jpg, a (3).jpg`."""
    taken: set[str] = set()
    unique = []
    for name in names:
        stem, dot, ext = name.rpartition(".")
        if not dot:
            stem, ext = name, ""
        candidate, n = name, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{stem} ({n}){dot}{ext}"
        taken.add(candidate.lower())
        unique.append(candidate)
    return unique


def stream_zip(entries: Iterable[tuple[str, Path, float]]) -> Iterator[bytes]:
    """Yields a stored (uncompressed: the photos are compressed already) zip of `(name, file, date)` entries;
    the date is the job's own (a cached result's file is shared with another job and has that one's)."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, path, modified in entries:
            try:
                source = open(path, "rb")
            except FileNotFoundError:
                continue  # expired or deleted since the list was made
            with source:
                info = zipfile.ZipInfo(name, date_time=time.localtime(modified)[:6])
                info.compress_type = zipfile.ZIP_STORED
                info.file_size = path.stat().st_size
                with archive.open(info, "w") as target:
                    while chunk := source.read(_CHUNK):
                        target.write(chunk)
                        yield from _taken(pipe)
            yield from _taken(pipe)
    yield from _taken(pipe)


def _taken(pipe: _Pipe) -> Iterator[bytes]:
    data = pipe.take()
    if data:  # an empty chunk would end a chunked response
        yield data
