"""JSON-lines event stream on stdout: the worker's only machine-readable channel."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO


class EventSink(Protocol):
    """Anything that takes the worker's events: EventStream (JSON lines) or the terminal's Console."""

    def emit(self, event: str, **fields: Any) -> None:
        """`event` is one of the contract's EventKind names."""


class EventStream:
    """Writes one JSON object per line and flushes, so a reader sees each event as it happens."""

    def __init__(self, out: TextIO | None = None):
        self._out = out if out is not None else sys.stdout

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": str(event), "time": round(time.time(), 3), **fields}
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._out.flush()
