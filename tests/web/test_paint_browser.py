"""Marking damage on the page in headless Chromium against a real server and worker: a painted stroke is repaired
and changes the result only near it; "Find scratches and dust" proposes a mask that can be erased before running.

Screenshots go to tests/web/artifacts/ (gitignored)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.damage import damage
from tests.web.conftest import StartServer
from tests.web.test_browser import LONG, browser, card_named, job_json, open_page, screenshot, upscale, wait_done

__all__ = ["browser"]  # the module-scoped Chromium fixture, shared with test_browser
pytestmark = pytest.mark.browser

SCALE = 3  # FSRCNN x3, the servers' default model
MARGIN = 6  # px of the photo around a mark that the repair and the model's receptive field may change


def _save(bgr: np.ndarray, path: Path) -> Path:
    cv2.imwrite(str(path), bgr)
    return path


def _open_painter(card) -> None:
    card.locator(".mark").wait_for(state="visible", timeout=LONG)
    card.locator(".mark").click()
    card.locator(".paint-area").wait_for(state="visible")
    assert card.locator(".mark").get_attribute("aria-expanded") == "true"


def _drag(page, card, points: list[tuple[float, float]], size: tuple[int, int]) -> None:
    """A mouse stroke through these photo pixels, wherever the canvas is shown and however zoomed."""
    box = card.locator("canvas.marks").bounding_box()
    width, height = size
    screen = [(box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height)
              for x, y in points]
    page.mouse.move(*screen[0])
    page.mouse.down()
    for point in screen[1:]:
        page.mouse.move(*point, steps=8)
    page.mouse.up()


def _marked(page, card, at_least: int = 1) -> int:
    """The marked pixels the card counts, once its count has caught up with the strokes."""
    page.wait_for_function("([e, n]) => Number(e.dataset.marked || 0) >= n", arg=[card.element_handle(), at_least],
                           timeout=LONG)
    page.wait_for_timeout(400)  # the count follows the last stroke after a pause
    return int(card.get_attribute("data-marked"))


def _sent_mask(server, job_id: str) -> np.ndarray:
    """The repair mask the page sent, as the service kept it (SR_KEEP_UPLOADS)."""
    with Image.open(server.services.config.uploads_dir / f"{job_id}.mask.png") as mask:
        assert mask.format == "PNG"
        grey = np.asarray(mask.convert("L"))
    assert set(np.unique(grey)) <= {0, 255}, "white where marked, black elsewhere"
    return grey > 0


def test_a_painted_stroke_changes_the_result_only_near_it(browser, start_server: StartServer,
                                                          shared_photos: Path, tmp_path: Path) -> None:
    server = start_server(keep_uploads=True)
    photo = cv2.imread(str(shared_photos / "chelsea.png"))[40:160, 60:220]  # 160x120
    width, height = photo.shape[1], photo.shape[0]
    plain_file, marked_file = _save(photo, tmp_path / "plain.png"), _save(photo, tmp_path / "marked.png")
    context, page, errors = open_page(browser, server.url)
    page.set_input_files("#picker", [str(plain_file), str(marked_file)])
    plain, marked = card_named(page, "plain.png"), card_named(page, "marked.png")

    _open_painter(marked)
    assert marked.locator("canvas.marks").evaluate("c => [c.width, c.height]") == [width, height]
    assert marked.locator(".paint-area").evaluate("e => getComputedStyle(e).touchAction") == "none"
    _drag(page, marked, [(30, 60), (80, 62), (130, 58)], (width, height))
    assert _marked(page, marked) > 0
    screenshot(page, "paint-stroke")
    upscale(plain)
    upscale(marked)
    assert marked.locator(".painter").is_hidden()
    wait_done(plain)
    wait_done(marked)
    marked_job = job_json(context, server.url, marked.get_attribute("data-job-id"))
    plain_job = job_json(context, server.url, plain.get_attribute("data-job-id"))
    assert marked_job["repair"]["mask"] is True and plain_job["repair"]["mask"] is False

    mask = _sent_mask(server, marked_job["id"])
    assert mask.shape == (height, width)
    rows, cols = np.nonzero(mask)
    assert 50 <= rows.min() and rows.max() <= 70 and cols.min() <= 32 and cols.max() >= 128

    with page.expect_download() as info:
        marked.locator(".download").click()
    download = info.value
    assert download.suggested_filename == "marked_x3_FSRCNN_x3_repaired.png"
    after = cv2.imread(download.path())
    before = cv2.imdecode(np.frombuffer(context.request.get(f"{server.url}{plain_job['links']['result']}").body(),
                                        np.uint8), cv2.IMREAD_COLOR)
    assert after.shape == before.shape == (height * SCALE, width * SCALE, 3)
    differs = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 2
    near = cv2.dilate(mask.astype(np.uint8), np.ones((2 * MARGIN + 1,) * 2, np.uint8))
    near = cv2.resize(near, (width * SCALE, height * SCALE), interpolation=cv2.INTER_NEAREST) > 0
    assert differs.any() and not (differs & ~near).any(), f"{int((differs & ~near).sum())} px changed far from the stroke"
    assert errors == []
    context.close()


def test_found_scratches_are_shown_and_can_be_erased_before_running(browser, start_server: StartServer,
                                                                    shared_photos: Path, tmp_path: Path) -> None:
    server = start_server(keep_uploads=True)
    clean = cv2.imread(str(shared_photos / "chelsea.png"))[:160, :240]
    width, height = clean.shape[1], clean.shape[0]
    photo = _save(damage(clean, seed=11, torn=False).bgr, tmp_path / "old.png")
    context, page, errors = open_page(browser, server.url)
    page.set_input_files("#picker", str(photo))
    card = card_named(page, "old.png")
    _open_painter(card)

    card.locator(".find-damage").click()
    card.locator(".paint-status", has_text="Erase any that are not damage").wait_for(timeout=LONG)
    found = _marked(page, card)
    proposed = context.request.post(f"{server.url}/api/damage", multipart={
        "image": {"name": "old.png", "mimeType": "image/png", "buffer": photo.read_bytes()}})
    assert proposed.ok
    proposed_mask = cv2.imdecode(np.frombuffer(proposed.body(), np.uint8), cv2.IMREAD_GRAYSCALE) > 0
    assert found == int(proposed_mask.sum())
    screenshot(page, "paint-found")

    # Erase the left half with a wide eraser; the right half's marks stay.
    card.locator(".tool-eraser").click()
    assert card.locator(".tool-eraser").get_attribute("aria-pressed") == "true"
    card.locator(".brush-size").fill("40")
    for y in range(0, height + 20, 20):
        _drag(page, card, [(0, y), (width // 2, y)], (width, height))
    page.wait_for_function("([e, n]) => Number(e.dataset.marked) < n", arg=[card.element_handle(), found],
                           timeout=LONG)
    left = _marked(page, card, 0)
    assert 0 < left < found
    upscale(card)
    wait_done(card)
    job = job_json(context, server.url, card.get_attribute("data-job-id"))
    sent = _sent_mask(server, job["id"])
    assert sent.shape == (height, width) and 0 < sent.sum() < proposed_mask.sum()
    assert not sent[:, : width // 2].any()
    keep = width // 2 + 25  # past the eraser's reach
    assert np.array_equal(sent[:, keep:], proposed_mask[:, keep:])
    assert errors == []
    context.close()


def _touch(cdp, kind: str, points: list[tuple[float, float]]) -> None:
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
        {"x": x, "y": y, "id": i, "radiusX": 2, "radiusY": 2, "force": 1} for i, (x, y) in enumerate(points)]})


def test_touch_keys_and_a_sideways_stored_photo(browser, start_server: StartServer, shared_photos: Path,
                                                tmp_path: Path) -> None:
    """A finger paints and two pinch, the keys choose the tool and size, and the marks of a JPEG stored sideways
    (EXIF orientation 6) are the photo's size as shown, which the service takes."""
    server = start_server(keep_uploads=True)
    upright = Image.open(shared_photos / "coffee.png").convert("RGB").crop((100, 100, 220, 180))  # 120x80 shown
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = tmp_path / "sideways.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(photo, quality=95, exif=exif.tobytes())
    context, page, errors = open_page(browser, server.url, has_touch=True)
    page.set_input_files("#picker", str(photo))
    card = card_named(page, "sideways.jpg")
    _open_painter(card)
    canvas = card.locator("canvas.marks")
    assert canvas.evaluate("c => [c.width, c.height]") == [120, 80]

    # The controls are named for a screen reader and work from the keyboard.
    assert card.get_by_role("button", name="Eraser").is_visible()
    assert card.get_by_label("Brush size").input_value() == "12"
    area = card.locator(".paint-area")
    assert area.evaluate("e => document.activeElement === e"), "the painter takes the focus when it opens"
    area.press("e")
    assert card.locator(".tool-eraser").get_attribute("aria-pressed") == "true"
    area.press("b")
    area.press("]")
    assert card.get_by_label("Brush size").input_value() == "15"
    assert card.locator(".brush-size-value").inner_text() == "15 px"

    cdp = context.new_cdp_session(page)
    box = canvas.bounding_box()
    y = box["y"] + box["height"] / 2
    _touch(cdp, "touchStart", [(box["x"] + 10, y)])
    for step in range(1, 11):
        _touch(cdp, "touchMove", [(box["x"] + 10 + step * (box["width"] - 20) / 10, y)])
    _touch(cdp, "touchEnd", [])
    painted = _marked(page, card)
    assert painted > 0
    fit = float(area.get_attribute("data-zoom"))
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 4
    _touch(cdp, "touchStart", [(cx - 20, cy), (cx + 20, cy)])
    for step in range(1, 6):
        _touch(cdp, "touchMove", [(cx - 20 - 15 * step, cy), (cx + 20 + 15 * step, cy)])
    _touch(cdp, "touchEnd", [])
    assert float(area.get_attribute("data-zoom")) > fit * 2
    page.wait_for_timeout(400)
    assert int(card.get_attribute("data-marked")) == painted, "a pinch paints nothing"
    area.press("0")
    assert float(area.get_attribute("data-zoom")) == pytest.approx(fit, abs=1e-3)
    screenshot(page, "paint-touch")

    upscale(card)
    wait_done(card)
    job = job_json(context, server.url, card.get_attribute("data-job-id"))
    assert job["status"] == "done" and job["repair"]["mask"] is True
    mask = _sent_mask(server, job["id"])
    assert mask.shape == (80, 120) and mask[40].sum() > 80
    assert errors == []
    context.close()
