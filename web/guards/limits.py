"""The output-pixel limit (SR_MAX_OUTPUT_PIXELS): a result's size from the photo's header and the chosen scale, checked before the job is queued."""

from __future__ import annotations

from typing import Iterable

from web.http.errors import Refusal


def check_output_pixels(width: int, height: int, scale: int, limit: int, scales: Iterable[int]) -> None:
    """Raises 422 when width x height x scale² is over `limit`, naming the largest offered scale that fits."""
    pixels = width * height
    if pixels * scale * scale <= limit:
        return
    fitting = [s for s in scales if pixels * s * s <= limit]
    if fitting:
        remedy = f"the largest scale this photo allows is x{max(fitting)}; choose that or a smaller one"
    else:
        smallest = min([*scales, scale])
        remedy = (f"no scale offered here fits it; resize it to at most {limit / smallest ** 2 / 1e6:.2f} "
                  f"megapixels for x{smallest}")
    raise Refusal(
        422,
        "too_many_output_pixels",
        f"at x{scale} the result of this {width}x{height} photo would be {width * scale}x{height * scale} "
        f"({pixels * scale * scale / 1e6:.0f} megapixels), over the {limit / 1e6:g} megapixel limit for results; "
        f"{remedy}",
    )
