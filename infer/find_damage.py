"""`--find-damage`: the scratches and dust found in one photo, written as a repair mask PNG instead of a result."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from infer import images
from infer.contract import EXIT_OK, EventKind
from infer.errors import UsageError
from infer.events import EventSink
from infer.scratches import detect_damage

MASK_ON = 255  # white where damage was found, black elsewhere: the repair mask's own format


def find_damage(photo: Path, output: Path, max_pixels: int, events: EventSink, since: float) -> int:
    """Decodes the photo (upright, as shown), finds its damage with `infer.scratches` and writes the mask at the
    photo's own size as a grey PNG; the same refusals as an enlargement for the photo itself."""
    if images.output_format(output) != "PNG":
        raise UsageError(f"--find-damage writes a PNG mask; name the output {output.stem}.png, not {output.name}")
    seconds: dict[str, float] = {}
    mark = time.perf_counter()
    image = images.decode(photo, max_pixels)
    seconds["decode"], mark = round(time.perf_counter() - mark, 4), time.perf_counter()
    events.emit(EventKind.START, input=str(photo), output=str(output), find_damage=True, width=image.width,
                height=image.height, format=image.source_format, tiles=0)
    found = detect_damage(image.bgr)
    seconds["find_damage"], mark = round(time.perf_counter() - mark, 4), time.perf_counter()
    grey = np.where(found, MASK_ON, 0).astype(np.uint8)
    images.encode(images.DecodedImage(np.repeat(grey[:, :, None], 3, axis=2), grayscale=True), output)
    seconds["encode"] = round(time.perf_counter() - mark, 4)
    seconds["total"] = round(time.time() - since, 4)
    events.emit(EventKind.DONE, output=str(output), width=image.width, height=image.height, find_damage=True,
                found=int(found.sum()), seconds=seconds)
    return EXIT_OK
