"""File digests: the one SHA-256 reader that model checks, scan records, weight caches and cache keys share."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

CHUNK_BYTES = 1 << 20


def sha256_of(path: Path, also: Iterable[Any] = ()) -> str:
    """The file's SHA-256 in hex, read once in 1 MB chunks; `also` (other hashlib objects) see the same bytes."""
    digest = hashlib.sha256()
    others = list(also)
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
            for other in others:
                other.update(chunk)
    return digest.hexdigest()
