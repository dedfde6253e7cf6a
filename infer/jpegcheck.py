"""Whether a JPEG's compressed pixel data runs to the end of the picture, from libjpeg's own warnings."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2

# libjpeg's warnings for data that stops before the last block (JWRN_JPEG_EOF, JWRN_HIT_MARKER). Pillow's
# decoder silences every libjpeg warning and fills the missing blocks with grey, so a file with a large
# header and almost no data decodes "successfully"; OpenCV's leaves libjpeg's default, a line on stderr.
_ENDS_EARLY = ("Premature end of JPEG file", "premature end of data segment")


@contextlib.contextmanager
def _stderr_lines() -> Iterator[list[str]]:
    """The lines written to file descriptor 2 inside the block (libjpeg writes there, not to sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    lines: list[str] = []
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                os.dup2(saved, 2)
                sink.seek(0)
                lines.extend(sink.read().decode("utf-8", "replace").splitlines())
    finally:
        os.close(saved)


def ends_early(path: Path) -> str | None:
    """libjpeg's words when the file's pixel data ends before the picture does, else None.

    The file is decoded at 1/8 of its size in grey: every block is still read, for a fraction of the time and
    memory. Whatever else was written meanwhile is passed on to stderr."""
    with _stderr_lines() as lines:
        cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION)
    early = [line for line in lines if any(words in line for words in _ENDS_EARLY)]
    others = [line for line in lines if line not in early]
    if others:
        print("\n".join(others), file=sys.stderr)
    return early[0] if early else None
