"""Terminal output for people: the worker's events as readable lines and progress bars with time left."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from infer.contract import Progress, parse_event


def _name(path: object) -> str:
    return Path(str(path)).name


class Console:
    """Takes the same events as EventStream and draws them: one bar per photo (tiles), one over a batch."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self._out = out if out is not None else sys.stdout
        self._err = err if err is not None else sys.stderr
        self._batch: tqdm | None = None
        self._photo: tqdm | None = None
        self._said_why = False  # a batch's photos share one model: why it was chosen is said once
        # A terminal that reports no size (some pseudo-terminals) would otherwise get invisible bars.
        self._columns, self._rows = shutil.get_terminal_size((100, 24))

    def emit(self, event: str, **fields: Any) -> None:
        handler = getattr(self, f"_on_{event}", None)
        if handler is not None:
            handler(fields)

    def close(self) -> None:
        self._close_photo()
        if self._batch is not None:
            self._batch.close()
            self._batch = None

    def _write(self, line: str, err: bool = False) -> None:
        tqdm.write(line, file=self._err if err else self._out)

    def _close_photo(self) -> None:
        if self._photo is not None:
            self._photo.close()
            self._photo = None

    def _on_batch_start(self, f: dict[str, Any]) -> None:
        self._write(f"{f['photos']} photos, {f['to_do']} to upscale into {f['output']}")
        if f["to_do"]:
            self._batch = tqdm(total=f["to_do"], desc="all photos", unit="photo", file=self._out,
                               position=0, ncols=self._columns, nrows=self._rows)

    def _on_skipped(self, f: dict[str, Any]) -> None:
        self._write(f"{_name(f['input'])}: skipped, {f['output']} exists (--overwrite redoes it)")

    def _on_start(self, f: dict[str, Any]) -> None:
        scale = f["scale"]
        denoise = f.get("denoise", "off")
        cleaned = f", denoise {denoise}" if denoise != "off" else ""
        self._write(
            f"{_name(f['input'])}: {f['width']}x{f['height']} -> {f['width'] * scale}x{f['height'] * scale} "
            f"with {f['algo']} x{scale} ({f['engine']}, {f['device']}, {f['precision']}){cleaned}"
        )
        if f.get("why") and not self._said_why:
            self._said_why = True
            self._write(f"  model {_name(f['model'])}: {f['why']} (--model names another)")
        self._close_photo()
        self._photo = tqdm(total=f["tiles"], desc=_name(f["input"]), unit="tile", file=self._out,
                           position=1 if self._batch is not None else 0, leave=False, ncols=self._columns, nrows=self._rows)

    def _on_progress(self, f: dict[str, Any]) -> None:
        if self._photo is not None:
            # Tiles, with the running one's part where the event says how far it is (one window can take minutes).
            event = parse_event({**f, "event": "progress"})
            assert isinstance(event, Progress)
            self._photo.n = round(event.fraction * (event.total or self._photo.total), 2)
            self._photo.refresh()

    def _on_done(self, f: dict[str, Any]) -> None:
        self._close_photo()
        seconds = f.get("seconds", {})
        took = sum(v for k, v in seconds.items() if k not in ("total", "startup", "fork", "imports"))
        self._write(f"  saved {f['output']} ({f['width']}x{f['height']}) in {took:.1f} s")
        faces = f.get("faces")
        if faces:
            self._write(f"  faces: {faces['restored']} restored of {faces['found']} found ({faces['detector']} detector)")
        if self._batch is not None:
            self._batch.update(1)

    def _on_error(self, f: dict[str, Any]) -> None:
        self._close_photo()
        where = f"{_name(f['input'])}: " if f.get("input") else ""
        self._write(f"sr-infer: error: {where}{f['message']}", err=True)
        if self._batch is not None and f.get("input"):
            self._batch.update(1)

    def _on_batch_done(self, f: dict[str, Any]) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        self._write(f"done: {f['done']} upscaled, {f['skipped']} skipped, {f['failed']} failed")
