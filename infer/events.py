"""JSON-lines event stream on stdout: the worker's only machine-readable channel."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Protocol, TextIO

from infer.contract import EventKind


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


# Within a window, a progress event at most this often: a window of a heavy model on a CPU runs for minutes,
# and a light model's hundreds of steps a second would only fill the stream.
WITHIN_TILE_INTERVAL_S = 0.5


class ProgressEvents:
    """The `progress` events of one photo: one when each tile is done, and between them, at most once a
    `WITHIN_TILE_INTERVAL_S`, how far the network is through the tile it runs.

    `done` counts whole tiles; `fraction` is the share of the photo's tiles done, the running one's part
    included."""

    def __init__(self, sink: EventSink, interval_s: float = WITHIN_TILE_INTERVAL_S):
        self._sink = sink
        self._interval_s = interval_s
        self._last = time.monotonic()

    def __call__(self, done: float, total: int) -> None:
        whole = int(done)
        now = time.monotonic()
        if whole != done and now - self._last < self._interval_s:
            return
        self._last = now
        fraction = min(done / total, 1.0) if total > 0 else 0.0
        self._sink.emit(EventKind.PROGRESS, done=whole, total=total, fraction=round(fraction, 4))
